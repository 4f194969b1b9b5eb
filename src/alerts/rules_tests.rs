use super::*;
use crate::config::values::HumanDuration;
use proptest::prelude::*;

fn t(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000 + s)
}

fn secs(s: u64) -> HumanDuration {
    HumanDuration(Duration::from_secs(s))
}

fn rule(name: &str, when: AlertCondition) -> AlertRule {
    AlertRule {
        name: name.into(),
        when,
        target: None,
        hold: HumanDuration::default(),
        older_than: None,
        rate: None,
        per: None,
        job: None,
        wave: None,
        within: None,
        webhook: Some("http://127.0.0.1:9/hook".into()),
        email: None,
        index: 0,
    }
}

fn unreachable_rule(hold: u64) -> AlertRule {
    AlertRule {
        target: Some("new".into()),
        hold: secs(hold),
        ..rule("new-down", AlertCondition::TargetUnreachable)
    }
}

fn snap(now: u64) -> Snapshot {
    Snapshot {
        now: t(now),
        hostname: "mx.test".into(),
        unreachable: BTreeMap::new(),
        oldest_deferred: BTreeMap::new(),
        dsn_failures: 0,
        backfill: BTreeMap::new(),
        waves: Vec::new(),
    }
}

fn down(now: u64, since: u64) -> Snapshot {
    let mut s = snap(now);
    s.unreachable.insert(
        "new".into(),
        Unreachable {
            since: t(since),
            reason: "connection refused".into(),
        },
    );
    s
}

fn kinds(ts: &[Transition]) -> Vec<&'static str> {
    ts.iter()
        .map(|t| match t {
            Transition::Fire { .. } => "fire",
            Transition::Resolve { .. } => "resolve",
        })
        .collect()
}

#[test]
fn fires_after_the_hold_time_once_and_resolves_once() {
    let rules = [unreachable_rule(120)];
    let mut st = State::new(t(0), 0);
    assert!(evaluate(&rules, &down(10, 10), &mut st).is_empty());
    assert!(evaluate(&rules, &down(100, 10), &mut st).is_empty());
    let fired = evaluate(&rules, &down(130, 10), &mut st);
    assert_eq!(kinds(&fired), ["fire"]);
    let Transition::Fire { text, details, .. } = &fired[0] else {
        unreachable!()
    };
    assert!(
        text.starts_with("[cutover mx.test] FIRING new-down: target new unreachable since"),
        "{text}"
    );
    assert!(text.ends_with("(2m): connection refused"), "{text}");
    assert_eq!(details["condition"], "target_unreachable");
    assert_eq!(details["target"], "new");
    assert!(st.firing("new-down"));
    for now in [140, 200, 5000] {
        assert!(evaluate(&rules, &down(now, 10), &mut st).is_empty());
    }
    let resolved = evaluate(&rules, &snap(5010), &mut st);
    assert_eq!(kinds(&resolved), ["resolve"]);
    let Transition::Resolve { text, .. } = &resolved[0] else {
        unreachable!()
    };
    assert!(
        text.starts_with("[cutover mx.test] RESOLVED new-down: target_unreachable no longer holds (firing for 1h 21m 20s"),
        "{text}"
    );
    assert!(evaluate(&rules, &snap(5020), &mut st).is_empty());
}

#[test]
fn hold_counts_from_when_the_facts_say_it_started() {
    // Unreachable for 10 minutes already when first seen: fires at once.
    let rules = [unreachable_rule(300)];
    let mut st = State::new(t(0), 0);
    assert_eq!(
        kinds(&evaluate(&rules, &down(1000, 400), &mut st)),
        ["fire"]
    );
}

#[test]
fn a_blip_shorter_than_the_hold_time_sends_nothing() {
    let rules = [unreachable_rule(60)];
    let mut st = State::new(t(0), 0);
    assert!(evaluate(&rules, &down(10, 10), &mut st).is_empty());
    assert!(evaluate(&rules, &snap(40), &mut st).is_empty());
    // Down again: the hold restarts from the new failure.
    assert!(evaluate(&rules, &down(50, 50), &mut st).is_empty());
    assert!(evaluate(&rules, &down(100, 50), &mut st).is_empty());
    assert_eq!(kinds(&evaluate(&rules, &down(110, 50), &mut st)), ["fire"]);
}

