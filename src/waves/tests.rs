use super::*;
use crate::backfill::report::{Failure, FolderReport, MailboxReport};
use crate::config::Routing;
use crate::queue::model::{Leg, LegId, MessageSummary, RcptState};
use crate::queue::{NewLeg, QueueId};
use crate::routing::fixtures::{router, routing, rule};
use proptest::prelude::*;
use std::time::{Duration, UNIX_EPOCH};

fn at(s: &str) -> SystemTime {
    Timestamp::parse(s).unwrap().0
}

fn now() -> SystemTime {
    at("2026-11-30T12:00:00Z")
}

const SWITCH: &str = "2026-12-01T18:00:00Z";

/// `pilot` (bob, dual), `wave-1` (alice, carol from a file, `@sales.example.com`, `*.admin@…`)
/// from [`SWITCH`], `old-wave` ended, default `old`.
fn routes(default: Option<&[&str]>) -> Router {
    let mut w = rule(
        "wave-1",
        &[
            "alice@example.com",
            "@sales.example.com",
            "*.admin@example.com",
        ],
        &["new"],
    );
    w.file_patterns = vec![(3, "carol@example.com".into())];
    w.recipients_file = Some("wave-1.txt".into());
    w.active_from = Some(Timestamp(at(SWITCH)));
    let mut ended = rule("old-wave", &["dave@example.com"], &["new"]);
    ended.active_from = Some(Timestamp(at("2026-11-01T00:00:00Z")));
    ended.active_until = Some(Timestamp(at("2026-11-02T00:00:00Z")));
    let rules = vec![
        rule("pilot", &["bob@example.com"], &["old", "new"]),
        w,
        ended,
    ];
    router(rules, default)
}

fn files() -> Vec<Option<String>> {
    vec![None, Some("wave-1.txt".into()), None]
}

fn leg(target: &str, rcpts: &[&str], deferred: bool) -> Leg {
    let plan = NewLeg {
        target: target.into(),
        rules: vec!["default".into()],
        recipients: rcpts.iter().map(|s| s.to_string()).collect(),
    };
    let mut l = Leg::new(LegId(0), plan, now() - Duration::from_secs(7200));
    if deferred {
        for r in &mut l.recipients {
            r.state = RcptState::Deferred {
                next: now(),
                attempts: 2,
                last_reply: "451 4.2.0 try later".into(),
            };
        }
        l.refresh_state();
    }
    l
}

fn msg(id: &str, legs: Vec<Leg>) -> MessageSummary {
    MessageSummary {
        id: QueueId(id.into()),
        received_at: now(),
        size: 100,
        mail_from: "x@example.org".into(),
        legs,
        body_missing: false,
    }
}

fn mailbox(user: &str, converged: bool, failed: usize) -> MailboxReport {
    MailboxReport {
        source_user: user.into(),
        destination_user: user.into(),
        direction: "forward".into(),
        folders: vec![FolderReport {
            folder: "INBOX".into(),
            destination: "INBOX".into(),
            failed: (0..failed)
                .map(|i| Failure {
                    uid: i as u32,
                    reply: "NO too big".into(),
                })
                .collect(),
            converged,
            ..Default::default()
        }],
        converged,
        ..Default::default()
    }
}

fn job(users: &[&str], report: Option<Vec<MailboxReport>>) -> JobBackfill {
    JobBackfill {
        job: "wave-1".into(),
        mailboxes: users
            .iter()
            .map(|u| MailboxPair {
                source: u.to_string(),
                destination: u.to_string(),
            })
            .collect(),
        reports: report
            .map(|mailboxes| {
                vec![JobReport {
                    job: "wave-1".into(),
                    started: "2026-11-30T10:00:00Z".into(),
                    finished: Some("2026-11-30T10:05:00Z".into()),
                    mailboxes,
                    ..Default::default()
                }]
            })
            .unwrap_or_default(),
        ..Default::default()
    }
}

fn inputs<'a>(
    r: &'a Router,
    f: &'a [Option<String>],
    q: &'a [MessageSummary],
    b: &'a [JobBackfill],
) -> Inputs<'a> {
    Inputs {
        routes: r,
        files: f,
        queue: q,
        backfill: b,
        now: now(),
    }
}

