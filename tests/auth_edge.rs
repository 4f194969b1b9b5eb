//! Authenticated edge (issue 13), end to end through a real `cutover serve`: SPF (MAIL FROM and
//! HELO), DKIM, DMARC and ARC at intake, the one `Authentication-Results:` header, the `[auth]`
//! policies (`dmarc = "reject"`, `spoof_protection`), forged A-R removal, and ARC sealing per
//! target, with `cutover arc key` printing the record to publish.
//!
//! Everything the gateway looks up comes from a real dnsmasq on a loopback port (SPF, DKIM keys,
//! `_dmarc` policies, ARC selectors, all under `.test`). Messages are signed, and what the sink
//! receives is verified, by an independent implementation (dkimpy, tests/support/dkimpy.rs);
//! keys and their DNS values come from openssl. The client connects from 127.0.0.1, which is NOT
//! in `trusted_networks` (127.0.0.2 is): SPF records decide pass or fail by listing 127.0.0.1 or
//! not. Results are matched as `method=result` in the A-R items, not as whole strings.

#[path = "support/common.rs"]
mod common;
#[path = "support/dkimpy.rs"]
mod dkimpy;
#[path = "support/dnsmasq.rs"]
mod dnsmasq;
#[path = "support/fake_smtp.rs"]
mod fake_smtp;
#[path = "support/queueops.rs"]
mod queueops;
#[path = "support/smtp.rs"]
mod support;

use dkimpy::{Algo, Key, txt_record};
use fake_smtp::{FakeSmtp, Received, Script};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{Client, Gateway, Reply, send_message};

/// The gateway's hostname, hence its authserv-id.
const HOST: &str = "mx.test";
/// The accepted (own) domain.
const OWN: &str = "example.test";
/// A recipient routed to target `new` (the default route).
const RCPT: &str = "rcpt@example.test";
/// Routed to both targets: `old` (never sealed) and `new`.
const DUAL: &str = "dual@example.test";
/// ARC selector of the gateway's key.
const ARC_SELECTOR: &str = "arc1";

/// DNS, keys and the delivery sink shared by one test.
struct World {
    dir: tempfile::TempDir,
    dns: dnsmasq::Dnsmasq,
    /// DKIM key of `dkim.test` (selector `sel1`).
    dkim: Key,
    /// Ed25519 DKIM key of `dkim.test` (selector `ed1`).
    dkim_ed: Key,
    /// The foreign forwarder's ARC key (`seal._domainkey.forwarder.test`).
    fwd: Key,
    /// The gateway's ARC key (`arc1._domainkey.example.test`).
    arc: Key,
    /// Both targets deliver here.
    sink: FakeSmtp,
}

/// SPF records: `127.0.0.1` listed (pass) or not (fail, softfail); `spf-none.test` has none.
const SPF_RECORDS: &[(&str, &str)] = &[
    ("spf-pass.test", "v=spf1 ip4:127.0.0.1 -all"),
    ("spf-fail.test", "v=spf1 ip4:192.0.2.1 -all"),
    ("spf-soft.test", "v=spf1 ip4:192.0.2.1 ~all"),
    ("helo-pass.test", "v=spf1 ip4:127.0.0.1 -all"),
    ("helo-fail.test", "v=spf1 ip4:192.0.2.1 -all"),
    ("dkim.test", "v=spf1 ip4:192.0.2.1 -all"),
    ("reject.test", "v=spf1 ip4:192.0.2.1 -all"),
    ("quarantine.test", "v=spf1 ip4:192.0.2.1 -all"),
    ("example.test", "v=spf1 ip4:192.0.2.1 -all"),
];

/// DMARC policies: `dkim.test` and `reject.test` p=reject, `quarantine.test` p=quarantine.
const DMARC_RECORDS: &[(&str, &str)] = &[
    ("_dmarc.dkim.test", "v=DMARC1; p=reject"),
    ("_dmarc.reject.test", "v=DMARC1; p=reject"),
    ("_dmarc.quarantine.test", "v=DMARC1; p=quarantine"),
];

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let dkim = Key::generate(dir.path(), "dkim", Algo::Rsa);
    let dkim_ed = Key::generate(dir.path(), "dkim-ed", Algo::Ed25519);
    let fwd = Key::generate(dir.path(), "fwd", Algo::Rsa);
    let arc = Key::generate(dir.path(), "arc", Algo::Rsa);
    let mut args: Vec<String> = vec!["--host-record=ready.test,127.0.0.1".into()];
    for (name, value) in SPF_RECORDS.iter().chain(DMARC_RECORDS) {
        args.push(txt_record(name, value));
    }
    args.push(dkim.dnsmasq_arg("sel1", "dkim.test"));
    args.push(dkim_ed.dnsmasq_arg("ed1", "dkim.test"));
    args.push(fwd.dnsmasq_arg("seal", "forwarder.test"));
    args.push(arc.dnsmasq_arg(ARC_SELECTOR, OWN));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let dns = dnsmasq::dnsmasq(&refs);
    dnsmasq::resolver(&dns).await;
    let sink = FakeSmtp::start(Script::default()).await;
    World {
        dir,
        dns,
        dkim,
        dkim_ed,
        fwd,
        arc,
        sink,
    }
}

