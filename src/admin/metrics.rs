//! `/metrics`: renders queue gauges (legs by target and state, messages, bytes, oldest message
//! age), the delivery engine's counters and histograms by target, the intake's counters (by
//! outcome, rejections by reason) and message size histogram, backfill job figures (by job, never
//! by mailbox) and the build info as Prometheus/OpenMetrics text (prometheus-client). A fresh
//! registry per scrape from snapshots ([`Scrape`]); pure rendering, it never reads the store or
//! a file itself and never changes anything.

use crate::backfill::report::JobReport;
use crate::inbound::limits::{IntakeStats, Limit, Rejection};
use crate::inbound::verify::VerifyStats;
use crate::outbound::stats::Stats;
use crate::queue::model::{LegState, MessageSummary};
use crate::telemetry::{self, Histogram, TargetCounters};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

/// What a scrape reports about the queue, computed from `Queue::list`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueGauges {
    pub messages: u64,
    pub bytes: u64,
    /// (target, state) → legs; `state` is the leg state, or `held` for a held pending leg.
    pub legs: BTreeMap<(String, String), u64>,
    pub oldest_age_seconds: f64,
    /// Target → age of the oldest message with a deferred leg to it.
    pub oldest_deferred_age_seconds: BTreeMap<String, f64>,
    /// Spool files without a record that recovery moved to `spool/orphans/` at start.
    pub orphans_quarantined: u64,
}

impl QueueGauges {
    pub fn from_list(list: &[MessageSummary], now: SystemTime) -> Self {
        let mut g = QueueGauges {
            messages: list.len() as u64,
            ..Default::default()
        };
        let age = |t: SystemTime| {
            now.duration_since(t)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        };
        for m in list {
            g.bytes += m.size;
            for l in &m.legs {
                if l.state == LegState::Deferred {
                    let a = g
                        .oldest_deferred_age_seconds
                        .entry(l.target.clone())
                        .or_default();
                    *a = a.max(age(m.received_at));
                }
                let state = if l.held && !l.state.is_final() {
                    "held"
                } else {
                    l.state.as_str()
                };
                *g.legs
                    .entry((l.target.clone(), state.to_string()))
                    .or_default() += 1;
            }
        }
        if let Some(oldest) = list.iter().map(|m| m.received_at).min() {
            g.oldest_age_seconds = age(oldest);
        }
        g
    }
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: &AtomicU64) {
    let c: Counter = Counter::default();
    c.inc_by(value.load(Ordering::Relaxed));
    registry.register(name, help, c);
}

/// What one scrape reports: the parts that do not run in this process are `None` (or empty).
#[derive(Clone, Copy)]
pub struct Scrape<'a> {
    pub queue: &'a QueueGauges,
    /// The delivery engine's unlabelled counters (DSNs, back-offs, connections).
    pub stats: Option<&'a Stats>,
    pub intake: Option<&'a IntakeStats>,
    /// Edge authentication's results and decisions.
    pub auth: Option<&'a crate::auth::AuthStats>,
    pub verify: Option<&'a VerifyStats>,
    /// Per-target delivery counters and histograms, message sizes.
    pub telemetry: Option<&'a telemetry::Snapshot>,
    /// One entry per configured backfill job with a readable report.
    pub backfill: &'a [BackfillGauges],
    /// The storage probe's verdict (`/healthz`), when it was asked.
    pub storage_healthy: Option<bool>,
    /// Fleet mode: delivery records waiting in the outbox for the shared ledger.
    pub ledger_outbox: Option<u64>,
}

