//! The ready-to-switch verdict of a wave: reasons (blocking) and notes, by the rules written in
//! the parent module's doc. Pure; reads only the status figures already computed.

use super::model::{
    BackfillState, LegKey, MailboxBackfill, Member, PatternMember, Pending, Verdict, mailbox_text,
    no_switch_text, state_phrase, switch_in,
};
use super::{EXAMPLES, JobBackfill, RouteSide, WaveWindow, targets_text};
use crate::routing::CompiledRule;
use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

/// What the verdict looks at.
pub(super) struct Facts<'a> {
    pub rule: &'a CompiledRule,
    pub wave: &'a WaveWindow,
    pub members: &'a [Member],
    pub patterns: &'a [PatternMember],
    pub jobs: &'a [JobBackfill],
    /// The switch instant (or now, without one).
    pub after: SystemTime,
}

/// One member (address or pattern) as the verdict sees it.
struct View<'a> {
    label: &'a str,
    after: &'a RouteSide,
    moves: bool,
    pending: &'a Pending,
    mailboxes: &'a [MailboxBackfill],
}

impl Facts<'_> {
    fn views(&self) -> Vec<View<'_>> {
        let m = self.members.iter().map(|m| View {
            label: &m.address,
            after: &m.after,
            moves: m.moves,
            pending: &m.pending,
            mailboxes: &m.backfill,
        });
        let p = self.patterns.iter().map(|p| View {
            label: &p.pattern,
            after: &p.after,
            moves: p.moves,
            pending: &p.pending,
            mailboxes: &p.mailboxes,
        });
        m.chain(p).collect()
    }
}

/// `a, b, c and 4 more`.
fn examples(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(EXAMPLES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > EXAMPLES {
        s.push_str(&format!(" and {} more", items.len() - EXAMPLES));
    }
    s
}

pub(super) fn verdict(f: &Facts) -> Verdict {
    let views = f.views();
    let mut v = Verdict::default();
    unrouted(&views, &mut v);
    backfill(&views, f.jobs, &mut v);
    deferred_at_destination(&views, &mut v);
    pending_at_old(&views, &mut v);
    coverage(&views, f.jobs, &mut v);
    shadowed(f, &views, &mut v);
    timing(f, &views, &mut v);
    v.ready = v.reasons.is_empty();
    v
}

fn unrouted(views: &[View], v: &mut Verdict) {
    let lost: Vec<String> = views
        .iter()
        .filter(|m| m.moves && m.after.rule.is_none())
        .map(|m| m.label.to_string())
        .collect();
    if !lost.is_empty() {
        v.reasons.push(format!(
            "mail for {} would be rejected after the switch: no rule routes it then and routing.default is not set",
            examples(&lost)
        ));
    }
}

fn backfill(views: &[View], jobs: &[JobBackfill], v: &mut Verdict) {
    let mut by_state: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut converged = 0usize;
    let mut oldest: Option<&str> = None;
    let mut settled: Vec<String> = Vec::new();
    for m in views {
        for b in m.mailboxes.iter().filter(|_| !m.moves) {
            if b.state != BackfillState::Converged {
                settled.push(mailbox_text(m.label, b));
            }
        }
    }
    if !settled.is_empty() {
        v.notes.push(format!(
            "{} mailbox(es) of members whose mail does not move at this switch are not converged: {}",
            settled.len(),
            examples(&settled)
        ));
    }
    for m in views.iter().filter(|m| m.moves) {
        for b in m.mailboxes {
            if b.state == BackfillState::Converged {
                converged += 1;
                oldest = match (oldest, b.last_pass.as_deref()) {
                    (Some(o), Some(t)) => Some(o.min(t)),
                    (o, t) => o.or(t),
                };
                continue;
            }
            let who = mailbox_text(m.label, b);
            by_state.entry(state_phrase(b.state)).or_default().push(who);
        }
    }
    for (phrase, who) in &by_state {
        v.reasons.push(format!(
            "{} mailbox(es) of members whose mail moves are {phrase}: {}",
            who.len(),
            examples(who)
        ));
    }
    for j in jobs.iter().filter(|j| j.mailboxes_error.is_some()) {
        if views.iter().any(|m| m.moves) {
            v.reasons.push(format!(
                "backfill job {} cannot be checked: {}",
                j.job,
                j.mailboxes_error.as_deref().unwrap_or_default()
            ));
        }
    }
    if converged > 0 {
        v.notes.push(format!(
            "{converged} backfill mailbox(es) of moving members converged (oldest last pass {}); \
             run one more pass after the switch: mail delivered to the old side until then is copied by it",
            oldest.unwrap_or("?")
        ));
    }
}

/// Distinct legs at a target over members, kept by `keep(member, target, deferred)`.
fn legs_at<'a>(
    views: &'a [View],
    keep: impl Fn(&View, &str, bool) -> bool,
) -> BTreeMap<&'a str, (BTreeSet<&'a LegKey>, Option<&'a str>)> {
    let mut out: BTreeMap<&str, (BTreeSet<&LegKey>, Option<&str>)> = BTreeMap::new();
    for m in views {
        for (t, keys) in &m.pending.leg_keys {
            for k in keys.iter().filter(|k| keep(m, t, k.2)) {
                let e = out.entry(t).or_default();
                e.0.insert(k);
                e.1 = e.1.or(m.pending.last_reply.as_deref());
            }
        }
    }
    out
}