#[test]
fn window_states() {
    let (f, u) = (
        Some(at("2026-12-01T00:00:00Z")),
        Some(at("2026-12-02T00:00:00Z")),
    );
    assert_eq!(window_state(None, None, now()), (WindowState::Always, None));
    assert_eq!(
        window_state(f, u, now()),
        (
            WindowState::Scheduled,
            Some((f.unwrap(), SwitchKind::Starts))
        )
    );
    let mid = at("2026-12-01T12:00:00Z");
    assert_eq!(
        window_state(f, u, mid),
        (WindowState::Active, Some((u.unwrap(), SwitchKind::Ends)))
    );
    assert_eq!(window_state(f, None, mid), (WindowState::Active, None));
    assert_eq!(window_state(f, u, u.unwrap()), (WindowState::Ended, None));
    // active_from is inclusive.
    assert_eq!(window_state(f, u, f.unwrap()).0, WindowState::Active);
    assert_eq!(
        window_state(None, u, now()),
        (WindowState::Active, Some((u.unwrap(), SwitchKind::Ends)))
    );
}

#[test]
fn list_names_windows_switches_and_what_moves() {
    let r = routes(Some(&["old"]));
    let l = list(&r, now());
    let names: Vec<&str> = l.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["pilot", "wave-1", "old-wave"]);
    assert_eq!(l[0].state, WindowState::Always);
    assert!(l[0].next_switch.is_none() && l[0].active);
    assert_eq!(l[2].state, WindowState::Ended);
    let w = &l[1];
    assert_eq!(w.state, WindowState::Scheduled);
    assert!(!w.active);
    assert_eq!(w.active_from.as_deref(), Some(SWITCH));
    let s = w.next_switch.as_ref().unwrap();
    assert_eq!(
        (s.kind, s.at.as_str(), s.in_secs),
        (SwitchKind::Starts, SWITCH, 30 * 3600)
    );
    assert_eq!(s.changes.len(), 1, "{:?}", s.changes);
    let c = &s.changes[0];
    assert_eq!(
        (c.from.clone(), c.to.clone()),
        (vec!["old".to_string()], vec!["new".to_string()])
    );
    assert_eq!(c.addresses, 2);
    assert_eq!(c.examples, ["alice@example.com", "carol@example.com"]);
    assert_eq!(c.patterns, ["@sales.example.com", "*.admin@example.com"]);
    assert_eq!(
        c.text,
        "mail for 2 addresses and pattern @sales.example.com and pattern *.admin@example.com moves from [old] to [new]"
    );
}

#[test]
fn example_addresses_stand_for_patterns() {
    let opts = crate::routing::MatchOptions::default();
    let ex = |p: &str| example_address(&Pattern::parse(p, &opts).unwrap());
    assert_eq!(
        ex("@sales.example.com").as_deref(),
        Some("user@sales.example.com")
    );
    assert_eq!(ex("@.example.com").as_deref(), Some("user@sub.example.com"));
    assert_eq!(
        ex("*.admin@example.com").as_deref(),
        Some("user.admin@example.com")
    );
    assert_eq!(
        ex("ops-?@example.com").as_deref(),
        Some("ops-x@example.com")
    );
    assert_eq!(ex("re:^x.*@example\\.com$"), None);
    // Each example matches its own pattern.
    for p in [
        "@sales.example.com",
        "@.example.com",
        "*.admin@example.com",
        "a?c*@x.org",
    ] {
        let pat = Pattern::parse(p, &opts).unwrap();
        let a = Address::parse(&example_address(&pat).unwrap()).unwrap();
        let (full, base) = opts.keys(&a);
        assert!(pat.matches(&a, &full, base.as_deref()).is_some(), "{p}");
    }
}

#[test]
fn ready_when_every_moving_mailbox_converged() {
    let r = routes(Some(&["old"]));
    let f = files();
    let jobs = [job(
        &[
            "alice@example.com",
            "carol@example.com",
            "ann@sales.example.com",
        ],
        Some(vec![
            mailbox("alice@example.com", true, 0),
            mailbox("carol@example.com", true, 0),
            mailbox("ann@sales.example.com", true, 0),
        ]),
    )];
    let s = status(&inputs(&r, &f, &[], &jobs), "wave-1").unwrap();
    assert!(s.verdict.ready, "{:?}", s.verdict);
    assert_eq!(s.moving, 4);
    assert_eq!(s.members.len(), 2);
    assert_eq!(s.members[1].source, "wave-1.txt:3");
    assert_eq!(s.members[0].source, "recipients[0]");
    assert_eq!(s.members[0].now.targets, ["old"]);
    assert_eq!(s.members[0].after.targets, ["new"]);
    assert_eq!(s.members[0].after.rule.as_deref(), Some("wave-1"));
    assert_eq!(s.backfill.converged, 3);
    assert_eq!(s.patterns[0].backfill.mailboxes, 1);
    assert!(
        s.verdict
            .notes
            .iter()
            .any(|n| n.contains("3 backfill mailbox(es) of moving members converged")),
        "{:?}",
        s.verdict.notes
    );
    assert!(
        s.verdict.notes.iter().any(|n| n.contains("in 1d 6h")),
        "{:?}",
        s.verdict.notes
    );
}

