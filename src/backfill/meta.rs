//! What the backfill keeps of each message for its APPEND and flag synchronisation, in a
//! compact form (a pass holds one per message of the folder it copies: 200,000 of them for a
//! large INBOX): system flags as bits, other flags (keywords) as one string only when there are
//! any, INTERNALDATE as epoch seconds plus the UTC offset in minutes. Pure conversions to and
//! from the IMAP forms (`(\Seen $Label)`, `"01-Jan-2024 10:00:00 +0100"`); no IO.

use std::collections::BTreeSet;

/// The system flags kept as bits (`\Recent` is never kept: a server sets it).
const SYSTEM: [&str; 5] = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"];

/// A message's flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    system: u8,
    /// Keywords and unknown `\` flags, space-separated, in the order first seen.
    other: Option<Box<str>>,
}

impl Flags {
    /// From flag names (`\Seen`, `$Label`), `\Recent` left out, duplicates ignored.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Flags {
        let mut system = 0u8;
        let mut other: Vec<&str> = Vec::new();
        for n in names {
            if let Some(i) = SYSTEM.iter().position(|s| s.eq_ignore_ascii_case(n)) {
                system |= 1 << i;
            } else if !n.eq_ignore_ascii_case("\\Recent")
                && !n.is_empty()
                && !other.iter().any(|o| o.eq_ignore_ascii_case(n))
            {
                other.push(n);
            }
        }
        Flags {
            system,
            other: (!other.is_empty()).then(|| other.join(" ").into_boxed_str()),
        }
    }

    /// From an IMAP flag list (`(\Seen $Label)`; the parentheses are optional).
    pub fn parse(list: &str) -> Flags {
        Flags::from_names(
            list.trim_start_matches('(')
                .trim_end_matches(')')
                .split_whitespace(),
        )
    }

    /// Every flag name, system flags first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let system = SYSTEM
            .iter()
            .enumerate()
            .filter(|(i, _)| self.system & (1 << i) != 0)
            .map(|(_, s)| *s);
        system.chain(self.other.as_deref().unwrap_or("").split_whitespace())
    }

    /// The IMAP flag list, `(\Seen $Label)`.
    pub fn list(&self) -> String {
        format!("({})", self.names().collect::<Vec<_>>().join(" "))
    }

    /// The flags lower-cased, for comparing two messages' flags.
    pub fn set(&self) -> BTreeSet<String> {
        self.names().map(|n| n.to_ascii_lowercase()).collect()
    }
}

/// What an APPEND of a message needs besides its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub flags: Flags,
    /// INTERNALDATE: epoch seconds and UTC offset in minutes (`None`: the server gave none).
    date: Option<(i64, i16)>,
}

impl Meta {
    pub fn new(flags: Flags, date: Option<(i64, i16)>) -> Meta {
        Meta { flags, date }
    }

    /// INTERNALDATE as epoch seconds.
    pub fn epoch(&self) -> Option<i64> {
        self.date.map(|(t, _)| t)
    }

    /// INTERNALDATE in the IMAP form with quotes (`"01-Jan-2024 10:00:00 +0100"`), in its own
    /// UTC offset.
    pub fn idate(&self) -> Option<String> {
        let (t, tz) = self.date?;
        let off = ::time::UtcOffset::from_whole_seconds(i32::from(tz) * 60).ok()?;
        let fmt = ::time::macros::format_description!(
            "\"[day]-[month repr:short]-[year] [hour]:[minute]:[second] [offset_hour sign:mandatory][offset_minute]\""
        );
        ::time::OffsetDateTime::from_unix_timestamp(t)
            .ok()?
            .to_offset(off)
            .format(&fmt)
            .ok()
    }

    /// Whether INTERNALDATE falls before 1970 in its own offset (some servers refuse that).
    pub fn before_1970(&self) -> bool {
        self.date.is_some_and(|(t, tz)| t + i64::from(tz) * 60 < 0)
    }

    /// The same message dated 1970-01-01 00:00:01 +0000: the earliest date servers take as
    /// given (Cyrus 3.6 refuses dates before 1970 and reads 00:00:00, time 0, as "no date",
    /// storing the time of the APPEND instead).
    pub fn at_epoch(&self) -> Meta {
        Meta {
            flags: self.flags.clone(),
            date: Some((1, 0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn flags_round_trip_without_recent() {
        let f = Flags::parse("(\\Recent $Label \\seen \\Flagged $label Junk)");
        assert_eq!(f.list(), "(\\Seen \\Flagged $Label Junk)");
        assert_eq!(Flags::parse(&f.list()), f);
        assert_eq!(Flags::parse("()"), Flags::default());
        assert_eq!(Flags::default().list(), "()");
        assert!(f.set().contains("$label") && f.set().contains("\\seen"));
    }

    #[test]
    fn dates_keep_their_offset() {
        let m = Meta::new(Flags::default(), Some((1_704_103_200, 120)));
        assert_eq!(m.idate().as_deref(), Some("\"01-Jan-2024 12:00:00 +0200\""));
        assert_eq!(m.epoch(), Some(1_704_103_200));
        assert!(!m.before_1970());
        let old = Meta::new(Flags::default(), Some((-3_600, 60)));
        assert!(
            !old.before_1970(),
            "1970-01-01 00:00 +0100 is not before 1970"
        );
        let old = Meta::new(Flags::default(), Some((-3_601, 60)));
        assert!(old.before_1970());
        assert_eq!(
            old.at_epoch().idate().as_deref(),
            Some("\"01-Jan-1970 00:00:01 +0000\"")
        );
        assert_eq!(Meta::default().idate(), None);
    }

    proptest! {
        #[test]
        fn any_flag_list_parses_to_the_same_set(
            names in proptest::collection::vec("(\\\\(Seen|Answered|Flagged|Deleted|Draft|Recent)|\\$?[A-Za-z]{1,8})", 0..8)
        ) {
            let f = Flags::from_names(names.iter().map(String::as_str));
            let want: BTreeSet<String> = names
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .filter(|n| n != "\\recent")
                .collect();
            prop_assert_eq!(f.set(), want);
            prop_assert_eq!(Flags::parse(&f.list()), f);
        }
    }
}
