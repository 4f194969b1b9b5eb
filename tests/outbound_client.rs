//! The outbound SMTP client against a real smtp-sink (Postfix) and, for faults a real server
//! can't produce on demand, an in-process fake: per-recipient outcomes, byte-exact bodies
//! (streamed from memory or a spool file), `<>` senders, TLS policy (opportunistic fallback to
//! unverified TLS, AUTH only inside verified TLS), idle and size-scaled DATA timeouts, RSET after
//! a refused DATA, 8BITMIME/SMTPUTF8 handling.

#[path = "support/common.rs"]
mod common;
#[path = "support/fake_smtp.rs"]
mod fake_smtp;

use cutover::config::TlsMode;
use cutover::outbound::client::{Body, ConnectSpec, Session, Transaction};
use cutover::outbound::reply::Outcome;
use fake_smtp::{FakeSmtp, Script, self_signed};
use std::time::Duration;

fn spec(addr: std::net::SocketAddr, tls: TlsMode) -> ConnectSpec {
    ConnectSpec {
        host: "localhost".into(),
        addr,
        tls,
        connector: cutover::tls_client::connector(false, None).unwrap(),
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
    body_tx(mail_from, rcpts, BODY)
}

/// A plain transaction of `body` from memory.
fn body_tx<'a>(mail_from: &'a str, rcpts: &'a [String], body: &'a [u8]) -> Transaction<'a> {
    Transaction {
        mail_from,
        rcpts,
        body: Body::Bytes(body),
        size: body.len() as u64,
        smtputf8: false,
        body_8bit: false,
    }
}

/// The MAIL commands the fake saw.
fn mails(fake: &FakeSmtp) -> Vec<String> {
    fake.commands()
        .into_iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("MAIL"))
        .collect()
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
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], common::free_port()));
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
            smtputf8: true,
            body_8bit: true,
            ..tx("a@b.org", &r)
        })
        .await;
    assert!(
        matches!(&out[0], Outcome::Failed { reply } if reply.starts_with("550 5.6.7")),
        "{out:?}"
    );
    assert!(
        mails(&fake).is_empty(),
        "nothing sent: {:?}",
        fake.commands()
    );
    assert!(s.usable());
}

