//! Recipient verification through the real binary (`cutover serve`): `verify_recipients =
//! "probe"` against a real Postfix downstream (tests/support/postfix.rs, whose virtual mailbox
//! map knows alice and not nobody): known → 250, unknown → 550 5.1.1, the second ask answered
//! from the cache (one probe in Postfix's log and in `/metrics`), a target that does not answer
//! and a stopped Postfix → 450 4.1.1. And `recipients_known`: listed → 250, unlisted → 550
//! 5.1.1, the file edited + SIGHUP → the newly listed address accepted; a reload with the file
//! gone keeps the running list.

#[path = "support/common.rs"]
mod common;
#[path = "support/postfix.rs"]
mod postfix;
#[path = "support/queueops.rs"]
mod queueops;
#[path = "support/smtp.rs"]
mod smtp;

use common::free_port;
use smtp::{Client, Gateway, Reply};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// A session after EHLO and MAIL FROM.
async fn transaction(addr: SocketAddr) -> Client {
    let mut c = Client::greeted(addr).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    let r = c.cmd("MAIL FROM:<sender@elsewhere.example>").await;
    assert_eq!(r.code, 250, "{r:?}");
    c
}

/// The configuration file: the gateway section (accepting `domains`), then
/// `rest` (targets and rules), then the admin listener.
fn config(smtp: SocketAddr, admin: SocketAddr, state: &Path, domains: &str, rest: &str) -> String {
    format!(
        r#"[gateway]
hostname = "mx1.example.com"
listen = ["{smtp}"]
state_dir = "{state}"
accept_domains = [{domains}]
min_free_space = "1MiB"
verify_timeout = "5s"

{rest}
[admin]
listen = "{admin}"
"#,
        state = state.display()
    )
}

async fn rcpt(c: &mut Client, to: &str) -> Reply {
    c.cmd(&format!("RCPT TO:<{to}>")).await
}

async fn metrics(admin: SocketAddr) -> String {
    queueops::body_of(&queueops::http(admin, "GET", "/metrics").await).to_string()
}

