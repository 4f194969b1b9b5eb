//! `cutover wave status` / `/api/waves`: per wave, each member's route now and after the switch,
//! the legs still pending for members, their mailboxes' backfill state, and the verdict (rules in
//! the parent module's doc). Pure: computed from [`Inputs`] only.

use super::model::{
    BackfillCounts, BackfillState, MailboxBackfill, Member, PatternMember, Pending, Verdict,
};
use super::{
    Inputs, JobBackfill, Routed, WaveWindow, after_instant, origin_text, route_members,
    targets_text, window,
};
use crate::address::Address;
use crate::backfill::report::{JobReport, MailboxReport};
use crate::backfill::runner::MailboxPair;
use crate::config::values::Timestamp;
use crate::queue::model::MessageSummary;
use crate::routing::{CompiledRule, MatchOptions, Pattern};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

/// `cutover wave status NAME --json`, `GET /api/waves/{name}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WaveStatus {
    /// The instant evaluated (RFC 3339).
    pub at: String,
    pub wave: WaveWindow,
    pub members: Vec<Member>,
    pub patterns: Vec<PatternMember>,
    /// Legs pending for any member (each leg once).
    pub pending: Pending,
    /// Every covering mailbox of every member and pattern.
    pub backfill: BackfillCounts,
    /// Members (addresses and patterns) whose mail moves at the switch.
    pub moving: usize,
    pub verdict: Verdict,
}

/// One wave in the overview: its window and the status figures without the member lists.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WaveSummary {
    #[serde(flatten)]
    pub wave: WaveWindow,
    pub addresses: usize,
    pub patterns: usize,
    pub moving: usize,
    pub pending: Pending,
    pub backfill: BackfillCounts,
    pub verdict: Verdict,
}

/// The next switch among all waves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NextSwitch {
    pub wave: String,
    pub at: String,
    pub in_secs: u64,
}

/// `cutover wave list --json`, `GET /api/waves`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Overview {
    pub at: String,
    pub next_switch: Option<NextSwitch>,
    pub waves: Vec<WaveSummary>,
}

/// The status of the first rule named `name`; `None` when there is none.
pub fn status(inputs: &Inputs, name: &str) -> Option<WaveStatus> {
    let i = inputs.routes.rules().iter().position(|r| r.name == name)?;
    build(inputs, i)
}

/// The status of every rule, in file order (for the status page).
pub fn statuses(inputs: &Inputs) -> Vec<WaveStatus> {
    (0..inputs.routes.rules().len())
        .filter_map(|i| build(inputs, i))
        .collect()
}

/// Every wave's window and status figures, and the next switch overall.
pub fn overview(inputs: &Inputs) -> Overview {
    let waves: Vec<WaveSummary> = statuses(inputs).into_iter().map(summary).collect();
    let next_switch = waves
        .iter()
        .filter_map(|w| w.wave.next_switch.as_ref().map(|s| (s, &w.wave.name)))
        .min_by_key(|(s, _)| s.in_secs)
        .map(|(s, name)| NextSwitch {
            wave: name.clone(),
            at: s.at.clone(),
            in_secs: s.in_secs,
        });
    Overview {
        at: Timestamp(inputs.now).to_rfc3339(),
        next_switch,
        waves,
    }
}

fn summary(s: WaveStatus) -> WaveSummary {
    WaveSummary {
        addresses: s.members.len(),
        patterns: s.patterns.len(),
        moving: s.moving,
        pending: s.pending,
        backfill: s.backfill,
        verdict: s.verdict,
        wave: s.wave,
    }
}

fn build(inputs: &Inputs, index: usize) -> Option<WaveStatus> {
    let rule = inputs.routes.rules().get(index)?;
    let wave = window(inputs.routes, index, inputs.now)?;
    let after = after_instant(rule, inputs.now);
    let routed = route_members(inputs.routes, rule, inputs.now, after);
    let tally = tally_queue(inputs.routes.options(), rule, inputs.queue, inputs.now);
    let boxes = MailboxIndex::new(inputs.backfill, inputs.routes.options());
    let file = inputs.files.get(index).cloned().flatten();
    let mut members = Vec::new();
    let mut patterns = Vec::new();
    for r in &routed {
        let (p, origin) = &rule.patterns[r.pattern];
        let source = origin_text(origin, file.as_deref());
        let pending = tally.per_pattern[r.pattern].clone();
        if r.is_pattern {
            let mailboxes = boxes.for_pattern(p);
            let queued = tally.recipients[r.pattern].len();
            patterns.push(pattern_member(r, source, pending, mailboxes, queued));
        } else {
            let backfill = Address::parse(&r.label)
                .map(|a| boxes.for_address(&a))
                .unwrap_or_default();
            members.push(Member {
                address: r.label.clone(),
                source,
                now: r.now.clone(),
                after: r.after.clone(),
                moves: r.moves(),
                pending,
                backfill,
            });
        }
    }
    let all_boxes = members
        .iter()
        .flat_map(|m| &m.backfill)
        .chain(patterns.iter().flat_map(|p| &p.mailboxes));
    let backfill = BackfillCounts::of(all_boxes);
    let moving = routed.iter().filter(|r| r.moves()).count();
    let verdict = super::verdict::verdict(&super::verdict::Facts {
        rule,
        wave: &wave,
        members: &members,
        patterns: &patterns,
        jobs: inputs.backfill,
        after,
    });
    Some(WaveStatus {
        at: Timestamp(inputs.now).to_rfc3339(),
        wave,
        members,
        patterns,
        pending: tally.total,
        backfill,
        moving,
        verdict,
    })
}

