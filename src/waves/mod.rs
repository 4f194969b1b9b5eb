//! Waves: a wave is a routing rule (`[[routing.rule]]`, by name) seen as a planned switch of
//! its members' mail. This module owns the answers to "when does each rule switch, and what
//! moves then" ([`list`]) and "is this wave ready to switch" ([`status`], [`overview`]): pure
//! functions of the compiled [`Router`], the queue's message summaries, the backfill jobs'
//! mailbox lists and reports (as plain data, see [`JobBackfill`]) and an instant. `load` reads
//! those inputs from disk; the CLI (`cutover wave`) and the admin API (`/api/waves`) render
//! the same structs. It never does IO outside `load`, never changes the queue, and never
//! decides routes itself (the router does, at `now` and at the switch instant).
//!
//! **Windows.** `active_from` is inclusive, `active_until` exclusive (as the router has it). A
//! rule without either is `always`; before `active_from` it is `scheduled` (next switch: it
//! starts); inside the window `active` (next switch: `active_until`, if any); after
//! `active_until` `ended`. "After the switch" means routed at the switch instant itself, so a
//! later rule or `routing.default` decides where mail goes once this rule is inactive, and
//! other rules switching at the same instant are accounted for.
//!
//! **Members.** Exact addresses written in `recipients` or in the `recipients_file` are members
//! one by one; domain, subdomain, glob and regex patterns are summarised (routed through an
//! example address derived from the pattern, counted by the queued recipients and backfill
//! mailboxes they match).
//!
//! **Backfill mapping.** A member is covered by a `[[backfill.job]]` mailbox when the job's
//! `source_user` or `destination_user` equals the member's address (case-insensitive), or,
//! for users written as bare local parts (no `@`), equals the member's local part. A pattern
//! member is covered by every mailbox whose user (a full address) it matches. The mailbox's
//! state comes from the job's last or running pass report (`<state_dir>/backfill/<job>/report.json`,
//! and the shards' reports).
//!
//! **Verdict.** Ready to switch unless one of these holds (each is a reason):
//! - a member would be unrouted after the switch (its mail would be rejected);
//! - a member whose mail moves at the switch has a covering backfill mailbox that never ran, was
//!   not in the last pass, is in a pass still running (or interrupted) that has not reached it,
//!   did not converge, recorded failures or an error, or whose job report cannot be read;
//! - legs for members are deferred at a target their mail goes to after the switch (that
//!   target is already refusing or failing their mail).
//!
//! Notes (never blocking): legs still pending towards a target members move away from (legs
//! keep the route they were accepted with, so they are still delivered there: run a backfill
//! pass after they drain, or `cutover queue reroute`); held legs; moving members no backfill
//! job covers; members another rule decides at the switch (shadowed); a switch that changes
//! nothing; no switch ahead; the convergence summary and the reminder of a final pass.

pub mod load;
mod model;
mod status;
mod verdict;

pub use model::{
    BackfillCounts, BackfillState, MailboxBackfill, Member, PatternMember, Pending, Verdict,
};
pub use status::{
    NextSwitch, Overview, WaveStatus, WaveSummary, mailbox_state, overview, status, statuses,
};

use crate::address::Address;
use crate::backfill::report::JobReport;
use crate::backfill::runner::MailboxPair;
use crate::config::values::Timestamp;
use crate::routing::{CompiledRule, Origin, Pattern, Router};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// Where a rule's window stands at an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowState {
    /// No `active_from` nor `active_until`.
    Always,
    /// Before `active_from`.
    Scheduled,
    /// Inside the window.
    Active,
    /// At or after `active_until`.
    Ended,
}

impl WindowState {
    /// The name in JSON (`always`, `scheduled`, `active`, `ended`).
    pub fn as_str(self) -> &'static str {
        match self {
            WindowState::Always => "always",
            WindowState::Scheduled => "scheduled",
            WindowState::Active => "active",
            WindowState::Ended => "ended",
        }
    }
}

/// What happens at a switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchKind {
    /// The rule becomes active (`active_from`).
    Starts,
    /// The rule stops (`active_until`).
    Ends,
}

/// A rule's window and next switch at one instant (`cutover wave list`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WaveWindow {
    pub name: String,
    /// Index of the rule in file order.
    pub rule_index: usize,
    pub deliver: Vec<String>,
    /// RFC 3339, when set.
    pub active_from: Option<String>,
    pub active_until: Option<String>,
    pub state: WindowState,
    /// Whether the rule is active at the instant.
    pub active: bool,
    pub next_switch: Option<Switch>,
}

