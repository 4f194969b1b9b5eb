//! The status page in a real browser. A gateway (`cutover serve`) with traffic (delivered to
//! Postfix's smtp-sink as target `old`, deferred towards a closed port as target `new`), waves
//! (one active, one scheduled for later), a backfill job's report and an alert rule is opened in
//! Debian's headless Chromium: the DOM it renders (after the page's own script refreshed it)
//! carries the per-target charts, the queue tables, the oldest deferred message with its last
//! reply, the wave timeline with its "now" marker, the backfill progress and the alert. A
//! screenshot is kept as a test artifact (`target/test-artifacts/status-page.png`).

#[path = "support/common.rs"]
mod common;
#[path = "support/gateway.rs"]
mod gateway;
#[path = "support/queueops.rs"]
mod queueops;
#[path = "support/smtp.rs"]
mod smtp;
#[path = "support/smtp_sink.rs"]
mod smtp_sink;

use smtp::{Client, Gateway, send_message};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

fn config(smtp: SocketAddr, admin: SocketAddr, state: &Path, old: SocketAddr) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let later = cutover::time::rfc3339_secs(now + 6 * 3600);
    let earlier = cutover::time::rfc3339_secs(now - 3600);
    format!(
        r#"{gateway}
{targets}
[routing]
default = ["old"]
[[routing.rule]]
name = "pilot"
recipients = ["dave@example.com"]
deliver = ["new"]
active_from = "{earlier}"
[[routing.rule]]
name = "wave-1"
recipients = ["carol@example.com"]
deliver = ["new"]
active_from = "{later}"

[admin]
listen = "{admin}"

[alerting]
interval = "300ms"
[[alert]]
name = "new-down"
when = "target_unreachable"
target = "new"
for = "1s"
email = "postmaster@example.com"

{backfill}"#,
        gateway = gateway::gateway_table(smtp, state),
        targets = gateway::old_and_closed_new(old),
        backfill = gateway::backfill_job(state, "carol@example.com\n"),
    )
}

/// A pass of job `wave-1` still running: carol half copied, one message refused.
fn write_backfill_report(state: &Path) {
    use cutover::backfill::report::{Failure, FolderReport, JobReport, MailboxReport};
    let job = JobReport {
        job: "wave-1".into(),
        started: "2026-11-30T12:00:00Z".into(),
        running: true,
        ..Default::default()
    };
    let mailbox = MailboxReport {
        direction: "forward".into(),
        copied: 19,
        bytes: 2_000_000,
        duration_ms: 4000,
        ..Default::default()
    };
    let inbox = FolderReport {
        source_count: 40,
        copied: 19,
        skipped: [("present".to_string(), 1)].into(),
        failed: vec![Failure {
            uid: 7,
            reply: "NO [LIMIT] too many keywords".into(),
        }],
        bytes: 2_000_000,
        ..Default::default()
    };
    gateway::write_report(state, job, "carol@example.com", mailbox, inbox);
}

async fn send_traffic(gw: &Gateway) {
    let mut c = Client::greeted(gw.smtp).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    for (rcpt, subject) in [("alice@example.com", "a"), ("dave@example.com", "d")] {
        let msg = format!(
            "From: s@example.org\r\nTo: {rcpt}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.org>\r\n\r\nbody\r\n"
        );
        let r = send_message(&mut c, "s@example.org", &[rcpt], msg.as_bytes()).await;
        assert_eq!(r.code, 250, "{r:?}");
    }
}

/// Wait (bounded) until alice's leg was delivered and dave's deferred.
async fn settle(gw: &Gateway) {
    gateway::settled_metrics(gw.admin, || gw.log(), &[]).await;
}

/// Wait (bounded) until the alert on `new` fired.
async fn alert_fired(gw: &Gateway) {
    gateway::admin_until(
        gw.admin,
        "/api/alerts",
        "no alert",
        || gw.log(),
        |body| body.contains("\"status\":\"firing\""),
    )
    .await;
}

