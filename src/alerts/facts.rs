//! Gathers the alert [`Snapshot`]: unreachable targets from the delivery engine
//! ([`Scheduler::unreachable_targets`]), the oldest deferred leg per target from the queue
//! listing, the `dsn_failure` counter, the backfill jobs' `report.json` and the waves (through
//! the gateway's [`WaveSource`] hook). Only what the configured rules need is read. Reads; never
//! changes the queue, the engine or a file, and never decides whether anything fires.

use super::WaveSource;
use super::rules::{BackfillFact, DeferredFact, Snapshot, Unreachable};
use crate::backfill::report::JobReport;
use crate::config::values::Timestamp;
use crate::config::{AlertCondition, Config};
use crate::outbound::scheduler::Scheduler;
use crate::queue::Queue;
use crate::queue::model::{LegState, MessageSummary};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

/// Where the facts come from.
#[derive(Clone)]
pub struct Sources {
    pub queue: Queue,
    /// The delivery engine, when it runs in this process (none: no target is unreachable and
    /// no DSNs are counted).
    pub scheduler: Option<Arc<Scheduler>>,
    pub waves: Option<WaveSource>,
}

/// The oldest deferred leg of each target (held legs left out: an operator parked them).
pub fn oldest_deferred(msgs: &[MessageSummary]) -> BTreeMap<String, DeferredFact> {
    let mut out: BTreeMap<String, DeferredFact> = BTreeMap::new();
    for m in msgs {
        for l in m
            .legs
            .iter()
            .filter(|l| l.state == LegState::Deferred && !l.held)
        {
            if out.get(&l.target).is_some_and(|d| d.since <= l.created) {
                continue;
            }
            out.insert(
                l.target.clone(),
                DeferredFact {
                    since: l.created,
                    queue_id: m.id.0.clone(),
                    last_reply: l.last_reply().map(str::to_string),
                },
            );
        }
    }
    out
}

/// Mailbox and folder errors named in a backfill notice at most.
const NAMED_ERRORS: usize = 5;

/// What a job report says about the last pass.
pub fn backfill_fact(r: &JobReport) -> BackfillFact {
    let mut errors = Vec::new();
    for m in &r.mailboxes {
        if let Some(e) = &m.error {
            errors.push(format!("{}: {e}", m.source_user));
        }
        for f in &m.folders {
            if let Some(e) = &f.error {
                errors.push(format!("{} {}: {e}", m.source_user, f.folder));
            }
        }
    }
    errors.truncate(NAMED_ERRORS);
    BackfillFact {
        running: r.running,
        finished: r
            .finished
            .as_deref()
            .and_then(|s| Timestamp::parse(s).ok())
            .map(|t| t.0),
        failed: r.failed,
        errors,
    }
}

/// The snapshot at `now` for the rules of `cfg`.
pub async fn gather(src: &Sources, cfg: &Config, now: SystemTime) -> Snapshot {
    let wants = |c: AlertCondition| cfg.alert.iter().any(|r| r.when == c);
    let sched = src.scheduler.as_deref();
    let oldest = if wants(AlertCondition::OldestDeferred) {
        let q = src.queue.clone();
        match tokio::task::spawn_blocking(move || q.list()).await {
            Ok(Ok(list)) => oldest_deferred(&list),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "alerts: cannot list the queue");
                BTreeMap::new()
            }
            Err(e) => {
                tracing::warn!(error = %e, "alerts: queue listing task failed");
                BTreeMap::new()
            }
        }
    } else {
        BTreeMap::new()
    };
    Snapshot {
        now,
        hostname: cfg.gateway.hostname.clone(),
        unreachable: sched
            .map(|s| {
                s.unreachable_targets()
                    .into_iter()
                    .map(|(t, (since, reason))| (t, Unreachable { since, reason }))
                    .collect()
            })
            .unwrap_or_default(),
        oldest_deferred: oldest,
        dsn_failures: dsn_failures(src),
        backfill: backfill_reports(cfg),
        waves: match (&src.waves, wants(AlertCondition::WaveNotConverged)) {
            (Some(w), true) => w(cfg, now),
            _ => Vec::new(),
        },
    }
}

/// The `dsn_failure` counter (0 without a delivery engine).
pub fn dsn_failures(src: &Sources) -> u64 {
    src.scheduler
        .as_ref()
        .map_or(0, |s| s.stats.dsn_failure.load(Ordering::Relaxed))
}

/// The report of each job a `backfill_failed` rule names, when it has one (unsharded runs:
/// `<state_dir>/backfill/<job>/report.json`).
fn backfill_reports(cfg: &Config) -> BTreeMap<String, BackfillFact> {
    let mut out = BTreeMap::new();
    for job in cfg
        .alert
        .iter()
        .filter(|r| r.when == AlertCondition::BackfillFailed)
        .filter_map(|r| r.job.as_deref())
    {
        let path =
            crate::backfill::state::job_dir(&cfg.gateway.state_dir, job, None).join("report.json");
        match JobReport::read(&path) {
            Ok(r) => {
                out.insert(job.to_string(), backfill_fact(&r));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "alerts: cannot read the backfill report")
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backfill::report::{FolderReport, MailboxReport};
    use crate::queue::model::{Leg, LegId, RcptState};
    use crate::queue::{NewLeg, QueueId};
    use std::time::Duration;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn msg(id: &str, target: &str, created: u64, deferred: bool, held: bool) -> MessageSummary {
        let mut leg = Leg::new(
            LegId(0),
            NewLeg {
                target: target.into(),
                rules: vec!["r".into()],
                recipients: vec!["a@example.com".into()],
            },
            t(created),
        );
        if deferred {
            leg.recipients[0].state = RcptState::Deferred {
                attempts: 1,
                last_reply: "451 later".into(),
                next: t(created + 60),
            };
            leg.refresh_state();
        }
        leg.held = held;
        MessageSummary {
            id: QueueId(id.into()),
            received_at: t(created),
            size: 1,
            mail_from: String::new(),
            legs: vec![leg],
            body_missing: false,
        }
    }

    #[test]
    fn oldest_deferred_per_target_skips_queued_and_held_legs() {
        let msgs = [
            msg("A", "new", 100, true, false),
            msg("B", "new", 50, false, false),
            msg("C", "new", 40, true, true),
            msg("D", "new", 90, true, false),
            msg("E", "old", 300, true, false),
        ];
        let o = oldest_deferred(&msgs);
        assert_eq!(o.len(), 2);
        assert_eq!(o["new"].queue_id, "D");
        assert_eq!(o["new"].since, t(90));
        assert_eq!(o["new"].last_reply.as_deref(), Some("451 later"));
        assert_eq!(o["old"].queue_id, "E");
    }

    #[test]
    fn backfill_fact_collects_failures_and_the_finish_time() {
        let mut r = JobReport {
            job: "w1".into(),
            finished: Some("2026-12-01T18:00:00Z".into()),
            mailboxes: vec![MailboxReport {
                source_user: "alice".into(),
                error: Some("login failed".into()),
                folders: vec![FolderReport {
                    folder: "INBOX".into(),
                    error: Some("NO quota".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        r.total();
        let f = backfill_fact(&r);
        assert!(!f.running);
        assert_eq!(f.failed, 2);
        assert_eq!(f.errors, ["alice: login failed", "alice INBOX: NO quota"]);
        assert_eq!(
            f.finished,
            Some(Timestamp::parse("2026-12-01T18:00:00Z").unwrap().0)
        );
    }
}