/// A real Postfix smtp-sink: null sender and several recipients, counted by the sink's dump.
#[tokio::test]
async fn real_smtp_sink_accepts_null_sender() {
    init();
    let sink = common::required_tool("smtp-sink");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let port = common::free_port();
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

/// A body of `lines` CRLF lines of about 100 bytes; every 7th starts with a dot and a dot line
/// sits exactly at the 64 KiB chunk boundary (when the body is that long).
fn big_body(lines: usize) -> Vec<u8> {
    let mut b = b"Subject: big\r\nMessage-ID: <big@example.org>\r\n\r\n".to_vec();
    for i in 0..lines {
        if b.len() < 65536 && b.len() + 103 > 65536 {
            // Pad so that the next line starts right at the chunk boundary.
            let pad = 65536 - b.len() - 2;
            b.extend(std::iter::repeat_n(b'p', pad));
            b.extend_from_slice(b"\r\n.at the boundary\r\n");
        }
        let lead = if i % 7 == 0 { "." } else { "" };
        b.extend_from_slice(format!("{lead}line {i:08} {}\r\n", "x".repeat(80)).as_bytes());
    }
    b
}

#[tokio::test]
async fn file_body_is_streamed_byte_identical() {
    init();
    let fake = FakeSmtp::start(Script::default()).await;
    let body = big_body(3000); // ~300 KiB: several chunks
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("body.eml");
    std::fs::write(&path, &body).unwrap();
    let mut s = Session::open(&spec(fake.addr, TlsMode::None))
        .await
        .unwrap();
    let r = rcpts(1);
    let out = s
        .send(&Transaction {
            body: Body::File(&path),
            ..body_tx("a@b.org", &r, &body)
        })
        .await;
    assert!(matches!(out[0], Outcome::Delivered { .. }), "{out:?}");
    // And the same from memory, on the same session.
    let out = s.send(&body_tx("a@b.org", &r, &body)).await;
    assert!(matches!(out[0], Outcome::Delivered { .. }), "{out:?}");
    let got = fake.received();
    assert_eq!(got.len(), 2);
    assert!(got[0].body == body, "file body arrives unchanged");
    assert!(got[1].body == body, "memory body arrives unchanged");
    // A missing spool file is a local deferral and sends nothing.
    let missing = dir.path().join("gone.eml");
    let out = s
        .send(&Transaction {
            body: Body::File(&missing),
            ..body_tx("a@b.org", &r, &body)
        })
        .await;
    assert!(
        matches!(&out[0], Outcome::Deferred { reply } if reply.contains("queued body")),
        "{out:?}"
    );
    assert_eq!(mails(&fake).len(), 2);
    assert!(s.usable());
}

#[tokio::test]
async fn refused_data_is_reset_and_the_session_stays_usable() {
    init();
    let fake = FakeSmtp::start(Script {
        data_cmd_replies: vec![(1, "451 4.3.0 try later".into())],
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
            Outcome::Deferred {
                reply: "451 4.3.0 try later".into()
            };
            2
        ]
    );
    assert!(s.usable());
    // The fake answers 503 to MAIL inside an open transaction: the second one only works if
    // the first was reset.
    let out = s.send(&tx("a@b.org", &r)).await;
    assert!(
        out.iter().all(|o| matches!(o, Outcome::Delivered { .. })),
        "{out:?}"
    );
    assert_eq!(fake.received().len(), 1);
    assert_eq!(fake.received()[0].body, BODY);
    assert_eq!(*fake.connections.lock().unwrap(), 1);
}

#[tokio::test]
async fn stalled_peer_mid_data_is_a_local_deferral() {
    init();
    // The fake stops reading for 8 s after 64 KiB; the body is far larger than what the socket
    // buffers can hold, so the client's writes stall. Idle timeout 2 s, DATA cap 2 s + 128 s:
    // only the idle timeout can end this before the fake reads on.
    let fake = FakeSmtp::start(Script {
        recv_buffer: Some(16 * 1024),
        pause_data_after: Some((64 * 1024, Duration::from_secs(8))),
        ..Default::default()
    })
    .await;
    let mut sp = spec(fake.addr, TlsMode::None);
    sp.timeout = Duration::from_secs(2);
    let mut s = Session::open(&sp).await.unwrap();
    let body = big_body(80_000); // ~8 MiB
    let r = rcpts(2);
    let out = s.send(&body_tx("a@b.org", &r, &body)).await;
    assert!(
        out.iter()
            .all(|o| matches!(o, Outcome::Deferred { reply } if reply.contains("no progress"))),
        "{out:?}"
    );
    assert!(!s.usable());
    assert!(fake.received().is_empty());
}

#[tokio::test]
async fn slow_but_moving_peer_gets_the_whole_message() {
    init();
    // The fake reads 16 KiB every 50 ms (~320 KiB/s): 1 MiB takes ~3 s, longer than the 2 s
    // idle timeout but never idle that long; the DATA cap is 2 s + 16 s.
    let fake = FakeSmtp::start(Script {
        recv_buffer: Some(16 * 1024),
        trickle: Some((16 * 1024, Duration::from_millis(50))),
        ..Default::default()
    })
    .await;
    let mut sp = spec(fake.addr, TlsMode::None);
    sp.timeout = Duration::from_secs(2);
    let mut s = Session::open(&sp).await.unwrap();
    let body = big_body(10_000); // ~1 MiB
    let r = rcpts(1);
    let out = s.send(&body_tx("a@b.org", &r, &body)).await;
    assert!(matches!(out[0], Outcome::Delivered { .. }), "{out:?}");
    assert!(fake.received()[0].body == body);
    assert!(s.usable());
}

#[tokio::test]
async fn opportunistic_falls_back_to_unverified_tls_never_plaintext() {
    init();
    let (tls, _) = self_signed("localhost");
    let fake = FakeSmtp::start(Script {
        starttls: Some(tls),
        ..Default::default()
    })
    .await;
    let mut sp = spec(fake.addr, TlsMode::Opportunistic);
    // Verify against the system roots: the self-signed certificate fails.
    sp.connector = cutover::tls_client::connector(true, None).unwrap();
    let mut s = Session::open(&sp).await.unwrap();
    assert!(!s.tls_verified);
    let desc = s.tls.clone().unwrap_or_default();
    assert!(desc.ends_with("(unverified)"), "{desc}");
    let r = rcpts(1);
    let out = s.send(&tx("a@b.org", &r)).await;
    assert!(matches!(out[0], Outcome::Delivered { .. }), "{out:?}");
    let got = fake.received();
    assert!(got[0].tls, "the body arrived over TLS");
    assert_eq!(got[0].body, BODY);
    assert_eq!(*fake.connections.lock().unwrap(), 2, "one reconnect");
    assert_eq!(
        fake.commands()
            .iter()
            .filter(|c| c.as_str() == "STARTTLS")
            .count(),
        2
    );
}

#[tokio::test]
async fn required_tls_with_an_unverifiable_certificate_is_deferred() {
    init();
    let (tls, _) = self_signed("localhost");
    let fake = FakeSmtp::start(Script {
        starttls: Some(tls),
        ..Default::default()
    })
    .await;
    let mut sp = spec(fake.addr, TlsMode::Required);
    sp.connector = cutover::tls_client::connector(true, None).unwrap();
    let err = Session::open(&sp).await.err().unwrap();
    assert!(
        matches!(&err, Outcome::Deferred { reply } if reply.contains("TLS handshake")),
        "{err:?}"
    );
    assert_eq!(*fake.connections.lock().unwrap(), 1, "no fallback");
    assert!(mails(&fake).is_empty());
}

#[tokio::test]
async fn auth_goes_only_over_verified_tls() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let (tls, cert_pem) = self_signed("localhost");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert_pem).unwrap();
    let script = Script {
        starttls: Some(tls),
        ehlo: Some(vec!["8BITMIME".into(), "AUTH PLAIN".into()]),
        ..Default::default()
    };
    let fake = FakeSmtp::start(script.clone()).await;
    let mut sp = spec(fake.addr, TlsMode::Required);
    sp.connector = cutover::tls_client::connector(true, Some(&ca)).unwrap();
    sp.auth = Some(("cutover".into(), "secret".into()));
    let mut s = Session::open(&sp).await.unwrap();
    assert!(s.tls_verified);
    assert!(!s.tls.clone().unwrap_or_default().contains("unverified"));
    let cmds = fake.commands();
    let starttls = cmds.iter().position(|c| c == "STARTTLS").unwrap();
    let auth = cmds.iter().position(|c| c.starts_with("AUTH")).unwrap();
    assert!(starttls < auth, "{cmds:?}");
    let r = rcpts(1);
    let out = s.send(&tx("a@b.org", &r)).await;
    assert!(matches!(out[0], Outcome::Delivered { .. }), "{out:?}");
    assert!(fake.received()[0].tls);

    // tls_verify = false: encrypted, but the certificate is not verified: no AUTH.
    let fake = FakeSmtp::start(script.clone()).await;
    let mut sp = spec(fake.addr, TlsMode::Required);
    sp.auth = Some(("cutover".into(), "secret".into()));
    let err = Session::open(&sp).await.err().unwrap();
    assert!(
        matches!(&err, Outcome::Deferred { reply } if reply.contains("AUTH refused locally") && reply.contains("not verified")),
        "{err:?}"
    );
    assert!(
        !fake.commands().iter().any(|c| c.starts_with("AUTH")),
        "{:?}",
        fake.commands()
    );

    // Opportunistic with credentials and a certificate that does not verify: no fallback.
    let fake = FakeSmtp::start(script).await;
    let mut sp = spec(fake.addr, TlsMode::Opportunistic);
    sp.connector = cutover::tls_client::connector(true, None).unwrap();
    sp.auth = Some(("cutover".into(), "secret".into()));
    let err = Session::open(&sp).await.err().unwrap();
    assert!(matches!(err, Outcome::Deferred { .. }), "{err:?}");
    assert!(!fake.commands().iter().any(|c| c.starts_with("AUTH")));
    assert_eq!(*fake.connections.lock().unwrap(), 1);
}

