//! The header section of a stored message (RFC 5322 §2.1, §2.2.3), defined once: where it ends
//! (the first empty line, CRLF or bare LF), its lines, its unfolded fields, the value of a named
//! field. Used by `queue show`, the queue's head reads, DSNs and fingerprints; the streaming scan
//! on the DATA path (`inbound::stamp::HeaderScan`) shares [`is_blank`] and [`is_wsp`]. Pure byte
//! functions: it never allocates more than the value it returns, never rewrites a message, and
//! depends on no other module.

/// Name of the loop-detection header cutover adds to every message it accepts.
pub const LOOP_HEADER: &str = "X-Cutover-Loop";

/// Folding white space that starts a continuation line (SP or HTAB).
pub fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Whether a line (without its LF) is the empty line that ends a header section: nothing, or a
/// lone CR.
pub fn is_blank(line: &[u8]) -> bool {
    line.is_empty() || line == b"\r"
}

/// Where the header section of `msg` ends: `(header_end, body_start)`, the offsets of the empty
/// line and just past it. `None` when `msg` has no empty line (all of it is header so far).
pub fn split(msg: &[u8]) -> Option<(usize, usize)> {
    let mut start = 0;
    while let Some(lf) = msg[start..].iter().position(|&b| b == b'\n') {
        let end = start + lf;
        if is_blank(&msg[start..end]) {
            return Some((start, end + 1));
        }
        start = end + 1;
    }
    None
}

/// `(section, body)`: the header section of `msg`, line ends included, without the empty line
/// (all of `msg` when it has none), and everything after the empty line (nothing when none).
pub fn parts(msg: &[u8]) -> (&[u8], &[u8]) {
    match split(msg) {
        Some((h, b)) => (&msg[..h], &msg[b..]),
        None => (msg, &[]),
    }
}

/// The header section of `msg` (see [`parts`]).
pub fn section(msg: &[u8]) -> &[u8] {
    parts(msg).0
}

/// The raw lines of a header `section` (folded as they are), without their line ends.
pub fn lines(section: &[u8]) -> impl Iterator<Item = &[u8]> {
    let section = section.strip_suffix(b"\n").unwrap_or(section);
    section
        .split(|&b| b == b'\n')
        .filter(move |_| !section.is_empty())
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// One header field: its name as written (white space before the colon included) and its value
/// unfolded (continuation lines joined with one space, their own white space kept), decoded
/// lossily as UTF-8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a [u8],
    pub value: String,
}

impl Field<'_> {
    /// Whether the field is called `name` (case-insensitive; white space around it ignored).
    pub fn is(&self, name: &str) -> bool {
        String::from_utf8_lossy(self.name)
            .trim()
            .eq_ignore_ascii_case(name)
    }
}

/// The fields of a header `section`, unfolded. Lines that start no field (no colon, or a
/// continuation line with no field before it) are skipped.
pub fn fields(section: &[u8]) -> impl Iterator<Item = Field<'_>> {
    let mut lines = lines(section).peekable();
    std::iter::from_fn(move || {
        loop {
            let line = lines.next()?;
            if line.first().copied().is_some_and(is_wsp) {
                continue;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let mut value = String::from_utf8_lossy(&line[colon + 1..]).into_owned();
            while let Some(next) = lines.next_if(|l| l.first().copied().is_some_and(is_wsp)) {
                value.push(' ');
                value.push_str(&String::from_utf8_lossy(next));
            }
            return Some(Field {
                name: &line[..colon],
                value,
            });
        }
    })
}

/// The unfolded value of the first field `name` (case-insensitive) in a header `section`.
pub fn value(section: &[u8], name: &str) -> Option<String> {
    fields(section).find(|f| f.is(name)).map(|f| f.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ends_at_the_first_empty_line() {
        assert_eq!(split(b"A: 1\r\nB: 2\r\n\r\nbody"), Some((12, 14)));
        assert_eq!(split(b"A: 1\nB: 2\n\nbody"), Some((10, 11)));
        assert_eq!(split(b"A: 1\n\r\nbody"), Some((5, 7)));
        assert_eq!(split(b"\r\nbody"), Some((0, 2)));
        assert_eq!(split(b"A: 1\r\n"), None);
        assert_eq!(section(b"A: 1\r\nB: 2\r\n\r\nbody"), b"A: 1\r\nB: 2\r\n");
        assert_eq!(section(b"A: 1\r\n"), b"A: 1\r\n");
        assert_eq!(
            parts(b"A: 1\r\n\r\nbody\r\n\r\nmore").1,
            b"body\r\n\r\nmore"
        );
        assert_eq!(parts(b"A: 1\r\n").1, b"");
    }

    #[test]
    fn lines_and_fields() {
        let s = b"From: a\r\nSubject: one\r\n\ttwo\r\nnot a field\r\n continued\r\nX-A : v";
        let l: Vec<&[u8]> = lines(s).collect();
        assert_eq!(l.len(), 6);
        assert_eq!(l[2], b"\ttwo");
        assert_eq!(lines(b"").count(), 0);
        assert_eq!(lines(b"A: 1\n").count(), 1);
        let f: Vec<Field<'_>> = fields(s).collect();
        assert_eq!(f.len(), 3);
        assert_eq!(f[1].value, " one \ttwo");
        assert!(f[2].is("x-a"));
        assert_eq!(value(s, "SUBJECT").as_deref(), Some(" one \ttwo"));
        assert_eq!(value(s, "To"), None);
    }

    fn message() -> impl Strategy<Value = Vec<u8>> {
        let name = prop_oneof![Just("Received".to_string()), "[A-Za-z-]{1,12}"];
        let field = (name, "[ -~]{0,30}", proptest::option::of("[ -~]{0,20}")).prop_map(
            |(n, v, c)| match c {
                Some(c) => format!("{n}: {v}\r\n\t{c}\r\n"),
                None => format!("{n}:{v}\r\n"),
            },
        );
        (
            proptest::collection::vec(field, 0..12),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(fs, lf, body)| {
                let mut m = fs.concat().into_bytes();
                m.extend_from_slice(b"\r\n");
                if lf {
                    m.retain(|&b| b != b'\r');
                }
                m.extend_from_slice(&body);
                m
            })
    }

    proptest! {
        #[test]
        fn helpers_agree(m in message()) {
            let (h, b) = split(&m).expect("a blank line");
            prop_assert_eq!(section(&m).len(), h);
            prop_assert_eq!(parts(&m).1, &m[b..]);
            prop_assert!(b - h == 1 || b - h == 2);
            // The section has no empty line; every line is a field or a continuation.
            let sec = section(&m);
            prop_assert!(lines(sec).all(|l| !is_blank(l)));
            let starts = lines(sec).filter(|l| !l.first().copied().is_some_and(is_wsp)).count();
            prop_assert_eq!(fields(sec).count(), starts);
            // The streaming scan on the DATA path ends the section at the same line and sees the
            // same fields.
            let received = fields(sec).filter(|f| f.is("received")).count();
            let mut scan = crate::inbound::stamp::HeaderScan::new("h", 1 << 20);
            scan.feed(&m);
            scan.finish();
            prop_assert_eq!(scan.received as usize, received);
            prop_assert_eq!(scan.header_size(), h);
        }

        #[test]
        fn never_panics(m in proptest::collection::vec(any::<u8>(), 0..400)) {
            let sec = section(&m);
            prop_assert!(m.starts_with(sec));
            for f in fields(sec) {
                prop_assert!(!f.name.contains(&b'\n'));
            }
            let _ = value(sec, "message-id");
        }
    }
}
