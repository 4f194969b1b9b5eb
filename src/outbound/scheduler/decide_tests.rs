//! Unit tests and proptest properties of the pure per-leg decisions ([`super`]): pending
//! recipients, expiry, outcome → recipient state, next attempt, delay warning, target back-off.

use super::*;
use crate::queue::NewLeg;
use crate::queue::model::{LegId, LegState};
use proptest::prelude::*;

const MIN: Duration = Duration::from_secs(60);

fn t(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        schedule: vec![MIN, 5 * MIN, 15 * MIN],
        max_age: Duration::from_secs(5 * 86_400),
        delay_warning: Duration::from_secs(4 * 3600),
    }
}

fn leg(n: usize) -> Leg {
    Leg::new(
        LegId(0),
        NewLeg {
            target: "new".into(),
            rules: vec!["default".into()],
            recipients: (0..n).map(|i| format!("u{i}@example.com")).collect(),
        },
        t(0),
    )
}

fn deferred(reply: &str) -> Outcome {
    Outcome::Deferred {
        reply: reply.into(),
    }
}

fn sent(outcomes: Vec<(usize, Outcome)>) -> Report {
    Report {
        attempt: Attempt::Sent,
        outcomes,
    }
}

/// Decide and apply `report` at `now` (draw 0.5), as the queue's update does.
fn step(p: &RetryPolicy, l: &mut Leg, report: &Report, now: SystemTime) -> Decision {
    let d = decide(p, l, report, now, 0.5);
    let snapshot = l.clone();
    apply(&snapshot, report, &d, l);
    l.refresh_state();
    d
}

#[test]
fn pending_skips_held_and_final_legs() {
    let mut l = leg(3);
    assert_eq!(pending(&l), vec![0, 1, 2]);
    l.recipients[1].state = RcptState::Delivered {
        reply: "250 ok".into(),
    };
    assert_eq!(pending(&l), vec![0, 2]);
    l.held = true;
    assert!(pending(&l).is_empty());
    l.held = false;
    l.state = LegState::Partial;
    assert!(pending(&l).is_empty());
}

#[test]
fn expiry_fails_what_is_pending_with_its_last_reply() {
    let p = policy();
    let mut l = leg(2);
    step(
        &p,
        &mut l,
        &sent(vec![(0, deferred("451 4.3.0 busy"))]),
        t(10),
    );
    assert_eq!(expiry(&l, &[0, 1], t(4 * 86_400), &p), None);
    let r = expiry(&l, &[0, 1], t(5 * 86_400), &p).unwrap();
    assert_eq!(r.attempt, Attempt::Expired);
    assert_eq!(
        r.outcomes,
        vec![
            (
                0,
                Outcome::Failed {
                    reply: "message expired after 5days in the queue; last reply: 451 4.3.0 busy"
                        .into()
                }
            ),
            (
                1,
                Outcome::Failed {
                    reply: "message expired after 5days in the queue; last reply: never attempted"
                        .into()
                }
            ),
        ]
    );
}

#[test]
fn decide_counts_real_attempts_and_follows_the_schedule() {
    let p = policy();
    let l = leg(1);
    let d = decide(&p, &l, &sent(vec![(0, deferred("451"))]), t(0), 0.5);
    assert_eq!(
        d,
        Decision {
            attempts: 1,
            next: t(60),
            warn_delay: false,
            counts: true
        }
    );
    let until = t(17);
    let postponed = Report::all(Attempt::Postponed { until }, &[0], &deferred("down"));
    let d = decide(&p, &l, &postponed, t(0), 0.5);
    assert_eq!((d.attempts, d.next, d.counts), (0, until, false));
    let backoff = Report::all(
        Attempt::NotSent {
            backoff: Some(until),
        },
        &[0],
        &deferred("refused"),
    );
    let d = decide(&p, &l, &backoff, t(0), 0.5);
    assert_eq!((d.attempts, d.next, d.counts), (1, until, true));
    let mut l2 = leg(1);
    l2.attempts = 2;
    let d = decide(&p, &l2, &sent(vec![(0, deferred("451"))]), t(0), 0.0);
    assert_eq!(
        d.next,
        t(0) + (15 * MIN).mul_f64(0.9),
        "third attempt: third step"
    );
}