#[tokio::test]
async fn auth_is_never_sent_in_plaintext() {
    init();
    for mode in [TlsMode::Opportunistic, TlsMode::None] {
        // No STARTTLS offered, AUTH offered.
        let fake = FakeSmtp::start(Script {
            ehlo: Some(vec!["8BITMIME".into(), "AUTH PLAIN LOGIN".into()]),
            ..Default::default()
        })
        .await;
        let mut sp = spec(fake.addr, mode);
        sp.connector = cutover::tls_client::connector(true, None).unwrap();
        sp.auth = Some(("cutover".into(), "secret".into()));
        let err = Session::open(&sp).await.err().unwrap();
        assert!(
            matches!(&err, Outcome::Deferred { reply } if reply.contains("AUTH refused locally") && reply.contains("not encrypted")),
            "{mode:?}: {err:?}"
        );
        let cmds = fake.commands();
        assert!(
            !cmds
                .iter()
                .any(|c| c.to_ascii_uppercase().starts_with("AUTH")),
            "{mode:?}: {cmds:?}"
        );
        assert!(mails(&fake).is_empty());
    }
}

const BODY_8BIT: &[u8] = "Subject: grüße\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln\r\n".as_bytes();

#[tokio::test]
async fn eight_bit_body_to_a_server_without_8bitmime_fails_and_sends_nothing() {
    init();
    let fake = FakeSmtp::start(Script {
        ehlo: Some(vec!["SMTPUTF8".into(), "ENHANCEDSTATUSCODES".into()]),
        ..Default::default()
    })
    .await;
    let mut s = Session::open(&spec(fake.addr, TlsMode::None))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("8bit.eml");
    std::fs::write(&path, BODY_8BIT).unwrap();
    let r = rcpts(2);
    let want = format!(
        "554 5.6.3 message has 8-bit content and {} does not offer 8BITMIME",
        s.remote
    );
    for body in [Body::Bytes(BODY_8BIT), Body::File(&path)] {
        let out = s
            .send(&Transaction {
                body,
                body_8bit: true,
                ..body_tx("a@b.org", &r, BODY_8BIT)
            })
            .await;
        assert_eq!(
            out,
            vec![
                Outcome::Failed {
                    reply: want.clone()
                };
                2
            ]
        );
    }
    assert!(fake.received().is_empty());
    assert!(mails(&fake).is_empty(), "{:?}", fake.commands());
    assert!(s.usable());
}

