//! Regressions found by the fuzz targets under `fuzz/` (see fuzz/README.md), run in the normal
//! suite. Unit-level ones live next to their code (`bounce::tests::hostile_queue_id_...`).

use cutover::backfill::runner::{RunOptions, run_job};
use cutover::backfill::throttle::Backoff;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// fuzz/imap_responses: a status response whose response code is followed directly by a
/// multi-byte character (`* OK [ALERT]é`) makes imap-proto 0.17 panic while parsing. The
/// mailbox used to vanish from the report (its task died); it must be reported as failed.
#[tokio::test]
async fn imap_parser_panic_fails_the_mailbox_instead_of_dropping_it() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"* OK [ALERT]\xc3\xa9 welcome\r\n").await;
                let mut b = [0u8; 1024];
                while let Ok(n) = s.read(&mut b).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pass"), "secret\n").unwrap();
    std::fs::write(dir.path().join("mailboxes.csv"), "alice@example.com\n").unwrap();
    let side = format!(
        r#"{{ host = "127.0.0.1", port = {port}, tls = "none", auth = "plain", password_file = "pass" }}"#
    );
    let cfg = format!(
        r#"[gateway]
state_dir = "state"
accept_domains = ["example.com"]
[targets.old]
address = "127.0.0.1:25"
[targets.new]
address = "127.0.0.1:25"
[[backfill.job]]
name = "t"
source = {side}
destination = {side}
mailboxes_file = "mailboxes.csv"
"#
    );
    let path = dir.path().join("cutover.toml");
    std::fs::write(&path, cfg).unwrap();
    let config = cutover::loader::load(&path).unwrap().config;
    let opts = RunOptions {
        quiet: true,
        backoff: Some(Backoff {
            base: Duration::from_millis(1),
            max: Duration::from_millis(1),
            attempts: 2,
        }),
        ..Default::default()
    };
    let report = tokio::time::timeout(Duration::from_secs(60), run_job(&config, "t", opts))
        .await
        .expect("backfill run ends")
        .expect("backfill run");
    assert_eq!(report.mailboxes.len(), 1, "the mailbox is in the report");
    let m = &report.mailboxes[0];
    assert!(!m.converged);
    let err = m.error.as_deref().unwrap_or_default();
    assert!(
        err.contains("IMAP client failed on a server response"),
        "error: {err:?}"
    );
}