#[test]
fn apply_sets_states_and_counts_recipient_attempts() {
    let p = policy();
    let mut l = leg(3);
    let r = sent(vec![
        (0, deferred("451 a")),
        (
            1,
            Outcome::Delivered {
                reply: "250 ok".into(),
            },
        ),
        (
            2,
            Outcome::Failed {
                reply: "550 no".into(),
            },
        ),
    ]);
    let d = step(&p, &mut l, &r, t(0));
    assert_eq!(
        l.recipients[0].state,
        RcptState::Deferred {
            next: d.next,
            attempts: 1,
            last_reply: "451 a".into()
        }
    );
    assert_eq!(l.state, LegState::Deferred);
    assert_eq!(l.next_attempt, Some(d.next));
    // A postponement does not count as an attempt for the recipient either.
    let r = Report::all(Attempt::Postponed { until: t(99) }, &[0], &deferred("down"));
    step(&p, &mut l, &r, t(1));
    assert!(matches!(
        l.recipients[0].state,
        RcptState::Deferred { attempts: 1, .. }
    ));
    step(&p, &mut l, &sent(vec![(0, deferred("451 b"))]), t(2));
    assert!(matches!(
        l.recipients[0].state,
        RcptState::Deferred { attempts: 2, .. }
    ));
    assert_eq!(l.attempts, 2);
}

#[test]
fn apply_leaves_rewritten_recipients_alone() {
    let p = policy();
    let snapshot = leg(2);
    let r = sent(vec![(0, deferred("451")), (1, deferred("451"))]);
    let d = decide(&p, &snapshot, &r, t(0), 0.5);
    let mut edited = snapshot.clone();
    edited.recipients[1].address = "other@example.com".into();
    apply(&snapshot, &r, &d, &mut edited);
    assert!(matches!(
        edited.recipients[0].state,
        RcptState::Deferred { .. }
    ));
    assert_eq!(edited.recipients[1].state, RcptState::Queued);
}

#[test]
fn target_backoff_doubles_up_to_five_minutes_and_the_first_step() {
    let secs: Vec<u64> = (1..=9)
        .map(|n| target_backoff(n, Duration::from_secs(3600)).as_secs())
        .collect();
    assert_eq!(secs, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
    assert_eq!(target_backoff(5, MIN), MIN);
    assert_eq!(target_backoff(0, MIN), Duration::from_secs(5));
}

#[test]
fn log_words() {
    let failed = Outcome::Failed {
        reply: "550".into(),
    };
    assert_eq!(Attempt::Expired.log_word(&failed), Some("expired"));
    assert_eq!(Attempt::Sent.log_word(&failed), None);
    let not_sent = Attempt::NotSent { backoff: None };
    assert_eq!(not_sent.log_word(&failed), Some("bounced"));
    assert_eq!(not_sent.log_word(&deferred("x")), Some("deferred"));
}

fn any_state() -> impl Strategy<Value = RcptState> {
    prop_oneof![
        Just(RcptState::Queued),
        (0u32..5).prop_map(|attempts| RcptState::Deferred {
            next: t(0),
            attempts,
            last_reply: "451 before".into()
        }),
        Just(RcptState::Delivered {
            reply: "250 before".into()
        }),
        Just(RcptState::Failed {
            reply: "550 before".into()
        }),
    ]
}

fn any_outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Delivered {
            reply: "250 ok".into()
        }),
        Just(deferred("451 later")),
        Just(Outcome::Failed {
            reply: "550 no".into()
        }),
    ]
}

fn any_attempt() -> impl Strategy<Value = Attempt> {
    prop_oneof![
        Just(Attempt::Expired),
        Just(Attempt::Sent),
        Just(Attempt::NotSent { backoff: None }),
        Just(Attempt::NotSent {
            backoff: Some(t(7))
        }),
        Just(Attempt::Postponed { until: t(9) }),
    ]
}

