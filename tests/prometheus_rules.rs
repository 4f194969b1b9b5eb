//! The Prometheus deliverables against the real tools. `deploy/prometheus/alerts.yml` passes
//! `promtool check rules` and its unit tests (`deploy/prometheus/alerts_test.yml`, `promtool
//! test rules`). A real gateway (`cutover serve`) with two targets, Postfix's smtp-sink that
//! accepts and a port where nothing listens, a backfill job's report, and a little traffic
//! (delivered, deferred, refused as relaying, as a loop, as too large) shows on `/metrics`:
//! per-target delivered/deferred, intake outcomes and rejections by reason, histograms, build
//! info, backfill figures by job; the exposition passes `promtool check metrics`; and every
//! metric the alert rules and the Grafana dashboard use is in it.

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
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

/// Run promtool with `args` (and `stdin`); its success and its whole output.
fn promtool(bin: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let Some(bin) = common::tool("promtool") else {
        return;
    };
    let rules = deploy("prometheus/alerts.yml");
    let (ok, out) = promtool(&bin, &["check", "rules", rules.to_str().unwrap()], "");
    assert!(ok && out.contains("SUCCESS"), "{out}");
    let tests = deploy("prometheus/alerts_test.yml");
    let (ok, out) = promtool(&bin, &["test", "rules", tests.to_str().unwrap()], "");
    assert!(ok && out.contains("SUCCESS"), "{out}");
}

/// `old` is the sink, `new` a port where nothing listens; carol lives on new, everyone else of
/// example.com on old; one backfill job.
fn config(smtp: SocketAddr, admin: SocketAddr, state: &Path, old: SocketAddr) -> String {
    format!(
        r#"{gateway}max_message_size = "1MiB"

{targets}
[[routing.rule]]
name = "wave-1"
recipients = ["carol@example.com"]
deliver = ["new"]
[[routing.rule]]
name = "domain"
recipients = ["@example.com"]
deliver = ["old"]

[admin]
listen = "{admin}"

{backfill}"#,
        gateway = gateway::gateway_table(smtp, state),
        targets = gateway::old_and_closed_new(old),
        backfill = gateway::backfill_job(state, "alice\n"),
    )
}

/// A finished pass of job `wave-1` as `cutover backfill run` leaves it.
fn write_backfill_report(state: &Path) {
    use cutover::backfill::report::{FolderReport, JobReport, MailboxReport};
    let job = JobReport {
        job: "wave-1".into(),
        finished: Some("2026-11-30T12:00:00Z".into()),
        duration_ms: 1500,
        ..Default::default()
    };
    let mailbox = MailboxReport {
        copied: 4,
        bytes: 4096,
        converged: true,
        ..Default::default()
    };
    let inbox = FolderReport {
        copied: 4,
        skipped: [("present".to_string(), 2)].into(),
        bytes: 4096,
        converged: true,
        ..Default::default()
    };
    gateway::write_report(state, job, "alice", mailbox, inbox);
}

fn message(subject: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "From: s@example.org\r\nTo: x@example.com\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.org>\r\n{extra_headers}\r\nbody\r\n"
    )
    .into_bytes()
}

/// Traffic: alice (old: delivered), carol (new: deferred), a relay attempt, a message carrying
/// our own loop header, a MAIL with SIZE over the limit.
async fn send_traffic(gw: &Gateway) {
    let mut c = Client::greeted(gw.smtp).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    let r = send_message(
        &mut c,
        "s@example.org",
        &["alice@example.com"],
        &message("a", ""),
    )
    .await;
    assert_eq!(r.code, 250, "{r:?}");
    let r = send_message(
        &mut c,
        "s@example.org",
        &["carol@example.com"],
        &message("c", ""),
    )
    .await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.cmd("MAIL FROM:<s@example.org>").await.code, 250);
    let r = c.cmd("RCPT TO:<someone@elsewhere.test>").await;
    assert!(r.is(550, "5.7.1"), "{r:?}");
    assert_eq!(c.cmd("RSET").await.code, 250);
    let looped = message("l", "X-Cutover-Loop: mx.test\r\n");
    let r = send_message(&mut c, "s@example.org", &["alice@example.com"], &looped).await;
    assert!(r.is(554, "5.4.6"), "{r:?}");
    let r = c.cmd("MAIL FROM:<s@example.org> SIZE=50000000").await;
    assert_eq!(r.code, 552, "{r:?}");
}

/// Scrape until both deliveries have an outcome (bounded: 30 s).
async fn settled_metrics(gw: &Gateway) -> (String, BTreeMap<String, f64>) {
    let residence = r#"cutover_queue_residence_seconds_count{target="old"}"#;
    let text = gateway::settled_metrics(gw.admin, || gw.log(), &[residence]).await;
    let m = queueops::parse_metrics(&text);
    (text, m)
}

