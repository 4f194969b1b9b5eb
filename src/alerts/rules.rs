//! The alert evaluator, pure: the `[[alert]]` rules and a [`Snapshot`] of facts at `now` go in,
//! the per-rule [`State`] is updated and the [`Transition`]s come out: a rule fires once its
//! condition has held for its `for` time, is never sent again while it stays firing
//! (de-duplication), and resolves once when the condition clears. Also holds the small bounded
//! history of DSN counter samples that `dsn_rate` needs. Never reads the clock, a file or the
//! queue, and never sends anything (`super::facts` gathers, `super::delivery` sends).

use crate::config::values::HumanDuration;
use crate::config::{AlertCondition, AlertRule};
use crate::time::rfc3339;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

/// A target the delivery engine cannot connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreachable {
    /// The first connection failure since a session last opened.
    pub since: SystemTime,
    /// The last failure's reason.
    pub reason: String,
}

/// The oldest deferred leg of a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeferredFact {
    /// When the leg was created (the message's acceptance).
    pub since: SystemTime,
    pub queue_id: String,
    pub last_reply: Option<String>,
}

/// What a backfill job's report says about its last pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackfillFact {
    /// A pass is running (no verdict until it finishes).
    pub running: bool,
    /// When the last pass finished (`None`: never, as far as the report tells).
    pub finished: Option<SystemTime>,
    /// Failed messages and folders plus failed mailboxes of that pass.
    pub failed: u64,
    /// A few of the mailbox and folder errors, for the notice.
    pub errors: Vec<String>,
}

/// A wave (a `[[routing.rule]]` with a window) as the waves module sees it. HOOK: filled by
/// the gateway from the waves module (see `super::WaveSource`); until then the snapshot has no
/// wave facts and `wave_not_converged` rules stay quiet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaveFact {
    /// The routing rule's name.
    pub name: String,
    /// The next switch (`active_from` or `active_until` still ahead), if any.
    pub switch_at: Option<SystemTime>,
    /// Every mailbox of the wave has converged (backfill).
    pub converged: bool,
    /// The mailboxes that have not.
    pub unconverged: Vec<String>,
}

/// The facts at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub now: SystemTime,
    /// This gateway's hostname (in every notice).
    pub hostname: String,
    /// Targets the delivery engine cannot connect to, by name.
    pub unreachable: BTreeMap<String, Unreachable>,
    /// The oldest deferred leg of each target with one.
    pub oldest_deferred: BTreeMap<String, DeferredFact>,
    /// Non-delivery DSNs generated since the gateway started (the `dsn_failure` counter).
    pub dsn_failures: u64,
    /// The backfill jobs the rules name, by name (absent: no report yet).
    pub backfill: BTreeMap<String, BackfillFact>,
    /// The waves (see [`WaveFact`]).
    pub waves: Vec<WaveFact>,
}

/// A change worth a notice.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    Fire {
        rule: String,
        text: String,
        details: Value,
    },
    Resolve {
        rule: String,
        text: String,
        details: Value,
    },
}

/// A rule that is not idle.
#[derive(Clone, Debug)]
enum Phase {
    /// The condition holds since `since`, not yet for the rule's `for` time.
    Pending { since: SystemTime },
    /// Fired at `at`, with this summary.
    Firing { at: SystemTime, summary: String },
}

/// DSN counter samples kept at most (with a 10 s interval, over 11 hours).
pub const MAX_SAMPLES: usize = 4096;

/// What the evaluator remembers between snapshots.
#[derive(Clone, Debug, Default)]
pub struct State {
    phases: HashMap<String, Phase>,
    /// `(when, dsn_failures)`, oldest first.
    dsn: VecDeque<(SystemTime, u64)>,
}

/// What a condition says about a snapshot.
enum Verdict {
    Holds(Finding),
    Clear,
    /// Not known now (a backfill pass running, no wave facts): the rule stays as it is.
    Unknown,
}

struct Finding {
    /// When the condition became true, when the facts tell (else: when first seen).
    since: Option<SystemTime>,
    summary: String,
    details: Value,
}

impl State {
    /// A state whose DSN history starts with `dsn_failures` at `start`.
    pub fn new(start: SystemTime, dsn_failures: u64) -> State {
        let mut s = State::default();
        s.dsn.push_back((start, dsn_failures));
        s
    }

    /// Is this rule firing?
    pub fn firing(&self, rule: &str) -> bool {
        matches!(self.phases.get(rule), Some(Phase::Firing { .. }))
    }

