//! Retry policy: when a deferred leg is tried next, when it expires, when its delay warning is
//! due. Pure: the caller supplies the clock and the random draw.

use std::time::{Duration, SystemTime};

/// Delay before attempt number `attempts + 1`, after `attempts` failed attempts (1-based):
/// `schedule[attempts - 1]`, the last step repeating, with ±10 % jitter from `draw` ∈ [0, 1).
pub fn next_delay(schedule: &[Duration], attempts: u32, draw: f64) -> Duration {
    let Some(last) = schedule.last() else {
        return Duration::from_secs(60);
    };
    let i = (attempts.max(1) - 1) as usize;
    let base = schedule.get(i).unwrap_or(last);
    let factor = 0.9 + 0.2 * draw.clamp(0.0, 1.0);
    base.mul_f64(factor)
}

/// Has a leg created at `created` outlived `max_age` at `now`?
pub fn expired(created: SystemTime, now: SystemTime, max_age: Duration) -> bool {
    now.duration_since(created).is_ok_and(|age| age >= max_age)
}

/// Is a delay warning due (once per leg, `warning = 0` disables)?
pub fn delay_warning_due(
    created: SystemTime,
    now: SystemTime,
    warning: Duration,
    already_sent: bool,
) -> bool {
    !already_sent
        && !warning.is_zero()
        && now.duration_since(created).is_ok_and(|age| age >= warning)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sched() -> Vec<Duration> {
        [60, 300, 900]
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect()
    }

    #[test]
    fn steps_then_repeats_last() {
        let s = sched();
        assert_eq!(next_delay(&s, 1, 0.5), Duration::from_secs(60));
        assert_eq!(next_delay(&s, 2, 0.5), Duration::from_secs(300));
        assert_eq!(next_delay(&s, 3, 0.5), Duration::from_secs(900));
        assert_eq!(next_delay(&s, 10, 0.5), Duration::from_secs(900));
        assert_eq!(next_delay(&s, 0, 0.5), Duration::from_secs(60));
        assert_eq!(next_delay(&[], 3, 0.5), Duration::from_secs(60));
    }

    #[test]
    fn expiry_and_warning() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let h = Duration::from_secs(3600);
        assert!(!expired(t0, t0 + h, 2 * h));
        assert!(expired(t0, t0 + 2 * h, 2 * h));
        assert!(
            !expired(t0, t0 - h, 2 * h),
            "clock going backwards never expires"
        );
        assert!(delay_warning_due(t0, t0 + 4 * h, 4 * h, false));
        assert!(
            !delay_warning_due(t0, t0 + 4 * h, 4 * h, true),
            "once per leg"
        );
        assert!(
            !delay_warning_due(t0, t0 + 400 * h, Duration::ZERO, false),
            "0 = off"
        );
    }

    proptest! {
        #[test]
        fn jitter_within_ten_percent(attempts in 1u32..50, draw in 0.0f64..1.0) {
            let s = sched();
            let base = s[((attempts - 1) as usize).min(s.len() - 1)];
            let d = next_delay(&s, attempts, draw);
            prop_assert!(d >= base.mul_f64(0.9) && d <= base.mul_f64(1.1));
        }

        #[test]
        fn delays_never_shrink_below_previous_step(attempts in 1u32..20) {
            let s = sched();
            prop_assert!(next_delay(&s, attempts + 1, 0.5) >= next_delay(&s, attempts, 0.5));
        }
    }
}
