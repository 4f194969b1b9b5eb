//! `cutover::convert` (TNEF → MIME) on real Outlook/Exchange `winmail.dat` streams
//! (tests/fixtures/tnef/, from the tnefparse 1.4.0 sdist), checked against the independent
//! decoder tnefparse (Python, run as a subprocess; `.ci/run` installs it privately into
//! /opt/cutover-test/tnefparse, `CUTOVER_TNEFPARSE` overrides the directory). Each fixture is
//! wrapped into a real-looking multipart message, converted, parsed back with mail-parser, and
//! its attachments compared with tnefparse's: same names, same bytes.
//!
//! Known tnefparse deviation allowed for: it reads `PR_ATTACH_DATA_OBJ` values with their
//! padding and strips trailing NUL bytes, so where its copy is shorter our bytes may differ
//! only by trailing NULs.

#[path = "support/common.rs"]
mod common;

use base64::Engine as _;
use cutover::convert::{PartOutcome, TnefOptions, contains_tnef, convert_tnef};
use mail_parser::{MessageParser, MimeHeaders};
use std::path::PathBuf;
use std::process::Command;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tnef")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tnef"))
        .collect();
    names.sort();
    assert!(names.len() >= 15, "fixtures missing: {names:?}");
    names
}

/// A multipart/mixed message: a text/plain part, then the TNEF as a base64 winmail.dat.
fn wrap(tnef: &[u8], eol: &str) -> Vec<u8> {
    let b64 = B64.encode(tnef);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let text = format!(
        "From: Alice <alice@example.org>\n\
         To: bob@example.net\n\
         Subject: Quarterly figures\n\
         Date: Mon, 30 Nov 2026 10:00:00 +0000\n\
         Message-ID: <tnef-test@example.org>\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"outer-boundary\"\n\
         \n\
         This is a multi-part message in MIME format.\n\
         --outer-boundary\n\
         Content-Type: text/plain; charset=us-ascii\n\
         \n\
         See the attached files.\n\
         --outer-boundary\n\
         Content-Type: application/ms-tnef; name=\"winmail.dat\"\n\
         Content-Transfer-Encoding: base64\n\
         Content-Disposition: attachment; filename=\"winmail.dat\"\n\
         \n\
         {}\n\
         --outer-boundary--\n",
        lines.join("\n")
    );
    text.replace('\n', eol).into_bytes()
}

/// The stream with every attribute checksum recomputed (for fixtures whose checksums were
/// broken by hand-editing).
fn fix_checksums(tnef: &[u8]) -> Vec<u8> {
    let mut out = tnef.to_vec();
    let mut at = 6;
    while at + 11 <= out.len() {
        let len = u32::from_le_bytes(out[at + 5..at + 9].try_into().unwrap()) as usize;
        let end = at + 9 + len;
        if end + 2 > out.len() {
            break;
        }
        let sum = cutover::convert::tnef::checksum(&out[at + 9..end]);
        out[end..end + 2].copy_from_slice(&sum.to_le_bytes());
        at = end + 2;
    }
    out
}

/// (name, contents) of every `Content-Disposition: attachment` part of a message.
fn attachments(message: &[u8]) -> Vec<(String, Vec<u8>)> {
    let parsed = MessageParser::default().parse(message).expect("parses");
    parsed
        .parts
        .iter()
        .filter(|p| {
            p.content_disposition()
                .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"))
        })
        .map(|p| {
            // Our attachments are base64; decode the raw body (mail-parser would turn the bytes
            // of a text/* attachment into UTF-8 text).
            let raw = &message[p.offset_body as usize..p.offset_end as usize];
            let b64: Vec<u8> = raw
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            let data = match p.content_transfer_encoding() {
                Some(cte) if cte.eq_ignore_ascii_case("base64") => B64.decode(b64).unwrap(),
                _ => p.contents().to_vec(),
            };
            (p.attachment_name().unwrap_or("").to_string(), data)
        })
        .collect()
}

fn tnefparse_dir() -> String {
    std::env::var("CUTOVER_TNEFPARSE").unwrap_or_else(|_| "/opt/cutover-test/tnefparse".into())
}

const TNEFPARSE_SCRIPT: &str = r#"
import base64, json, sys
from tnefparse import TNEF
t = TNEF(open(sys.argv[1], 'rb').read(), do_checksum=False)
print(json.dumps([{"name": a.long_filename(), "data": base64.b64encode(a.data).decode()}
                  for a in t.attachments]))