/// The `arc = {…}` line of a target for `key` under `selector`.
fn arc_line_for(key: &Key, selector: &str) -> String {
    format!(
        "arc = {{ domain = \"{OWN}\", selector = \"{selector}\", private_key_file = \"{}\" }}",
        key.pem_path.display()
    )
}

/// The `arc = {…}` line of target `new` for `key` (selector [`ARC_SELECTOR`]).
fn arc_line(key: &Key) -> String {
    arc_line_for(key, ARC_SELECTOR)
}

/// What a test's configuration varies: the DNS server, the target address (both targets),
/// the body of `[auth]` (none at all when empty: the defaults, verify and stamp) and the `arc`
/// lines (or empty) of targets `old` and `new`.
struct Cfg<'a> {
    dns: SocketAddr,
    target: SocketAddr,
    auth: &'a str,
    old_arc: &'a str,
    new_arc: &'a str,
}

impl Cfg<'_> {
    /// The whole `cutover.toml` (see [`Gateway::configure`]).
    fn text(&self, smtp: SocketAddr, admin: SocketAddr, state: &std::path::Path) -> String {
        let Cfg {
            dns,
            target,
            auth,
            old_arc,
            new_arc,
        } = self;
        let auth = if auth.is_empty() {
            String::new()
        } else {
            format!("[auth]\n{auth}\n")
        };
        format!(
            r#"[gateway]
hostname = "{HOST}"
listen = ["{smtp}"]
state_dir = "{state}"
accept_domains = ["{OWN}"]
trusted_networks = ["127.0.0.2/32"]
min_free_space = "1MiB"

[dns]
servers = ["{dns}"]

{auth}

[targets.old]
address = "{target}"
tls = "none"
{old_arc}
[targets.new]
address = "{target}"
tls = "none"
{new_arc}

[routing]
default = ["new"]
[[routing.rule]]
name = "dual"
recipients = ["{DUAL}"]
deliver = ["old", "new"]

[admin]
listen = "{admin}"
"#,
            state = state.display(),
        )
    }
}

/// A gateway asking `dns` for everything, with `auth` as the body of `[auth]` and `arc` (a
/// line, or empty) on target `new`. Both targets deliver to the world's sink.
fn gateway_with_dns(w: &World, dns: SocketAddr, auth: &str, arc: &str) -> Gateway {
    let cfg = Cfg {
        dns,
        target: w.sink.addr,
        auth,
        old_arc: "",
        new_arc: arc,
    };
    Gateway::start_config(|smtp, admin, state| cfg.text(smtp, admin, state))
}

/// [`gateway_with_dns`] on the world's dnsmasq.
fn gateway(w: &World, auth: &str, arc: &str) -> Gateway {
    gateway_with_dns(w, w.dns.addr, auth, arc)
}

/// One transaction from `ip` after `EHLO helo`: the reply to the end of DATA (or the first
/// refusal).
async fn submit(
    g: &Gateway,
    ip: &str,
    helo: &str,
    from: &str,
    rcpts: &[&str],
    msg: &[u8],
) -> Reply {
    let mut c = Client::connect_from(ip, g.smtp).await;
    assert_eq!(c.read_reply().await.code, 220);
    let r = c.cmd(&format!("EHLO {helo}")).await;
    assert_eq!(r.code, 250, "EHLO: {r:?}");
    let r = send_message(&mut c, from, rcpts, msg).await;
    c.cmd("QUIT").await;
    r
}

/// [`submit`] from 127.0.0.1 (untrusted), asserting acceptance.
async fn accept(g: &Gateway, helo: &str, from: &str, rcpts: &[&str], msg: &[u8]) {
    let r = submit(g, "127.0.0.1", helo, from, rcpts, msg).await;
    assert!(r.is(250, "2.0.0"), "not accepted: {r:?}\n{}", g.log());
}

/// Wait (bounded: 30 s) until the sink holds at least `n` transactions; all of them.
async fn delivered(w: &World, g: &Gateway, n: usize) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = w.sink.received();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} deliveries after 30 s: {}",
            got.len(),
            g.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait (bounded: 30 s) until the sink's transactions name at least `n` recipients in all.
async fn delivered_rcpts(w: &World, g: &Gateway, n: usize) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = w.sink.received();
        if got.iter().map(|r| r.rcpts.len()).sum::<usize>() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "not all of {n} recipients delivered after 30 s: {got:?}\n{}",
            g.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A message with the given envelope-independent header From and subject.
fn message(from: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: Sender <{from}>\r\n\
         To: <{RCPT}>\r\n\
         Subject: {subject}\r\n\
         Date: Mon, 30 Nov 2026 12:00:00 +0000\r\n\
         Message-ID: <{subject}@auth-edge.test>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         Body of {subject}.\r\n\
         It has two lines.\r\n"
    )
    .into_bytes()
}

/// The header fields of `msg` in order: (name, raw bytes of the field, folded lines and CRLF
/// included).
fn fields(msg: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut rest = msg;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let line = &rest[..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            if let Some(last) = out.last_mut() {
                last.1.extend_from_slice(line);
            }
        } else {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let name = String::from_utf8_lossy(name).trim().to_string();
            out.push((name, line.to_vec()));
        }
        rest = &rest[end..];
    }
    out
}

