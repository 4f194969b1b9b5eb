//! STARTTLS on a real `cutover serve` with an rcgen certificate: the upgrade works and is stamped
//! in `Received:`, plaintext pipelined after STARTTLS is discarded, `require = true` is enforced.

#[path = "support/common.rs"]
mod common;
#[path = "support/smtp.rs"]
mod support;

use std::sync::Arc;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

struct Tls {
    cert_pem: String,
    opts: Opts,
}

fn tls_opts(dir: &std::path::Path, require: bool) -> Tls {
    let ck = rcgen::generate_simple_self_signed(vec!["mx.test".to_string()]).unwrap();
    let cert_pem = ck.cert.pem();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    Tls {
        cert_pem,
        opts: Opts {
            extra_gateway: format!(
                "tls = {{ cert = \"{}\", key = \"{}\", require = {require} }}\n",
                cert.display(),
                key.display()
            ),
            ..Default::default()
        },
    }
}

fn connector(cert_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap())
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

async fn upgrade(s: TcpStream, cert_pem: &str) -> Client {
    let name = rustls_pki_types::ServerName::try_from("mx.test").unwrap();
    let tls = tokio::time::timeout(STEP, connector(cert_pem).connect(name, s))
        .await
        .unwrap()
        .unwrap();
    Client::from_stream(tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_upgrade_and_injection() {
    let dir = tempfile::tempdir().unwrap();
    let t = tls_opts(dir.path(), false);
    let mut g = Gateway::start(t.opts.clone());

    // Plain EHLO offers STARTTLS; after the upgrade it is no longer offered.
    let mut s = Client::raw_from("127.0.0.1", g.smtp).await;
    assert_eq!(plain_reply(&mut s).await.code, 220);
    let ehlo = plain_cmd(&mut s, "EHLO c").await;
    assert!(ehlo.text.contains("STARTTLS"), "{ehlo:?}");
    assert!(plain_cmd(&mut s, "STARTTLS").await.is(220, "2.0.0"));
    let mut c = upgrade(s, &t.cert_pem).await;
    let ehlo = c.cmd("EHLO c").await;
    assert_eq!(ehlo.code, 250);
    assert!(!ehlo.text.contains("STARTTLS"), "{ehlo:?}");
    assert!(c.cmd("STARTTLS").await.is(503, "5.5.1"));
    let r = send_message(
        &mut c,
        "a@b.net",
        &["alice@example.com"],
        b"Subject: tls\r\n\r\nsecret\r\n",
    )
    .await;
    assert!(r.is(250, "2.0.0"), "{r:?}");
    let id = queued_id(&r).unwrap();
    assert_eq!(c.cmd("QUIT").await.code, 221);

    // Plaintext pipelined behind STARTTLS must be thrown away, not run after the upgrade.
    let mut s = Client::raw_from("127.0.0.1", g.smtp).await;
    assert_eq!(plain_reply(&mut s).await.code, 220);
    assert_eq!(plain_cmd(&mut s, "EHLO c").await.code, 250);
    s.write_all(b"STARTTLS\r\nMAIL FROM:<evil@attacker.net>\r\nRCPT TO:<alice@example.com>\r\n")
        .await
        .unwrap();
    assert!(plain_reply(&mut s).await.is(220, "2.0.0"));
    let mut c = upgrade(s, &t.cert_pem).await;
    // The injected MAIL did not happen: HELO state was reset too.
    assert!(c.cmd("RCPT TO:<alice@example.com>").await.is(503, "5.5.1"));
    assert_eq!(c.cmd("EHLO c").await.code, 250);
    assert!(c.cmd("RCPT TO:<alice@example.com>").await.is(503, "5.5.1"));
    assert_eq!(c.cmd("QUIT").await.code, 221);

    g.kill9();
    let q = cutover::queue::Queue::open(&g.state_dir()).unwrap();
    assert_eq!(q.list().unwrap().len(), 1);
    let body = String::from_utf8(
        q.read_body(&cutover::queue::QueueId::parse(&id).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(
        body.contains("\t(using TLSv1.3 with cipher TLS13_"),
        "{body}"
    );
    assert!(body.contains("with ESMTPS"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_required() {
    let dir = tempfile::tempdir().unwrap();
    let t = tls_opts(dir.path(), true);
    let g = Gateway::start(t.opts.clone());
    let mut s = Client::raw_from("127.0.0.1", g.smtp).await;
    assert_eq!(plain_reply(&mut s).await.code, 220);
    assert_eq!(plain_cmd(&mut s, "EHLO c").await.code, 250);
    assert!(
        plain_cmd(&mut s, "MAIL FROM:<a@b.net>")
            .await
            .is(530, "5.7.0")
    );
    assert!(plain_cmd(&mut s, "STARTTLS").await.is(220, "2.0.0"));
    let mut c = upgrade(s, &t.cert_pem).await;
    assert_eq!(c.cmd("EHLO c").await.code, 250);
    let r = send_message(
        &mut c,
        "a@b.net",
        &["alice@example.com"],
        b"Subject: ok\r\n\r\nx\r\n",
    )
    .await;
    assert!(r.is(250, "2.0.0"), "{r:?}");

    // A failed handshake (garbage instead of ClientHello) closes that session only.
    let mut s = Client::raw_from("127.0.0.1", g.smtp).await;
    assert_eq!(plain_reply(&mut s).await.code, 220);
    assert_eq!(plain_cmd(&mut s, "EHLO c").await.code, 250);
    assert!(plain_cmd(&mut s, "STARTTLS").await.is(220, "2.0.0"));
    s.write_all(b"this is not TLS\r\n\r\n").await.unwrap();
    assert_eq!(plain_reply(&mut s).await.code, 0);
    let mut c = Client::greeted(g.smtp).await;
    assert_eq!(c.cmd("NOOP").await.code, 250);
}

/// SIGHUP reloads the certificate: new sessions present the new one; a broken key file is
/// refused and the old certificate stays in service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let t = tls_opts(dir.path(), false);
    let g = Gateway::start(t.opts.clone());
    let handshake = |pem: String| async move {
        let mut s = Client::raw_from("127.0.0.1", g.smtp).await;
        plain_reply(&mut s).await;
        plain_cmd(&mut s, "EHLO c").await;
        plain_cmd(&mut s, "STARTTLS").await;
        let name = rustls_pki_types::ServerName::try_from("mx.test").unwrap();
        tokio::time::timeout(STEP, connector(&pem).connect(name, s))
            .await
            .unwrap()
            .is_ok()
    };
    assert!(handshake(t.cert_pem.clone()).await);

    // Rotate: same file names, new key pair.
    let t2 = tls_opts(dir.path(), false);
    g.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + STEP;
    while !handshake(t2.cert_pem.clone()).await {
        assert!(
            std::time::Instant::now() < deadline,
            "new certificate not served: {}",
            g.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!handshake(t.cert_pem.clone()).await);

    // A broken key: reload refused, the rotated certificate keeps working.
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    g.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + STEP;
    while !g.log().contains("reload failed") {
        assert!(std::time::Instant::now() < deadline, "{}", g.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(handshake(t2.cert_pem.clone()).await);
}