#[tokio::test]
async fn seven_bit_body_declared_8bitmime_goes_without_body_param() {
    init();
    let fake = FakeSmtp::start(Script {
        ehlo: Some(vec!["ENHANCEDSTATUSCODES".into()]),
        ..Default::default()
    })
    .await;
    let mut s = Session::open(&spec(fake.addr, TlsMode::None))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("7bit.eml");
    std::fs::write(&path, BODY).unwrap();
    let r = rcpts(1);
    for body in [Body::Bytes(BODY), Body::File(&path)] {
        let out = s
            .send(&Transaction {
                body,
                body_8bit: true,
                ..tx("a@b.org", &r)
            })
            .await;
        assert!(matches!(out[0], Outcome::Delivered { .. }), "{out:?}");
    }
    let got = fake.received();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|g| g.body == BODY), "scan rewinds the file");
    let m = mails(&fake);
    assert_eq!(m.len(), 2);
    assert!(m.iter().all(|m| !m.contains("BODY=")), "{m:?}");

    // A server with 8BITMIME gets the parameter.
    let fake = FakeSmtp::start(Script::default()).await;
    let mut s = Session::open(&spec(fake.addr, TlsMode::None))
        .await
        .unwrap();
    let out = s
        .send(&Transaction {
            body_8bit: true,
            ..body_tx("a@b.org", &r, BODY_8BIT)
        })
        .await;
    assert!(matches!(out[0], Outcome::Delivered { .. }), "{out:?}");
    assert!(
        mails(&fake)[0].ends_with("BODY=8BITMIME"),
        "{:?}",
        mails(&fake)
    );
    assert_eq!(fake.received()[0].body, BODY_8BIT);
}