/// The next switch of a rule and what it changes for the rule's members.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Switch {
    /// RFC 3339.
    pub at: String,
    pub kind: SwitchKind,
    /// Seconds from the instant asked about to the switch.
    pub in_secs: u64,
    /// Members grouped by where their mail goes now and after the switch (only groups that move).
    pub changes: Vec<Change>,
}

/// One group of members whose mail moves from one set of targets to another at a switch.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    /// Targets now (empty: unrouted).
    pub from: Vec<String>,
    /// Targets after the switch (empty: unrouted, mail would be rejected).
    pub to: Vec<String>,
    /// How many explicit member addresses move this way.
    pub addresses: usize,
    /// Patterns whose example address moves this way.
    pub patterns: Vec<String>,
    /// Up to [`EXAMPLES`] of the addresses.
    pub examples: Vec<String>,
    /// `mail for 3 addresses and pattern @sales.example.com moves from [old] to [new]`.
    pub text: String,
}

/// How many example addresses a [`Change`] lists.
pub const EXAMPLES: usize = 5;

/// Where one address's mail goes at one instant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteSide {
    /// The rule that decides (`default` for `routing.default`); `None`: unrouted.
    pub rule: Option<String>,
    pub targets: Vec<String>,
}

/// One backfill job as data: its mailbox list and the reports of its last or running passes
/// (the job's own and its shards'), as [`load::backfill_jobs`] reads them.
#[derive(Clone, Debug, Default)]
pub struct JobBackfill {
    pub job: String,
    pub mailboxes: Vec<MailboxPair>,
    pub reports: Vec<JobReport>,
    /// Why `mailboxes_file` could not be read, if so.
    pub mailboxes_error: Option<String>,
    /// Why a report could not be read, if so.
    pub report_error: Option<String>,
}

/// Everything the pure functions read.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub routes: &'a Router,
    /// `recipients_file` of each rule, by rule index, for naming where a member was written.
    pub files: &'a [Option<String>],
    pub queue: &'a [crate::queue::model::MessageSummary],
    pub backfill: &'a [JobBackfill],
    pub now: SystemTime,
}

/// The window state of a rule active from `from` (inclusive) until `until` (exclusive) at
/// `now`, and its next switch after `now`, if any.
pub fn window_state(
    from: Option<SystemTime>,
    until: Option<SystemTime>,
    now: SystemTime,
) -> (WindowState, Option<(SystemTime, SwitchKind)>) {
    match (from, until) {
        (None, None) => (WindowState::Always, None),
        (_, Some(u)) if now >= u => (WindowState::Ended, None),
        (Some(f), _) if now < f => (WindowState::Scheduled, Some((f, SwitchKind::Starts))),
        (_, u) => (WindowState::Active, u.map(|u| (u, SwitchKind::Ends))),
    }
}

/// Every rule's window and next switch at `now`, in file order.
pub fn list(routes: &Router, now: SystemTime) -> Vec<WaveWindow> {
    (0..routes.rules().len())
        .filter_map(|i| window(routes, i, now))
        .collect()
}

/// The window of rule `index` at `now`, with what its next switch changes.
pub fn window(routes: &Router, index: usize, now: SystemTime) -> Option<WaveWindow> {
    let rule = routes.rules().get(index)?;
    let (state, next) = window_state(rule.active_from, rule.active_until, now);
    let next_switch = next.map(|(at, kind)| {
        let routed = route_members(routes, rule, now, at);
        Switch {
            at: Timestamp(at).to_rfc3339(),
            kind,
            in_secs: crate::time::age_secs(at, now),
            changes: changes(&routed),
        }
    });
    Some(WaveWindow {
        name: rule.name.clone(),
        rule_index: index,
        deliver: rule.deliver.clone(),
        active_from: rule.active_from.map(|t| Timestamp(t).to_rfc3339()),
        active_until: rule.active_until.map(|t| Timestamp(t).to_rfc3339()),
        state,
        active: rule.active_at(now),
        next_switch,
    })
}

/// The instant "after the switch" of a window: its next switch, or `now` when there is none.
fn after_instant(rule: &CompiledRule, now: SystemTime) -> SystemTime {
    window_state(rule.active_from, rule.active_until, now)
        .1
        .map_or(now, |(at, _)| at)
}

/// A member of a rule, routed now and after the switch.
#[derive(Clone, Debug)]
struct Routed {
    /// The address, or the pattern as written (normalised).
    label: String,
    /// Index into the rule's patterns.
    pattern: usize,
    is_pattern: bool,
    /// The address routed for a pattern, if one could be derived.
    example: Option<String>,
    now: RouteSide,
    after: RouteSide,
}

impl Routed {
    fn moves(&self) -> bool {
        sorted(&self.now.targets) != sorted(&self.after.targets)
    }
}

