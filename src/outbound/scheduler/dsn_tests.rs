//! Unit tests and proptest properties of the pure DSN decisions ([`super`]): failure, mixed and
//! delay plans, DSN entries across legs, staged DSN messages.

use super::*;
use crate::outbound::reply::Outcome;
use crate::outbound::scheduler::decide::{self, Attempt, Report, RetryPolicy};
use crate::queue::model::BodyLocation;
use crate::queue::{Envelope, NewLeg};
use proptest::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

fn t(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
}

fn config() -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"[gateway]
hostname = "mx1.example.com"
accept_domains = ["example.com"]

[targets.old]
address = "127.0.0.1:2526"
[targets.new]
address = "127.0.0.1:2527"
rcpt_domain = "new.example"

[routing]
default = ["old"]
"#;
    let loaded = crate::loader::parse(text, &dir.path().join("cutover.toml")).unwrap();
    (dir, loaded.config)
}

fn new_leg(target: &str, rcpts: &[&str]) -> Leg {
    Leg::new(
        LegId(0),
        NewLeg {
            target: target.into(),
            rules: vec!["default".into()],
            recipients: rcpts.iter().map(|r| r.to_string()).collect(),
        },
        t(0),
    )
}

/// A record of `legs`, numbered by position.
fn record(mail_from: &str, mut legs: Vec<Leg>) -> MessageRecord {
    for (i, l) in legs.iter_mut().enumerate() {
        l.id = LegId(i as u16);
    }
    MessageRecord {
        id: QueueId("0V5KQ2H8M3A7C0".into()),
        envelope: Envelope {
            mail_from: mail_from.into(),
            helo: "client.example.org".into(),
            client_addr: "192.0.2.1:4567".parse().unwrap(),
            received_at: t(0),
            smtputf8: false,
            body_8bit: false,
        },
        size: 10,
        body: BodyLocation::Inline,
        next_leg_id: legs.len() as u16,
        legs,
        body_missing: false,
        seals: Default::default(),
    }
}

fn failed() -> Outcome {
    Outcome::Failed {
        reply: "550 5.1.1 unknown".into(),
    }
}

fn delivered() -> Outcome {
    Outcome::Delivered {
        reply: "250 ok".into(),
    }
}

fn deferred() -> Outcome {
    Outcome::Deferred {
        reply: "451 4.3.0 later".into(),
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        schedule: vec![Duration::from_secs(60)],
        max_age: Duration::from_secs(5 * 86_400),
        delay_warning: Duration::from_secs(4 * 3600),
    }
}

/// Apply `outcomes` to leg `idx` of `rec` as one attempt at `now`, as the scheduler's update
/// does; returns the leg before, and the decision.
fn update(
    rec: &mut MessageRecord,
    idx: u16,
    outcomes: Vec<(usize, Outcome)>,
    now: SystemTime,
) -> (Leg, decide::Decision) {
    let report = Report {
        attempt: Attempt::Sent,
        outcomes,
    };
    let before = rec.legs[idx as usize].clone();
    let d = decide::decide(&policy(), &before, &report, now, 0.5);
    let l = &mut rec.legs[idx as usize];
    decide::apply(&before, &report, &d, l);
    l.refresh_state();
    (before, d)
}

#[test]
fn failure_on_every_leg_bounces_once_with_every_leg() {
    let (_d, cfg) = config();
    let mut rec = record(
        "s@example.org",
        vec![
            new_leg("old", &["a@example.com", "b@example.com"]),
            new_leg("new", &["a@example.com"]),
        ],
    );
    let (before, _) = update(&mut rec, 0, vec![(0, failed()), (1, failed())], t(1));
    let p = plan(&before, &rec, false);
    assert_eq!(p.bounced, vec![1], "a is still pending on new");
    let (before, _) = update(&mut rec, 1, vec![(0, failed())], t(2));
    let p = plan(&before, &rec, false);
    assert_eq!(p.bounced, vec![0]);
    let entries = recipients(&cfg, &rec, LegId(1), &p.bounced, DsnKind::Failure, t(2));
    let got: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e.target.as_str(),
                e.final_rcpt.as_str(),
                e.diagnostic.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("old", "a@example.com", "550 5.1.1 unknown"),
            ("new", "a@new.example", "550 5.1.1 unknown"),
        ]
    );
}

#[test]
fn delivered_elsewhere_is_mixed_and_bounces_are_never_bounced() {
    let mut rec = record(
        "s@example.org",
        vec![
            new_leg("old", &["a@example.com"]),
            new_leg("new", &["a@example.com"]),
        ],
    );
    update(&mut rec, 0, vec![(0, delivered())], t(1));
    let (before, _) = update(&mut rec, 1, vec![(0, failed())], t(2));
    let p = plan(&before, &rec, false);
    assert_eq!((p.bounced.len(), p.mixed.clone()), (0, vec![0]));

    let mut dsn = new_leg("@mx", &["s@example.org"]);
    dsn.recipients[0].rule = BOUNCE_RULE.into();
    let mut rec = record("", vec![dsn]);
    let (before, _) = update(&mut rec, 0, vec![(0, failed())], t(1));
    assert_eq!(plan(&before, &rec, false), DsnPlan::default());
}