#[test]
fn oldest_deferred_by_target_or_any() {
    let any = AlertRule {
        older_than: Some(secs(3600)),
        ..rule("stuck", AlertCondition::OldestDeferred)
    };
    let old_only = AlertRule {
        target: Some("old".into()),
        ..any.clone()
    };
    let old_only = AlertRule {
        name: "old-stuck".into(),
        ..old_only
    };
    let rules = [any, old_only];
    let mut st = State::new(t(0), 0);
    let mut s = snap(4000);
    s.oldest_deferred.insert(
        "new".into(),
        DeferredFact {
            since: t(100),
            queue_id: "0V5KQ2H8M3A7C0".into(),
            last_reply: Some("451 4.3.0 later".into()),
        },
    );
    let out = evaluate(&rules, &s, &mut st);
    assert_eq!(kinds(&out), ["fire"]);
    let Transition::Fire { text, details, .. } = &out[0] else {
        unreachable!()
    };
    assert!(text.contains("the oldest deferred leg to new is 1h 5m old (over 1h): message 0V5KQ2H8M3A7C0, last reply: 451 4.3.0 later"), "{text}");
    assert_eq!(details["age_secs"], 3900);
    assert_eq!(kinds(&evaluate(&rules, &snap(4010), &mut st)), ["resolve"]);
}

#[test]
fn dsn_rate_counts_within_the_window() {
    let r = AlertRule {
        rate: Some(5),
        per: Some(secs(600)),
        ..rule("bounces", AlertCondition::DsnRate)
    };
    let rules = [r];
    let mut st = State::new(t(0), 100);
    let at = |now, n| Snapshot {
        dsn_failures: n,
        ..snap(now)
    };
    assert!(evaluate(&rules, &at(10, 103), &mut st).is_empty());
    assert!(
        evaluate(&rules, &at(20, 105), &mut st).is_empty(),
        "5 is not more than 5"
    );
    let out = evaluate(&rules, &at(30, 106), &mut st);
    assert_eq!(kinds(&out), ["fire"]);
    let Transition::Fire { text, .. } = &out[0] else {
        unreachable!()
    };
    assert!(
        text.contains("6 non-delivery DSNs in the last 10m (more than 5)"),
        "{text}"
    );
    // Ten minutes on, the window holds none of them.
    assert!(evaluate(&rules, &at(500, 106), &mut st).is_empty());
    assert_eq!(
        kinds(&evaluate(&rules, &at(640, 106), &mut st)),
        ["resolve"]
    );
}

#[test]
fn dsn_history_stays_bounded() {
    let rules = [AlertRule {
        rate: Some(1_000_000),
        per: Some(secs(1_000_000)),
        ..rule("bounces", AlertCondition::DsnRate)
    }];
    let mut st = State::new(t(0), 0);
    for i in 0..(MAX_SAMPLES as u64 + 100) {
        evaluate(
            &rules,
            &Snapshot {
                dsn_failures: i,
                ..snap(i)
            },
            &mut st,
        );
    }
    assert_eq!(st.dsn.len(), MAX_SAMPLES);
    // Without a dsn_rate rule only the latest samples are kept.
    evaluate(&[], &snap(1_000_000), &mut st);
    assert_eq!(st.dsn.len(), 1);
}

