//! The data a wave's status is made of (members, pending legs, backfill mailboxes, the
//! verdict) and the short texts built from it, shared by `status` (which computes it) and
//! `verdict` (which judges it). Data and formatting only; no IO.

use super::{RouteSide, WaveWindow, WindowState, span_text};
use crate::config::values::Timestamp;
use crate::queue::model::{Leg, LegState};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

/// Legs still to be delivered (queued or deferred) that carry a recipient of a wave.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Pending {
    pub legs: usize,
    pub queued: usize,
    pub deferred: usize,
    pub held: usize,
    /// Legs by target.
    pub by_target: BTreeMap<String, usize>,
    /// Deferred legs by target.
    pub deferred_by_target: BTreeMap<String, usize>,
    /// When the oldest of them was planned (RFC 3339), and its age in seconds.
    pub oldest: Option<String>,
    pub oldest_age_secs: Option<u64>,
    /// A deferral reply from one of them.
    pub last_reply: Option<String>,
    #[serde(skip)]
    oldest_at: Option<SystemTime>,
    /// The legs counted, by target (see [`LegKey`]), so figures summed over
    /// members count each leg once.
    #[serde(skip)]
    pub(super) leg_keys: BTreeMap<String, BTreeSet<LegKey>>,
}

/// A leg's identity in the queue, whether it is deferred, whether it is held.
pub(super) type LegKey = (String, u16, bool, bool);

impl Pending {
    pub(super) fn add(&mut self, msg: &str, leg: &Leg, now: SystemTime) {
        let key = (
            msg.to_string(),
            leg.id.0,
            leg.state == LegState::Deferred,
            leg.held,
        );
        if !self
            .leg_keys
            .entry(leg.target.clone())
            .or_default()
            .insert(key)
        {
            return;
        }
        self.legs += 1;
        if leg.held {
            self.held += 1;
        }
        *self.by_target.entry(leg.target.clone()).or_default() += 1;
        if leg.state == LegState::Deferred {
            self.deferred += 1;
            *self
                .deferred_by_target
                .entry(leg.target.clone())
                .or_default() += 1;
            if self.last_reply.is_none() {
                self.last_reply = leg.last_reply().map(str::to_string);
            }
        } else {
            self.queued += 1;
        }
        if self.oldest_at.is_none_or(|o| leg.created < o) {
            self.oldest_at = Some(leg.created);
            self.oldest = Some(Timestamp(leg.created).to_rfc3339());
            self.oldest_age_secs = Some(crate::time::age_secs(now, leg.created));
        }
    }
}

/// The state of one mailbox's backfill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillState {
    /// The job has no report yet.
    NeverRun,
    /// The job's last pass did not include this mailbox (added to the list since?).
    NotInLastPass,
    /// A pass is running (or was interrupted) and has not reached this mailbox.
    InProgress,
    Converged,
    NotConverged,
    /// The pass recorded failed messages or an error for it.
    Failed,
    /// The job's report cannot be read.
    ReportUnreadable,
}

impl BackfillState {
    fn phrase(self) -> &'static str {
        match self {
            BackfillState::NeverRun => "never backfilled (the job has not run)",
            BackfillState::NotInLastPass => "not in the job's last pass",
            BackfillState::InProgress => {
                "not reached yet by a running pass (or the pass was interrupted)"
            }
            BackfillState::Converged => "converged",
            BackfillState::NotConverged => "not converged",
            BackfillState::Failed => "with failures in the last pass",
            BackfillState::ReportUnreadable => "with an unreadable job report",
        }
    }
}

/// One backfill mailbox covering a member.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MailboxBackfill {
    pub job: String,
    pub source_user: String,
    pub destination_user: String,
    pub state: BackfillState,
    /// When the pass that covered it finished (or started, while running), RFC 3339.
    pub last_pass: Option<String>,
    pub running: bool,
    pub converged: bool,
    /// Failed messages plus folder and mailbox errors.
    pub failures: u64,
    pub error: Option<String>,
}

