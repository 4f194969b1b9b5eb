//! `convert::convert_tnef` (TNEF → MIME) on arbitrary bytes, two ways: as a raw TNEF stream
//! wrapped into a multipart message as a base64 `winmail.dat` (first byte: bit 0 =
//! `keep_original`, bit 1 = recompute the attribute checksums first so mutations get past the
//! checksum check and into the property lists, compressed RTF and MIME rendering), and as a
//! whole message.
//!
//! Checks: no panic; a wrapped stream always yields a report for its part; when nothing was
//! converted the output equals the input byte for byte; a conversion is deterministic, parses
//! with mail-parser, keeps the bytes before the TNEF part, and converting its output again
//! changes nothing.
#![no_main]

use base64::Engine as _;
use cutover::convert::{TnefOptions, contains_tnef, convert_tnef, tnef};
use libfuzzer_sys::fuzz_target;

/// Recompute every attribute checksum of a TNEF stream (what a well-formed writer would emit).
fn fix_checksums(stream: &mut [u8]) {
    let mut at = 6;
    while at + 11 <= stream.len() {
        let len = u32::from_le_bytes([
            stream[at + 5],
            stream[at + 6],
            stream[at + 7],
            stream[at + 8],
        ]) as usize;
        let Some(end) = (at + 9).checked_add(len) else {
            return;
        };
        if end + 2 > stream.len() {
            return;
        }
        let sum = tnef::checksum(&stream[at + 9..end]);
        stream[end..end + 2].copy_from_slice(&sum.to_le_bytes());
        at = end + 2;
    }
}

const HEAD: &[u8] = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: fuzz\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n--outer\r\nContent-Type: text/plain\r\n\r\n\
Hello.\r\n--outer\r\nContent-Type: application/ms-tnef; name=\"winmail.dat\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n";

const PART: &[u8] = b"Content-Type: application/ms-tnef";

fn wrap(stream: &[u8]) -> Vec<u8> {
    let mut m = HEAD.to_vec();
    let b64 = base64::engine::general_purpose::STANDARD.encode(stream);
    for line in b64.as_bytes().chunks(76) {
        m.extend_from_slice(line);
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b"--outer--\r\n");
    m
}

fn check(message: &[u8], opts: TnefOptions, wrapped: bool) {
    let Some(c) = convert_tnef(message, opts) else {
        assert!(!wrapped, "a wrapped winmail.dat must be reported");
        return;
    };
    assert!(
        contains_tnef(message),
        "converted what the pre-check said has no TNEF"
    );
    assert!(!c.parts.is_empty());
    if !c.changed() {
        assert_eq!(c.bytes, message, "nothing converted, yet the bytes changed");
        return;
    }
    let again = convert_tnef(message, opts).expect("second run");
    assert_eq!(again.bytes, c.bytes, "not deterministic");
    assert_eq!(again.parts, c.parts);
    assert!(
        mail_parser::MessageParser::default()
            .parse(&c.bytes)
            .is_some(),
        "output does not parse"
    );
    if wrapped {
        let part = HEAD
            .windows(PART.len())
            .position(|w| w == PART)
            .expect("part header");
        assert_eq!(
            c.bytes[..part],
            HEAD[..part],
            "bytes before the part changed"
        );
        if let Some(second) = convert_tnef(&c.bytes, opts) {
            assert_eq!(
                second.bytes, c.bytes,
                "converting the output again changed it"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let opts = TnefOptions {
        keep_original: mode & 1 == 1,
    };
    let mut stream = rest.to_vec();
    if mode & 2 == 2 {
        fix_checksums(&mut stream);
    }
    check(&wrap(&stream), opts, true);
    check(data, opts, false);
});