/// The unfolded value of a raw field.
fn value(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let v = s.split_once(':').map_or("", |(_, v)| v);
    v.replace("\r\n", "").replace('\n', "").trim().to_string()
}

/// A parsed `Authentication-Results` value: authserv-id and items (method, result, item text).
#[derive(Debug)]
struct Ar {
    authserv: String,
    items: Vec<(String, String, String)>,
}

impl Ar {
    fn parse(v: &str) -> Ar {
        // Split at ';' outside comments.
        let mut parts = vec![String::new()];
        let mut depth = 0usize;
        for c in v.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                ';' if depth == 0 => {
                    parts.push(String::new());
                    continue;
                }
                _ => {}
            }
            parts.last_mut().unwrap().push(c);
        }
        let re = regex::Regex::new(r"^([A-Za-z0-9_-]+)\s*=\s*([A-Za-z]+)").unwrap();
        let authserv = parts[0].split_whitespace().next().unwrap_or("").to_string();
        let items = parts[1..]
            .iter()
            .filter_map(|p| {
                let p = p.trim();
                let c = re.captures(p)?;
                Some((c[1].to_lowercase(), c[2].to_lowercase(), p.to_string()))
            })
            .collect();
        Ar { authserv, items }
    }

    /// The result of the first `method` item whose text contains `with` ("" for any).
    fn result(&self, method: &str, with: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|(m, _, text)| m == method && text.contains(with))
            .map(|(_, r, _)| r.as_str())
    }

    fn spf_mailfrom(&self) -> Option<&str> {
        self.result("spf", "smtp.mailfrom=")
    }

    fn spf_helo(&self) -> Option<&str> {
        self.result("spf", "smtp.helo=")
    }
}

#[test]
fn ar_parser_reads_mail_auth_items() {
    // The layout mail-auth writes (common/auth_results.rs), folded as a header value.
    let raw = b"Authentication-Results: mx.test;\r\n\tdkim=pass header.d=example.org header.s=sel;\r\n\
        \tspf=pass (mx.test: domain of a@example.org designates 127.0.0.1 as permitted sender; ok)\r\n\
        \t smtp.mailfrom=a@example.org;\r\n\tspf=none (no SPF records) smtp.helo=helo.example.org;\r\n\
        \tarc=none;\r\n\tdmarc=fail (policy not aligned) header.from=example.com policy.dmarc=quarantine\r\n";
    let f = fields(raw);
    assert_eq!(f.len(), 1);
    let ar = Ar::parse(&value(&f[0].1));
    assert_eq!(ar.authserv, "mx.test");
    assert_eq!(ar.items.len(), 5, "{ar:?}");
    assert_eq!(ar.spf_mailfrom(), Some("pass"));
    assert_eq!(ar.spf_helo(), Some("none"));
    assert_eq!(ar.result("dkim", "header.s=sel"), Some("pass"));
    assert_eq!(ar.result("arc", ""), Some("none"));
    assert_eq!(ar.result("dmarc", "quarantine"), Some("fail"));
    assert_eq!(ar.result("dmarc", "reject"), None);
}

/// The fields cutover put above the original message: everything before the first field of
/// `original` (the original must start the delivered copy's tail byte for byte).
fn added_fields(copy: &[u8], original: &[u8]) -> Vec<(String, Vec<u8>)> {
    assert!(
        copy.ends_with(original),
        "the message was not kept byte-identical:\n--- delivered\n{}\n--- sent\n{}",
        String::from_utf8_lossy(copy),
        String::from_utf8_lossy(original)
    );
    fields(&copy[..copy.len() - original.len()])
}

/// The gateway's A-R on a copy without ARC: the copy must be exactly A-R, `Received:`,
/// `X-Cutover-Loop:` and then `original` byte for byte.
fn our_ar(copy: &[u8], original: &[u8]) -> Ar {
    let added = added_fields(copy, original);
    let names: Vec<&str> = added.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["Authentication-Results", "Received", "X-Cutover-Loop"],
        "{}",
        String::from_utf8_lossy(copy)
    );
    let ar = Ar::parse(&value(&added[0].1));
    assert_eq!(ar.authserv, HOST, "{ar:?}");
    ar
}

/// Send `msg` from 127.0.0.1 to [`RCPT`] and return the one delivered copy and the A-R on it.
async fn through(w: &World, g: &Gateway, helo: &str, from: &str, msg: &[u8]) -> (Vec<u8>, Ar) {
    let before = w.sink.received().len();
    accept(g, helo, from, &[RCPT], msg).await;
    let got = delivered(w, g, before + 1).await;
    let copy = got[before].body.clone();
    let ar = our_ar(&copy, msg);
    (copy, ar)
}