/// The OpenMetrics exposition in the Prometheus text format promtool 2.x reads: counters are
/// declared under their `_total` name, no `# UNIT`, no `# EOF`.
fn classic_format(om: &str) -> String {
    let counters: BTreeSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::new();
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let declared = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(declared.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Every `cutover_*` metric name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    regex::Regex::new(r"cutover_[a-z0-9_]*[a-z0-9]")
        .unwrap()
        .find_iter(text)
        .map(|m| m.as_str().to_string())
        .collect()
}

fn assert_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no line {line:?} in /metrics:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_metrics_feed_the_rules_and_the_dashboard() {
    let sink = smtp_sink::start();
    let old = sink.addr;
    let gw = Gateway::start_config(|smtp, admin, state| config(smtp, admin, state, old));
    write_backfill_report(&gw.state_dir());
    send_traffic(&gw).await;
    let (text, m) = settled_metrics(&gw).await;

    // Per target: old delivered (with a latency), new deferred (never reached: no latency).
    assert_eq!(m[r#"cutover_delivery_delivered_total{target="old"}"#], 1.0);
    assert_eq!(m[r#"cutover_delivery_delivered_total{target="new"}"#], 0.0);
    assert_eq!(m[r#"cutover_delivery_attempts_total{target="old"}"#], 1.0);
    assert!(m[r#"cutover_delivery_attempts_total{target="new"}"#] >= 1.0);
    assert_eq!(
        m[r#"cutover_delivery_latency_seconds_count{target="old"}"#],
        1.0
    );
    assert_eq!(
        m[r#"cutover_delivery_latency_seconds_count{target="new"}"#],
        0.0
    );
    assert_eq!(
        m[r#"cutover_delivery_latency_seconds_bucket{le="+Inf",target="old"}"#],
        1.0
    );
    assert!(m[r#"cutover_queue_oldest_deferred_age_seconds{target="new"}"#] >= 0.0);
    // Intake: two accepted, one refused at DATA; rejections by reason, each once.
    assert_line(
        &text,
        r#"cutover_intake_messages_total{outcome="accepted"} 2"#,
    );
    assert_line(
        &text,
        r#"cutover_intake_messages_total{outcome="rejected"} 1"#,
    );
    assert_line(
        &text,
        r#"cutover_intake_rejections_total{reason="relay_denied"} 1"#,
    );
    assert_line(&text, r#"cutover_intake_rejections_total{reason="loop"} 1"#);
    assert_line(&text, r#"cutover_intake_rejections_total{reason="size"} 1"#);
    assert_line(
        &text,
        r#"cutover_intake_rejections_total{reason="unrouted"} 0"#,
    );
    assert_eq!(m["cutover_message_size_bytes_count"], 2.0);
    assert_eq!(m[r#"cutover_message_size_bytes_bucket{le="1024.0"}"#], 2.0);
    assert_line(
        &text,
        &format!(
            r#"cutover_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        ),
    );
    assert_line(&text, "cutover_storage_healthy 1");
    // Backfill by job, never by mailbox.
    let job = r#"backfill_job="wave-1""#;
    assert_line(
        &text,
        &format!(r#"cutover_backfill_messages_total{{{job},kind="copied"}} 4"#),
    );
    assert_line(
        &text,
        &format!(r#"cutover_backfill_messages_total{{{job},kind="skipped"}} 2"#),
    );
    assert_line(
        &text,
        &format!("cutover_backfill_bytes_total{{{job}}} 4096"),
    );
    assert_line(
        &text,
        &format!("cutover_backfill_pass_duration_seconds{{{job}}} 1.5"),
    );
    assert_line(&text, &format!("cutover_backfill_converged{{{job}}} 1"));
    assert_line(&text, &format!("cutover_backfill_running{{{job}}} 0"));
    assert!(!text.contains("alice"), "no mailbox in /metrics:\n{text}");

    // Every metric the rules and the dashboard use is exported.
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for file in ["prometheus/alerts.yml", "grafana/cutover.json"] {
        let used = metric_names(&std::fs::read_to_string(deploy(file)).unwrap());
        assert!(used.len() > 5, "{file}: {used:?}");
        for name in &used {
            assert!(
                exported.contains(name.as_str()),
                "{file} uses {name}, not in /metrics:\n{text}"
            );
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/cutover.json")).unwrap())
            .unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 8);

    // The exposition is valid and lint-clean for promtool.
    let Some(bin) = common::tool("promtool") else {
        return;
    };
    let (ok, out) = promtool(&bin, &["check", "metrics"], &classic_format(&text));
    assert!(ok, "promtool check metrics:\n{out}\n{text}");
}