#[test]
fn delay_warning_lists_the_deferred_recipients_once() {
    let (_d, cfg) = config();
    let mut rec = record(
        "s@example.org",
        vec![new_leg("new", &["a@example.com", "b@example.com"])],
    );
    let late = t(5 * 3600);
    let (before, d) = update(&mut rec, 0, vec![(0, deferred()), (1, delivered())], late);
    assert!(d.warn_delay);
    let p = plan(&before, &rec, d.warn_delay);
    assert_eq!(p.delayed, vec![0]);
    let ids = (QueueId("F".into()), QueueId("D".into()));
    let input = StageInput {
        cfg: &cfg,
        leg: LegId(0),
        warn_delay: d.warn_delay,
        headers: b"Subject: hi\r\n",
        failure_id: &ids.0,
        delay_id: &ids.1,
        now: late,
    };
    let staged = stage(&input, &before, &rec);
    assert_eq!(staged.len(), 1);
    assert_eq!(staged[0].rec.id, ids.1);
    assert_eq!(staged[0].rec.envelope.mail_from, "");
    assert_eq!(staged[0].rec.legs[0].recipients[0].address, "s@example.org");
    // The next deferral does not warn again.
    let (before, d) = update(&mut rec, 0, vec![(0, deferred())], t(6 * 3600));
    assert!(!d.warn_delay);
    assert_eq!(
        plan(&before, &rec, d.warn_delay).delayed,
        Vec::<usize>::new()
    );
}

#[test]
fn possible_only_with_a_sender_and_a_reason() {
    assert!(possible("s@example.org", true, false));
    assert!(possible("s@example.org", false, true));
    assert!(!possible("s@example.org", false, false));
    assert!(!possible("", true, true));
}

/// Per leg, the addresses it carries (by number).
type Legs = Vec<Vec<usize>>;
/// Per step, the leg to attempt and an outcome kind for each of its recipients.
type Steps = Vec<(usize, Vec<u8>)>;

/// Legs over a small set of addresses (each leg's addresses distinct) and, per step, which leg
/// to attempt and an outcome for each of its recipients.
fn scenario() -> impl Strategy<Value = (Legs, Steps)> {
    let legs = prop::collection::vec(prop::collection::btree_set(0usize..4, 1..4), 1..4)
        .prop_map(|v| v.into_iter().map(|s| s.into_iter().collect()).collect());
    let steps = prop::collection::vec((0usize..4, prop::collection::vec(0u8..3, 4)), 0..12);
    (legs, steps)
}

proptest! {
    /// Whatever order legs fail, defer or deliver in: a recipient that ends failed on every leg
    /// carrying it is listed by exactly one failure DSN, with one entry per such leg; any other
    /// recipient by none.
    #[test]
    fn final_failure_everywhere_yields_exactly_one_dsn((legs, steps) in scenario()) {
        let (_d, cfg) = config();
        let names = ["new", "old", "@mx"];
        let addr = |a: usize| format!("u{a}@example.com");
        let mut rec = record("s@example.org", legs.iter().enumerate().map(|(i, l)| {
            let rcpts: Vec<String> = l.iter().map(|&a| addr(a)).collect();
            let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
            new_leg(names[i], &rcpts)
        }).collect());
        let mut listed: HashMap<String, usize> = HashMap::new();
        let mut entries: HashMap<String, usize> = HashMap::new();
        let pick = |k: u8| match k { 0 => delivered(), 1 => deferred(), _ => failed() };
        // The random steps, then a final failing pass so that every leg ends final.
        let finish = (0..legs.len()).map(|i| (i, vec![2u8; 4]));
        for (n, (leg_pick, kinds)) in steps.into_iter().chain(finish).enumerate() {
            let idx = (leg_pick % legs.len()) as u16;
            let pending = decide::pending(&rec.legs[idx as usize]);
            let outcomes = pending.iter().map(|&i| (i, pick(kinds[i]))).collect();
            let (before, d) = update(&mut rec, idx, outcomes, t(n as u64));
            let p = plan(&before, &rec, d.warn_delay);
            for e in recipients(&cfg, &rec, LegId(idx), &p.bounced, DsnKind::Failure, t(0)) {
                *entries.entry(e.original).or_default() += 1;
            }
            for i in p.bounced {
                *listed.entry(rec.legs[idx as usize].recipients[i].address.clone()).or_default() += 1;
            }
        }
        prop_assert!(rec.is_finished());
        for a in (0..4).map(addr) {
            let carrying = rec.legs.iter().filter(|l| l.recipients.iter().any(|r| r.address == a)).count();
            let failed_everywhere = carrying > 0 && rec.fate(&a) == RcptFate::Failed;
            prop_assert_eq!(listed.get(&a).copied().unwrap_or(0), usize::from(failed_everywhere), "{}", a);
            let want = if failed_everywhere { carrying } else { 0 };
            prop_assert_eq!(entries.get(&a).copied().unwrap_or(0), want, "{}", a);
        }
    }
}
