//! Fixtures for tests that run a real `cutover serve` on a configuration of their own
//! (`Gateway::start_config` in tests/support/smtp.rs): the pieces of TOML such configurations
//! share, a backfill job's report in the gateway's state directory, and the bounded wait on the
//! admin API. Needs `crate::common` and `crate::queueops` (include tests/support/common.rs and
//! tests/support/queueops.rs too). It never starts processes and never asserts on what a test is
//! about, only on its own plumbing (files written, the admin API answering in time).
#![allow(dead_code)]

use crate::common::free_port;
use cutover::backfill::report::{FolderReport, JobReport, MailboxReport};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The `[gateway]` table: host name `mx.test`, listening on `smtp`, state in `state`, accepting
/// `example.com`, a 1 MiB free-space reserve. Lines the caller writes right after it (before the
/// next table) belong to it too.
pub fn gateway_table(smtp: SocketAddr, state: &Path) -> String {
    format!(
        r#"[gateway]
hostname = "mx.test"
listen = ["{smtp}"]
state_dir = "{state}"
accept_domains = ["example.com"]
min_free_space = "1MiB"
"#,
        state = state.display()
    )
}

/// Targets `old` at `old` and `new` at a loopback port where nothing listens (deliveries to it
/// are deferred), both without TLS.
pub fn old_and_closed_new(old: SocketAddr) -> String {
    let closed = free_port();
    format!(
        r#"[targets.old]
address = "{old}"
tls = "none"
[targets.new]
address = "127.0.0.1:{closed}"
tls = "none"
"#
    )
}

/// A `[[backfill.job]]` named `wave-1` whose servers (port 1) are never contacted by `serve`,
/// over the `mailboxes` file text; writes that file and the password file next to `state`.
pub fn backfill_job(state: &Path, mailboxes: &str) -> String {
    let dir = state.parent().expect("state_dir has a parent");
    std::fs::write(dir.join("mailboxes.csv"), mailboxes).expect("write mailboxes.csv");
    std::fs::write(dir.join("imap.pass"), "secret\n").expect("write imap.pass");
    r#"[[backfill.job]]
name = "wave-1"
source = { host = "127.0.0.1", port = 1, tls = "none", auth = "plain", password_file = "imap.pass" }
destination = { host = "127.0.0.1", port = 1, tls = "none", auth = "plain", password_file = "imap.pass" }
mailboxes_file = "mailboxes.csv"
"#
    .to_string()
}

/// Write `job`'s report where `cutover backfill run` leaves it under `state`, with one mailbox:
/// `mailbox` for `user` (same name on both sides) holding the one folder `inbox` (`INBOX` on
/// both sides). The figures are the caller's.
pub fn write_report(
    state: &Path,
    job: JobReport,
    user: &str,
    mailbox: MailboxReport,
    inbox: FolderReport,
) {
    let inbox = FolderReport {
        folder: "INBOX".into(),
        destination: "INBOX".into(),
        ..inbox
    };
    let mailbox = MailboxReport {
        source_user: user.into(),
        destination_user: user.into(),
        folders: vec![inbox],
        ..mailbox
    };
    let report = JobReport {
        mailboxes: vec![mailbox],
        ..job
    };
    let path = state.join("backfill").join(&report.job).join("report.json");
    report.write(&path).expect("write the backfill report");
}

/// `GET path` from the admin API at `admin` every 200 ms until `ready` holds for the body, and
/// that body. Bounded: after 30 s it panics with `what`, the last body and `log()` (the gateway's
/// log).
pub async fn admin_until(
    admin: SocketAddr,
    path: &str,
    what: &str,
    log: impl Fn() -> String,
    mut ready: impl FnMut(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body =
            crate::queueops::body_of(&crate::queueops::http(admin, "GET", path).await).to_string();
        if ready(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what}:\n{body}\n{}", log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Wait (bounded: 30 s) until `/metrics` of the gateway at `admin` shows target `old` delivered
/// and target `new` deferred at least once, and every sample named in `also` at least 1; the
/// exposition. On time-out it panics with it and `log()`.
pub async fn settled_metrics(admin: SocketAddr, log: impl Fn() -> String, also: &[&str]) -> String {
    admin_until(admin, "/metrics", "no outcomes", log, |text| {
        let m = crate::queueops::parse_metrics(text);
        let v = |k: &str| m.get(k).copied().unwrap_or(0.0);
        v(r#"cutover_delivery_delivered_total{target="old"}"#) >= 1.0
            && v(r#"cutover_delivery_deferred_total{target="new"}"#) >= 1.0
            && also.iter().all(|k| v(k) >= 1.0)
    })
    .await
}