/// Render a scrape. Counter names get the `_total` suffix from the encoder.
pub fn render(s: &Scrape<'_>) -> Result<String, std::fmt::Error> {
    let mut r = Registry::default();
    build_info(&mut r);
    queue_gauges(&mut r, s.queue);
    if let Some(ok) = s.storage_healthy {
        let g: Gauge = Gauge::default();
        g.set(i64::from(ok));
        r.register(
            "cutover_storage_healthy",
            "1 when the storage probe (as /healthz) passes: a durable write read back",
            g,
        );
    }
    if let Some(n) = s.ledger_outbox {
        let g: Gauge = Gauge::default();
        g.set(i64::try_from(n).unwrap_or(i64::MAX));
        r.register(
            "cutover_ledger_outbox_pending",
            "Delivery records waiting in this gateway's outbox for the shared PostgreSQL ledger (fleet mode; grows while the database is unreachable)",
            g,
        );
    }
    if let Some(t) = s.telemetry {
        delivery_by_target(&mut r, t);
    }
    if let Some(st) = s.stats {
        delivery_counters(&mut r, st);
    }
    if let Some(i) = s.intake {
        intake_counters(&mut r, i);
    }
    if let Some(a) = s.auth {
        auth_counters(&mut r, a);
    }
    if let Some(t) = s.telemetry {
        r.register(
            "cutover_message_size_bytes",
            "Size of the messages accepted at intake (bytes of the DATA block)",
            HistogramFamily(vec![(Vec::new(), t.message_size.clone())]),
        );
    }
    if let Some(v) = s.verify {
        verify_counters(&mut r, v);
    }
    backfill_metrics(&mut r, s.backfill);
    let mut out = String::new();
    encode(&mut out, &r)?;
    Ok(out)
}

/// `cutover_build_info{version} 1`.
fn build_info(r: &mut Registry) {
    let f = Family::<Labels, Gauge>::default();
    f.get_or_create(&vec![(
        "version".to_string(),
        telemetry::VERSION.to_string(),
    )])
    .set(1);
    r.register(
        "cutover_build_info",
        "The running cutover's version (always 1)",
        f,
    );
}

/// Labelled histograms from snapshots, encoded as one family.
#[derive(Debug)]
struct HistogramFamily(Vec<(Labels, Histogram)>);