"#;

/// Is tnefparse importable? Otherwise the skip policy (fails under CI=true).
fn tnefparse_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import tnefparse"])
        .env("PYTHONPATH", tnefparse_dir())
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        common::skip_or_fail(&format!(
            "tnefparse is not importable from {} (.ci/run installs it with pip --target)",
            tnefparse_dir()
        ));
    }
    ok
}

/// What tnefparse extracts from a TNEF stream: (long file name, data) per attachment.
fn tnefparse(tnef: &[u8]) -> Vec<(String, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("winmail.dat");
    std::fs::write(&path, tnef).unwrap();
    let out = Command::new("python3")
        .args(["-c", TNEFPARSE_SCRIPT])
        .arg(&path)
        .env("PYTHONPATH", tnefparse_dir())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "tnefparse failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    list.iter()
        .map(|v| {
            let name = v["name"].as_str().unwrap().to_string();
            let data = B64.decode(v["data"].as_str().unwrap()).unwrap();
            (name, data)
        })
        .collect()
}

/// Ours and tnefparse's agree: same names, same bytes (modulo tnefparse's NUL stripping).
fn assert_same(
    fixture: &str,
    mut ours: Vec<(String, Vec<u8>)>,
    mut theirs: Vec<(String, Vec<u8>)>,
) {
    let strip = |d: &[u8]| {
        let end = d.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        d[..end].to_vec()
    };
    ours.sort_by_key(|(n, d)| (n.clone(), strip(d)));
    theirs.sort_by_key(|(n, d)| (n.clone(), strip(d)));
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&ours), names(&theirs), "{fixture}: attachment names");
    for ((name, mine), (_, tp)) in ours.iter().zip(&theirs) {
        let same = mine == tp || (tp.len() < mine.len() && strip(mine) == *tp);
        assert!(
            same,
            "{fixture}: {name}: {} bytes here, {} from tnefparse",
            mine.len(),
            tp.len()
        );
    }
}

/// The expected outcome of each fixture as it is (before any checksum repair).
fn expected_kept(fixture: &str) -> Option<&'static str> {
    match fixture {
        "IPM-DistList.tnef" | "duplicate_filename.tnef" => Some("checksum mismatch"),
        "garbage-at-end.tnef" => Some("trailing garbage"),
        // An IPM.Appointment holding only properties.
        "multi-name-property.tnef" => Some("calendar item with no body or attachments"),
        _ => None,
    }
}

#[test]
fn every_fixture_matches_tnefparse() {
    if !tnefparse_available() {
        return;
    }
    let mut compared = 0;
    for name in fixtures() {
        let raw = fixture(&name);
        let report = convert_tnef(&wrap(&raw, "\r\n"), TnefOptions::default()).expect("has TNEF");
        assert_eq!(report.parts.len(), 1, "{name}");
        match (expected_kept(&name), &report.parts[0].outcome) {
            (Some(why), PartOutcome::Kept { reason }) => {
                assert!(reason.contains(why), "{name}: {reason}")
            }
            (None, PartOutcome::Converted { .. }) => {}
            (want, got) => panic!("{name}: expected kept={want:?}, got {got:?}"),
        }
        // Repaired checksums: the hand-edited fixtures convert too.
        let tnef = fix_checksums(&raw);
        let conv = convert_tnef(&wrap(&tnef, "\r\n"), TnefOptions::default()).unwrap();
        let PartOutcome::Converted {
            attachments: names,
            calendar,
            ..
        } = &conv.parts[0].outcome
        else {
            assert!(expected_kept(&name).is_some(), "{name}: {:?}", conv.parts);
            continue;
        };
        let mut ours = attachments(&conv.bytes);
        ours.retain(|(n, _)| n != "winmail.dat" || *calendar == 0);
        assert_eq!(ours.len(), names.len(), "{name}: reported names {names:?}");
        assert_same(&name, ours, tnefparse(&tnef));
        compared += 1;
    }
    assert!(compared >= 15, "only {compared} fixtures compared");
}

