//! Human-form configuration values: durations (`"5m"`), sizes (`"50MiB"`), `host:port`
//! addresses and RFC 3339 times. Pure parsing; never touches IO.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::time::{Duration, SystemTime};

/// A duration written as `"90s"`, `"5m"`, `"4h"`, `"5d"` or `"1h 30m"`; `"0"` means zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t == "0" {
            return Ok(Self(Duration::ZERO));
        }
        humantime::parse_duration(t).map(Self).map_err(|e| {
            format!("invalid duration {s:?} ({e}); write e.g. \"90s\", \"5m\", \"4h\", \"5d\"")
        })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(String::deserialize(d)?, Self::parse)
    }
}

/// A byte size written as `"50MiB"`, `"10MB"`, `"512KiB"`, `"1GiB"` or a plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let err = || {
            format!(
                "invalid size {s:?}; write e.g. \"50MiB\", \"10MB\", \"512KiB\" or a number of bytes"
            )
        };
        let n: f64 = num.parse().map_err(|_| err())?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            _ => return Err(err()),
        };
        let v = n * mult as f64;
        if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
            return Err(err());
        }
        Ok(Self(v as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Self(n)),
            Raw::S(s) => parsed(s, Self::parse),
        }
    }
}

/// `host:port` (IPv6 literals in brackets: `[::1]:25`). The host is not resolved here.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    pub fn parse(s: &str) -> Result<Self, String> {
        let err = |why: &str| {
            format!("invalid address {s:?}: {why}; write \"host:port\" or \"[v6]:port\"")
        };
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest
                .split_once("]:")
                .ok_or_else(|| err("missing \"]:port\""))?;
            h.parse::<std::net::Ipv6Addr>()
                .map_err(|_| err("bad IPv6 literal"))?;
            (h, p)
        } else {
            s.rsplit_once(':').ok_or_else(|| err("missing \":port\""))?
        };
        if host.is_empty() || host.contains(':') && !s.starts_with('[') {
            return Err(err("bad host"));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(err("bad host"));
        }
        let port: u16 = port.parse().map_err(|_| err("bad port"))?;
        if port == 0 {
            return Err(err("port 0"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(String::deserialize(d)?, Self::parse)
    }
}

/// An instant written in RFC 3339 (`2026-12-01T18:00:00Z`, `2026-12-01T19:00:00+01:00`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    pub fn parse(s: &str) -> Result<Self, String> {
        let odt =
            time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
                .map_err(|e| {
                format!("invalid time {s:?} ({e}); write RFC 3339, e.g. \"2026-12-01T18:00:00Z\"")
            })?;
        Ok(Self(SystemTime::from(odt)))
    }

    /// RFC 3339 in UTC with second precision (see [`rfc3339_secs`]); never panics, also not
    /// before 1970 or past 9999.
    pub fn to_rfc3339(self) -> String {
        rfc3339_secs(self.unix_secs())
    }

    /// Signed whole seconds since the Unix epoch, rounded down (an instant half a second before
    /// 1970 is -1); saturating at the ends of `i64`.
    pub fn unix_secs(self) -> i64 {
        match self.0.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            Err(e) => {
                let before = e.duration();
                let whole = before.as_secs() + u64::from(before.subsec_nanos() > 0);
                i64::try_from(whole).map_or(i64::MIN, |s| -s)
            }
        }
    }
}

/// The one RFC 3339 formatter (`crate::time::rfc3339_secs` is this): UTC to the second
/// (`2026-12-01T18:00:00Z`) of signed epoch seconds; instants outside the years -9999 to 9999
/// are clamped to them. Never panics.
pub fn rfc3339_secs(t: i64) -> String {
    let t = t.clamp(-377_705_116_800, 253_402_300_799);
    let odt =
        time::OffsetDateTime::from_unix_timestamp(t).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    odt.format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(datetime_text(d)?, Self::parse)
    }
}

/// A calendar date `YYYY-MM-DD` (backfill `since`/`before`), as midnight UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl Date {
    pub fn parse(s: &str) -> Result<Self, String> {
        let err = || format!("invalid date {s:?}; write YYYY-MM-DD");
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        let d = time::Date::parse(s.trim(), &fmt).map_err(|_| err())?;
        Ok(Self {
            year: d.year(),
            month: d.month() as u8,
            day: d.day(),
        })
    }

    /// Midnight UTC of this date.
    pub fn to_system_time(self) -> SystemTime {
        let month = time::Month::try_from(self.month).unwrap_or(time::Month::January);
        time::Date::from_calendar_date(self.year, month, self.day)
            .map(|d| SystemTime::from(d.midnight().assume_utc()))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(datetime_text(d)?, Self::parse)
    }
}

