//! The scheduler's pure DSN decisions for one leg update: which recipients the update turns
//! into a failure DSN (failed on every leg that carries them), which are dual-delivery failures
//! (no DSN), which go into the leg's delay warning, the DSN entries for them, and the DSN
//! messages to stage in the same transaction as the update. The clock is a parameter. Never does
//! IO: no tokio, no sockets, no store (the caller reads the original headers and commits).

use super::decide::final_rcpt;
use crate::bounce::{self, DsnKind, DsnRecipient};
use crate::config::Config;
use crate::queue::QueueId;
use crate::queue::model::{BOUNCE_RULE, Leg, LegId, MessageRecord, RcptFate, RcptState, Recipient};
use crate::queue::store::Staged;
use std::time::SystemTime;

/// Which recipients of one leg an update turns into DSNs (indexes into the leg).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DsnPlan {
    /// Final on this leg by this update and failed on every leg carrying them: failure DSN.
    pub bounced: Vec<usize>,
    /// Final by this update, failed here but delivered elsewhere: no DSN, counted.
    pub mixed: Vec<usize>,
    /// Deferred, when this update is the one that sends the leg's delay warning.
    pub delayed: Vec<usize>,
}

/// May an update with these properties produce a DSN at all? Never for a message from `<>`;
/// otherwise only with a failure or a delay warning.
pub fn possible(mail_from: &str, any_failed: bool, warn_delay: bool) -> bool {
    !mail_from.is_empty() && (warn_delay || any_failed)
}

/// The DSN plan of an update of leg `before.id` from `before` to `after` (the whole record
/// after the update); `warn_delay`: the update sends the leg's delay warning.
pub fn plan(before: &Leg, after: &MessageRecord, warn_delay: bool) -> DsnPlan {
    let mut plan = DsnPlan::default();
    let Some(leg) = after.leg(before.id) else {
        return plan;
    };
    for (i, r) in leg.recipients.iter().enumerate() {
        let was_pending = before
            .recipients
            .get(i)
            .is_some_and(|b| b.address == r.address && b.state.is_pending());
        if !was_pending || r.state.is_pending() || r.rule == BOUNCE_RULE {
            continue;
        }
        match after.fate(&r.address) {
            RcptFate::Failed => plan.bounced.push(i),
            RcptFate::Mixed => plan.mixed.push(i),
            RcptFate::Pending | RcptFate::Delivered => {}
        }
    }
    if warn_delay && !before.delay_warned {
        plan.delayed = (0..leg.recipients.len())
            .filter(|&i| matches!(leg.recipients[i].state, RcptState::Deferred { .. }))
            .collect();
    }
    plan
}

/// The DSN entries for recipients `idx` of leg `leg`: for a failure, every leg that carried
/// the recipient (target and remote reply); for a delay, this leg.
pub fn recipients(
    cfg: &Config,
    rec: &MessageRecord,
    leg: LegId,
    idx: &[usize],
    kind: DsnKind,
    now: SystemTime,
) -> Vec<DsnRecipient> {
    let entry = |l: &Leg, r: &Recipient| DsnRecipient {
        original: r.address.clone(),
        final_rcpt: final_rcpt(cfg, &l.target, &r.address, &r.rule),
        target: l.target.clone(),
        remote_mta: None,
        diagnostic: r.state.last_reply().unwrap_or("").to_string(),
        last_attempt: Some(now),
    };
    let Some(leg) = rec.leg(leg) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for r in idx.iter().filter_map(|&i| leg.recipients.get(i)) {
        match kind {
            DsnKind::Failure => {
                for l in &rec.legs {
                    for x in l.recipients.iter().filter(|x| x.address == r.address) {
                        out.push(entry(l, x));
                    }
                }
            }
            DsnKind::Delay { .. } => out.push(entry(leg, r)),
        }
    }
    out
}

/// What [`stage`] needs besides the update itself.
pub struct StageInput<'a> {
    pub cfg: &'a Config,
    /// The leg the update is for.
    pub leg: LegId,
    pub warn_delay: bool,
    /// The original message's header block.
    pub headers: &'a [u8],
    /// Queue ids for a failure DSN and a delay DSN.
    pub failure_id: &'a QueueId,
    pub delay_id: &'a QueueId,
    pub now: SystemTime,
}

/// The DSN messages an update from `before` to `after` causes: at most one failure DSN and one
/// delay DSN, to be inserted in the same transaction as the update.
pub fn stage(x: &StageInput<'_>, before: &Leg, after: &MessageRecord) -> Vec<Staged> {
    let plan = plan(before, after, x.warn_delay);
    let mut add = Vec::new();
    let mut push = |id: &QueueId, kind, idx: &[usize]| {
        let recipients = recipients(x.cfg, after, x.leg, idx, kind, x.now);
        add.extend(bounce::stage(
            id.clone(),
            x.cfg,
            after,
            kind,
            &recipients,
            x.headers,
            x.now,
        ));
    };
    push(x.failure_id, DsnKind::Failure, &plan.bounced);
    let until = after
        .leg(x.leg)
        .map(|l| l.created + x.cfg.queue.max_age.0)
        .unwrap_or(x.now);
    push(
        x.delay_id,
        DsnKind::Delay {
            will_retry_until: until,
        },
        &plan.delayed,
    );
    add
}

#[cfg(test)]
#[path = "dsn_tests.rs"]
mod tests;
