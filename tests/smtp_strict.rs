//! The strict intake ("Trust II" §4 and the relay policy of §2) against a real `cutover serve`:
//! MAIL/RCPT parameters that are not advertised get `555 5.5.4`, bare CR in DATA `550 5.6.0`, a
//! header section over `max_header_size` `552 5.3.4` (with loop detection reading all of it),
//! trusted clients relay only to domains a rule names (unless `trusted_relay_any`), and the
//! shipped listener pair `0.0.0.0:25` + `[::]:25` binds on one port.

#[path = "support/common.rs"]
mod common;
#[path = "support/smtp.rs"]
mod support;

use std::time::Duration;
use support::*;

async fn ehlo(g: &Gateway, from_ip: &str) -> Client {
    let mut c = Client::connect_from(from_ip, g.smtp).await;
    assert_eq!(c.read_reply().await.code, 220);
    assert_eq!(c.cmd("EHLO strict.test").await.code, 250);
    c
}

fn queued(g: &Gateway) -> usize {
    g.queue_list().as_array().map(Vec::len).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unadvertised_parameters_get_555() {
    let g = Gateway::start(Opts::default());
    let mut c = ehlo(&g, "127.0.0.1").await;
    for param in [
        "REQUIRETLS",
        "BODY=BINARYMIME",
        "RET=HDRS",
        "ENVID=QQ314159",
        "HOLDFOR=60",
        "MT-PRIORITY=3",
        "AUTH=<>",
        "SIZE=100 RET=FULL",
    ] {
        let r = c.cmd(&format!("MAIL FROM:<a@b.net> {param}")).await;
        assert!(r.is(555, "5.5.4"), "MAIL {param}: {r:?}");
    }
    // No transaction was opened.
    assert!(c.cmd("RCPT TO:<alice@example.com>").await.is(503, "5.5.1"));
    // What EHLO advertises is still accepted.
    let r = c
        .cmd("MAIL FROM:<a@b.net> SIZE=100 BODY=8BITMIME SMTPUTF8")
        .await;
    assert!(r.is(250, "2.1.0"), "{r:?}");
    for param in [
        "NOTIFY=SUCCESS,FAILURE",
        "NOTIFY=NEVER",
        "ORCPT=rfc822;alice@example.com",
    ] {
        let r = c.cmd(&format!("RCPT TO:<alice@example.com> {param}")).await;
        assert!(r.is(555, "5.5.4"), "RCPT {param}: {r:?}");
    }
    assert!(c.cmd("DATA").await.is(554, "5.5.1"));
    assert!(c.cmd("RSET").await.is(250, ""));
    let r = send_message(
        &mut c,
        "a@b.net",
        &["alice@example.com"],
        b"Subject: ok\r\n\r\nx\r\n",
    )
    .await;
    assert!(r.is(250, "2.0.0"), "{r:?}");
    assert_eq!(queued(&g), 1, "only the plain message is queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_cr_in_data_is_refused() {
    let g = Gateway::start(Opts::default());
    let mut c = ehlo(&g, "127.0.0.1").await;
    for body in [
        &b"Subject: cr\r\n\r\na\rb\r\n"[..],
        b"Subject: cr\r\n\r\nsmuggled\r.\rMAIL FROM:<x@evil.net>\r\n",
        b"Subject: cr\rBcc: x@evil.net\r\n\r\nbody\r\n",
    ] {
        let r = send_message(&mut c, "a@b.net", &["alice@example.com"], body).await;
        assert!(
            r.is(550, "5.6.0"),
            "{:?}: {r:?}",
            String::from_utf8_lossy(body)
        );
    }
    // The session goes on; a clean message passes.
    let r = send_message(
        &mut c,
        "a@b.net",
        &["alice@example.com"],
        b"Subject: ok\r\n\r\nx\r\n",
    )
    .await;
    assert!(r.is(250, "2.0.0"), "{r:?}");
    assert_eq!(queued(&g), 1);
}

/// `n` bytes of header lines (`X-Pad:` lines of 80 bytes, CRLF included; `n` a multiple of 80).
fn pad_headers(n: usize) -> Vec<u8> {
    assert_eq!(n % 80, 0);
    let line = format!("X-Pad: {}\r\n", "p".repeat(71));
    assert_eq!(line.len(), 80);
    line.repeat(n / 80).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_section_over_max_header_size_is_refused() {
    // The default limit: 100 KiB.
    let g = Gateway::start(Opts::default());
    let mut c = ehlo(&g, "127.0.0.1").await;
    let limit = 100 * 1024;
    let mut over = pad_headers(limit);
    over.extend_from_slice(b"Subject: big header\r\n\r\nbody\r\n");
    let r = send_message(&mut c, "a@b.net", &["alice@example.com"], &over).await;
    assert!(r.is(552, "5.3.4"), "{r:?}");
    // Exactly at the limit passes, and a big body does not count.
    let mut at = pad_headers(limit - 80);
    at.extend_from_slice(format!("Subject: {}\r\n", "s".repeat(69)).as_bytes());
    assert_eq!(at.len(), limit);
    at.extend_from_slice(b"\r\n");
    at.extend(b"body line\r\n".repeat(30_000));
    let r = send_message(&mut c, "a@b.net", &["alice@example.com"], &at).await;
    assert!(r.is(250, "2.0.0"), "{r:?}");
    assert_eq!(queued(&g), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_detection_reads_the_whole_header_section() {
    // 1.5 MiB of headers before the hops: past the old fixed 1 MiB scan window.
    let g = Gateway::start(Opts {
        extra_gateway: "max_header_size = \"2MiB\"\n".into(),
        ..Default::default()
    });
    let mut c = ehlo(&g, "127.0.0.1").await;
    let mut hops = pad_headers(1_536_000);
    for i in 0..31 {
        hops.extend_from_slice(format!("Received: from h{i} by h{i}.example.net\r\n").as_bytes());
    }
    hops.extend_from_slice(b"Subject: loop\r\n\r\nbody\r\n");
    let r = send_message(&mut c, "a@b.net", &["alice@example.com"], &hops).await;
    assert!(r.is(554, "5.4.6"), "{r:?}");
    let mut ours = pad_headers(1_536_000);
    ours.extend_from_slice(b"X-Cutover-Loop: mx.test\r\nSubject: loop\r\n\r\nbody\r\n");
    let r = send_message(&mut c, "a@b.net", &["alice@example.com"], &ours).await;
    assert!(r.is(554, "5.4.6"), "{r:?}");
    assert_eq!(queued(&g), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_clients_relay_only_to_domains_a_rule_names() {
    // routing.default = ["old"]: it must not turn the trusted network into an open relay.
    let g = Gateway::start(Opts {
        default_route: true,
        ..Default::default()
    });
    let mut c = ehlo(&g, "127.0.0.2").await;
    assert!(
        c.cmd("MAIL FROM:<old-server@example.com>")
            .await
            .is(250, "")
    );
    for rcpt in ["user@evil.net", "USER@EVIL.NET.", "user@sub.example.com"] {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        assert!(r.is(550, "5.7.1"), "{rcpt}: {r:?}");
    }
    // A rule names partner.net; our own domains go by any route, default included.
    for rcpt in [
        "user@partner.net",
        "alice@example.com",
        "x@unrouted.example",
    ] {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        assert!(r.is(250, "2.1.5"), "{rcpt}: {r:?}");
    }
    // Untrusted: relaying is refused as before.
    let mut u = ehlo(&g, "127.0.0.1").await;
    assert!(u.cmd("MAIL FROM:<a@b.net>").await.is(250, ""));
    for rcpt in ["user@evil.net", "user@partner.net"] {
        assert!(u.cmd(&format!("RCPT TO:<{rcpt}>")).await.is(550, "5.7.1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_relay_any_opts_in() {
    let g = Gateway::start(Opts {
        default_route: true,
        extra_gateway: "trusted_relay_any = true\n".into(),
        ..Default::default()
    });
    let mut c = ehlo(&g, "127.0.0.2").await;
    assert!(
        c.cmd("MAIL FROM:<old-server@example.com>")
            .await
            .is(250, "")
    );
    assert!(c.cmd("RCPT TO:<user@evil.net>").await.is(250, "2.1.5"));
    let mut u = ehlo(&g, "127.0.0.1").await;
    assert!(u.cmd("MAIL FROM:<a@b.net>").await.is(250, ""));
    assert!(u.cmd("RCPT TO:<user@evil.net>").await.is(550, "5.7.1"));
}

/// Is there an IPv6 loopback to test with?
fn have_ipv6() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_and_ipv6_wildcard_listeners_share_a_port() {
    if !have_ipv6() {
        common::skip_or_fail("no IPv6 loopback on this machine: the dual listener test cannot run");
        return;
    }
    let g = Gateway::start_config(|smtp, admin, state| {
        let port = smtp.port();
        format!(
            r#"[gateway]
hostname = "mx.test"
listen = ["{smtp}", "[::]:{port}"]
state_dir = "{state}"
accept_domains = ["example.com"]
min_free_space = "1MiB"

[targets.old]
address = "127.0.0.1:9"
tls = "none"

[routing]
default = ["old"]

[admin]
listen = "{admin}"
"#,
            state = state.display(),
        )
    });
    let v4 = g.smtp;
    let v6: std::net::SocketAddr = format!("[::1]:{}", v4.port()).parse().unwrap();
    for addr in [v4, v6] {
        // Both sockets are bound before serving starts; allow for the moment between the two.
        let mut tries = 0;
        let s = loop {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => break s,
                Err(e) if tries < 20 => {
                    tries += 1;
                    eprintln!("{addr}: {e}, retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{addr}: {e}"),
            }
        };
        let mut c = Client::from_stream(s);
        let r = c.read_reply().await;
        assert!(
            r.is(220, "") && r.text.starts_with("mx.test"),
            "{addr}: {r:?}"
        );
        assert!(c.cmd("EHLO v6.test").await.is(250, ""), "{addr}");
        assert!(c.cmd("QUIT").await.is(221, ""), "{addr}");
    }
}