proptest! {
    /// A recipient that is final (delivered or failed) stays exactly as it was, whatever
    /// report is applied: delivered never goes back to pending.
    #[test]
    fn final_recipients_never_change(
        states in prop::collection::vec(any_state(), 1..6),
        outcomes in prop::collection::vec((0usize..8, any_outcome()), 0..10),
        attempt in any_attempt(),
        now in 0u64..1_000_000,
    ) {
        let mut l = leg(states.len());
        for (r, s) in l.recipients.iter_mut().zip(&states) {
            r.state = s.clone();
        }
        let before = l.clone();
        step(&policy(), &mut l, &Report { attempt, outcomes }, t(now));
        for (b, a) in before.recipients.iter().zip(&l.recipients) {
            if !b.state.is_pending() {
                prop_assert_eq!(&b.state, &a.state);
            }
        }
    }

    /// Without a back-off, the next attempt is after `now`, at the schedule's step for the
    /// attempt count (the last one repeating) within ±10 % jitter.
    #[test]
    fn next_attempt_follows_the_schedule_with_jitter(
        steps in prop::collection::vec(1u64..100_000, 1..8),
        prior in 0u32..20,
        draw in 0.0f64..1.0,
        now in 0u64..10_000_000,
    ) {
        let p = RetryPolicy {
            schedule: steps.iter().map(|s| Duration::from_secs(*s)).collect(),
            ..policy()
        };
        let mut l = leg(1);
        l.attempts = prior;
        let d = decide(&p, &l, &sent(vec![(0, deferred("451"))]), t(now), draw);
        prop_assert!(d.next > t(now));
        let step = p.schedule[(prior as usize).min(p.schedule.len() - 1)];
        let wait = d.next.duration_since(t(now)).unwrap();
        prop_assert!(wait >= step.mul_f64(0.9) && wait <= step.mul_f64(1.1), "{wait:?} for {step:?}");
    }

    /// However many deferrals a leg goes through, the delay warning is decided once at most,
    /// and once the warning age has passed it has been.
    #[test]
    fn delay_warning_at_most_once_per_leg(
        gaps in prop::collection::vec(1u64..20_000, 1..40),
        warning in 0u64..50_000,
    ) {
        let p = RetryPolicy { delay_warning: Duration::from_secs(warning), ..policy() };
        let mut l = leg(2);
        let (mut now, mut warned) = (0, 0);
        for g in gaps {
            now += g;
            let d = step(&p, &mut l, &sent(vec![(0, deferred("451")), (1, deferred("451"))]), t(now));
            warned += u32::from(d.warn_delay);
        }
        prop_assert!(warned <= 1);
        prop_assert_eq!(warned == 1, warning > 0 && now >= warning);
        prop_assert_eq!(l.delay_warned, warned == 1);
    }

    /// A recipient deferred by a 4xx is failed as expired at the first look after `max_age`,
    /// with its 4xx as the last reply; before that it is not.
    #[test]
    fn four_xx_after_max_age_is_an_expired_failure(
        n in 1usize..5,
        deferred_at in 0u64..(5 * 86_400),
        late in 0u64..(30 * 86_400),
        code in 400u16..500,
    ) {
        let p = policy();
        let mut l = leg(n);
        let reply = Outcome::from_reply(code, "4.0.0 not now");
        let all: Vec<usize> = (0..n).collect();
        step(&p, &mut l, &Report::all(Attempt::Sent, &all, &reply), t(deferred_at));
        prop_assert_eq!(expiry(&l, &pending(&l), t(deferred_at), &p), None);
        let now = t(5 * 86_400 + late);
        let r = expiry(&l, &pending(&l), now, &p).unwrap();
        prop_assert_eq!(r.outcomes.len(), n);
        for (_, o) in &r.outcomes {
            let is_failure = matches!(o, Outcome::Failed { .. });
            prop_assert!(is_failure);
            prop_assert!(o.reply().starts_with("message expired after 5days"));
            prop_assert!(o.reply().ends_with(reply.reply()), "{}", o.reply());
        }
        step(&p, &mut l, &r, now);
        prop_assert_eq!(l.state, LegState::Failed);
        prop_assert_eq!(l.attempts, 1, "expiry is not an attempt");
        prop_assert!(pending(&l).is_empty());
    }
}