/// Backfill mailboxes by state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BackfillCounts {
    pub mailboxes: usize,
    pub converged: usize,
    pub not_converged: usize,
    pub failed: usize,
    pub in_progress: usize,
    /// Never run, not in the last pass, or an unreadable report.
    pub never_run: usize,
    pub failures: u64,
}

impl BackfillCounts {
    pub(super) fn add(&mut self, m: &MailboxBackfill) {
        self.mailboxes += 1;
        self.failures += m.failures;
        match m.state {
            BackfillState::Converged => self.converged += 1,
            BackfillState::NotConverged => self.not_converged += 1,
            BackfillState::Failed => self.failed += 1,
            BackfillState::InProgress => self.in_progress += 1,
            BackfillState::NeverRun
            | BackfillState::NotInLastPass
            | BackfillState::ReportUnreadable => self.never_run += 1,
        }
    }

    pub(super) fn of<'a>(ms: impl IntoIterator<Item = &'a MailboxBackfill>) -> BackfillCounts {
        let mut c = BackfillCounts::default();
        ms.into_iter().for_each(|m| c.add(m));
        c
    }
}

/// An explicit member address (from `recipients` or the `recipients_file`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Member {
    pub address: String,
    /// Where it was written: `recipients[0]` or `FILE:LINE`.
    pub source: String,
    pub now: RouteSide,
    pub after: RouteSide,
    /// Its mail goes to other targets after the switch.
    pub moves: bool,
    pub pending: Pending,
    pub backfill: Vec<MailboxBackfill>,
}

/// A pattern member, summarised.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PatternMember {
    pub pattern: String,
    pub source: String,
    /// The address routed as a stand-in for the pattern (none for a regex: the rule's targets
    /// while it is active are shown then).
    pub example: Option<String>,
    pub now: RouteSide,
    pub after: RouteSide,
    pub moves: bool,
    /// Distinct pending recipients in the queue the pattern matches.
    pub queued_recipients: usize,
    pub pending: Pending,
    /// The backfill mailboxes whose user the pattern matches.
    pub mailboxes: Vec<MailboxBackfill>,
    pub backfill: BackfillCounts,
    /// `pattern *.admin@example.com (3 queued recipients match, 2 backfill mailboxes)`.
    pub summary: String,
}

/// Ready to switch, or why not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub ready: bool,
    /// What stands in the way (empty when ready).
    pub reasons: Vec<String>,
    /// Worth knowing, never blocking.
    pub notes: Vec<String>,
}

/// `alice@example.com (job wave-1: 3 failures, last pass 2026-...)`.
pub(crate) fn mailbox_text(who: &str, m: &MailboxBackfill) -> String {
    let mut bits = Vec::new();
    if m.failures > 0 {
        bits.push(format!("{} failure(s)", m.failures));
    }
    if let Some(e) = &m.error {
        bits.push(e.clone());
    }
    if let Some(t) = &m.last_pass {
        bits.push(format!(
            "{} {t}",
            if m.running {
                "pass started"
            } else {
                "last pass"
            }
        ));
    }
    let extra = if bits.is_empty() {
        String::new()
    } else {
        format!(": {}", bits.join(", "))
    };
    format!("{who} (job {}{extra})", m.job)
}

pub(crate) fn state_phrase(s: BackfillState) -> &'static str {
    s.phrase()
}

/// `active since X with no end`, `always active`, `ended at X`.
pub(crate) fn no_switch_text(w: &WaveWindow) -> String {
    match w.state {
        WindowState::Always => "no switch ahead: the rule is always active".into(),
        WindowState::Ended => format!(
            "no switch ahead: the wave ended at {}",
            w.active_until.as_deref().unwrap_or("?")
        ),
        _ => format!(
            "no switch ahead: active since {} with no end",
            w.active_from.as_deref().unwrap_or("?")
        ),
    }
}

/// `in 1d 6h` for the switch of a window, if any.
pub(crate) fn switch_in(w: &WaveWindow) -> Option<String> {
    w.next_switch
        .as_ref()
        .map(|s| format!("{} (in {})", s.at, span_text(s.in_secs)))
}
