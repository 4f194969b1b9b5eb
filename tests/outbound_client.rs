//! The outbound SMTP client against a real smtp-sink (Postfix) and, for faults a real server
//! can't produce on demand, an in-process fake: per-recipient outcomes, byte-exact bodies,
//! `<>` senders, TLS policy.

#[path = "support/fake_smtp.rs"]
mod fake_smtp;

use cutover::config::TlsMode;
use cutover::outbound::client::{ConnectSpec, Session, Transaction};
use cutover::outbound::reply::Outcome;
use fake_smtp::{FakeSmtp, Script};
use std::time::Duration;

fn spec(addr: std::net::SocketAddr, tls: TlsMode) -> ConnectSpec {
    ConnectSpec {
        host: "localhost".into(),
        addr,
        tls,
        connector: cutover::outbound::tls::connector(false, None).unwrap(),
        helo: "mx1.example.com".into(),
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
        auth: None,
    }
}

const BODY: &[u8] = b"Received: from x\r\nSubject: test\r\nMessage-ID: <t1@example.org>\r\n\r\nline one\r\n.leading dot\r\n..two dots\r\n\r\nlast line\r\n";

fn rcpts(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("user{i}@example.com")).collect()
}

/// A plain transaction of [`BODY`] (no SMTPUTF8, 7-bit).
fn tx<'a>(mail_from: &'a str, rcpts: &'a [String]) -> Transaction<'a> {
    Transaction {
        mail_from,
        rcpts,
        body: BODY,
        smtputf8: false,
        body_8bit: false,
    }
}

fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[tokio::test]
async fn partial_rcpt_acceptance_gives_per_recipient_outcomes() {
    init();
    let fake = FakeSmtp::start(Script {
        rcpt_replies: vec![
            (3, "452 4.2.2 mailbox full".into()),
            (4, "550 5.1.1 no such user".into()),
        ],
        ..Default::default()
    })
    .await;
    let mut s = Session::open(&spec(fake.addr, TlsMode::Opportunistic))
        .await
        .unwrap();
    let r = rcpts(5);
    let out = s.send(&tx("alice@example.org", &r)).await;
    assert!(matches!(out[0], Outcome::Delivered { .. }));
    assert!(matches!(out[1], Outcome::Delivered { .. }));
    assert_eq!(
        out[2],
        Outcome::Deferred {
            reply: "452 4.2.2 mailbox full".into()
        }
    );
    assert_eq!(
        out[3],
        Outcome::Failed {
            reply: "550 5.1.1 no such user".into()
        }
    );
    assert!(matches!(out[4], Outcome::Delivered { .. }));
    let got = fake.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].body, BODY,
        "bytes arrive unchanged (dot-stuffing undone, no extra CRLF)"
    );
    assert_eq!(
        got[0].rcpts,
        vec![
            "user1@example.com",
            "user2@example.com",
            "user5@example.com"
        ]
    );
    // The session is reusable for the next transaction.
    assert!(s.usable());
    let one = rcpts(1);
    let out = s.send(&tx("", &one)).await;
    assert!(matches!(out[0], Outcome::Delivered { .. }));
    assert_eq!(fake.received()[1].mail_from, "", "null sender");
    assert_eq!(
        *fake.connections.lock().unwrap(),
        1,
        "one connection for both transactions"
    );
    s.quit().await;
}

#[tokio::test]
async fn all_rcpts_rejected_means_no_data() {
    init();
    let fake = FakeSmtp::start(Script {
        rcpt_replies: vec![
            (1, "550 5.1.1 no".into()),
            (2, "450 4.7.1 greylisted".into()),
        ],
        ..Default::default()
    })
    .await;
    let mut s = Session::open(&spec(fake.addr, TlsMode::None))
        .await
        .unwrap();
    let r = rcpts(2);
    let out = s.send(&tx("a@b.org", &r)).await;
    assert!(matches!(out[0], Outcome::Failed { .. }));
    assert!(matches!(out[1], Outcome::Deferred { .. }));
    assert!(fake.received().is_empty());
    assert!(s.usable(), "RSET keeps the session");
}