fn pattern_member(
    r: &Routed,
    source: String,
    pending: Pending,
    mailboxes: Vec<MailboxBackfill>,
    queued_recipients: usize,
) -> PatternMember {
    let backfill = BackfillCounts::of(&mailboxes);
    let summary = format!(
        "pattern {} ({} queued recipient{} match{}, {} backfill mailbox{}; {} now, {} after the switch)",
        r.label,
        queued_recipients,
        if queued_recipients == 1 { "" } else { "s" },
        if queued_recipients == 1 { "es" } else { "" },
        backfill.mailboxes,
        if backfill.mailboxes == 1 { "" } else { "es" },
        targets_text(&r.now.targets),
        targets_text(&r.after.targets),
    );
    PatternMember {
        pattern: r.label.clone(),
        source,
        example: r.example.clone(),
        now: r.now.clone(),
        after: r.after.clone(),
        moves: r.moves(),
        queued_recipients,
        pending,
        mailboxes,
        backfill,
        summary,
    }
}

/// Pending legs per pattern of a rule, and in total.
struct Tally {
    per_pattern: Vec<Pending>,
    /// Distinct pending recipients (as matched) per pattern.
    recipients: Vec<BTreeSet<String>>,
    total: Pending,
}

/// Which pattern of a rule an address matches: exact ones by lookup, the others in order.
struct Matcher<'a> {
    opts: &'a MatchOptions,
    exact: HashMap<&'a str, usize>,
    others: Vec<(usize, &'a Pattern)>,
}

impl<'a> Matcher<'a> {
    fn new(opts: &'a MatchOptions, rule: &'a CompiledRule) -> Self {
        let mut exact = HashMap::new();
        let mut others = Vec::new();
        for (i, (p, _)) in rule.patterns.iter().enumerate() {
            match p {
                Pattern::Exact(e) => {
                    exact.entry(e.as_str()).or_insert(i);
                }
                p => others.push((i, p)),
            }
        }
        Matcher {
            opts,
            exact,
            others,
        }
    }

    /// The pattern index matching `a`, and the address as matched.
    fn find(&self, a: &Address) -> Option<(usize, String)> {
        let (full, base) = self.opts.keys(a);
        let hit = self
            .exact
            .get(full.as_str())
            .or_else(|| base.as_deref().and_then(|b| self.exact.get(b)))
            .copied()
            .or_else(|| {
                self.others
                    .iter()
                    .find(|(_, p)| p.matches(a, &full, base.as_deref()).is_some())
                    .map(|(i, _)| *i)
            });
        hit.map(|i| (i, full))
    }
}

fn tally_queue(
    opts: &MatchOptions,
    rule: &CompiledRule,
    msgs: &[MessageSummary],
    now: SystemTime,
) -> Tally {
    let m = Matcher::new(opts, rule);
    let n = rule.patterns.len();
    let mut t = Tally {
        per_pattern: vec![Pending::default(); n],
        recipients: vec![BTreeSet::new(); n],
        total: Pending::default(),
    };
    for (id, leg) in msgs
        .iter()
        .flat_map(|msg| msg.legs.iter().map(move |l| (&msg.id.0, l)))
        .filter(|(_, l)| !l.state.is_final())
    {
        let mut hit = BTreeSet::new();
        for r in leg.recipients.iter().filter(|r| r.state.is_pending()) {
            if let Some((i, full)) = Address::parse(&r.address).and_then(|a| m.find(&a)) {
                hit.insert(i);
                t.recipients[i].insert(full);
            }
        }
        for &i in &hit {
            t.per_pattern[i].add(id, leg, now);
        }
        if !hit.is_empty() {
            t.total.add(id, leg, now);
        }
    }
    t
}

