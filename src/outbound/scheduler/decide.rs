//! The scheduler's pure decision core for one leg: which recipients an attempt is for, when a
//! leg has expired, how an attempt's per-recipient outcomes change the leg (recipient states,
//! attempt counts, the next attempt from `queue.retry_schedule` with jitter, the once-per-leg
//! delay warning) and how long an unreachable target backs off. The clock (`now`) and the random
//! draw are parameters. Never does IO: no tokio, no sockets, no store, no logging.

use crate::config::Config;
use crate::outbound::reply::Outcome;
use crate::outbound::retry::{delay_warning_due, expired, next_delay};
use crate::queue::model::{BOUNCE_RULE, Leg, RcptState};
use crate::routing;
use std::time::{Duration, SystemTime};

/// The retry policy of a configuration (`[queue]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// `retry_schedule`: the delay after the n-th attempt, the last step repeating.
    pub schedule: Vec<Duration>,
    /// After this long in the queue a leg fails what is left.
    pub max_age: Duration,
    /// A delay DSN after this long (`0` = off).
    pub delay_warning: Duration,
}

impl RetryPolicy {
    pub fn from_config(q: &crate::config::Queue) -> RetryPolicy {
        RetryPolicy {
            schedule: q.retry_schedule.iter().map(|d| d.0).collect(),
            max_age: q.max_age.0,
            delay_warning: q.delay_warning.0,
        }
    }

    /// The first retry step (60 s when the schedule is empty).
    pub fn first_step(&self) -> Duration {
        self.schedule
            .first()
            .copied()
            .unwrap_or(Duration::from_secs(60))
    }
}

/// What kind of attempt a leg update records (the per-recipient outcomes are in [`Report`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The leg outlived `max_age`: what was pending fails, without another attempt.
    Expired,
    /// Its target is backing off until `until`: no attempt, the leg waits until then.
    Postponed { until: SystemTime },
    /// An attempt that ended before any transaction (target not configured, body unreadable,
    /// no connection). `backoff`: the target now backs off until then, and the leg with it.
    NotSent { backoff: Option<SystemTime> },
    /// A transaction ran; the sender logged its per-recipient lines.
    Sent,
}

impl Attempt {
    /// Does it count as an attempt (leg and recipient attempt counts, retry step)?
    pub fn counts(self) -> bool {
        matches!(self, Attempt::NotSent { .. } | Attempt::Sent)
    }

    /// The next attempt it forces instead of the retry schedule.
    pub fn postpone(self) -> Option<SystemTime> {
        match self {
            Attempt::Postponed { until } => Some(until),
            Attempt::NotSent { backoff } => backoff,
            Attempt::Expired | Attempt::Sent => None,
        }
    }

    /// The status word of the per-recipient log line for outcome `o` (`None`: logged already).
    pub fn log_word(self, o: &Outcome) -> Option<&'static str> {
        match self {
            Attempt::Expired => Some("expired"),
            Attempt::Sent => None,
            Attempt::Postponed { .. } | Attempt::NotSent { .. } => Some(o.status_word()),
        }
    }
}

/// The result of one attempt of a leg: its kind and the outcome for each attempted recipient
/// (by index into the leg).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub attempt: Attempt,
    pub outcomes: Vec<(usize, Outcome)>,
}

impl Report {
    /// The same outcome for every recipient in `idx`.
    pub fn all(attempt: Attempt, idx: &[usize], o: &Outcome) -> Report {
        Report {
            attempt,
            outcomes: idx.iter().map(|&i| (i, o.clone())).collect(),
        }
    }

    pub fn any_deferred(&self) -> bool {
        self.outcomes
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Deferred { .. }))
    }

    pub fn any_failed(&self) -> bool {
        self.outcomes
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Failed { .. }))
    }
}

/// How a [`Report`] changes its leg (see [`apply`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The leg's attempt count afterwards.
    pub attempts: u32,
    /// The next attempt of the leg and of its deferred recipients.
    pub next: SystemTime,
    /// This update sends the leg's delay warning (at most once per leg).
    pub warn_delay: bool,
    /// Copied from [`Attempt::counts`].
    pub counts: bool,
}