/// `parse` of a value's text, its error message as serde's (the config loader adds file, line
/// and key).
fn parsed<T, E: serde::de::Error>(
    text: String,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, E> {
    parse(&text).map_err(E::custom)
}

/// The text of a time or date: TOML offset date-times and local dates arrive as datetime values
/// (taken as their RFC 3339 text); strings are accepted too.
fn datetime_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        D(toml::value::Datetime),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::S(s) => s,
        Raw::D(dt) => dt.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            HumanDuration::parse("5m").unwrap().0,
            Duration::from_secs(300)
        );
        assert_eq!(
            HumanDuration::parse("4h").unwrap().0,
            Duration::from_secs(14_400)
        );
        assert_eq!(
            HumanDuration::parse("5d").unwrap().0,
            Duration::from_secs(432_000)
        );
        assert_eq!(HumanDuration::parse("0").unwrap().0, Duration::ZERO);
        assert!(HumanDuration::parse("5 parsecs").is_err());
        assert!(HumanDuration::parse("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("50MiB").unwrap().0, 50 << 20);
        assert_eq!(ByteSize::parse("10MB").unwrap().0, 10_000_000);
        assert_eq!(ByteSize::parse("1 GiB").unwrap().0, 1 << 30);
        assert_eq!(ByteSize::parse("1024").unwrap().0, 1024);
        assert!(ByteSize::parse("lots").is_err());
        assert!(ByteSize::parse("5XB").is_err());
        assert_eq!(ByteSize(50 << 20).to_string(), "50MiB");
    }

    #[test]
    fn host_ports() {
        assert_eq!(
            HostPort::parse("old-mail.internal:25").unwrap(),
            HostPort {
                host: "old-mail.internal".into(),
                port: 25
            }
        );
        assert_eq!(HostPort::parse("[::1]:2525").unwrap().host, "::1");
        assert_eq!(
            HostPort::parse("[::1]:2525").unwrap().to_string(),
            "[::1]:2525"
        );
        for bad in [
            "host",
            "host:",
            "host:0",
            "host:70000",
            ":25",
            "a b:25",
            "::1:25",
        ] {
            assert!(HostPort::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps() {
        let a = Timestamp::parse("2026-12-01T18:00:00Z").unwrap();
        let b = Timestamp::parse("2026-12-01T19:00:00+01:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_rfc3339(), "2026-12-01T18:00:00Z");
        assert!(Timestamp::parse("2026-12-01").is_err());
        assert!(Timestamp::parse("tomorrow").is_err());
    }

    #[test]
    fn timestamps_format_before_1970_and_far_ahead_without_panicking() {
        let epoch = SystemTime::UNIX_EPOCH;
        let ts = |t: SystemTime| Timestamp(t).to_rfc3339();
        assert_eq!(ts(epoch), "1970-01-01T00:00:00Z");
        assert_eq!(
            ts(epoch - Duration::from_secs(86_400)),
            "1969-12-31T00:00:00Z"
        );
        assert_eq!(
            ts(epoch - Duration::from_millis(500)),
            "1969-12-31T23:59:59Z"
        );
        assert_eq!(
            ts(epoch - Duration::from_secs(2_208_988_800)),
            "1900-01-01T00:00:00Z"
        );
        let ancient = epoch.checked_sub(Duration::from_secs(1 << 40)).unwrap();
        assert_eq!(ts(ancient), "-9999-01-01T00:00:00Z");
        assert_eq!(
            ts(epoch + Duration::from_secs(253_402_300_799)),
            "9999-12-31T23:59:59Z"
        );
        let far = epoch.checked_add(Duration::from_secs(1 << 40)).unwrap();
        assert_eq!(ts(far), "9999-12-31T23:59:59Z");
        let t = Timestamp::parse("1969-07-20T20:17:40Z").unwrap();
        assert_eq!(
            (t.unix_secs(), t.to_rfc3339().as_str()),
            (-14_182_940, "1969-07-20T20:17:40Z")
        );
    }

    proptest::proptest! {
        #[test]
        fn rfc3339_round_trips_within_range(t in -62_135_596_800i64..253_402_300_800) {
            let text = rfc3339_secs(t);
            proptest::prop_assert_eq!(Timestamp::parse(&text).unwrap().unix_secs(), t, "{}", text);
        }
    }

    #[test]
    fn dates() {
        let d = Date::parse("2019-01-01").unwrap();
        assert_eq!(d.to_string(), "2019-01-01");
        assert_eq!(
            d.to_system_time(),
            Timestamp::parse("2019-01-01T00:00:00Z").unwrap().0
        );
        assert!(Date::parse("2019-13-01").is_err());
    }
}