#[test]
fn not_ready_with_reasons() {
    let r = routes(Some(&["old"]));
    let f = files();
    // alice failed, carol never in the pass; the new side defers alice's mail.
    let jobs = [job(
        &["alice", "carol"],
        Some(vec![mailbox("alice", false, 2)]),
    )];
    let q = [
        msg("A", vec![leg("old", &["Alice+x@example.com"], false)]),
        msg("B", vec![leg("new", &["alice@example.com"], true)]),
        msg(
            "C",
            vec![leg(
                "old",
                &["x.admin@example.com", "y.admin@example.com"],
                false,
            )],
        ),
    ];
    let s = status(&inputs(&r, &f, &q, &jobs), "wave-1").unwrap();
    let v = &s.verdict;
    assert!(!v.ready);
    let all = v.reasons.join("\n");
    assert!(all.contains("1 mailbox(es) of members whose mail moves are with failures in the last pass: alice@example.com (job wave-1: 2 failure(s)"), "{all}");
    assert!(
        all.contains("not in the job's last pass: carol@example.com"),
        "{all}"
    );
    assert!(all.contains("1 leg(s) for wave members are deferred at new, where their mail goes after the switch (last reply: 451 4.2.0 try later)"), "{all}");
    let notes = v.notes.join("\n");
    assert!(
        notes.contains("2 leg(s) for members are still pending to old"),
        "{notes}"
    );
    assert!(
        notes.contains("in no backfill job's mailbox list"),
        "{notes}"
    );
    // Bare users map by local part; extensions and case fold onto the member.
    assert_eq!(s.members[0].backfill[0].source_user, "alice");
    assert_eq!(s.members[0].pending.legs, 2);
    assert_eq!(s.members[0].pending.deferred, 1);
    assert_eq!(s.members[0].pending.oldest_age_secs, Some(7200));
    assert_eq!(s.pending.legs, 3);
    let admin = &s.patterns[1];
    assert_eq!((admin.queued_recipients, admin.pending.legs), (2, 1));
    assert!(
        admin
            .summary
            .starts_with("pattern *.admin@example.com (2 queued recipients match"),
        "{}",
        admin.summary
    );
}

#[test]
fn never_run_and_unrouted_block() {
    let r = routes(None);
    let f = files();
    let jobs = [job(&["alice@example.com"], None)];
    let s = status(&inputs(&r, &f, &[], &jobs), "wave-1").unwrap();
    assert!(!s.verdict.ready);
    let all = s.verdict.reasons.join("\n");
    assert!(all.contains("never backfilled"), "{all}");
    // Without a default, wave members are unrouted now and routed after: nothing rejected.
    assert!(!all.contains("rejected"), "{all}");
    // An ending wave without a default: rejected after the switch.
    let mut w = rule("leaving", &["erin@example.com"], &["old"]);
    w.active_until = Some(Timestamp(at(SWITCH)));
    let routing = Routing {
        rules: vec![w],
        ignore_local_case: true,
        ..Default::default()
    };
    let (r2, _) = Router::new(&routing);
    let s = status(&inputs(&r2, &[], &[], &[]), "leaving").unwrap();
    assert!(!s.verdict.ready);
    assert!(
        s.verdict.reasons[0].contains("erin@example.com would be rejected after the switch"),
        "{:?}",
        s.verdict
    );
    assert_eq!(s.wave.next_switch.as_ref().unwrap().kind, SwitchKind::Ends);
    assert!(
        s.verdict
            .notes
            .iter()
            .any(|n| n.contains("no [[backfill.job]]")),
        "{:?}",
        s.verdict
    );
}

#[test]
fn always_and_ended_waves_have_no_switch_and_are_ready() {
    let r = routes(Some(&["old"]));
    let f = files();
    let s = status(&inputs(&r, &f, &[], &[]), "pilot").unwrap();
    assert!(s.verdict.ready, "{:?}", s.verdict);
    assert_eq!(s.moving, 0);
    assert!(s.verdict.notes.iter().any(|n| n.contains("always active")));
    let s = status(&inputs(&r, &f, &[], &[]), "old-wave").unwrap();
    assert!(
        s.verdict
            .notes
            .iter()
            .any(|n| n.contains("ended at 2026-11-02T00:00:00Z"))
    );
    assert!(status(&inputs(&r, &f, &[], &[]), "nope").is_none());
}

