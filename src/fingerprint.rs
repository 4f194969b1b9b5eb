//! Message fingerprints: the identity the ledger records for each delivery and that backfill uses
//! to recognise a message already present on the other side (DESIGN.md §3 "Ledger and
//! convergence"). Pure: bytes in, fingerprint out. Never does IO, never panics on bad input.
//!
//! A fingerprint is the normalised `Message-ID` when the message has one; otherwise a hash of the
//! normalised `Date`, `From`, `To`, `Subject` header values and the first 4 KiB of the body (line
//! endings normalised to LF, so a copy fetched over IMAP (CRLF) and one delivered over SMTP or
//! stored in a Maildir (LF) agree).

use crate::header;
use sha2::{Digest, Sha256};

/// How many body bytes enter a fingerprint of a message without `Message-ID`.
pub const BODY_PREFIX: usize = 4096;

/// The header fields a fingerprint reads (for IMAP `BODY.PEEK[HEADER.FIELDS (...)]`).
pub const HEADER_FIELDS: [&str; 5] = ["MESSAGE-ID", "DATE", "FROM", "TO", "SUBJECT"];

/// A message identity: `m:` + normalised Message-ID, or `h:` + hex SHA-256 of the normalised
/// identity headers and body prefix.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Fingerprint(pub String);

impl Fingerprint {
    /// True when the fingerprint comes from a Message-ID.
    pub fn is_message_id(&self) -> bool {
        self.0.starts_with("m:")
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The fixed-size form of a [`Fingerprint`] that in-memory indexes and the backfill's
/// fingerprint cache keep: the first 16 bytes of SHA-256 of its text (16 bytes inline instead of
/// a heap string of 40–100). Equal fingerprints give equal keys; two different ones share a key
/// with probability 2⁻¹²⁸.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FpKey(pub [u8; 16]);

impl FpKey {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The key written by [`FpKey::to_hex`]; `None` for anything else.
    pub fn from_hex(s: &str) -> Option<FpKey> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(FpKey(out))
    }
}

impl std::fmt::Debug for FpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FpKey({})", self.to_hex())
    }
}

