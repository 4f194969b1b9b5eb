//! What the backfill changes in a message on its way to the destination: with `convert_tnef`,
//! TNEF (`winmail.dat`) parts become MIME (`crate::convert`). A converted copy of a message
//! without `Message-ID` gets a synthetic one naming the original's fingerprint, so later passes
//! still recognise it ([`crate::fingerprint::synthetic_message_id`]). Records per message what
//! was converted or kept and why, for the report. Pure: bytes in, bytes out; never does IO.

use super::report::MessageNote;
use crate::config::BackfillJob;
use crate::convert::{self, PartOutcome, TnefOptions};
use crate::fingerprint;
use std::borrow::Cow;
use std::sync::Mutex;

/// The conversions of one job, and the notes of the messages converted so far.
#[derive(Debug, Default)]
pub struct Transform {
    tnef: Option<TnefOptions>,
    notes: Mutex<Vec<MessageNote>>,
}

impl Transform {
    pub fn new(job: &BackfillJob) -> Transform {
        Transform {
            tnef: job.convert_tnef.then_some(TnefOptions {
                keep_original: job.keep_original,
            }),
            notes: Mutex::new(Vec::new()),
        }
    }

    /// The same conversions, with no notes yet (one per batch: batches run in parallel).
    pub fn fresh(&self) -> Transform {
        Transform {
            tnef: self.tnef,
            notes: Mutex::new(Vec::new()),
        }
    }

    /// Nothing to change.
    pub fn none() -> Transform {
        Transform::default()
    }

    /// The bytes to store for source message `uid`.
    pub fn apply<'a>(&self, uid: u32, body: &'a [u8]) -> Cow<'a, [u8]> {
        let Some(opts) = self.tnef else {
            return Cow::Borrowed(body);
        };
        let Some(c) = convert::convert_tnef(body, opts) else {
            return Cow::Borrowed(body);
        };
        let changed = c.changed();
        for p in &c.parts {
            let note = match &p.outcome {
                PartOutcome::Converted {
                    attachments,
                    body,
                    calendar,
                } => MessageNote::new(
                    uid,
                    "converted",
                    "tnef",
                    format!(
                        "{} → MIME: body {}, attachments [{}]{}",
                        p.name,
                        body.as_deref().unwrap_or("none"),
                        attachments.join(", "),
                        if *calendar > 0 {
                            format!(", {calendar} calendar item(s) kept as winmail.dat")
                        } else {
                            String::new()
                        }
                    ),
                ),
                PartOutcome::Kept { reason } => MessageNote::new(
                    uid,
                    "kept",
                    "tnef_undecodable",
                    format!("{} kept as it was: {reason}", p.name),
                ),
            };
            self.note(note);
        }
        if !changed {
            return Cow::Borrowed(body);
        }
        Cow::Owned(with_identity(body, c.bytes))
    }

    fn note(&self, n: MessageNote) {
        if let Ok(mut v) = self.notes.lock() {
            v.push(n);
        }
    }

    /// The notes recorded since the last call.
    pub fn take_notes(&self) -> Vec<MessageNote> {
        self.notes
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

/// `converted`, with a synthetic `Message-ID` first when `original` has none.
fn with_identity(original: &[u8], converted: Vec<u8>) -> Vec<u8> {
    let head = &original[..original.len().min(fingerprint::BODY_PREFIX * 16)];
    if fingerprint::has_message_id(crate::header::parts(head).0) {
        return converted;
    }
    let fp = fingerprint::fingerprint(head);
    let Some(id) = fingerprint::synthetic_message_id(&fp) else {
        return converted;
    };
    let eol: &[u8] = if original.windows(2).any(|w| w == b"\r\n") {
        b"\r\n"
    } else {
        b"\n"
    };
    let mut out = Vec::with_capacity(converted.len() + id.len() + 16);
    out.extend_from_slice(b"Message-ID: ");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(eol);
    out.extend_from_slice(&converted);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tnef_message(with_id: bool) -> Vec<u8> {
        let tnef = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/tnef/one-file.tnef"
        ))
        .unwrap_or_default();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&tnef);
        let id = if with_id {
            "Message-ID: <t1@example.com>\r\n"
        } else {
            ""
        };
        format!(
            "{id}From: a@example.com\r\nTo: b@example.com\r\nSubject: tnef\r\nMIME-Version: 1.0\r\n\
             Content-Type: application/ms-tnef; name=\"winmail.dat\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn converted_copy_keeps_the_original_identity() {
        let job_on = Transform {
            tnef: Some(TnefOptions::default()),
            ..Default::default()
        };
        for with_id in [true, false] {
            let m = tnef_message(with_id);
            let out = job_on.apply(7, &m);
            assert_ne!(&*out, &m[..], "converted");
            assert_eq!(
                fingerprint::fingerprint(&out[..out.len().min(64 << 10)]),
                fingerprint::fingerprint(&m[..m.len().min(64 << 10)]),
                "with Message-ID: {with_id}"
            );
        }
        let notes = job_on.take_notes();
        assert_eq!(notes.len(), 2);
        assert!(
            notes.iter().all(|n| n.action == "converted" && n.uid == 7),
            "{notes:?}"
        );
        assert!(job_on.take_notes().is_empty());
        let off = Transform::none();
        let m = tnef_message(true);
        assert!(matches!(off.apply(1, &m), Cow::Borrowed(_)));
    }
}