#[test]
fn running_pass_and_unreadable_report() {
    let r = routes(Some(&["old"]));
    let f = files();
    let mut j = job(
        &["alice@example.com", "carol@example.com"],
        Some(vec![mailbox("alice@example.com", true, 0)]),
    );
    j.reports[0].running = true;
    j.reports[0].finished = None;
    let s = status(&inputs(&r, &f, &[], &[j]), "wave-1").unwrap();
    assert_eq!(s.members[0].backfill[0].state, BackfillState::Converged);
    assert!(s.members[0].backfill[0].running);
    assert_eq!(s.members[1].backfill[0].state, BackfillState::InProgress);
    assert!(!s.verdict.ready);
    let mut j = job(&["alice@example.com"], None);
    j.report_error = Some("report.json: bad".into());
    let s = status(&inputs(&r, &f, &[], &[j]), "wave-1").unwrap();
    assert_eq!(
        s.members[0].backfill[0].state,
        BackfillState::ReportUnreadable
    );
    assert!(
        s.verdict
            .reasons
            .join("\n")
            .contains("unreadable job report")
    );
}

#[test]
fn shadowed_members_are_noted() {
    let mut r = vec![rule("pilot", &["bob@example.com"], &["old", "new"])];
    let mut w = rule(
        "wave-1",
        &["bob@example.com", "alice@example.com"],
        &["new"],
    );
    w.active_from = Some(Timestamp(at(SWITCH)));
    r.push(w);
    let (router, _) = Router::new(&routing(r, Some(&["old"])));
    let s = status(&inputs(&router, &[], &[], &[]), "wave-1").unwrap();
    assert!(
        s.verdict
            .notes
            .iter()
            .any(|n| n.contains("1 member(s) are routed by rule pilot")),
        "{:?}",
        s.verdict
    );
    assert!(!s.members[0].moves);
}

#[test]
fn overview_summarises_and_finds_the_next_switch() {
    let r = routes(Some(&["old"]));
    let f = files();
    let o = overview(&inputs(&r, &f, &[], &[]));
    assert_eq!(o.waves.len(), 3);
    let n = o.next_switch.unwrap();
    assert_eq!((n.wave.as_str(), n.at.as_str()), ("wave-1", SWITCH));
    assert_eq!(o.waves[1].addresses, 2);
    assert_eq!(o.waves[1].patterns, 2);
    let j = serde_json::to_value(&o.waves[1]).unwrap();
    assert_eq!(j["name"], "wave-1");
    assert_eq!(j["state"], "scheduled");
    assert_eq!(j["verdict"]["ready"], true);
}

#[test]
fn spans() {
    assert_eq!(span_text(40), "40s");
    assert_eq!(span_text(180), "3m");
    assert_eq!(span_text(7500), "2h 5m");
    assert_eq!(span_text(30 * 3600), "1d 6h");
}

fn t(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

proptest! {
    /// The next switch is the first instant after `now` where the rule's activity flips, and
    /// nothing flips before it (or ever, without one); the state agrees with `active_at`.
    #[test]
    fn next_switch_is_the_first_flip(
        f in proptest::option::of(0u64..1000),
        len in 1u64..1000,
        has_until in any::<bool>(),
        now_s in 0u64..2500,
        probes in proptest::collection::vec(0u64..3000, 1..20),
    ) {
        let from = f.map(t);
        let until = has_until.then(|| t(f.unwrap_or(0) + len));
        let rule = CompiledRule {
            name: "w".into(),
            deliver: vec![],
            active_from: from,
            active_until: until,
            patterns: vec![],
        };
        let now = t(now_s);
        let (state, next) = window_state(from, until, now);
        let active = rule.active_at(now);
        prop_assert_eq!(active, matches!(state, WindowState::Active | WindowState::Always));
        match next {
            Some((at, kind)) => {
                prop_assert!(at > now);
                prop_assert_eq!(rule.active_at(at), !active);
                prop_assert_eq!(kind == SwitchKind::Starts, !active);
                for p in &probes {
                    let x = now + Duration::from_secs(*p);
                    if x < at {
                        prop_assert_eq!(rule.active_at(x), active);
                    }
                }
            }
            None => {
                for p in &probes {
                    prop_assert_eq!(rule.active_at(now + Duration::from_secs(*p)), active);
                }
            }
        }
    }
}
