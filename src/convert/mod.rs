//! TNEF (`winmail.dat`, `application/ms-tnef`) to MIME: Outlook and Exchange wrap a message's
//! body and attachments into one opaque part that only Outlook reads; this turns each such part
//! of a message into ordinary MIME parts (the body as text/plain, text/html or text/rtf, every
//! attachment as a base64 part with its long file name and MIME type). Used by the outbound
//! delivery path and the IMAP backfill; the callers decide when to convert, this only converts.
//!
//! Owns: finding TNEF parts ([`mime`]), the attribute stream and MAPI properties ([`tnef`],
//! [MS-OXTNEF]), compressed RTF ([`rtf`], [MS-OXRTFCP]). Must never: do IO, depend on other
//! cutover modules, panic on any input, change a byte outside a part it replaces, or emit a
//! part it could not decode completely (such a part stays byte for byte, with a reason).
//!
//! Decisions:
//! - Deterministic: MIME boundaries come from a SHA-256 of the whole input, so converting the
//!   same bytes again gives the same bytes (an ARC seal over the result stays valid).
//! - Strict decoding: bad signature, truncation, checksum mismatch, trailing bytes, undecodable
//!   property lists, a bad compressed RTF (when it is the body used), a TNEF holding neither a
//!   body nor an attachment → `Kept`. A TNEF part below a boundary this module wrote is also
//!   kept (no second conversion of its own output).
//! - Body: HTML first, else plain text, else the RTF (decompressed, emitted as text/rtf even
//!   when it encapsulates HTML). 8-bit text keeps its bytes and is labelled with the charset of
//!   its code page; UTF-16 text becomes UTF-8. Text goes quoted-printable.
//! - Calendar items (message class IPM.Schedule.*, IPM.Appointment*): no iCalendar rendering;
//!   the TNEF itself is kept as a `winmail.dat` attachment (or the original part, with
//!   `keep_original`) next to the body and attachments, and counted in `calendar`.
//! - Embedded messages (attached Outlook items) stay TNEF: an `application/ms-tnef` attachment
//!   under the item's name.
//! - When the TNEF part is the message's whole body, its Content-Type, Content-Transfer-Encoding
//!   and Content-Disposition fields are replaced (they describe the winmail.dat); every other
//!   header field stays verbatim.

mod mime;
pub mod rtf;
pub mod tnef;

/// How to convert.
#[derive(Clone, Copy, Debug, Default)]
pub struct TnefOptions {
    /// Also keep the original TNEF part, byte for byte, after the converted parts.
    pub keep_original: bool,
}

/// What happened to one TNEF part.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum PartOutcome {
    /// Replaced by MIME parts: the attachment file names, the body's MIME type if one was found
    /// ("text/plain", "text/html" or "text/rtf"), and how many calendar items were kept as attachments.
    Converted {
        attachments: Vec<String>,
        body: Option<String>,
        calendar: usize,
    },
    /// Left exactly as it was, and why (e.g. "bad TNEF signature", "truncated attribute at offset N", "checksum mismatch").
    Kept { reason: String },
}

/// One TNEF part of a message and its outcome.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartReport {
    /// The part's file name (e.g. winmail.dat); "(unnamed)" when it has none.
    pub name: String,
    pub outcome: PartOutcome,
}

/// A message after conversion.
#[derive(Clone, Debug)]
pub struct Conversion {
    pub bytes: Vec<u8>,
    pub parts: Vec<PartReport>,
}

impl Conversion {
    /// Whether any part was converted (otherwise `bytes` is the input).
    pub fn changed(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p.outcome, PartOutcome::Converted { .. }))
    }
}

/// Cheap pre-check (case-insensitive scan for "ms-tnef", which covers application/ms-tnef and
/// application/vnd.ms-tnef, or a winmail.dat name): false → [`convert_tnef`] would return None.
pub fn contains_tnef(message: &[u8]) -> bool {
    contains_ci(message, b"ms-tnef") || contains_ci(message, b"winmail.dat")
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// None when the message has no TNEF part. Otherwise the rewritten message (bytes == input when
/// no part converted) and one report per TNEF part, in message order.
pub fn convert_tnef(message: &[u8], opts: TnefOptions) -> Option<Conversion> {
    if !contains_tnef(message) {
        return None;
    }
    mime::convert(message, opts)
}