impl Fingerprint {
    /// This fingerprint's [`FpKey`].
    pub fn key(&self) -> FpKey {
        let mut out = [0u8; 16];
        out.copy_from_slice(&Sha256::digest(self.0.as_bytes())[..16]);
        FpKey(out)
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Fingerprint of a message given its header (whole, or at least the fields in
/// [`HEADER_FIELDS`]) followed by the blank line and at least [`BODY_PREFIX`] bytes of its body
/// (or the whole body when shorter).
pub fn fingerprint(header_and_body_prefix: &[u8]) -> Fingerprint {
    let (header, body) = header::parts(header_and_body_prefix);
    if let Some(id) = header::value(header, "message-id").and_then(|v| normalise_message_id(&v)) {
        if let Some(h) = id
            .strip_prefix("h-")
            .and_then(|r| r.strip_suffix(SYNTHETIC_DOMAIN))
            .filter(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Fingerprint(format!("h:{}", h.to_ascii_lowercase()));
        }
        return Fingerprint(format!("m:{id}"));
    }
    let mut h = Sha256::new();
    for name in ["date", "from", "to", "subject"] {
        let v = header::value(header, name).unwrap_or_default();
        h.update(name.as_bytes());
        h.update(b":");
        h.update(collapse_ws(&v).as_bytes());
        h.update(b"\n");
    }
    h.update(b"\n");
    h.update(normalise_body(body));
    Fingerprint(format!("h:{}", hex::encode(&h.finalize()[..16])))
}

/// The domain of [`synthetic_message_id`]s.
const SYNTHETIC_DOMAIN: &str = "@fingerprint.cutover.invalid";

/// A `Message-ID:` value for a converted copy (TNEF → MIME) of a message that had none: it
/// names the original's fingerprint, so the copy keeps the original's identity although its body
/// changed (`None` for a fingerprint from a Message-ID: the copy keeps that header). Forging one
/// needs the original's Date, From, To, Subject and first 4 KiB of body.
pub fn synthetic_message_id(original: &Fingerprint) -> Option<String> {
    let h = original.0.strip_prefix("h:")?;
    Some(format!("<h-{h}{SYNTHETIC_DOMAIN}>"))
}

/// Whether the message (header part) carries a header `name` (case-insensitive), e.g. cutover's
/// own `X-Cutover-Loop` stamp.
pub fn has_header(header_and_body_prefix: &[u8], name: &str) -> bool {
    header::value(header::section(header_and_body_prefix), name).is_some()
}

/// Whether the header part carries a `Message-ID` (so no body prefix is needed).
pub fn has_message_id(header: &[u8]) -> bool {
    header::value(header::section(header), "message-id")
        .and_then(|v| normalise_message_id(&v))
        .is_some()
}

fn collapse_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `<Local@Domain>` → `local@domain`-ish: comments and whitespace removed, angle brackets
/// stripped, the domain part lowercased (the local part stays case-sensitive). `None` if empty.
pub fn normalise_message_id(raw: &str) -> Option<String> {
    // Drop parenthesised comments.
    let mut s = String::with_capacity(raw.len());
    let mut depth = 0usize;
    for c in raw.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => s.push(c),
            _ => {}
        }
    }
    let s = s.trim();
    let inner = match (s.find('<'), s.find('>')) {
        (Some(a), Some(b)) if b > a => &s[a + 1..b],
        _ => s,
    };
    let inner: String = inner.chars().filter(|c| !c.is_whitespace()).collect();
    if inner.is_empty() {
        return None;
    }
    Some(match inner.rfind('@') {
        Some(at) => format!("{}@{}", &inner[..at], inner[at + 1..].to_lowercase()),
        None => inner,
    })
}

/// CRLF → LF, then the first [`BODY_PREFIX`] bytes of the LF form.
fn normalise_body(body: &[u8]) -> Vec<u8> {
    crlf_to_lf(body, BODY_PREFIX)
}

/// CRLF → LF (a lone CR stays), at most `max` bytes of the LF form (`usize::MAX`: all of it).
pub fn crlf_to_lf(body: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len().min(max));
    let mut i = 0;
    while i < body.len() && out.len() < max {
        if body[i] == b'\r' && body.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(body[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_follow_fingerprints_and_round_trip_as_hex() {
        let a = Fingerprint("m:a@x".into());
        assert_eq!(a.key(), Fingerprint("m:a@x".into()).key());
        assert_ne!(a.key(), Fingerprint("m:b@x".into()).key());
        assert_eq!(FpKey::from_hex(&a.key().to_hex()), Some(a.key()));
        assert_eq!(FpKey::from_hex("m:a@x"), None);
        assert_eq!(FpKey::from_hex("00"), None);
    }

    #[test]
    fn synthetic_message_id_keeps_the_original_identity() {
        let original = fingerprint(b"From: a@x\r\nSubject: s\r\n\r\nbody\r\n");
        let id = synthetic_message_id(&original).unwrap();
        let copy = format!("Message-ID: {id}\r\nFrom: a@x\r\nSubject: s\r\n\r\nother body\r\n");
        assert_eq!(fingerprint(copy.as_bytes()), original);
        assert!(synthetic_message_id(&fingerprint(b"Message-ID: <a@b>\r\n\r\n")).is_none());
        // Not the synthetic form: a plain Message-ID fingerprint.
        let odd = fingerprint(b"Message-ID: <h-zz@fingerprint.cutover.invalid>\r\n\r\n");
        assert!(odd.is_message_id());
    }

    #[test]
    fn message_id_normalised() {
        let a = fingerprint(b"Message-ID: <Abc@Example.COM>\r\nSubject: x\r\n\r\nbody");
        let b = fingerprint(b"message-id:\r\n  <Abc@example.com> (comment)\n\nother body");
        assert_eq!(a, b);
        assert_eq!(a.0, "m:Abc@example.com");
        let c = fingerprint(b"Message-ID: <abc@Example.COM>\r\n\r\n");
        assert_ne!(a, c, "local part is case-sensitive");
        assert!(a.is_message_id());
    }

    #[test]
    fn without_message_id_hashes_headers_and_body() {
        let m1 = b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nFrom: a@x\r\nTo: b@y\r\nSubject: hi\r\n\r\nhello\r\n";
        let m1_lf =
            b"Date: Mon, 1 Jan 2024 10:00:00 +0000\nFrom: a@x\nTo: b@y\nSubject:   hi\n\nhello\n";
        let m2 = b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nFrom: a@x\r\nTo: b@y\r\nSubject: hi\r\n\r\nhellO\r\n";
        assert_eq!(fingerprint(m1), fingerprint(m1_lf));
        assert_ne!(fingerprint(m1), fingerprint(m2));
        assert!(!fingerprint(m1).is_message_id());
        // An empty Message-ID does not count.
        let m3 = b"Message-ID: <>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nFrom: a@x\r\nTo: b@y\r\nSubject: hi\r\n\r\nhello\r\n";
        assert_eq!(fingerprint(m1), fingerprint(m3));
    }

    #[test]
    fn body_prefix_only() {
        let mut a = b"Subject: s\r\n\r\n".to_vec();
        a.extend(std::iter::repeat_n(b'a', 5000));
        let mut b = a.clone();
        b.extend_from_slice(b"tail differs");
        a.extend_from_slice(b"other tail");
        assert_eq!(fingerprint(&a), fingerprint(&b));
    }

    #[test]
    fn header_helpers() {
        let m = b"X-Cutover-Loop: mx1\r\nMessage-ID: <a@b>\r\n\r\n";
        assert!(has_header(m, "X-Cutover-Loop"));
        assert!(!has_header(m, "Received"));
        assert!(has_message_id(m));
        assert!(!has_message_id(b"Subject: x\r\n\r\n"));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = fingerprint(&bytes);
        }

        #[test]
        fn crlf_and_lf_agree(subject in "[a-zA-Z0-9 ]{0,40}", body in "[a-zA-Z0-9 \n]{0,6000}") {
            let lf = format!("From: a@b\nSubject: {subject}\n\n{body}");
            let crlf = lf.replace('\n', "\r\n");
            prop_assert_eq!(fingerprint(lf.as_bytes()), fingerprint(crlf.as_bytes()));
        }

        #[test]
        fn message_id_wins_over_body(id in "[a-z0-9.]{1,20}@[a-z]{1,10}\\.com", b1 in "[a-z]{0,100}", b2 in "[a-z]{0,100}") {
            let m1 = format!("Message-ID: <{id}>\r\n\r\n{b1}");
            let m2 = format!("Subject: other\r\nMessage-Id:<{id}>\r\n\r\n{b2}");
            prop_assert_eq!(fingerprint(m1.as_bytes()), fingerprint(m2.as_bytes()));
        }
    }
}