impl EncodeMetric for HistogramFamily {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, h) in &self.0 {
            let buckets = h.buckets();
            // Without labels directly: a family with an empty label set would write `{}`.
            if labels.is_empty() {
                encoder.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?;
            } else {
                encoder
                    .encode_family(labels)?
                    .encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?;
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn target_label(target: &str) -> Labels {
    vec![("target".to_string(), target.to_string())]
}

/// One counter family labelled `target`, from one field of every target's counters.
fn by_target(
    r: &mut Registry,
    t: &telemetry::Snapshot,
    name: &str,
    help: &str,
    field: fn(&TargetCounters) -> u64,
) {
    let f = Family::<Labels, Counter>::default();
    for (target, c) in &t.targets {
        f.get_or_create(&target_label(target)).inc_by(field(c));
    }
    r.register(name, help, f);
}

/// The delivery counters and histograms by target (every configured target, from zero).
fn delivery_by_target(r: &mut Registry, t: &telemetry::Snapshot) {
    by_target(
        r,
        t,
        "cutover_delivery_attempts",
        "Delivery attempts by target (a transaction, or a failed connection)",
        |c| c.attempts,
    );
    by_target(
        r,
        t,
        "cutover_delivery_delivered",
        "Recipients delivered, by target",
        |c| c.delivered,
    );
    by_target(
        r,
        t,
        "cutover_delivery_deferred",
        "Recipient deferrals, by target",
        |c| c.deferred,
    );
    by_target(
        r,
        t,
        "cutover_delivery_failed",
        "Recipients failed permanently (5xx or expired), by target",
        |c| c.failed,
    );
    by_target(
        r,
        t,
        "cutover_delivery_expired",
        "Recipients failed after max_age, by target (also in failed)",
        |c| c.expired,
    );
    let hist = |f: fn(&TargetCounters) -> &Histogram| {
        HistogramFamily(
            t.targets
                .iter()
                .map(|(name, c)| (target_label(name), f(c).clone()))
                .collect(),
        )
    };
    r.register(
        "cutover_delivery_latency_seconds",
        "One delivery attempt that reached its target: connection (or a pooled session) and SMTP transaction",
        hist(|c| &c.latency),
    );
    r.register(
        "cutover_queue_residence_seconds",
        "Time from acceptance to a leg's final state (delivered, failed or partly both), by target",
        hist(|c| &c.residence),
    );
}

/// A backfill job's figures from its report (the pass running now, or the last one).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackfillGauges {
    pub job: String,
    pub copied: u64,
    /// Messages found present (in the folder, through the ledger, or by an earlier pass).
    pub skipped: u64,
    pub failed: u64,
    pub bytes: u64,
    pub duration_seconds: f64,
    pub converged: bool,
    pub running: bool,
}

impl BackfillGauges {
    /// The job's totals, summed over its mailboxes (no per-mailbox figure leaves here).
    pub fn from_report(report: &JobReport) -> BackfillGauges {
        let mut r = report.clone();
        r.total();
        let skipped = r
            .mailboxes
            .iter()
            .flat_map(|m| &m.folders)
            .flat_map(|f| &f.skipped)
            // A subset of `present`, not a reason of its own.
            .filter(|(reason, _)| reason.as_str() != "present_dual_delivered")
            .map(|(_, n)| n)
            .sum();
        BackfillGauges {
            job: r.job.clone(),
            copied: r.copied,
            skipped,
            failed: r.failed,
            bytes: r.bytes,
            duration_seconds: r.duration_ms as f64 / 1000.0,
            converged: r.converged,
            running: r.running,
        }
    }
}

/// Backfill figures by job (label `backfill_job`): messages by kind, bytes, pass duration, converged, running.
fn backfill_metrics(r: &mut Registry, jobs: &[BackfillGauges]) {
    // Not `job`: Prometheus sets `job` to the scrape job and would rename ours `exported_job`.
    let job = |j: &BackfillGauges| vec![("backfill_job".to_string(), j.job.clone())];
    let messages = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    let duration = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let converged = Family::<Labels, Gauge>::default();
    let running = Family::<Labels, Gauge>::default();
    for j in jobs {
        for (kind, n) in [
            ("copied", j.copied),
            ("skipped", j.skipped),
            ("failed", j.failed),
        ] {
            let mut l = job(j);
            l.push(("kind".to_string(), kind.to_string()));
            messages.get_or_create(&l).inc_by(n);
        }
        bytes.get_or_create(&job(j)).inc_by(j.bytes);
        duration.get_or_create(&job(j)).set(j.duration_seconds);
        converged.get_or_create(&job(j)).set(i64::from(j.converged));
        running.get_or_create(&job(j)).set(i64::from(j.running));
    }
    r.register(
        "cutover_backfill_messages",
        "Messages of the current or last backfill pass by job and kind (copied, skipped as present, failed); restarts with each pass",
        messages,
    );
    r.register(
        "cutover_backfill_bytes",
        "Bytes copied by the current or last backfill pass, by job; restarts with each pass",
        bytes,
    );
    r.register(
        "cutover_backfill_pass_duration_seconds",
        "Duration of the current or last backfill pass, by job",
        duration,
    );
    r.register(
        "cutover_backfill_converged",
        "1 when the job's last pass found every source message on the destination",
        converged,
    );
    r.register(
        "cutover_backfill_running",
        "1 while a backfill pass of the job runs",
        running,
    );
}

/// The queue gauges: messages, bytes, legs by target and state, oldest age, orphans.
fn queue_gauges(r: &mut Registry, q: &QueueGauges) {
    let messages: Gauge = Gauge::default();
    messages.set(q.messages as i64);
    r.register("cutover_queue_messages", "Messages in the queue", messages);
    let bytes: Gauge = Gauge::default();
    bytes.set(q.bytes as i64);
    r.register(
        "cutover_queue_bytes",
        "Total body size of the queued messages",
        bytes,
    );
    let legs = Family::<Labels, Gauge>::default();
    for ((target, state), n) in &q.legs {
        legs.get_or_create(&vec![
            ("target".to_string(), target.clone()),
            ("state".to_string(), state.clone()),
        ])
        .set(*n as i64);
    }
    r.register(
        "cutover_queue_legs",
        "Queued legs by target and state (queued, deferred, held, delivered, failed, partial)",
        legs,
    );
    let age = Gauge::<f64, AtomicU64>::default();
    age.set(q.oldest_age_seconds);
    r.register(
        "cutover_queue_oldest_message_age_seconds",
        "Age of the oldest queued message (0 when empty)",
        age,
    );
    let deferred = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for (target, a) in &q.oldest_deferred_age_seconds {
        deferred.get_or_create(&target_label(target)).set(*a);
    }
    r.register(
        "cutover_queue_oldest_deferred_age_seconds",
        "Age of the oldest message with a deferred leg, by target (absent: none deferred)",
        deferred,
    );
    let orphans: Gauge = Gauge::default();
    orphans.set(q.orphans_quarantined as i64);
    r.register(
        "cutover_queue_orphans_quarantined",
        "Spool files without a message record moved to spool/orphans/ by recovery at start (inspect them)",
        orphans,
    );
}

/// The delivery engine's unlabelled counters.
fn delivery_counters(r: &mut Registry, s: &Stats) {
    let dsn = Family::<Labels, Counter>::default();
    for (kind, v) in [("failure", &s.dsn_failure), ("delay", &s.dsn_delay)] {
        dsn.get_or_create(&vec![("kind".to_string(), kind.to_string())])
            .inc_by(v.load(Ordering::Relaxed));
    }
    r.register("cutover_dsn", "DSNs queued to senders, by kind", dsn);
    counter(
        r,
        "cutover_dual_leg_failures",
        "Dual-delivery legs that failed while another leg delivered",
        &s.dual_leg_failures,
    );
    counter(
        r,
        "cutover_target_backoffs",
        "Whole-target back-offs after connection failures",
        &s.target_backoffs,
    );
    counter(
        r,
        "cutover_connections_opened",
        "Outbound SMTP connections opened",
        &s.connections_opened,
    );
}

/// Recipient verification counters: probes, cache hits, list checks.
fn verify_counters(r: &mut Registry, v: &VerifyStats) {
    results(
        r,
        "cutover_verify_probes",
        "Recipient probes sent to targets (RCPT TO), by result: known (2xx), unknown (5xx), tempfail (4xx, timeout, connection error)",
        &[
            ("known", &v.probe_known),
            ("unknown", &v.probe_unknown),
            ("tempfail", &v.probe_tempfail),
        ],
    );
    results(
        r,
        "cutover_verify_cache_hits",
        "Recipient verifications answered from the cache (or by a probe already in flight), by result",
        &[("known", &v.cache_known), ("unknown", &v.cache_unknown)],
    );
    results(
        r,
        "cutover_verify_list",
        "Recipients checked against recipients_known lists, by result",
        &[("known", &v.list_known), ("unknown", &v.list_unknown)],
    );
}

/// One counter family labelled `result`, from `(result, counter)` pairs.
fn results(r: &mut Registry, name: &str, help: &str, pairs: &[(&str, &AtomicU64)]) {
    let f = Family::<Labels, Counter>::default();
    for (result, n) in pairs {
        f.get_or_create(&vec![("result".to_string(), result.to_string())])
            .inc_by(n.load(Ordering::Relaxed));
    }
    r.register(name, help, f);
}

/// The SMTP listener's counters: sessions, limits that refused or closed them, recipients and
/// messages accepted or refused.
/// `cutover_auth_results_total{method,result}` and `cutover_auth_decisions_total{decision}`.
fn auth_counters(r: &mut Registry, a: &crate::auth::AuthStats) {
    let results = Family::<Labels, Counter>::default();
    for (m, method) in crate::auth::METHODS.iter().enumerate() {
        for o in crate::auth::OUTCOMES {
            results
                .get_or_create(&vec![
                    ("method".to_string(), method.to_string()),
                    ("result".to_string(), o.as_str().to_string()),
                ])
                .inc_by(a.result_count(m, o));
        }
    }
    r.register(
        "cutover_auth_results",
        "Messages evaluated at intake, by method (spf, dkim, dmarc, arc) and result",
        results,
    );
    let decisions = Family::<Labels, Counter>::default();
    for (i, d) in crate::auth::DECISIONS.iter().enumerate() {
        decisions
            .get_or_create(&vec![("decision".to_string(), d.to_string())])
            .inc_by(a.decision_count(i));
    }
    r.register(
        "cutover_auth_decisions",
        "Evaluated messages by what [auth] decided (accept, quarantine, reject, tempfail)",
        decisions,
    );
}

fn intake_counters(r: &mut Registry, i: &IntakeStats) {
    counter(
        r,
        "cutover_smtp_sessions",
        "SMTP sessions started (after connection limits)",
        &i.connections,
    );
    let limits = Family::<Labels, Counter>::default();
    for l in Limit::ALL {
        limits
            .get_or_create(&vec![("limit".to_string(), l.as_str().to_string())])
            .inc_by(i.limit_count(l));
    }
    r.register(
        "cutover_smtp_limit",
        "Connections refused or sessions closed by an abuse limit, by limit",
        limits,
    );
    results(
        r,
        "cutover_smtp_recipients",
        "RCPT commands by result",
        &[
            ("accepted", &i.rcpts_accepted),
            ("refused", &i.rcpts_refused),
        ],
    );
    let messages = Family::<Labels, Counter>::default();
    for (outcome, n) in [
        ("accepted", &i.messages_accepted),
        ("rejected", &i.messages_refused),
    ] {
        messages
            .get_or_create(&vec![("outcome".to_string(), outcome.to_string())])
            .inc_by(n.load(Ordering::Relaxed));
    }
    r.register(
        "cutover_intake_messages",
        "Messages at the end of DATA by outcome (accepted: queued and acknowledged)",
        messages,
    );
    let rejections = Family::<Labels, Counter>::default();
    for why in Rejection::ALL {
        rejections
            .get_or_create(&vec![("reason".to_string(), why.as_str().to_string())])
            .inc_by(i.rejection_count(why));
    }
    r.register(
        "cutover_intake_rejections",
        "Recipients (at RCPT) and messages (at MAIL or DATA) refused, by reason",
        rejections,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::model::{Leg, LegId, RcptState};
    use crate::queue::{NewLeg, QueueId};
    use std::time::Duration;

    fn summary(at: SystemTime, size: u64) -> MessageSummary {
        let mk = |t: &str| {
            Leg::new(
                LegId(0),
                NewLeg {
                    target: t.into(),
                    rules: vec!["default".into()],
                    recipients: vec!["a@example.com".into()],
                },
                at,
            )
        };
        let mut held = mk("new");
        held.held = true;
        let mut done = mk("old");
        done.recipients[0].state = RcptState::Delivered {
            reply: "250".into(),
        };
        done.refresh_state();
        MessageSummary {
            id: QueueId("0000000000000A".into()),
            received_at: at,
            size,
            mail_from: String::new(),
            legs: vec![mk("old"), held, done],
            body_missing: false,
        }
    }

    #[test]
    fn renders_gauges_and_counters() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let list = vec![
            summary(now - Duration::from_secs(90), 100),
            summary(now - Duration::from_secs(30), 50),
        ];
        let g = QueueGauges::from_list(&list, now);
        assert_eq!(g.messages, 2);
        assert_eq!(g.bytes, 150);
        assert_eq!(g.oldest_age_seconds, 90.0);
        assert_eq!(g.legs[&("old".to_string(), "queued".to_string())], 2);
        assert_eq!(g.legs[&("new".to_string(), "held".to_string())], 2);
        assert_eq!(g.legs[&("old".to_string(), "delivered".to_string())], 2);
        let stats = Stats::default();
        stats.dsn_delay.store(2, Ordering::Relaxed);
        let verify = VerifyStats::default();
        verify.probe_unknown.fetch_add(1, Ordering::Relaxed);
        verify.cache_unknown.fetch_add(2, Ordering::Relaxed);
        let t = telemetry::Telemetry::default();
        t.register_targets(["new"]);
        for _ in 0..7 {
            t.attempt("old");
        }
        t.latency("old", Duration::from_millis(30));
        t.accepted(3000, [("old", 1)], now);
        let intake = IntakeStats::default();
        intake.rejected(Rejection::RelayDenied);
        let auth = crate::auth::AuthStats::default();
        let snap = t.snapshot();
        let scrape = Scrape {
            queue: &g,
            stats: Some(&stats),
            intake: Some(&intake),
            auth: Some(&auth),
            verify: Some(&verify),
            telemetry: Some(&snap),
            backfill: &[],
            storage_healthy: Some(false),
            ledger_outbox: None,
        };
        let text = render(&scrape).unwrap();
        for line in [
            "cutover_delivery_attempts_total{target=\"old\"} 7\n",
            "cutover_delivery_attempts_total{target=\"new\"} 0\n",
            "cutover_delivery_latency_seconds_bucket{le=\"0.05\",target=\"old\"} 1\n",
            "cutover_delivery_latency_seconds_count{target=\"new\"} 0\n",
            "cutover_message_size_bytes_bucket{le=\"4096.0\"} 1\n",
            "cutover_intake_rejections_total{reason=\"relay_denied\"} 1\n",
            "cutover_intake_rejections_total{reason=\"loop\"} 0\n",
            "cutover_intake_messages_total{outcome=\"accepted\"} 0\n",
            "cutover_storage_healthy 0\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(text.contains(&format!(
            "cutover_build_info{{version=\"{}\"}} 1\n",
            telemetry::VERSION
        )));
        assert!(
            text.contains(r#"cutover_verify_probes_total{result="unknown"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cutover_verify_cache_hits_total{result="unknown"} 2"#),
            "{text}"
        );
        assert!(text.contains("cutover_queue_messages 2\n"), "{text}");
        assert!(
            text.contains(r#"cutover_queue_legs{target="new",state="held"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cutover_dsn_total{kind="delay"} 2"#),
            "{text}"
        );
        assert!(
            text.contains("cutover_queue_oldest_message_age_seconds 90.0"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.contains("cutover_backfill_converged{"), "{text}");
        let bare = render(&Scrape {
            queue: &QueueGauges::default(),
            stats: None,
            intake: None,
            auth: None,
            verify: None,
            telemetry: None,
            backfill: &[],
            storage_healthy: None,
            ledger_outbox: None,
        })
        .unwrap();
        assert!(!bare.contains("cutover_delivery"), "{bare}");
        assert!(
            bare.contains("cutover_queue_oldest_message_age_seconds 0.0"),
            "{bare}"
        );
    }

    #[test]
    fn backfill_by_job_without_mailboxes() {
        use crate::backfill::report::{FolderReport, MailboxReport};
        let folder = |copied, present| FolderReport {
            copied,
            skipped: [
                ("present".to_string(), present),
                ("present_dual_delivered".to_string(), 1),
                ("ledger".to_string(), 2),
            ]
            .into(),
            bytes: copied * 100,
            converged: true,
            ..Default::default()
        };
        let mailbox = |user: &str, folders: Vec<FolderReport>| MailboxReport {
            source_user: user.into(),
            copied: folders.iter().map(|f| f.copied).sum(),
            bytes: folders.iter().map(|f| f.bytes).sum(),
            converged: true,
            folders,
            ..Default::default()
        };
        let report = JobReport {
            job: "wave-1".into(),
            running: true,
            duration_ms: 2500,
            mailboxes: vec![
                mailbox("alice", vec![folder(3, 4), folder(1, 0)]),
                mailbox("bob", vec![folder(2, 1)]),
            ],
            ..Default::default()
        };
        let g = BackfillGauges::from_report(&report);
        assert_eq!((g.copied, g.skipped, g.failed, g.bytes), (6, 11, 0, 600));
        assert!(g.converged && g.running);
        let text = render(&Scrape {
            queue: &QueueGauges::default(),
            stats: None,
            intake: None,
            auth: None,
            verify: None,
            telemetry: None,
            backfill: &[g],
            storage_healthy: Some(true),
            ledger_outbox: None,
        })
        .unwrap();
        for line in [
            "cutover_backfill_messages_total{backfill_job=\"wave-1\",kind=\"copied\"} 6\n",
            "cutover_backfill_messages_total{backfill_job=\"wave-1\",kind=\"skipped\"} 11\n",
            "cutover_backfill_bytes_total{backfill_job=\"wave-1\"} 600\n",
            "cutover_backfill_pass_duration_seconds{backfill_job=\"wave-1\"} 2.5\n",
            "cutover_backfill_converged{backfill_job=\"wave-1\"} 1\n",
            "cutover_backfill_running{backfill_job=\"wave-1\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("alice"), "no mailbox label: {text}");
    }
}