#[tokio::test]
async fn connection_cut_mid_data_defers_and_breaks_the_session() {
    init();
    let fake = FakeSmtp::start(Script {
        cut_data_after: Some(20),
        ..Default::default()
    })
    .await;
    let mut s = Session::open(&spec(fake.addr, TlsMode::None))
        .await
        .unwrap();
    let r = rcpts(2);
    let out = s.send(&tx("a@b.org", &r)).await;
    assert!(
        out.iter().all(|o| matches!(o, Outcome::Deferred { .. })),
        "{out:?}"
    );
    assert!(!s.usable());
}

#[tokio::test]
async fn data_rejection_fails_every_accepted_recipient() {
    init();
    let fake = FakeSmtp::start(Script {
        data_reply: Some("554 5.6.0 content rejected".into()),
        ..Default::default()
    })
    .await;
    let mut s = Session::open(&spec(fake.addr, TlsMode::None))
        .await
        .unwrap();
    let r = rcpts(2);
    let out = s.send(&tx("a@b.org", &r)).await;
    assert_eq!(
        out,
        vec![
            Outcome::Failed {
                reply: "554 5.6.0 content rejected".into()
            };
            2
        ]
    );
}

#[tokio::test]
async fn tls_required_but_not_offered_is_deferred() {
    init();
    let fake = FakeSmtp::start(Script::default()).await;
    let err = Session::open(&spec(fake.addr, TlsMode::Required))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, Outcome::Deferred { reply } if reply.contains("does not offer STARTTLS")),
        "{err:?}"
    );
}

#[tokio::test]
async fn rejecting_greeting_and_refused_connection_are_deferred() {
    init();
    let fake = FakeSmtp::start(Script {
        greeting: Some("554 5.7.1 go away".into()),
        ..Default::default()
    })
    .await;
    let err = Session::open(&spec(fake.addr, TlsMode::None))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Outcome::Deferred { .. }), "{err:?}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = Session::open(&spec(closed, TlsMode::None))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, Outcome::Deferred { reply } if reply.contains("connect to")),
        "{err:?}"
    );
}

#[tokio::test]
async fn smtputf8_message_to_a_server_without_it_fails() {
    init();
    let fake = FakeSmtp::start(Script {
        ehlo: Some(vec!["8BITMIME".into()]),
        ..Default::default()
    })
    .await;
    let mut s = Session::open(&spec(fake.addr, TlsMode::None))
        .await
        .unwrap();
    let r = vec!["jürgen@example.com".to_string()];
    let out = s
        .send(&Transaction {
            mail_from: "a@b.org",
            rcpts: &r,
            body: BODY,
            smtputf8: true,
            body_8bit: true,
        })
        .await;
    assert!(
        matches!(&out[0], Outcome::Failed { reply } if reply.starts_with("550 5.6.7")),
        "{out:?}"
    );
}

/// A real Postfix smtp-sink: null sender and several recipients, counted by the sink's dump.
#[tokio::test]
async fn real_smtp_sink_accepts_null_sender() {
    init();
    let sink = std::path::Path::new("/usr/sbin/smtp-sink");
    assert!(
        sink.exists(),
        "smtp-sink (Debian package postfix) is required; .ci/run installs it"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(sink)
        .args(["-u", "nobody", "-D"])
        .arg(dir.path().join("%M."))
        .arg(format!("127.0.0.1:{port}"))
        .arg("10")
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut session = None;
    for _ in 0..100 {
        if let Ok(s) = Session::open(&spec(addr, TlsMode::Opportunistic)).await {
            session = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut s = session.expect("smtp-sink did not come up");
    let r = rcpts(2);
    let out = s.send(&tx("", &r)).await;
    assert!(
        out.iter().all(|o| matches!(o, Outcome::Delivered { .. })),
        "{out:?}"
    );
    s.quit().await;
    let mut dump = String::new();
    for _ in 0..50 {
        dump = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
            .collect();
        if dump.contains("last line") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(dump.contains("X-Mail-Args: <>"), "{dump}");
    assert!(dump.contains("X-Rcpt-Args: <user2@example.com>"), "{dump}");
    assert!(dump.contains("\n.leading dot\n..two dots\n"), "{dump}");
}
