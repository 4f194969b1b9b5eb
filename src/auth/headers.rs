//! Which incoming `Authentication-Results:` fields claim this gateway's authserv-id (RFC 8601
//! §5: a receiver removes those, they are forgeries), and the message without them. Pure byte
//! functions over [`crate::header`]'s definitions: every other byte of the message is kept
//! exactly, so DKIM signatures over the rest stay valid. It never adds a header.

use crate::header;
use std::ops::Range;

/// The byte ranges of `msg` (whole fields: first line, continuation lines and their line ends)
/// of the `Authentication-Results` fields whose authserv-id is `authserv_id`
/// (case-insensitive), in order.
pub fn forged(msg: &[u8], authserv_id: &str) -> Vec<Range<usize>> {
    let section_end = header::split(msg).map_or(msg.len(), |(h, _)| h);
    let mut out: Vec<Range<usize>> = Vec::new();
    let mut pos = 0;
    // The field being read: its start and whether it is one of ours.
    let mut current: Option<(usize, bool)> = None;
    while pos < section_end {
        let end = msg[pos..section_end]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(section_end, |i| pos + i + 1);
        let line = &msg[pos..end];
        if !line.first().copied().is_some_and(header::is_wsp) {
            close(&mut current, pos, &mut out);
            current = Some((pos, false));
        }
        if let Some((start, _)) = current {
            let field = &msg[start..end];
            current = Some((start, claims(field, authserv_id)));
        }
        pos = end;
    }
    close(&mut current, section_end, &mut out);
    out
}

fn close(current: &mut Option<(usize, bool)>, end: usize, out: &mut Vec<Range<usize>>) {
    if let Some((start, true)) = current.take() {
        out.push(start..end);
    }
}

/// Whether a raw field (folded) is an `Authentication-Results` whose authserv-id is ours.
fn claims(field: &[u8], authserv_id: &str) -> bool {
    let Some(colon) = field.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = String::from_utf8_lossy(&field[..colon]);
    if !name.trim().eq_ignore_ascii_case("Authentication-Results") {
        return false;
    }
    let value = String::from_utf8_lossy(&field[colon + 1..]);
    authserv(&value).is_some_and(|id| id.eq_ignore_ascii_case(authserv_id.trim_end_matches('.')))
}

/// The authserv-id of an `Authentication-Results` value: the first token, comments and white
/// space around it dropped, a trailing dot ignored.
fn authserv(value: &str) -> Option<&str> {
    let mut rest = value.trim_start();
    // Leading comments: "(...)" possibly nested; give up on an unbalanced one.
    while rest.starts_with('(') {
        let mut depth = 0usize;
        let mut cut = None;
        for (i, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        cut = Some(i + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = rest[cut?..].trim_start();
    }
    let end = rest
        .find(|c: char| c == ';' || c == '(' || c.is_whitespace())
        .unwrap_or(rest.len());
    let id = rest[..end].trim_end_matches('.');
    (!id.is_empty()).then_some(id)
}

/// `msg` without the `ranges` (sorted, disjoint), as pieces in order.
pub fn without<'a>(msg: &'a [u8], ranges: &[Range<usize>]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::with_capacity(ranges.len() + 1);
    let mut at = 0;
    for r in ranges {
        pieces.push(&msg[at..r.start]);
        at = r.end;
    }
    pieces.push(&msg[at..]);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strip(msg: &[u8], id: &str) -> Vec<u8> {
        without(msg, &forged(msg, id)).concat()
    }

    #[test]
    fn removes_only_fields_claiming_our_id() {
        let msg = b"Authentication-Results: MX.Example.;\r\n\tspf=pass smtp.mailfrom=a@b\r\n\
Authentication-Results: other.example; dkim=pass\r\n\
Subject: hi\r\n\
authentication-results :  (comment (nested)) mx.example; none\r\n\
X-Authentication-Results: mx.example; none\r\n\
\r\n\
Authentication-Results: mx.example; in the body\r\n";
        let out = strip(msg, "mx.example");
        assert_eq!(
            out,
            b"Authentication-Results: other.example; dkim=pass\r\n\
Subject: hi\r\n\
X-Authentication-Results: mx.example; none\r\n\
\r\n\
Authentication-Results: mx.example; in the body\r\n"
        );
    }

    #[test]
    fn authserv_ids() {
        assert_eq!(authserv(" mx.example; spf=pass"), Some("mx.example"));
        assert_eq!(authserv(" mx.example 1; none"), Some("mx.example"));
        assert_eq!(authserv(" (c) mx.example.;"), Some("mx.example"));
        assert_eq!(authserv(" (unbalanced mx.example;"), None);
        assert_eq!(authserv(" ;"), None);
        // Not a prefix match.
        let msg = b"Authentication-Results: mx.example.org; none\r\n\r\n";
        assert!(forged(msg, "mx.example").is_empty());
    }

    #[test]
    fn last_field_without_body_or_line_end() {
        let msg = b"Subject: x\r\nAuthentication-Results: mx.example;\r\n none";
        assert_eq!(strip(msg, "mx.example"), b"Subject: x\r\n");
    }

    proptest! {
        /// Removing is exactly cutting whole fields: what is left, plus the cut ranges put back
        /// in place, is the message; nothing outside a cut range changes, and the body never.
        #[test]
        fn cuts_are_whole_fields(fields in proptest::collection::vec(
            (prop_oneof![Just("Authentication-Results"), Just("Subject"), Just("authentication-results ")],
             prop_oneof![Just(" mx.example; none"), Just(" other; x"), Just(" MX.EXAMPLE (c);\r\n\tdkim=pass")]),
            0..8), body in "[a-z: \r\n]{0,40}") {
            let mut msg = Vec::new();
            for (n, v) in &fields {
                msg.extend_from_slice(format!("{n}:{v}\r\n").as_bytes());
            }
            msg.extend_from_slice(b"\r\n");
            msg.extend_from_slice(body.as_bytes());
            let ranges = forged(&msg, "mx.example");
            let mut expected = Vec::new();
            for (n, v) in &fields {
                let ours = n.trim().eq_ignore_ascii_case("Authentication-Results")
                    && v.to_ascii_lowercase().starts_with(" mx.example");
                if !ours {
                    expected.extend_from_slice(format!("{n}:{v}\r\n").as_bytes());
                }
            }
            expected.extend_from_slice(b"\r\n");
            expected.extend_from_slice(body.as_bytes());
            let out = strip(&msg, "mx.example");
            prop_assert_eq!(&out, &expected);
            prop_assert!(out.ends_with(body.as_bytes()));
            let mut at = 0;
            for r in &ranges {
                prop_assert!(r.start >= at && r.end > r.start);
                at = r.end;
            }
        }
    }
}