#[test]
fn backfill_failed_waits_for_the_pass_to_finish() {
    let rules = [AlertRule {
        job: Some("wave-1".into()),
        ..rule("backfill", AlertCondition::BackfillFailed)
    }];
    let mut st = State::new(t(0), 0);
    let with = |now, f: BackfillFact| {
        let mut s = snap(now);
        s.backfill.insert("wave-1".into(), f);
        s
    };
    let failed = BackfillFact {
        running: false,
        finished: Some(t(50)),
        failed: 2,
        errors: vec!["alice: login failed".into()],
    };
    let out = evaluate(&rules, &with(60, failed.clone()), &mut st);
    assert_eq!(kinds(&out), ["fire"]);
    let Transition::Fire { text, .. } = &out[0] else {
        unreachable!()
    };
    assert!(
        text.ends_with("had 2 failure(s): alice: login failed"),
        "{text}"
    );
    // A new pass running: no verdict, no notice either way.
    let running = BackfillFact {
        running: true,
        ..Default::default()
    };
    assert!(evaluate(&rules, &with(70, running), &mut st).is_empty());
    assert!(st.firing("backfill"));
    let clean = BackfillFact {
        running: false,
        finished: Some(t(80)),
        failed: 0,
        errors: vec![],
    };
    assert_eq!(
        kinds(&evaluate(&rules, &with(90, clean), &mut st)),
        ["resolve"]
    );
}

#[test]
fn wave_not_converged_within_the_window_before_the_switch() {
    let rules = [AlertRule {
        wave: Some("wave-1".into()),
        within: Some(secs(86_400)),
        ..rule("wave", AlertCondition::WaveNotConverged)
    }];
    let mut st = State::new(t(0), 0);
    let wave = |now, converged: bool| Snapshot {
        waves: vec![WaveFact {
            name: "wave-1".into(),
            switch_at: Some(t(100_000)),
            converged,
            unconverged: if converged {
                vec![]
            } else {
                vec!["alice@example.com".into(), "bob@example.com".into()]
            },
        }],
        ..snap(now)
    };
    // No wave facts (the hook is not wired): quiet.
    assert!(evaluate(&rules, &snap(50_000), &mut st).is_empty());
    // More than `within` before the switch: quiet.
    assert!(evaluate(&rules, &wave(10_000, false), &mut st).is_empty());
    let out = evaluate(&rules, &wave(20_000, false), &mut st);
    assert_eq!(kinds(&out), ["fire"]);
    let Transition::Fire { text, details, .. } = &out[0] else {
        unreachable!()
    };
    assert!(
        text.contains("switches at")
            && text
                .ends_with("2 mailbox(es) have not converged: alice@example.com, bob@example.com"),
        "{text}"
    );
    assert_eq!(details["unconverged"][1], "bob@example.com");
    assert_eq!(
        kinds(&evaluate(&rules, &wave(30_000, true), &mut st)),
        ["resolve"]
    );
    // After the switch it no longer applies.
    assert!(evaluate(&rules, &wave(200_000, false), &mut st).is_empty());
}

#[test]
fn a_removed_rule_is_forgotten_without_a_notice() {
    let rules = [unreachable_rule(0)];
    let mut st = State::new(t(0), 0);
    assert_eq!(kinds(&evaluate(&rules, &down(10, 10), &mut st)), ["fire"]);
    assert!(evaluate(&[], &snap(20), &mut st).is_empty());
    assert!(!st.firing("new-down"));
}

proptest! {
    /// For any sequence of snapshots (target up or down, time moving on by varying steps):
    /// notices alternate fire, resolve, fire, ... starting with fire; a fire comes only when
    /// the target has been down for the hold time; the rule is firing exactly when the last
    /// notice was a fire.
    #[test]
    fn fire_and_resolve_alternate(
        hold in 0u64..100,
        steps in proptest::collection::vec((1u64..60, any::<bool>()), 1..80),
    ) {
        let rules = [unreachable_rule(hold)];
        let mut st = State::new(t(0), 0);
        let (mut now, mut down_since) = (0u64, None::<u64>);
        let mut last = "resolve";
        for (dt, is_down) in steps {
            now += dt;
            down_since = if is_down { Some(down_since.unwrap_or(now)) } else { None };
            let s = match down_since {
                Some(since) => down(now, since),
                None => snap(now),
            };
            let out = evaluate(&rules, &s, &mut st);
            prop_assert!(out.len() <= 1);
            for k in kinds(&out) {
                prop_assert_ne!(k, last, "two {} in a row", k);
                if k == "fire" {
                    prop_assert!(now - down_since.unwrap_or(now) >= hold);
                }
                last = k;
            }
            prop_assert_eq!(st.firing("new-down"), last == "fire");
        }
    }
}