/// SPF of MAIL FROM `alice@<domain>` after `EHLO <helo>`, from 127.0.0.1: the A-R, after
/// checking the MAIL FROM and HELO results.
async fn spf_case(domain: &str, helo: &str, mail_from: &str, helo_result: &str) -> Ar {
    let w = world().await;
    let g = gateway(&w, "", "");
    let from = format!("alice@{domain}");
    let msg = message(&from, &format!("spf-{domain}"));
    let ar = through(&w, &g, helo, &from, &msg).await.1;
    assert_eq!(ar.spf_mailfrom(), Some(mail_from), "MAIL FROM: {ar:?}");
    assert_eq!(ar.spf_helo(), Some(helo_result), "HELO: {ar:?}");
    ar
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_pass_for_a_listed_client_on_mail_from_and_helo() {
    let ar = spf_case("spf-pass.test", "helo-pass.test", "pass", "pass").await;
    assert!(
        ar.items
            .iter()
            .any(|(m, _, t)| m == "spf" && t.contains("smtp.mailfrom=alice@spf-pass.test")),
        "{ar:?}"
    );
    // Unsigned: `dkim=none`, or no dkim item at all (what mail-auth writes for no signature).
    assert!(
        matches!(ar.result("dkim", ""), None | Some("none")),
        "{ar:?}"
    );
    assert_eq!(ar.result("arc", ""), Some("none"), "{ar:?}");
    // No _dmarc record for spf-pass.test.
    assert_eq!(ar.result("dmarc", ""), Some("none"), "{ar:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_fail_for_an_unlisted_client() {
    spf_case("spf-fail.test", "helo-fail.test", "fail", "fail").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_softfail_on_tilde_all() {
    spf_case("spf-soft.test", "helo-pass.test", "softfail", "pass").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_none_without_a_record() {
    spf_case("spf-none.test", "nospf.test", "none", "none").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_temperror_when_dns_does_not_answer_and_the_session_goes_on() {
    let w = world().await;
    // A UDP port where nothing listens (and no TCP either).
    let silent: SocketAddr = format!("127.0.0.1:{}", dnsmasq::free_udp_port())
        .parse()
        .unwrap();
    let g = gateway_with_dns(&w, silent, "time_budget = \"3s\"", "");
    let from = "alice@spf-pass.test";
    let msg = message(from, "temperror");
    let started = Instant::now();
    // Each reply within the client's 10 s step; the whole session well inside 30 s.
    accept(&g, "helo-pass.test", from, &[RCPT], &msg).await;
    let took = started.elapsed();
    eprintln!("session with an unanswering DNS took {took:?}");
    assert!(
        took < Duration::from_secs(30),
        "session took {took:?}: {}",
        g.log()
    );
    let got = delivered(&w, &g, 1).await;
    let ar = our_ar(&got[0].body, &msg);
    assert_eq!(ar.spf_mailfrom(), Some("temperror"), "{ar:?}");
}

/// A message From `dkim.test` (SPF fails there, `p=reject`), signed by dkimpy with `key`.
fn dkim_signed(key: &Key, selector: &str, subject: &str) -> Vec<u8> {
    dkimpy::dkim_sign(
        &message("news@dkim.test", subject),
        "dkim.test",
        selector,
        key,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_pass_aligns_dmarc_and_still_verifies_after_relaying() {
    let w = world().await;
    let g = gateway(&w, "dmarc = \"reject\"", "");
    for (key, selector) in [(&w.dkim, "sel1"), (&w.dkim_ed, "ed1")] {
        let msg = dkim_signed(key, selector, &format!("dkim-{selector}"));
        assert!(dkimpy::dkim_verify(&msg, w.dns.addr), "fixture: unsigned?");
        let (copy, ar) = through(&w, &g, "helo-fail.test", "news@dkim.test", &msg).await;
        assert_eq!(ar.spf_mailfrom(), Some("fail"), "{ar:?}");
        assert_eq!(ar.result("dkim", ""), Some("pass"), "{selector}: {ar:?}");
        assert!(
            // mail-auth names the signer by i= when the signature has one, else by d=.
            ar.items.iter().any(|(m, _, t)| m == "dkim"
                && (t.contains("header.d=dkim.test") || t.contains("header.i=@dkim.test"))
                && t.contains(&format!("header.s={selector}"))),
            "{ar:?}"
        );
        // DKIM aligned with From: DMARC passes although SPF failed under p=reject.
        assert_eq!(ar.result("dmarc", ""), Some("pass"), "{ar:?}");
        let (ok, why) = dkimpy::dkim_verify_detail(&copy, w.dns.addr);
        assert!(ok, "{selector}: dkimpy fails the relayed copy: {why}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_fail_on_a_changed_signed_header() {
    let w = world().await;
    let g = gateway(&w, "", "");
    // A changed signed header fails the signature (mail-auth reports a changed body, whose hash
    // no longer matches, as dkim=neutral instead).
    let signed = dkim_signed(&w.dkim, "sel1", "dkim-changed");
    let text = String::from_utf8(signed).unwrap();
    let msg = text
        .replace("Subject: dkim-changed", "Subject: dkim-CHANGED")
        .into_bytes();
    assert!(
        !dkimpy::dkim_verify(&msg, w.dns.addr),
        "fixture: still verifies"
    );
    let (_, ar) = through(&w, &g, "helo-fail.test", "news@dkim.test", &msg).await;
    assert_eq!(ar.result("dkim", ""), Some("fail"), "{ar:?}");
    // dmarc = "off" (the default): the p=reject failure is only reported.
    assert_eq!(ar.result("dmarc", ""), Some("fail"), "{ar:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_reject_is_honoured_only_when_configured() {
    let w = world().await;
    let from = "ceo@reject.test";
    let msg = message(from, "dmarc-reject");

    let strict = gateway(&w, "dmarc = \"reject\"", "");
    let r = submit(&strict, "127.0.0.1", "helo-fail.test", from, &[RCPT], &msg).await;
    assert!(r.is(550, "5.7.1"), "p=reject failure not refused: {r:?}");
    assert!(
        strict.queue_list().as_array().unwrap().is_empty(),
        "a refused message was queued"
    );

    // The decision is on the log line and in the metrics.
    let log = strict.log();
    assert!(
        log.lines()
            .any(|l| l.contains("refused by edge authentication")
                && l.contains("auth=spf=fail dkim=none dmarc=fail")),
        "{log}"
    );
    let metrics = queueops::parse_metrics(queueops::body_of(
        &queueops::http(strict.admin, "GET", "/metrics").await,
    ));
    for (series, want) in [
        ("cutover_intake_rejections_total{reason=\"dmarc\"}", 1.0),
        (
            "cutover_auth_results_total{method=\"dmarc\",result=\"fail\"}",
            1.0,
        ),
        (
            "cutover_auth_results_total{method=\"spf\",result=\"fail\"}",
            1.0,
        ),
    ] {
        assert_eq!(metrics.get(series), Some(&want), "{series}: {metrics:#?}");
    }

    for auth in ["", "dmarc = \"off\""] {
        let lax = gateway(&w, auth, "");
        let (_, ar) = through(&w, &lax, "helo-fail.test", from, &msg).await;
        let log = lax.log();
        assert!(
            log.lines()
                .any(|l| l.contains(" accepted ")
                    && l.contains("auth=\"spf=fail dkim=none dmarc=fail")),
            "no auth= on the acceptance line: {log}"
        );
        assert_eq!(ar.spf_mailfrom(), Some("fail"), "{ar:?}");
        assert_eq!(
            ar.result("dmarc", ""),
            Some("fail"),
            "[auth] {auth:?}: {ar:?}"
        );
    }
    assert_eq!(
        w.sink.received().len(),
        2,
        "the refused message was delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_quarantine_is_accepted_with_a_header() {
    let w = world().await;
    let g = gateway(&w, "dmarc = \"reject\"", "");
    let from = "news@quarantine.test";
    let msg = message(from, "dmarc-quarantine");
    accept(&g, "helo-fail.test", from, &[RCPT], &msg).await;
    let copy = delivered(&w, &g, 1).await[0].body.clone();
    let added = added_fields(&copy, &msg);
    let quarantine: Vec<_> = added
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("X-Cutover-Quarantine"))
        .collect();
    assert_eq!(quarantine.len(), 1, "{}", String::from_utf8_lossy(&copy));
    let ar = added
        .iter()
        .find(|(n, _)| n == "Authentication-Results")
        .map(|(_, raw)| Ar::parse(&value(raw)))
        .expect("no A-R");
    assert_eq!(ar.result("dmarc", ""), Some("fail"), "{ar:?}");
    assert!(
        ar.items
            .iter()
            .any(|(m, _, t)| m == "dmarc" && t.contains("quarantine")),
        "{ar:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_own_domain_is_rejected_only_with_spoof_protection() {
    let w = world().await;
    // Own domain in MAIL FROM and From; example.test's SPF does not list 127.0.0.1; no DKIM.
    let both = message("ceo@example.test", "spoof-both");
    // Own domain only in the header From.
    let header_only = message("ceo@example.test", "spoof-header");

    // A foreign domain failing SPF (no DMARC record) is not a spoof of ours.
    let foreign = message("alice@spf-fail.test", "not-ours");

    let guarded = gateway(&w, "spoof_protection = true", "");
    let cases: [(&str, &str, &[u8], u16, &str); 4] = [
        (
            "127.0.0.1",
            "ceo@example.test",
            &both,
            550,
            "envelope + header From",
        ),
        (
            "127.0.0.1",
            "x@spf-fail.test",
            &header_only,
            550,
            "header From only",
        ),
        // From the trusted network the same mail is not evaluated, so not refused.
        (
            "127.0.0.2",
            "ceo@example.test",
            &both,
            250,
            "trusted client",
        ),
        (
            "127.0.0.1",
            "alice@spf-fail.test",
            &foreign,
            250,
            "foreign domain",
        ),
    ];
    for (ip, mail_from, msg, code, what) in cases {
        let r = submit(&guarded, ip, "helo-fail.test", mail_from, &[RCPT], msg).await;
        let esc = if code == 550 { "5.7.1" } else { "2.0.0" };
        assert!(r.is(code, esc), "{what}: expected {code} {esc}, got {r:?}");
    }
    // The two accepted messages reach the sink before the next gateway's copy is looked for.
    delivered(&w, &guarded, 2).await;

    let open = gateway(&w, "", "");
    let (_, ar) = through(&w, &open, "helo-fail.test", "ceo@example.test", &both).await;
    assert_eq!(ar.spf_mailfrom(), Some("fail"), "{ar:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_clients_are_not_evaluated() {
    let w = world().await;
    let g = gateway(&w, "", "");
    let from = "alice@spf-fail.test";
    let msg = message(from, "trusted");
    let r = submit(&g, "127.0.0.2", "helo-fail.test", from, &[RCPT], &msg).await;
    assert!(r.is(250, "2.0.0"), "{r:?}");
    let copy = delivered(&w, &g, 1).await[0].body.clone();
    for (name, raw) in added_fields(&copy, &msg) {
        if name != "Authentication-Results" {
            continue;
        }
        let ar = Ar::parse(&value(&raw));
        for method in ["spf", "dkim", "dmarc"] {
            assert_eq!(
                ar.result(method, ""),
                None,
                "trusted client evaluated: {ar:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_authentication_results_are_removed_and_others_kept_byte_identical() {
    let w = world().await;
    let g = gateway(&w, "", "");
    let forged = "Authentication-Results: MX.Test; spf=pass smtp.mailfrom=ceo@example.test;\r\n\
                  \tdkim=pass header.d=example.test\r\n";
    let forged_bare = "Authentication-Results:mx.test;\r\n dmarc=pass header.from=example.test\r\n";
    let other = "Authentication-Results:  relay.other.test ;\r\n\
                 \t  spf=fail  (odd   spacing kept) smtp.mailfrom=alice@spf-pass.test\r\n";
    let head = "From: Alice <alice@spf-pass.test>\r\n";
    let tail = "To: <rcpt@example.test>\r\n\
                Subject: forged A-R\r\n\
                Message-ID: <forged@auth-edge.test>\r\n\
                \r\n\
                Authentication-Results: mx.test; in the body, not a header\r\n";
    let sent = format!("{head}{forged}{other}{forged_bare}{tail}").into_bytes();
    let kept = format!("{head}{other}{tail}").into_bytes();
    accept(&g, "helo-pass.test", "alice@spf-pass.test", &[RCPT], &sent).await;
    let copy = delivered(&w, &g, 1).await[0].body.clone();
    let ar = our_ar(&copy, &kept);
    assert_eq!(ar.spf_mailfrom(), Some("pass"), "{ar:?}");
    let ours = fields(&copy)
        .into_iter()
        .filter(|(n, raw)| {
            n.eq_ignore_ascii_case("Authentication-Results")
                && value(raw).to_lowercase().starts_with("mx.test")
        })
        .count();
    assert_eq!(ours, 1, "{}", String::from_utf8_lossy(&copy));
}

/// The ARC headers on top of a sealed copy: (instance, cv) of the top set, and the number of
/// `ARC-Seal` fields.
fn top_arc(copy: &[u8]) -> (String, String, usize) {
    let f = fields(copy);
    let names: Vec<&str> = f.iter().take(3).map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "ARC-Seal",
            "ARC-Message-Signature",
            "ARC-Authentication-Results"
        ],
        "{}",
        String::from_utf8_lossy(copy)
    );
    let seal = value(&f[0].1);
    let tag = |t: &str| {
        seal.split(';')
            .map(str::trim)
            .find_map(|kv| kv.strip_prefix(&format!("{t}=")))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let aar = value(&f[2].1);
    assert!(
        aar.contains(&format!("{HOST};")),
        "AAR without our authserv-id: {aar}"
    );
    assert_eq!(tag("d"), OWN, "{seal}");
    assert_eq!(tag("s"), ARC_SELECTOR, "{seal}");
    let seals = f
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("ARC-Seal"))
        .count();
    (tag("i"), tag("cv"), seals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arc_seal_without_a_chain_verifies_with_dkimpy() {
    let w = world().await;
    let g = gateway(&w, "", &arc_line(&w.arc));
    let msg = dkim_signed(&w.dkim, "sel1", "arc-first");
    accept(&g, "helo-pass.test", "news@dkim.test", &[RCPT], &msg).await;
    let copy = delivered(&w, &g, 1).await[0].body.clone();
    let (i, cv, seals) = top_arc(&copy);
    assert_eq!((i.as_str(), cv.as_str(), seals), ("1", "none", 1));
    // Under the seal: our A-R, Received, loop header, then the message byte for byte.
    let added = added_fields(&copy, &msg);
    let names: Vec<&str> = added.iter().skip(3).map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["Authentication-Results", "Received", "X-Cutover-Loop"]
    );
    let (cv, why) = dkimpy::arc_verify(&copy, w.dns.addr);
    assert_eq!(
        cv,
        "pass",
        "dkimpy: {why}\n{}",
        String::from_utf8_lossy(&copy)
    );
    let (ok, why) = dkimpy::dkim_verify_detail(&copy, w.dns.addr);
    assert!(ok, "sealing broke the original DKIM signature: {why}");
    // The seal covers what this hop added: a changed loop header or a changed cutover
    // `Received:` fails the chain.
    let text = String::from_utf8(copy).unwrap();
    for (from, to) in [
        ("X-Cutover-Loop: mx.test", "X-Cutover-Loop: mx.tesT"),
        ("by mx.test (cutover)", "by mx.test (cutovr)"),
    ] {
        assert!(text.contains(from), "{from:?} not in\n{text}");
        let changed = text.replacen(from, to, 1);
        let (cv, why) = dkimpy::arc_verify(changed.as_bytes(), w.dns.addr);
        assert_eq!(cv, "fail", "seal survived {from:?} -> {to:?}: {why}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arc_seal_extends_a_dkimpy_chain() {
    let w = world().await;
    let g = gateway(&w, "", &arc_line(&w.arc));
    let signed = dkim_signed(&w.dkim, "sel1", "arc-second");
    let msg = dkimpy::arc_sign(&signed, "forwarder.test", "seal", &w.fwd, "fwd.test");
    assert_eq!(
        dkimpy::arc_verify(&msg, w.dns.addr).0,
        "pass",
        "fixture chain"
    );
    accept(&g, "helo-pass.test", "news@dkim.test", &[RCPT], &msg).await;
    let copy = delivered(&w, &g, 1).await[0].body.clone();
    let (i, cv, seals) = top_arc(&copy);
    assert_eq!((i.as_str(), cv.as_str(), seals), ("2", "pass", 2));
    let added = added_fields(&copy, &msg);
    let ar = Ar::parse(&value(&added[3].1));
    assert_eq!(ar.authserv, HOST, "{ar:?}");
    assert_eq!(ar.result("arc", ""), Some("pass"), "{ar:?}");
    let (cv, why) = dkimpy::arc_verify(&copy, w.dns.addr);
    assert_eq!(
        cv,
        "pass",
        "dkimpy: {why}\n{}",
        String::from_utf8_lossy(&copy)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arc_seal_reports_a_broken_incoming_chain_as_cv_fail() {
    let w = world().await;
    let g = gateway(&w, "", &arc_line(&w.arc));
    let signed = message("alice@spf-pass.test", "arc-broken");
    let sealed = dkimpy::arc_sign(&signed, "forwarder.test", "seal", &w.fwd, "fwd.test");
    // Changed after the forwarder sealed it: its ARC-Message-Signature no longer verifies.
    let msg = String::from_utf8(sealed)
        .unwrap()
        .replace("It has two lines.", "It has 2 lines.")
        .into_bytes();
    assert_eq!(dkimpy::arc_verify(&msg, w.dns.addr).0, "fail", "fixture");
    accept(&g, "helo-pass.test", "alice@spf-pass.test", &[RCPT], &msg).await;
    let copy = delivered(&w, &g, 1).await[0].body.clone();
    let (i, cv, _) = top_arc(&copy);
    assert_eq!((i.as_str(), cv.as_str()), ("2", "fail"));
    let added = added_fields(&copy, &msg);
    let ar = Ar::parse(&value(&added[3].1));
    // mail-auth reports a body hash mismatch as neutral, other failures as fail.
    assert!(
        matches!(ar.result("arc", ""), Some("fail" | "neutral")),
        "{ar:?}"
    );
    // A chain that failed stays failed for the next verifier.
    assert_eq!(dkimpy::arc_verify(&copy, w.dns.addr).0, "fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arc_seal_with_an_ed25519_key() {
    // dkimpy verifies ARC with RSA only (its ARC_HASH_ALGORITHMS), so this checks the set's
    // shape and algorithm, not its signatures.
    let w = world().await;
    let ed = Key::generate(w.dir.path(), "arc-ed", Algo::Ed25519);
    let g = gateway(&w, "", &arc_line(&ed));
    let msg = message("alice@spf-pass.test", "arc-ed25519");
    accept(&g, "helo-pass.test", "alice@spf-pass.test", &[RCPT], &msg).await;
    let copy = delivered(&w, &g, 1).await[0].body.clone();
    let (i, cv, seals) = top_arc(&copy);
    assert_eq!((i.as_str(), cv.as_str(), seals), ("1", "none", 1));
    let f = fields(&copy);
    for raw in [&f[0].1, &f[1].1] {
        let v = value(raw).replace(' ', "");
        assert!(v.contains("a=ed25519-sha256;"), "{v}");
    }
    added_fields(&copy, &msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arc_seals_once_per_target_and_only_where_configured() {
    let w = world().await;
    // The same key as PKCS#1 PEM (the contract takes both).
    let pkcs1 = w.arc.pkcs1_copy(w.dir.path(), "arc-pkcs1");
    let g = gateway(&w, "", &arc_line(&pkcs1));
    let from = "alice@spf-pass.test";
    let msg = message(from, "arc-two-rcpts");
    accept(
        &g,
        "helo-pass.test",
        from,
        &["a@example.test", "b@example.test"],
        &msg,
    )
    .await;
    let got = delivered_rcpts(&w, &g, 2).await;
    let copy = got[0].body.clone();
    for r in &got {
        let (i, _, seals) = top_arc(&r.body);
        assert_eq!((i.as_str(), seals), ("1", 1), "sealed more than once");
        assert_eq!(dkimpy::arc_verify(&r.body, w.dns.addr).0, "pass");
    }
    assert_eq!(top_arc(&copy).1, "none");

    // Dual delivery: target `new` (arc) gets a sealed copy, `old` (no arc) an unsealed one.
    let before = w.sink.received().len();
    let msg = message(from, "arc-dual");
    accept(&g, "helo-pass.test", from, &[DUAL], &msg).await;
    let got = delivered(&w, &g, before + 2).await;
    let sealed: Vec<bool> = got[before..]
        .iter()
        .map(|r| fields(&r.body).iter().any(|(n, _)| n == "ARC-Seal"))
        .collect();
    assert_eq!(sealed.iter().filter(|s| **s).count(), 1, "{sealed:?}");
    for r in &got[before..] {
        let has_arc = fields(&r.body).iter().any(|(n, _)| n == "ARC-Seal");
        if !has_arc {
            our_ar(&r.body, &msg);
        }
    }
}

/// `convert_tnef` on the sealing target: that copy has its winmail.dat turned into MIME parts
/// and its ARC seal covers the converted bytes (dkimpy verifies it); the other target of a
/// dual delivery gets the original, unsealed and unconverted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arc_seal_covers_the_tnef_converted_copy() {
    use base64::Engine as _;
    let w = world().await;
    let g = gateway(
        &w,
        "",
        &format!("{}\nconvert_tnef = true", arc_line(&w.arc)),
    );
    let from = "alice@spf-pass.test";
    let tnef = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tnef/two-files.tnef"
    ))
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&tnef);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let msg = format!(
        "From: {from}\r\nTo: {DUAL}\r\nSubject: tnef\r\nMessage-ID: <tnef-arc@spf-pass.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
         Content-Type: text/plain\r\n\r\nsee attached\r\n--b1\r\n\
         Content-Type: application/ms-tnef; name=\"winmail.dat\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1--\r\n",
        lines.join("\r\n")
    )
    .into_bytes();
    let before = w.sink.received().len();
    accept(&g, "helo-pass.test", from, &[DUAL], &msg).await;
    let got = delivered(&w, &g, before + 2).await;
    let (sealed, plain): (Vec<_>, Vec<_>) = got[before..]
        .iter()
        .partition(|r| fields(&r.body).iter().any(|(n, _)| n == "ARC-Seal"));
    assert_eq!((sealed.len(), plain.len()), (1, 1));
    let converted = String::from_utf8_lossy(&sealed[0].body).to_string();
    assert!(!converted.contains("ms-tnef"), "{converted}");
    assert!(converted.contains("filename="), "{converted}");
    let (cv, why) = dkimpy::arc_verify(&sealed[0].body, w.dns.addr);
    assert_eq!(cv, "pass", "dkimpy: {why}\n{converted}");
    let original = String::from_utf8_lossy(&plain[0].body);
    assert!(original.contains("application/ms-tnef"), "{original}");
}

/// `cutover arc key --config FILE ARGS…`: exit status and stdout.
fn arc_key(config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(support::bin())
        .args(["arc", "key", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `s` without quotes and whitespace (TXT output may be split into several strings).
fn squeezed(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && !c.is_whitespace())
        .collect()
}

#[test]
fn arc_key_command_prints_the_record_openssl_computes() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = Key::generate(dir.path(), "rsa", Algo::Rsa);
    let ed = Key::generate(dir.path(), "ed", Algo::Ed25519);
    let cfg = Cfg {
        dns: "127.0.0.1:53".parse().unwrap(),
        target: "127.0.0.1:9".parse().unwrap(),
        auth: "",
        old_arc: &arc_line_for(&ed, "ed1"),
        new_arc: &arc_line(&rsa),
    };
    let g = Gateway::configure(|smtp, admin, state| cfg.text(smtp, admin, state));

    let (ok, out) = arc_key(&g.config, &["--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let rows = v.as_array().expect("a JSON array");
    assert_eq!(rows.len(), 2, "{out}");
    for (target, selector, key, k) in [
        ("new", ARC_SELECTOR, &rsa, "rsa"),
        ("old", "ed1", &ed, "ed25519"),
    ] {
        let row = rows
            .iter()
            .find(|r| r["target"] == target)
            .unwrap_or_else(|| panic!("no row for {target}: {out}"));
        assert_eq!(row["domain"], OWN);
        assert_eq!(row["selector"], selector);
        let name = row["name"].as_str().unwrap_or_default();
        assert_eq!(
            name.trim_end_matches('.'),
            format!("{selector}._domainkey.{OWN}")
        );
        let txt = squeezed(row["txt"].as_str().unwrap_or_default());
        assert!(txt.contains("v=DKIM1;"), "{txt}");
        assert!(txt.contains(&format!("k={k};")), "{txt}");
        assert!(
            txt.ends_with(&format!("p={}", key.public_b64)),
            "{target}: {txt}\nopenssl: {}",
            key.public_b64
        );
    }

    let (ok, out) = arc_key(&g.config, &["--target", "new"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("{ARC_SELECTOR}._domainkey.{OWN}. IN TXT")),
        "{out}"
    );
    assert!(
        squeezed(&out).contains(&format!("k=rsa;p={}", rsa.public_b64)),
        "{out}"
    );
    assert!(
        !out.contains("ed1._domainkey"),
        "--target new printed old: {out}"
    );
}