    /// Record a DSN counter sample; keep those `keep` covers (and one before), at most
    /// [`MAX_SAMPLES`].
    fn sample(&mut self, now: SystemTime, value: u64, keep: Duration) {
        if self.dsn.back().is_none_or(|(t, _)| *t <= now) {
            self.dsn.push_back((now, value));
        }
        let horizon = now.checked_sub(keep).unwrap_or(SystemTime::UNIX_EPOCH);
        while self.dsn.len() > 1 && self.dsn.get(1).is_some_and(|(t, _)| *t <= horizon) {
            self.dsn.pop_front();
        }
        while self.dsn.len() > MAX_SAMPLES {
            self.dsn.pop_front();
        }
    }

    /// DSNs generated within `per` before `now`: the counter now minus its value at the window's
    /// start (the last sample at or before it, else the oldest sample).
    fn dsn_count(&self, now: SystemTime, per: Duration) -> u64 {
        let Some(&(_, current)) = self.dsn.back() else {
            return 0;
        };
        let start = now.checked_sub(per).unwrap_or(SystemTime::UNIX_EPOCH);
        let base = self
            .dsn
            .iter()
            .rev()
            .find(|(t, _)| *t <= start)
            .or(self.dsn.front())
            .map_or(current, |(_, v)| *v);
        current.saturating_sub(base)
    }
}

/// Evaluate `rules` on `snap`, updating `state`; the notices to send, in rule order. Rules no
/// longer configured are forgotten (no notice).
pub fn evaluate(rules: &[AlertRule], snap: &Snapshot, state: &mut State) -> Vec<Transition> {
    let keep = rules
        .iter()
        .filter(|r| r.when == AlertCondition::DsnRate)
        .map(AlertRule::dsn_per)
        .max()
        .unwrap_or_default();
    state.sample(snap.now, snap.dsn_failures, keep);
    state
        .phases
        .retain(|name, _| rules.iter().any(|r| &r.name == name));
    let mut out = Vec::new();
    for rule in rules {
        let verdict = condition(rule, snap, state);
        if let Some(t) = step(rule, verdict, snap, state) {
            out.push(t);
        }
    }
    out
}

/// Advance one rule.
fn step(
    rule: &AlertRule,
    verdict: Verdict,
    snap: &Snapshot,
    state: &mut State,
) -> Option<Transition> {
    let now = snap.now;
    let phase = state.phases.get(&rule.name).cloned();
    match (phase, verdict) {
        (_, Verdict::Unknown) | (None, Verdict::Clear) => None,
        (Some(Phase::Pending { .. }), Verdict::Clear) => {
            state.phases.remove(&rule.name);
            None
        }
        (Some(Phase::Firing { at, summary }), Verdict::Clear) => {
            state.phases.remove(&rule.name);
            Some(resolve(rule, snap, at, &summary))
        }
        (Some(Phase::Firing { .. }), Verdict::Holds(_)) => None,
        (pending, Verdict::Holds(f)) => {
            let seen = match pending {
                Some(Phase::Pending { since }) => since,
                _ => now,
            };
            let since = f.since.map_or(seen, |s| s.min(seen));
            if now.duration_since(since).unwrap_or_default() >= rule.hold.0 {
                state.phases.insert(
                    rule.name.clone(),
                    Phase::Firing {
                        at: now,
                        summary: f.summary.clone(),
                    },
                );
                Some(fire(rule, snap, f))
            } else {
                state
                    .phases
                    .insert(rule.name.clone(), Phase::Pending { since });
                None
            }
        }
    }
}

fn fire(rule: &AlertRule, snap: &Snapshot, f: Finding) -> Transition {
    let mut details = f.details;
    if let Value::Object(m) = &mut details {
        m.insert("condition".into(), rule.when.as_str().into());
        m.insert("since".into(), rfc3339(f.since.unwrap_or(snap.now)).into());
    }
    Transition::Fire {
        rule: rule.name.clone(),
        text: format!(
            "[cutover {}] FIRING {}: {}",
            snap.hostname, rule.name, f.summary
        ),
        details,
    }
}

fn resolve(rule: &AlertRule, snap: &Snapshot, at: SystemTime, summary: &str) -> Transition {
    let lasted = snap.now.duration_since(at).unwrap_or_default();
    Transition::Resolve {
        rule: rule.name.clone(),
        text: format!(
            "[cutover {}] RESOLVED {}: {} no longer holds (firing for {}; was: {summary})",
            snap.hostname,
            rule.name,
            rule.when.as_str(),
            human(lasted)
        ),
        details: json!({
            "condition": rule.when.as_str(),
            "fired_at": rfc3339(at),
            "firing_secs": lasted.as_secs(),
        }),
    }
}

/// A duration in whole seconds, human form (`2m 5s`).
fn human(d: Duration) -> String {
    HumanDuration(Duration::from_secs(d.as_secs())).to_string()
}

fn age(now: SystemTime, since: SystemTime) -> Duration {
    now.duration_since(since).unwrap_or_default()
}