/// Headless Chromium with the flags this machine needs (no sandbox as root, no background
/// networking: the network is closed) and a fresh profile; `extra` says what to produce.
fn chromium(profile: &Path, url: &str, extra: &[&str]) -> std::process::Output {
    let bin = common::required_tool("chromium");
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn artifact_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("test-artifacts");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The chart figure of `target`.
fn figure<'a>(dom: &'a str, target: &str) -> &'a str {
    let from = &dom[dom.find(&format!("data-target=\"{target}\"")).unwrap()..];
    &from[..from.find("</figure>").unwrap()]
}

fn assert_has(dom: &str, needle: &str) {
    assert!(
        dom.contains(needle),
        "the rendered page lacks {needle:?}:\n{dom}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_renders_the_migration_in_chromium() {
    let sink = smtp_sink::start();
    let old = sink.addr;
    let gw = Gateway::start_config(|smtp, admin, state| config(smtp, admin, state, old));
    write_backfill_report(&gw.state_dir());
    send_traffic(&gw).await;
    settle(&gw).await;
    alert_fired(&gw).await;
    let url = format!("http://{}/", gw.admin);

    // Without JavaScript: the tables are in the server's HTML.
    let html = queueops::body_of(&queueops::http(gw.admin, "GET", "/").await).to_string();
    assert_has(&html, "<table id=\"queue-by-target\">");
    assert_has(&html, "<table id=\"oldest-deferred\">");

    let profile = tempfile::tempdir().unwrap();
    // Virtual time runs the page's refresh timer (every 5 s) without waiting for it.
    let out = chromium(
        profile.path(),
        &url,
        &["--virtual-time-budget=12000", "--dump-dom"],
    );
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    std::fs::write(artifact_dir().join("status-page.dom.html"), &dom).unwrap();
    // The script ran and swapped in a fresh <main> at least once.
    assert_has(&dom, "data-live=\"1\"");
    assert_has(&dom, "data-refreshed=\"");
    assert!(!dom.contains("data-refresh-error=\""), "{dom}");
    // Charts per target with the last hour's figures.
    assert_has(&dom, "<figure data-target=\"old\">");
    assert_has(&dom, "<figure data-target=\"new\">");
    let old_chart = figure(&dom, "old");
    // alice's message, and the alert's own mail (routed to old by default).
    assert!(
        !old_chart.contains("data-series=\"delivered\" data-total=\"0\""),
        "{old_chart}"
    );
    let new_chart = figure(&dom, "new");
    assert!(
        !new_chart.contains("data-series=\"deferred\" data-total=\"0\""),
        "{new_chart}"
    );
    // The queue by target and state, and the deferred message with its last reply.
    assert_has(&dom, "<td>new</td><td>deferred</td><td>1</td><td>1</td>");
    let deferred = &dom[dom.find("id=\"oldest-deferred\"").unwrap()..];
    assert!(deferred.contains("dave@example.com"), "{deferred}");
    assert!(
        deferred.contains("class=\"reply\">") && !deferred.contains("class=\"reply\"></td>"),
        "the last reply is shown: {deferred}"
    );
    // The backfill job with per-mailbox progress, speed, errors, convergence.
    assert_has(&dom, "data-job=\"wave-1\"");
    assert_has(&dom, "<progress max=\"40\" value=\"21\"></progress> 21/40");
    assert_has(&dom, "4.8 msg/s");
    assert_has(&dom, "1 (5.0%)");

    // The waves on a timeline with a "now" marker, with their verdicts.
    assert_has(&dom, "class=\"now-marker\"");
    assert_has(&dom, "class=\"wave scheduled\" data-wave=\"wave-1\"");
    assert_has(&dom, "class=\"wave active\" data-wave=\"pilot\"");
    let wave_row = &dom[dom.find("<tr data-wave=\"wave-1\">").unwrap()..];
    assert!(wave_row.contains("not ready"), "{wave_row}");
    // The alert, firing, and the tile counting it.
    assert_has(&dom, "<tr data-alert=\"new-down\">");
    assert_has(&dom, "<b class=\"bad\">1</b>alerts firing");

    let shot = artifact_dir().join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        profile.path(),
        &url,
        &[
            "--window-size=1280,2200",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        png.len()
    );
}
