//! `/metrics`: renders queue gauges (legs by target and state, messages, bytes, oldest message
//! age) and the delivery engine's counters as Prometheus/OpenMetrics text (prometheus-client).
//! A fresh registry per scrape from a queue summary and a counter snapshot; pure rendering, it
//! never reads the store itself and never changes anything.

use crate::inbound::limits::{IntakeStats, Limit};
use crate::inbound::verify::VerifyStats;
use crate::outbound::stats::Stats;
use crate::queue::model::MessageSummary;
use prometheus_client::encoding::text::encode;
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
    /// Spool files without a record that recovery moved to `spool/orphans/` at start.
    pub orphans_quarantined: u64,
}

impl QueueGauges {
    pub fn from_list(list: &[MessageSummary], now: SystemTime) -> Self {
        let mut g = QueueGauges {
            messages: list.len() as u64,
            ..Default::default()
        };
        for m in list {
            g.bytes += m.size;
            for l in &m.legs {
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
            g.oldest_age_seconds = now
                .duration_since(oldest)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
        }
        g
    }
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: &AtomicU64) {
    let c: Counter = Counter::default();
    c.inc_by(value.load(Ordering::Relaxed));
    registry.register(name, help, c);
}

/// Render the queue gauges, (when a delivery engine runs) its counters and (when the SMTP
/// intake runs) its counters and recipient verification counters. Counter names get the
/// `_total` suffix from the encoder.
pub fn render(
    q: &QueueGauges,
    stats: Option<&Stats>,
    intake: Option<&IntakeStats>,
    verify: Option<&VerifyStats>,
) -> Result<String, std::fmt::Error> {
    let mut r = Registry::default();
    queue_gauges(&mut r, q);
    if let Some(s) = stats {
        delivery_counters(&mut r, s);
    }
    if let Some(i) = intake {
        intake_counters(&mut r, i);
    }
    if let Some(v) = verify {
        verify_counters(&mut r, v);
    }
    let mut out = String::new();
    encode(&mut out, &r)?;
    Ok(out)
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
    let orphans: Gauge = Gauge::default();
    orphans.set(q.orphans_quarantined as i64);
    r.register(
        "cutover_queue_orphans_quarantined",
        "Spool files without a message record moved to spool/orphans/ by recovery at start (inspect them)",
        orphans,
    );
}

/// The delivery engine's counters.
fn delivery_counters(r: &mut Registry, s: &Stats) {
    counter(
        r,
        "cutover_delivery_attempts",
        "Delivery attempts (one per leg attempt)",
        &s.attempts,
    );
    counter(
        r,
        "cutover_delivery_delivered",
        "Recipients delivered",
        &s.delivered,
    );
    counter(
        r,
        "cutover_delivery_deferred",
        "Recipient deferrals",
        &s.deferred,
    );
    counter(
        r,
        "cutover_delivery_failed",
        "Recipients failed permanently",
        &s.failed,
    );
    counter(
        r,
        "cutover_delivery_expired",
        "Recipients failed after max_age",
        &s.expired,
    );
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
    results(
        r,
        "cutover_smtp_messages",
        "Messages at the end of DATA by result",
        &[
            ("accepted", &i.messages_accepted),
            ("refused", &i.messages_refused),
        ],
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
        stats.attempts.store(7, Ordering::Relaxed);
        stats.dsn_delay.store(2, Ordering::Relaxed);
        let verify = VerifyStats::default();
        verify.probe_unknown.fetch_add(1, Ordering::Relaxed);
        verify.cache_unknown.fetch_add(2, Ordering::Relaxed);
        let text = render(&g, Some(&stats), None, Some(&verify)).unwrap();
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
            text.contains("cutover_delivery_attempts_total 7\n"),
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
        let bare = render(&QueueGauges::default(), None, None, None).unwrap();
        assert!(!bare.contains("cutover_delivery"), "{bare}");
        assert!(
            bare.contains("cutover_queue_oldest_message_age_seconds 0.0"),
            "{bare}"
        );
    }
}