fn assert_metric(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no line {line:?} in /metrics:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_asks_postfix_caches_answers_and_tempfails_when_down() {
    let dir = tempfile::tempdir().unwrap();
    // Postfix's daemons (user postfix) and its virtual agent (user nobody) traverse the temp dir.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let pf = postfix::Postfix::start(
        &dir.path().join("postfix"),
        &["old.example"],
        &[("alice@old.example", "alice/")],
    );
    let pf_port = pf.port;
    // Nothing listens here: connection refused.
    let closed = free_port();
    let gw = Gateway::start_config(|smtp, admin, state| {
        let rest = format!(
            r#"# The probe asks what delivery would: alice@example.com -> alice@old.example.
[targets.old]
address = "127.0.0.1:{pf_port}"
tls = "none"
rcpt_domain = "old.example"
[targets.down]
address = "127.0.0.1:{closed}"
tls = "none"

[[routing.rule]]
name = "down"
recipients = ["@down.example.com"]
deliver = ["down"]
verify_recipients = "probe"
[[routing.rule]]
name = "all"
recipients = ["@example.com"]
deliver = ["old"]
verify_recipients = "probe"
"#
        );
        config(
            smtp,
            admin,
            state,
            r#""example.com", "down.example.com""#,
            &rest,
        )
    });

    let mut c = transaction(gw.smtp).await;
    let r = rcpt(&mut c, "alice@example.com").await;
    assert!(r.is(250, "2.1.5"), "known user: {r:?}\n{}", gw.log());
    let r = rcpt(&mut c, "nobody@example.com").await;
    assert!(r.is(550, "5.1.1"), "unknown user: {r:?}\n{}", gw.log());
    assert!(r.text.contains("unknown user"), "{r:?}");
    // Asked again (another session): answered from the cache, Postfix is not asked again.
    let mut c2 = transaction(gw.smtp).await;
    let r = rcpt(&mut c2, "nobody@example.com").await;
    assert!(r.is(550, "5.1.1"), "cached unknown: {r:?}");
    // Local parts compare case-insensitively (ignore_local_case): the same cache entry.
    let r = rcpt(&mut c2, "NoBody@Example.COM").await;
    assert!(r.is(550, "5.1.1"), "cached unknown: {r:?}");
    // Eight sessions asking about one new unknown address at once: one probe in all (the
    // first one's, shared while in flight, then cached).
    let asks = (0..8).map(|_| async {
        let mut c = transaction(gw.smtp).await;
        rcpt(&mut c, "ghost@example.com").await
    });
    for r in futures_util::future::join_all(asks).await {
        assert!(r.is(550, "5.1.1"), "ghost: {r:?}");
    }
    let m = metrics(gw.admin).await;
    assert_metric(&m, r#"cutover_verify_probes_total{result="known"} 1"#);
    assert_metric(&m, r#"cutover_verify_probes_total{result="unknown"} 2"#);
    assert_metric(&m, r#"cutover_verify_cache_hits_total{result="unknown"} 9"#);
    // Postfix saw exactly one RCPT for nobody (postlogd writes asynchronously: wait for it).
    let rejects = |log: &str, who: &str| {
        log.lines()
            .filter(|l| l.contains("reject: RCPT") && l.contains(&format!("<{who}@old.example>")))
            .count()
    };
    let t = Instant::now();
    while rejects(&pf.maillog_text(), "ghost") == 0 || rejects(&pf.maillog_text(), "nobody") == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no reject in the maillog:\n{}",
            pf.maillog_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = pf.maillog_text();
    assert_eq!(rejects(&log, "nobody"), 1, "one probe for nobody:\n{log}");
    assert_eq!(rejects(&log, "ghost"), 1, "one probe for ghost:\n{log}");
    assert!(
        log.contains("User unknown in virtual mailbox table"),
        "{log}"
    );

    // The transaction goes on with the accepted recipient.
    assert_eq!(c.cmd("RSET").await.code, 250);

    // A target that refuses connections: 450 4.1.1, and not cached (asked again).
    let r = rcpt(&mut c2, "x@down.example.com").await;
    assert!(r.is(450, "4.1.1"), "target down: {r:?}");
    let r = rcpt(&mut c2, "x@down.example.com").await;
    assert!(r.is(450, "4.1.1"), "still down: {r:?}");
    let m = metrics(gw.admin).await;
    assert_metric(&m, r#"cutover_verify_probes_total{result="tempfail"} 2"#);

    // Postfix stopped: a new address cannot be verified (450), a known one still comes from
    // the cache (250).
    drop(pf);
    let r = rcpt(&mut c2, "newcomer@example.com").await;
    assert!(r.is(450, "4.1.1"), "downstream stopped: {r:?}");
    let r = rcpt(&mut c2, "alice@example.com").await;
    assert!(r.is(250, "2.1.5"), "cached known: {r:?}");
    assert_eq!(c2.cmd("QUIT").await.code, 221);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_known_list_and_sighup_reload() {
    let gw = Gateway::start_config(|smtp, admin, state| {
        let dir = state.parent().unwrap();
        std::fs::write(dir.join("known.txt"), "# wave 1\nalice@example.com\n").unwrap();
        let rest = r#"[targets.old]
address = "127.0.0.1:9"
tls = "none"

[[routing.rule]]
name = "all"
recipients = ["@example.com"]
deliver = ["old"]
recipients_known = "known.txt"
"#;
        config(smtp, admin, state, r#""example.com""#, rest)
    });
    let known = gw.dir.path().join("known.txt");

    let mut c = transaction(gw.smtp).await;
    for ok in ["alice@example.com", "Alice+news@EXAMPLE.com"] {
        let r = rcpt(&mut c, ok).await;
        assert!(r.is(250, "2.1.5"), "{ok}: {r:?}");
    }
    let r = rcpt(&mut c, "bob@example.com").await;
    assert!(r.is(550, "5.1.1"), "unlisted: {r:?}");
    assert_eq!(c.cmd("QUIT").await.code, 221);
    let m = metrics(gw.admin).await;
    assert_metric(&m, r#"cutover_verify_list_total{result="unknown"} 1"#);

    // bob is added; SIGHUP re-reads the file.
    std::fs::write(&known, "alice@example.com\nbob@example.com\n").unwrap();
    gw.signal(libc::SIGHUP);
    let t = Instant::now();
    loop {
        let mut c = transaction(gw.smtp).await;
        let r = rcpt(&mut c, "bob@example.com").await;
        if r.is(250, "2.1.5") {
            break;
        }
        assert!(r.is(550, "5.1.1"), "{r:?}");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "bob still refused after SIGHUP: {}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The file gone: the reload fails (logged, naming file and key) and the running list stays.
    std::fs::remove_file(&known).unwrap();
    gw.signal(libc::SIGHUP);
    let t = Instant::now();
    while !gw.log().contains("reload failed") {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gw.log()
            .contains("routing.rule[0].recipients_known: cannot read"),
        "{}",
        gw.log()
    );
    let mut c = transaction(gw.smtp).await;
    let r = rcpt(&mut c, "bob@example.com").await;
    assert!(r.is(250, "2.1.5"), "old list kept: {r:?}");
    let r = rcpt(&mut c, "carol@example.com").await;
    assert!(r.is(550, "5.1.1"), "{r:?}");
}