/// The recipients of `leg` an attempt is for: the pending ones, none when the leg is held or
/// final.
pub fn pending(leg: &Leg) -> Vec<usize> {
    if leg.held || leg.state.is_final() {
        return Vec::new();
    }
    (0..leg.recipients.len())
        .filter(|&i| leg.recipients[i].state.is_pending())
        .collect()
}

/// When the leg has outlived `max_age` at `now`: the failure of each recipient in `pending`,
/// naming the age limit and the recipient's last reply.
pub fn expiry(leg: &Leg, pending: &[usize], now: SystemTime, p: &RetryPolicy) -> Option<Report> {
    if !expired(leg.created, now, p.max_age) {
        return None;
    }
    let outcomes = pending
        .iter()
        .filter_map(|&i| leg.recipients.get(i).map(|r| (i, r)))
        .map(|(i, r)| {
            let last = r.state.last_reply().unwrap_or("never attempted");
            let reply = format!(
                "message expired after {} in the queue; last reply: {last}",
                humantime::format_duration(p.max_age)
            );
            (i, Outcome::Failed { reply })
        })
        .collect();
    Some(Report {
        attempt: Attempt::Expired,
        outcomes,
    })
}

/// The leg-level decision for `report` on `leg` at `now`; `draw` ∈ [0, 1) is the jitter.
pub fn decide(p: &RetryPolicy, leg: &Leg, report: &Report, now: SystemTime, draw: f64) -> Decision {
    let counts = report.attempt.counts();
    let attempts = leg.attempts + u32::from(counts);
    let next = report
        .attempt
        .postpone()
        .unwrap_or_else(|| now + next_delay(&p.schedule, attempts.max(1), draw));
    let warn_delay = delay_warning_due(leg.created, now, p.delay_warning, leg.delay_warned)
        && report.any_deferred();
    Decision {
        attempts,
        next,
        warn_delay,
        counts,
    }
}

/// Apply `report` and its decision to `l`, the stored leg with the snapshot's id, where
/// `snapshot` is the leg the attempt was made for. Only recipients still pending and still the
/// same address change (an operator may have taken recipients off a held leg meanwhile).
pub fn apply(snapshot: &Leg, report: &Report, d: &Decision, l: &mut Leg) {
    for (i, o) in &report.outcomes {
        let Some(r) = l.recipients.get_mut(*i) else {
            continue;
        };
        let same = snapshot
            .recipients
            .get(*i)
            .is_some_and(|snap| snap.address == r.address);
        if !same || !r.state.is_pending() {
            continue;
        }
        let prev_attempts = match &r.state {
            RcptState::Deferred { attempts, .. } => *attempts,
            _ => 0,
        };
        r.state = match o {
            Outcome::Delivered { reply } => RcptState::Delivered {
                reply: reply.clone(),
            },
            Outcome::Failed { reply } => RcptState::Failed {
                reply: reply.clone(),
            },
            Outcome::Deferred { reply } => RcptState::Deferred {
                next: d.next,
                attempts: prev_attempts + u32::from(d.counts),
                last_reply: reply.clone(),
            },
        };
    }
    l.attempts = d.attempts;
    l.next_attempt = Some(d.next);
    if d.warn_delay {
        l.delay_warned = true;
    }
}

/// The address target `target` receives for a recipient (see [`routing::final_rcpt`]).
pub fn final_rcpt(cfg: &Config, target: &str, address: &str, rule: &str) -> String {
    routing::final_rcpt_stored(
        address,
        cfg.targets
            .get(target)
            .and_then(|t| t.rcpt_domain.as_deref()),
        &cfg.gateway.accept_domains,
        rule == BOUNCE_RULE,
    )
}

/// How long a target backs off after its `failures`-th connection failure in a row: 5 s, 10 s,
/// 20 s ... at most 5 min, and never longer than the first retry step.
pub fn target_backoff(failures: u64, first_step: Duration) -> Duration {
    let n = failures.max(1);
    Duration::from_secs(5u64.saturating_mul(1 << (n - 1).min(6)))
        .min(Duration::from_secs(300))
        .min(first_step)
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