fn deferred_at_destination(views: &[View], v: &mut Verdict) {
    let at_new = legs_at(views, |m, t, deferred| {
        deferred && m.after.targets.iter().any(|x| x == t)
    });
    for (t, (legs, reply)) in at_new {
        v.reasons.push(format!(
            "{} leg(s) for wave members are deferred at {t}, where their mail goes after the switch{}",
            legs.len(),
            reply.map(|r| format!(" (last reply: {r})")).unwrap_or_default()
        ));
    }
}

fn pending_at_old(views: &[View], v: &mut Verdict) {
    let at_old = legs_at(views, |m, t, _| {
        m.moves && !m.after.targets.iter().any(|x| x == t)
    });
    for (t, (legs, _)) in at_old {
        v.notes.push(format!(
            "{} leg(s) for members are still pending to {t}, which their mail moves away from: they \
             will still be delivered there (legs keep their route); run a backfill pass once they \
             drain, or `cutover queue reroute` them",
            legs.len()
        ));
    }
    let held: usize = legs_at(views, |_, _, _| true)
        .values()
        .map(|(legs, _)| legs.iter().filter(|k| k.3).count())
        .sum();
    if held > 0 {
        v.notes.push(format!(
            "{held} held leg(s) for members: release or delete them"
        ));
    }
}

fn coverage(views: &[View], jobs: &[JobBackfill], v: &mut Verdict) {
    let moving: Vec<&View> = views.iter().filter(|m| m.moves).collect();
    if moving.is_empty() {
        return;
    }
    if jobs.is_empty() {
        v.notes.push(
            "no [[backfill.job]] is configured: the members' mail history is not copied by cutover"
                .into(),
        );
        return;
    }
    let bare: Vec<String> = moving
        .iter()
        .filter(|m| m.mailboxes.is_empty())
        .map(|m| m.label.to_string())
        .collect();
    if !bare.is_empty() {
        v.notes.push(format!(
            "{} moving member(s) are in no backfill job's mailbox list (aliases and lists need none; mailboxes do): {}",
            bare.len(),
            examples(&bare)
        ));
    }
}

fn shadowed(f: &Facts, views: &[View], v: &mut Verdict) {
    if !f.rule.active_at(f.after) {
        return;
    }
    let mut by_rule: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for m in views {
        if let Some(r) = m.after.rule.as_deref().filter(|r| *r != f.rule.name) {
            by_rule.entry(r).or_default().push(m.label.to_string());
        }
    }
    for (r, who) in by_rule {
        v.notes.push(format!(
            "{} member(s) are routed by rule {r} (it matches them first), not by this wave: {}",
            who.len(),
            examples(&who)
        ));
    }
}

fn timing(f: &Facts, views: &[View], v: &mut Verdict) {
    match switch_in(f.wave) {
        None => v.notes.push(no_switch_text(f.wave)),
        Some(when) if !views.iter().any(|m| m.moves) => v.notes.push(format!(
            "the switch at {when} changes nothing for the members"
        )),
        Some(when) => {
            let moving = views.iter().filter(|m| m.moves).count();
            let to: Vec<String> = views
                .iter()
                .filter(|m| m.moves)
                .map(|m| targets_text(&m.after.targets))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            v.notes.push(format!(
                "switch at {when}: mail for {moving} member(s) moves to {}",
                to.join(" / ")
            ));
        }
    }
}
