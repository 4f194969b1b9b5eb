//! Time helpers in one place: wall-clock instants as Unix seconds / milliseconds, the one
//! RFC 5322 date-time formatter (trace headers, DSNs, the demo), and config dates as epoch
//! seconds. Pure conversions: it never reads the clock itself, never sleeps, and depends on no
//! other module of the crate but the config's `Date` type and its RFC 3339 formatter.

use std::time::{Duration, SystemTime};

/// Whole seconds since the Unix epoch; 0 for an instant before it.
pub fn unix_secs(t: SystemTime) -> u64 {
    since_epoch(t).as_secs()
}

/// Milliseconds since the Unix epoch (saturating); 0 for an instant before it.
pub fn unix_ms(t: SystemTime) -> u64 {
    u64::try_from(since_epoch(t).as_millis()).unwrap_or(u64::MAX)
}

/// Whole seconds from `since` to `now`; 0 when `since` is later (a clock step back).
pub fn age_secs(now: SystemTime, since: SystemTime) -> u64 {
    now.duration_since(since).unwrap_or_default().as_secs()
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

/// Midnight UTC of a config date (`since`, `before`) as signed epoch seconds (IMAP SEARCH
/// windows compare against INTERNALDATE in seconds); 0 for a date before the epoch.
pub fn date_epoch(d: crate::config::values::Date) -> i64 {
    i64::try_from(unix_secs(d.to_system_time())).unwrap_or(i64::MAX)
}

/// The IMAP `date` of a SEARCH key (RFC 3501 §6.4.4: `SINCE 1-Jan-2024`) for the UTC day of
/// epoch seconds `t` (dates before 1970 are clamped to the epoch).
pub fn imap_search_date(t: i64) -> String {
    let t = ::time::OffsetDateTime::from_unix_timestamp(t.max(0))
        .unwrap_or(::time::OffsetDateTime::UNIX_EPOCH);
    let fmt = ::time::macros::format_description!("[day padding:none]-[month repr:short]-[year]");
    t.format(&fmt).unwrap_or_else(|_| "1-Jan-1970".into())
}

/// RFC 5322 §3.3 date-time in UTC, day of month unpadded as in the RFC's own examples
/// (`Mon, 21 Sep 2026 14:13:20 +0000`, `Thu, 1 Jan 1970 00:00:00 +0000`).
pub fn rfc5322_date(t: SystemTime) -> String {
    let odt = ::time::OffsetDateTime::from(t);
    let fmt = ::time::macros::format_description!(
        "[weekday repr:short], [day padding:none] [month repr:short] [year] [hour]:[minute]:[second] +0000"
    );
    odt.format(&fmt)
        .unwrap_or_else(|_| "Thu, 1 Jan 1970 00:00:00 +0000".into())
}

/// RFC 3339 in UTC to the second (`2026-12-01T18:00:00Z`) of signed epoch seconds, clamped to
/// the years -9999 to 9999; the one implementation is the config's (`Timestamp::to_rfc3339`
/// formats with it too), so the two never disagree.
pub use crate::config::values::rfc3339_secs;

/// [`rfc3339_secs`] of a [`SystemTime`] (reports, alerts, the fleet's database times).
pub fn rfc3339(t: SystemTime) -> String {
    crate::config::values::Timestamp(t).to_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn rfc3339_to_the_second() {
        assert_eq!(rfc3339_secs(1_796_148_000), "2026-12-01T18:00:00Z");
        assert_eq!(rfc3339_secs(-86_400), "1969-12-31T00:00:00Z");
        assert_eq!(rfc3339_secs(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_secs(i64::MIN), "-9999-01-01T00:00:00Z");
    }

    #[test]
    fn epoch_conversions() {
        assert_eq!(unix_secs(t(1_790_000_000)), 1_790_000_000);
        assert_eq!(
            unix_ms(SystemTime::UNIX_EPOCH + Duration::from_millis(1_790_000_000_123)),
            1_790_000_000_123
        );
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!((unix_secs(before), unix_ms(before)), (0, 0));
        let d = crate::config::values::Date::parse("2024-01-01").unwrap();
        assert_eq!(date_epoch(d), 1_704_067_200);
    }

    #[test]
    fn imap_search_dates() {
        assert_eq!(imap_search_date(1_704_067_200), "1-Jan-2024");
        assert_eq!(imap_search_date(1_790_000_000), "21-Sep-2026");
        assert_eq!(imap_search_date(-5), "1-Jan-1970");
    }

    #[test]
    fn rfc5322_forms() {
        assert_eq!(rfc5322_date(t(0)), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(t(1_790_000_000)),
            "Mon, 21 Sep 2026 14:13:20 +0000"
        );
        assert_eq!(
            rfc5322_date(t(1_795_000_000)),
            "Wed, 18 Nov 2026 11:06:40 +0000"
        );
    }
}