/// Backfill mailboxes by user (lowercased source and destination users).
struct MailboxIndex<'a> {
    jobs: &'a [JobBackfill],
    opts: &'a MatchOptions,
    by_user: HashMap<String, Vec<(usize, usize)>>,
}

impl<'a> MailboxIndex<'a> {
    fn new(jobs: &'a [JobBackfill], opts: &'a MatchOptions) -> Self {
        let mut by_user: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        for (j, job) in jobs.iter().enumerate() {
            for (k, p) in job.mailboxes.iter().enumerate() {
                let src = p.source.to_lowercase();
                let dst = p.destination.to_lowercase();
                by_user.entry(src.clone()).or_default().push((j, k));
                if dst != src {
                    by_user.entry(dst).or_default().push((j, k));
                }
            }
        }
        MailboxIndex {
            jobs,
            opts,
            by_user,
        }
    }

    /// Mailboxes whose user is the address, or its local part for bare users.
    fn for_address(&self, a: &Address) -> Vec<MailboxBackfill> {
        let full = format!("{}@{}", a.local, a.domain).to_lowercase();
        let local = a.local.to_lowercase();
        let mut ids: Vec<(usize, usize)> = [full, local]
            .iter()
            .filter_map(|k| self.by_user.get(k))
            .flatten()
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .map(|(j, k)| mailbox_state(&self.jobs[j], &self.jobs[j].mailboxes[k]))
            .collect()
    }

    /// Mailboxes with a user (a full address) the pattern matches.
    fn for_pattern(&self, p: &Pattern) -> Vec<MailboxBackfill> {
        let hits = |user: &str| {
            Address::parse(user).is_some_and(|a| {
                let (full, base) = self.opts.keys(&a);
                user.contains('@') && p.matches(&a, &full, base.as_deref()).is_some()
            })
        };
        self.jobs
            .iter()
            .flat_map(|job| job.mailboxes.iter().map(move |pair| (job, pair)))
            .filter(|(_, pair)| hits(&pair.source) || hits(&pair.destination))
            .map(|(job, pair)| mailbox_state(job, pair))
            .collect()
    }
}

/// The reports' entries for a mailbox pair (forward and reverse).
fn entries<'a>(
    reports: &'a [JobReport],
    pair: &MailboxPair,
) -> Vec<(&'a JobReport, &'a MailboxReport)> {
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    reports
        .iter()
        .flat_map(|r| r.mailboxes.iter().map(move |m| (r, m)))
        .filter(|(_, m)| {
            (same(&m.source_user, &pair.source) && same(&m.destination_user, &pair.destination))
                || (same(&m.source_user, &pair.destination)
                    && same(&m.destination_user, &pair.source))
        })
        .collect()
}

/// The backfill state of one mailbox of a job.
pub fn mailbox_state(job: &JobBackfill, pair: &MailboxPair) -> MailboxBackfill {
    let mut out = MailboxBackfill {
        job: job.job.clone(),
        source_user: pair.source.clone(),
        destination_user: pair.destination.clone(),
        state: BackfillState::NeverRun,
        last_pass: None,
        running: false,
        converged: false,
        failures: 0,
        error: None,
    };
    let found = entries(&job.reports, pair);
    let Some((report, _)) = found.first() else {
        if let Some(r) = job.reports.iter().find(|r| r.running) {
            out.state = BackfillState::InProgress;
            out.running = true;
            out.last_pass = Some(r.started.clone());
        } else if job.reports.is_empty() && job.report_error.is_some() {
            out.state = BackfillState::ReportUnreadable;
            out.error = job.report_error.clone();
        } else if !job.reports.is_empty() {
            out.state = BackfillState::NotInLastPass;
            out.last_pass = job.reports.iter().filter_map(|r| r.finished.clone()).max();
        }
        return out;
    };
    out.running = report.running;
    out.last_pass = report.finished.clone().or(Some(report.started.clone()));
    out.converged = found.iter().all(|(_, m)| m.converged);
    for (_, m) in &found {
        out.failures += m.error.is_some() as u64;
        for f in &m.folders {
            out.failures += f.failed.len() as u64 + f.error.is_some() as u64;
        }
        let folder_error = m.folders.iter().find_map(|f| f.error.clone());
        out.error = out.error.take().or(m.error.clone()).or(folder_error);
    }
    out.state = if out.failures > 0 || out.error.is_some() {
        BackfillState::Failed
    } else if out.converged {
        BackfillState::Converged
    } else {
        BackfillState::NotConverged
    };
    out
}