fn sorted(v: &[String]) -> Vec<&str> {
    let mut v: Vec<&str> = v.iter().map(String::as_str).collect();
    v.sort_unstable();
    v
}

/// Route every member of `rule` at `now` and at `after`. Explicit addresses first, in the order
/// written, then patterns.
fn route_members(
    routes: &Router,
    rule: &CompiledRule,
    now: SystemTime,
    after: SystemTime,
) -> Vec<Routed> {
    let side = |a: &str, at| match routes.route(a, at) {
        Some(r) => RouteSide {
            rule: Some(r.rule),
            targets: r.targets,
        },
        None => RouteSide {
            rule: None,
            targets: Vec::new(),
        },
    };
    let mut out: Vec<Routed> = Vec::with_capacity(rule.patterns.len());
    for (i, (p, _)) in rule.patterns.iter().enumerate() {
        let is_pattern = !matches!(p, Pattern::Exact(_));
        let addr = if is_pattern {
            example_address(p)
        } else {
            Some(p.text())
        };
        let (now_side, after_side) = match &addr {
            Some(a) => (side(a, now), side(a, after)),
            None => (rule_side(rule, now), rule_side(rule, after)),
        };
        out.push(Routed {
            label: p.text(),
            pattern: i,
            is_pattern,
            example: addr.filter(|_| is_pattern),
            now: now_side,
            after: after_side,
        });
    }
    out.sort_by_key(|r| r.is_pattern);
    out
}

/// For a pattern without an example address: the rule's own targets while it is active,
/// otherwise unknown (the default's, shown as unrouted).
fn rule_side(rule: &CompiledRule, at: SystemTime) -> RouteSide {
    if rule.active_at(at) {
        RouteSide {
            rule: Some(rule.name.clone()),
            targets: rule.deliver.clone(),
        }
    } else {
        RouteSide {
            rule: None,
            targets: Vec::new(),
        }
    }
}

/// An address a pattern matches, to route it as a stand-in for all it matches: `user@d` for
/// `@d`, `user@sub.d` for `@.d`, `*` → `user` and `?` → `x` in a glob. Regexes: none.
pub fn example_address(p: &Pattern) -> Option<String> {
    let a = match p {
        Pattern::Exact(e) => e.clone(),
        Pattern::Domain(d) => format!("user@{d}"),
        Pattern::Subdomain(d) => format!("user@sub.{d}"),
        Pattern::Glob(g, _) => g.replace('*', "user").replace('?', "x"),
        Pattern::Regex(..) => return None,
    };
    Address::parse(&a).map(|a| a.to_string())
}

/// Group the members that move by (from, to).
fn changes(routed: &[Routed]) -> Vec<Change> {
    let mut groups: BTreeMap<(Vec<String>, Vec<String>), Change> = BTreeMap::new();
    for r in routed.iter().filter(|r| r.moves()) {
        let key = (r.now.targets.clone(), r.after.targets.clone());
        let c = groups.entry(key).or_insert_with(|| Change {
            from: r.now.targets.clone(),
            to: r.after.targets.clone(),
            addresses: 0,
            patterns: Vec::new(),
            examples: Vec::new(),
            text: String::new(),
        });
        if r.is_pattern {
            c.patterns.push(r.label.clone());
        } else {
            c.addresses += 1;
            if c.examples.len() < EXAMPLES {
                c.examples.push(r.label.clone());
            }
        }
    }
    let mut out: Vec<Change> = groups.into_values().collect();
    for c in &mut out {
        c.text = change_text(c);
    }
    out
}

fn change_text(c: &Change) -> String {
    let mut who = Vec::new();
    if c.addresses == 1 {
        who.push(c.examples.first().cloned().unwrap_or_default());
    } else if c.addresses > 1 {
        who.push(format!("{} addresses", c.addresses));
    }
    for p in &c.patterns {
        who.push(format!("pattern {p}"));
    }
    let to = if c.to.is_empty() {
        "nowhere (unrouted: rejected)".to_string()
    } else {
        targets_text(&c.to)
    };
    format!(
        "mail for {} moves from {} to {to}",
        who.join(" and "),
        targets_text(&c.from)
    )
}

/// `[old, new]`, or `[]` for unrouted.
pub fn targets_text(t: &[String]) -> String {
    format!("[{}]", t.join(", "))
}

/// Where a member was written: `recipients[2]` or `FILE:LINE`.
fn origin_text(origin: &Origin, file: Option<&str>) -> String {
    match origin {
        Origin::Inline(j) => format!("recipients[{j}]"),
        Origin::File(l) => format!("{}:{l}", file.unwrap_or("recipients_file")),
    }
}

/// A span of seconds as `1d 6h`, `2h 5m`, `3m`, `40s`.
pub fn span_text(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests;