#[test]
fn corrupt_tnef_is_kept_byte_for_byte() {
    let good = fixture("two-files.tnef");
    let mut bad_sig = good.clone();
    bad_sig[0] ^= 0xFF;
    let mut flipped = good.clone();
    flipped[200] ^= 0x01;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            good[..good.len() - 2].to_vec(),
            "truncated attribute at offset",
        ),
        ("bad signature", bad_sig, "bad TNEF signature"),
        ("flipped bit", flipped, "checksum mismatch"),
        (
            "garbage at end",
            fixture("garbage-at-end.tnef"),
            "trailing garbage",
        ),
        (
            "bad checksums",
            fixture("IPM-DistList.tnef"),
            "checksum mismatch in attribute 0x9003",
        ),
        ("empty", Vec::new(), "bad TNEF signature"),
    ];
    for (what, tnef, why) in cases {
        let input = wrap(&tnef, "\r\n");
        let conv = convert_tnef(&input, TnefOptions::default()).expect("has a TNEF part");
        assert!(!conv.changed(), "{what}");
        assert_eq!(conv.bytes, input, "{what}: bytes changed");
        assert_eq!(conv.parts[0].name, "winmail.dat");
        match &conv.parts[0].outcome {
            PartOutcome::Kept { reason } => assert!(reason.contains(why), "{what}: {reason}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn message_without_tnef_is_none() {
    let msg = b"From: a@example.org\r\nSubject: hi\r\n\r\nJust text.\r\n";
    assert!(!contains_tnef(msg));
    assert!(convert_tnef(msg, TnefOptions::default()).is_none());
    // Named in the text but no TNEF part: the scan says maybe, the conversion says none.
    let msg = b"From: a@example.org\r\nSubject: about winmail.dat\r\n\r\nText.\r\n";
    assert!(contains_tnef(msg));
    assert!(convert_tnef(msg, TnefOptions::default()).is_none());
}

#[test]
fn conversion_is_deterministic_and_keeps_line_endings() {
    for eol in ["\r\n", "\n"] {
        let input = wrap(&fixture("umlaut.tnef"), eol);
        let a = convert_tnef(&input, TnefOptions::default()).unwrap();
        let b = convert_tnef(&input, TnefOptions::default()).unwrap();
        assert!(a.changed());
        assert_eq!(a.bytes, b.bytes);
        let crs = a.bytes.iter().filter(|&&c| c == b'\r').count();
        let lfs = a.bytes.iter().filter(|&&c| c == b'\n').count();
        if eol == "\n" {
            assert_eq!(crs, 0, "LF input, CR in output");
        } else {
            assert_eq!(crs, lfs, "CRLF input, bare LF in output");
        }
    }
}

/// The bytes before and after the TNEF part are untouched; the outer boundary is intact.
#[test]
fn bytes_outside_the_part_are_unchanged() {
    let input = wrap(&fixture("one-file.tnef"), "\r\n");
    let conv = convert_tnef(&input, TnefOptions::default()).unwrap();
    let start = find(&input, b"Content-Type: application/ms-tnef").unwrap();
    let end = rfind(&input, b"\r\n--outer-boundary--").unwrap();
    assert_eq!(conv.bytes[..start], input[..start]);
    let tail = &input[end..];
    assert!(conv.bytes.ends_with(tail));
    let parsed = MessageParser::default().parse(&conv.bytes).unwrap();
    assert_eq!(parsed.subject(), Some("Quarterly figures"));
    assert_eq!(
        parsed.body_text(0).as_deref(),
        Some("See the attached files.")
    );
    assert_eq!(attachments(&conv.bytes)[0].0, "AUTHORS");
}

#[test]
fn keep_original_keeps_the_original_part() {
    let input = wrap(&fixture("two-files.tnef"), "\r\n");
    let start = find(&input, b"Content-Type: application/ms-tnef").unwrap();
    let end = rfind(&input, b"\r\n--outer-boundary--").unwrap();
    let original = &input[start..end];
    let conv = convert_tnef(
        &input,
        TnefOptions {
            keep_original: true,
        },
    )
    .unwrap();
    assert!(conv.changed());
    assert!(
        find(&conv.bytes, original).is_some(),
        "original part not verbatim"
    );
    let names: Vec<String> = attachments(&conv.bytes).into_iter().map(|a| a.0).collect();
    assert_eq!(names, ["AUTHORS", "README", "winmail.dat"]);
    let winmail = &attachments(&conv.bytes)[2].1;
    assert_eq!(*winmail, fixture("two-files.tnef"));
}

#[test]
fn bodies_become_text_parts() {
    let body = |fixture_name: &str| {
        let conv = convert_tnef(
            &wrap(&fixture(fixture_name), "\r\n"),
            TnefOptions::default(),
        )
        .unwrap();
        let PartOutcome::Converted { body, .. } = &conv.parts[0].outcome else {
            panic!("{fixture_name}: {:?}", conv.parts)
        };
        (body.clone(), conv.bytes)
    };
    // body.tnef carries its body as PR_BODY_HTML (no PR_BODY, no attBody).
    let (ty, bytes) = body("body.tnef");
    assert_eq!(ty.as_deref(), Some("text/html"));
    let html = text_part(&bytes, "html");
    assert!(html.contains("THE BILL OF RIGHTS"), "{html}");

    let (ty, bytes) = body("rtf.tnef");
    assert_eq!(ty.as_deref(), Some("text/rtf"));
    assert!(text_part(&bytes, "rtf").starts_with("{\\rtf1"));

    // An appointment: plain-text body, the TNEF kept as winmail.dat and counted.
    let conv = convert_tnef(
        &wrap(&fixture("triples.tnef"), "\r\n"),
        TnefOptions::default(),
    )
    .unwrap();
    assert_eq!(
        conv.parts[0].outcome,
        PartOutcome::Converted {
            attachments: vec![],
            body: Some("text/plain".into()),
            calendar: 1
        }
    );
    assert!(text_part(&conv.bytes, "plain").contains("Sample description"));
    assert_eq!(attachments(&conv.bytes)[0].1, fixture("triples.tnef"));
}

/// Output of a conversion is not converted again (the calendar's winmail.dat stays).
#[test]
fn converted_output_is_left_alone() {
    let once = convert_tnef(
        &wrap(&fixture("triples.tnef"), "\n"),
        TnefOptions::default(),
    )
    .unwrap()
    .bytes;
    let twice = convert_tnef(&once, TnefOptions::default()).unwrap();
    assert!(!twice.changed());
    assert_eq!(twice.bytes, once);
    assert!(
        matches!(&twice.parts[0].outcome, PartOutcome::Kept { reason } if reason.contains("already converted"))
    );
}

/// A TNEF that is the whole body: the Content-* fields are replaced, the others kept verbatim.
#[test]
fn top_level_tnef_body() {
    let b64 = B64.encode(fixture("umlaut.tnef"));
    let head = "From: a@example.org\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMIME-Version: 1.0\r\n\
                Content-Type: application/ms-tnef;\r\n name=\"winmail.dat\"\r\n\
                Content-Transfer-Encoding: base64\r\nX-Other: kept\r\n\r\n";
    let input = format!("{head}{b64}\r\n").into_bytes();
    let conv = convert_tnef(&input, TnefOptions::default()).unwrap();
    assert!(conv.changed(), "{:?}", conv.parts);
    let text = String::from_utf8(conv.bytes.clone()).unwrap();
    assert!(text.starts_with(
        "From: a@example.org\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed;\r\n boundary=\"=_cutover-tnef-"
    ));
    assert!(text.contains("\r\nX-Other: kept\r\n\r\n--=_cutover-tnef-"));
    assert!(!text.contains("Content-Transfer-Encoding: base64\r\nX-Other"));
    let names: Vec<String> = attachments(&conv.bytes).into_iter().map(|a| a.0).collect();
    assert_eq!(
        names,
        ["TBZ PARIV GmbH.jpg", "image003.jpg", "UmlautAnhang-äüö.txt"]
    );
    // keep_original: the old fields and the body as a part of their own.
    let kept = convert_tnef(
        &input,
        TnefOptions {
            keep_original: true,
        },
    )
    .unwrap();
    let parsed = MessageParser::default().parse(&kept.bytes).unwrap();
    let last = parsed.parts.last().unwrap();
    assert_eq!(last.attachment_name(), Some("winmail.dat"));
    assert_eq!(last.contents(), fixture("umlaut.tnef"));
    assert!(find(&kept.bytes, b64.as_bytes()).is_some());
}

/// The text of the last text/`subtype` part of a message.
fn text_part(message: &[u8], subtype: &str) -> String {
    let parsed = MessageParser::default().parse(message).expect("parses");
    let part = parsed
        .parts
        .iter()
        .rfind(|p| {
            p.content_type()
                .is_some_and(|c| c.ctype() == "text" && c.subtype() == Some(subtype))
        })
        .unwrap_or_else(|| panic!("no text/{subtype} part"));
    part.text_contents().expect("text").to_string()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}