/// The rule's condition on `snap`.
fn condition(rule: &AlertRule, snap: &Snapshot, state: &State) -> Verdict {
    match rule.when {
        AlertCondition::TargetUnreachable => unreachable(rule, snap),
        AlertCondition::OldestDeferred => oldest_deferred(rule, snap),
        AlertCondition::DsnRate => dsn_rate(rule, snap, state),
        AlertCondition::BackfillFailed => backfill_failed(rule, snap),
        AlertCondition::WaveNotConverged => wave_not_converged(rule, snap),
    }
}

fn unreachable(rule: &AlertRule, snap: &Snapshot) -> Verdict {
    let target = rule.target.as_deref().unwrap_or_default();
    match snap.unreachable.get(target) {
        None => Verdict::Clear,
        Some(u) => Verdict::Holds(Finding {
            since: Some(u.since),
            summary: format!(
                "target {target} unreachable since {} ({}): {}",
                rfc3339(u.since),
                human(age(snap.now, u.since)),
                u.reason
            ),
            details: json!({"target": target, "reason": u.reason}),
        }),
    }
}

fn oldest_deferred(rule: &AlertRule, snap: &Snapshot) -> Verdict {
    let limit = rule.older_than.map(|d| d.0).unwrap_or_default();
    let oldest = snap
        .oldest_deferred
        .iter()
        .filter(|(t, _)| rule.target.as_ref().is_none_or(|want| want == *t))
        .min_by_key(|(_, d)| d.since);
    let Some((target, d)) = oldest else {
        return Verdict::Clear;
    };
    let old = age(snap.now, d.since);
    if old <= limit {
        return Verdict::Clear;
    }
    let reply = d.last_reply.as_deref().unwrap_or("none yet");
    Verdict::Holds(Finding {
        since: Some(d.since + limit),
        summary: format!(
            "the oldest deferred leg to {target} is {} old (over {}): message {}, last reply: {reply}",
            human(old),
            human(limit),
            d.queue_id
        ),
        details: json!({
            "target": target,
            "queue_id": d.queue_id,
            "age_secs": old.as_secs(),
            "last_reply": d.last_reply,
        }),
    })
}

fn dsn_rate(rule: &AlertRule, snap: &Snapshot, state: &State) -> Verdict {
    let per = rule.dsn_per();
    let rate = rule.rate.unwrap_or(u64::MAX);
    let n = state.dsn_count(snap.now, per);
    if n <= rate {
        return Verdict::Clear;
    }
    Verdict::Holds(Finding {
        since: None,
        summary: format!(
            "{n} non-delivery DSNs in the last {} (more than {rate})",
            human(per)
        ),
        details: json!({"dsns": n, "per_secs": per.as_secs(), "rate": rate}),
    })
}

fn backfill_failed(rule: &AlertRule, snap: &Snapshot) -> Verdict {
    let job = rule.job.as_deref().unwrap_or_default();
    let Some(b) = snap.backfill.get(job) else {
        return Verdict::Clear;
    };
    if b.running {
        return Verdict::Unknown;
    }
    let Some(finished) = b.finished else {
        return Verdict::Clear;
    };
    if b.failed == 0 && b.errors.is_empty() {
        return Verdict::Clear;
    }
    let errors = b.errors.join("; ");
    Verdict::Holds(Finding {
        since: Some(finished),
        summary: format!(
            "backfill job {job}: the pass that finished at {} had {} failure(s){}",
            rfc3339(finished),
            b.failed,
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {errors}")
            }
        ),
        details: json!({"job": job, "failed": b.failed, "errors": b.errors}),
    })
}

/// Mailboxes named in a notice at most.
const NAMED_MAILBOXES: usize = 10;

fn wave_not_converged(rule: &AlertRule, snap: &Snapshot) -> Verdict {
    let name = rule.wave.as_deref().unwrap_or_default();
    let within = rule.within.map(|d| d.0).unwrap_or_default();
    let Some(w) = snap.waves.iter().find(|w| w.name == name) else {
        return Verdict::Unknown;
    };
    let Some(at) = w.switch_at else {
        return Verdict::Clear;
    };
    let Ok(left) = at.duration_since(snap.now) else {
        return Verdict::Clear;
    };
    if left > within || w.converged {
        return Verdict::Clear;
    }
    let mut named: Vec<&str> = w
        .unconverged
        .iter()
        .take(NAMED_MAILBOXES)
        .map(String::as_str)
        .collect();
    if w.unconverged.len() > NAMED_MAILBOXES {
        named.push("...");
    }
    Verdict::Holds(Finding {
        since: at.checked_sub(within),
        summary: format!(
            "wave {name} switches at {} (in {}) and {} mailbox(es) have not converged: {}",
            rfc3339(at),
            human(left),
            w.unconverged.len(),
            named.join(", ")
        ),
        details: json!({
            "wave": name,
            "switch_at": rfc3339(at),
            "unconverged": w.unconverged,
        }),
    })
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
