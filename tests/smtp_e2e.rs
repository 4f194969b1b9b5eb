//! End to end through `cutover serve`: accepted over SMTP, queued, delivered by the scheduler
//! that `serve` runs, to Postfix's `smtp-sink` (a real SMTP server) — one transaction per leg,
//! so a dual-delivery recipient arrives twice. Without smtp-sink the skip policy applies
//! (tests/support/common.rs: a failure under `CI=true`).

#[path = "support/common.rs"]
mod common;
#[path = "support/smtp.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

struct Sink(std::process::Child);
impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_mail_reaches_the_targets() {
    let Some(sink) = common::tool("smtp-sink") else {
        return;
    };
    let dumps = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dumps.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = common::free_port();
    let _sink = Sink(
        Command::new(sink)
            .args(["-u", "nobody", "-d"])
            .arg(format!("{}/%H%M%S.", dumps.path().display()))
            .arg(format!("127.0.0.1:{port}"))
            .arg("16")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + STEP;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "smtp-sink did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut g = Gateway::start(Opts {
        target: Some(format!("127.0.0.1:{port}")),
        ..Default::default()
    });
    let mut c = Client::greeted(g.smtp).await;
    c.cmd("EHLO e2e").await;
    let r = send_message(
        &mut c,
        "sender@b.net",
        &["alice@example.com", "bob@example.com"],
        b"Subject: e2e\r\n\r\nthrough the gateway\r\n",
    )
    .await;
    assert!(r.is(250, "2.0.0"), "{r:?}");
    c.cmd("QUIT").await;

    // Leg old: alice + bob; leg new: bob (dual delivery) → two transactions at the sink.
    let deadline = Instant::now() + Duration::from_secs(30);
    let files = loop {
        let files: Vec<_> = std::fs::read_dir(dumps.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        if files.len() >= 2 {
            break files;
        }
        assert!(Instant::now() < deadline, "not delivered: {}", g.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(std::fs::read_dir(dumps.path()).unwrap().count(), 2);
    for f in files {
        // smtp-sink dumps with LF line ends.
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).replace("\r\n", "\n");
        assert!(text.contains("X-Cutover-Loop: mx.test\n"), "{text}");
        assert!(
            text.contains("Subject: e2e\n\nthrough the gateway\n"),
            "{text}"
        );
        assert_eq!(text.matches("by mx.test (cutover)").count(), 1, "{text}");
        // Edge authentication (on by default for untrusted clients) stamps one A-R first.
        let ar = text.find("Authentication-Results: mx.test;");
        assert_eq!(ar, text.find("Authentication-Results:"), "{text}");
        assert!(ar < text.find("by mx.test (cutover)"), "{text}");
        assert_eq!(text.matches("Authentication-Results:").count(), 1, "{text}");
    }
    assert!(g.terminate().success(), "{}", g.log());
}
