//! The TNEF attribute stream and its MAPI property lists ([MS-OXTNEF] 2.1.3), decoded into what
//! a MIME rendering needs: the message class, code pages, the three body forms and each
//! attachment's names, MIME tag, content id and data. Written from the specification.
//!
//! Strict on purpose: a bad signature, an attribute running past the end, a checksum mismatch,
//! bytes after the last attribute, or a property list that does not decode make the whole
//! stream an error (the caller then leaves the part as it was). Pure: it borrows the input,
//! allocates only for the lists it returns (never from a declared count) and never panics.

use std::fmt;

/// `TNEF_SIGNATURE`, little-endian at offset 0.
pub const SIGNATURE: u32 = 0x223E_9F78;
/// IID_IMessage: the 16 bytes that open an embedded message's `PR_ATTACH_DATA_OBJ`.
pub const IID_IMESSAGE: [u8; 16] = [
    0x07, 0x03, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x46,
];

const LVL_MESSAGE: u8 = 1;
const LVL_ATTACHMENT: u8 = 2;

// Attribute ids (low 16 bits of the attribute id).
const ATT_BODY: u16 = 0x800C;
const ATT_MESSAGE_CLASS: u16 = 0x8008;
const ATT_ATTACH_DATA: u16 = 0x800F;
const ATT_ATTACH_TITLE: u16 = 0x8010;
const ATT_ATTACH_REND_DATA: u16 = 0x9002;
const ATT_MAPI_PROPS: u16 = 0x9003;
const ATT_ATTACHMENT: u16 = 0x9005;
const ATT_OEM_CODEPAGE: u16 = 0x9007;

// MAPI property ids.
const PR_MESSAGE_CLASS: u16 = 0x001A;
const PR_BODY: u16 = 0x1000;
const PR_RTF_COMPRESSED: u16 = 0x1009;
const PR_BODY_HTML: u16 = 0x1013;
const PR_INTERNET_CPID: u16 = 0x3FDE;
const PR_MESSAGE_CODEPAGE: u16 = 0x3FFD;
const PR_DISPLAY_NAME: u16 = 0x3001;
const PR_ATTACH_DATA: u16 = 0x3701;
const PR_ATTACH_FILENAME: u16 = 0x3704;
const PR_ATTACH_LONG_FILENAME: u16 = 0x3707;
const PR_ATTACH_MIME_TAG: u16 = 0x370E;
const PR_ATTACH_CONTENT_ID: u16 = 0x3712;

// MAPI property types.
const PT_UNICODE: u16 = 0x001F;
const PT_OBJECT: u16 = 0x000D;
const MV_FLAG: u16 = 0x1000;

/// Why a TNEF stream was refused; the text is the `Kept` reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TnefError {
    #[error("bad TNEF signature")]
    Signature,
    #[error("truncated attribute at offset {0}")]
    Truncated(usize),
    #[error("checksum mismatch in attribute {id:#06x} at offset {offset}")]
    Checksum { id: u16, offset: usize },
    #[error("{len} bytes of trailing garbage at offset {offset}")]
    Trailing { offset: usize, len: usize },
    #[error("bad MAPI properties in attribute {id:#06x} at offset {offset}: {what}")]
    Mapi {
        id: u16,
        offset: usize,
        what: PropError,
    },
    #[error("attribute of unknown level {level} at offset {offset}")]
    Level { level: u8, offset: usize },
}

/// What was wrong inside a MAPI property list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropError {
    Truncated(usize),
    UnknownType { ptype: u16, at: usize },
}

impl fmt::Display for PropError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropError::Truncated(at) => write!(f, "truncated at byte {at}"),
            PropError::UnknownType { ptype, at } => {
                write!(f, "unknown property type {ptype:#06x} at byte {at}")
            }
        }
    }
}

/// A string value: bytes in the message's code page, or UTF-16LE (`unicode`). Trailing NULs
/// are not part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Text<'a> {
    pub bytes: &'a [u8],
    pub unicode: bool,
}

impl<'a> Text<'a> {
    fn new(bytes: &'a [u8], unicode: bool) -> Self {
        let mut bytes = bytes;
        if unicode {
            while bytes.len() >= 2 && bytes[bytes.len() - 2..] == [0, 0] {
                bytes = &bytes[..bytes.len() - 2];
            }
        } else {
            while let [rest @ .., 0] = bytes {
                bytes = rest;
            }
        }
        Text { bytes, unicode }
    }

    /// Nothing but white space (or nothing at all).
    pub fn is_blank(&self) -> bool {
        self.bytes
            .iter()
            .all(|b| b.is_ascii_whitespace() || *b == 0)
    }
}

/// One attachment of the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachment<'a> {
    pub title: Option<Text<'a>>,
    pub long_filename: Option<Text<'a>>,
    pub filename: Option<Text<'a>>,
    pub display_name: Option<Text<'a>>,
    pub mime_tag: Option<Text<'a>>,
    pub content_id: Option<Text<'a>>,
    /// `attAttachData`.
    pub att_data: Option<&'a [u8]>,
    /// `PR_ATTACH_DATA_BIN`/`_OBJ` (an object's 16-byte IID removed).
    pub prop_data: Option<&'a [u8]>,
    /// The data is an embedded message (a TNEF stream of its own).
    pub embedded: bool,
}

impl<'a> Attachment<'a> {
    /// Its contents: the MAPI property when present, else `attAttachData`, else nothing.
    pub fn data(&self) -> &'a [u8] {
        self.prop_data.or(self.att_data).unwrap_or_default()
    }

    /// Its name, best first: long file name, 8.3 file name, attAttachTitle, display name.
    pub fn name(&self) -> Option<Text<'a>> {
        [
            self.long_filename,
            self.filename,
            self.title,
            self.display_name,
        ]
        .into_iter()
        .flatten()
        .find(|t| !t.bytes.is_empty())
    }
}

/// A decoded TNEF stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tnef<'a> {
    pub message_class: Option<Text<'a>>,
    pub oem_codepage: Option<u32>,
    pub message_codepage: Option<u32>,
    pub internet_cpid: Option<u32>,
    /// attBody, then PR_BODY (the later one wins).
    pub body: Option<Text<'a>>,
    pub html: Option<Text<'a>>,
    pub rtf_compressed: Option<&'a [u8]>,
    pub attachments: Vec<Attachment<'a>>,
}

impl Tnef<'_> {
    /// The code page of 8-bit strings: PR_MESSAGE_CODEPAGE, else the OEM code page, else the
    /// internet code page.
    pub fn text_codepage(&self) -> Option<u32> {
        self.message_codepage
            .or(self.oem_codepage)
            .or(self.internet_cpid)
    }

    /// The code page of the HTML body: PR_INTERNET_CPID first.
    pub fn html_codepage(&self) -> Option<u32> {
        self.internet_cpid
            .or(self.message_codepage)
            .or(self.oem_codepage)
    }

    /// A calendar item (meeting request, appointment) by its message class.
    pub fn is_calendar(&self) -> bool {
        let Some(class) = self.message_class else {
            return false;
        };
        let class: Vec<u8> = if class.unicode {
            class.bytes.chunks(2).map(|c| c[0]).collect()
        } else {
            class.bytes.to_vec()
        };
        let class = class.to_ascii_lowercase();
        class.starts_with(b"ipm.schedule.") || class.starts_with(b"ipm.appointment")
    }
}

/// A little-endian reader over a slice; every read is bounds-checked.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn left(&self) -> usize {
        self.b.len() - self.pos
    }
}

/// One attribute of the stream.
struct Attribute<'a> {
    level: u8,
    id: u16,
    data: &'a [u8],
    offset: usize,
}

/// The sum of the bytes modulo 65536 (MS-OXTNEF 2.1.3.3, `Checksum`).
pub fn checksum(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |s, &b| s.wrapping_add(b as u16))
}

/// The attributes of a stream, checked: signature, lengths, checksums, nothing after the end.
fn attributes(input: &[u8]) -> Result<Vec<Attribute<'_>>, TnefError> {
    let mut r = Reader { b: input, pos: 0 };
    if r.u32() != Some(SIGNATURE) || r.u16().is_none() {
        return Err(TnefError::Signature);
    }
    let mut out = Vec::new();
    while r.left() > 0 {
        let offset = r.pos;
        // Level (1), id (4), length (4), data, checksum (2).
        if r.left() < 11 {
            return Err(TnefError::Trailing {
                offset,
                len: r.left(),
            });
        }
        let (level, id, len) = (r.u8(), r.u32(), r.u32());
        let (Some(level), Some(id), Some(len)) = (level, id, len) else {
            return Err(TnefError::Truncated(offset));
        };
        let data = r.take(len as usize).ok_or(TnefError::Truncated(offset))?;
        let sum = r.u16().ok_or(TnefError::Truncated(offset))?;
        let id = (id & 0xFFFF) as u16;
        if sum != checksum(data) {
            return Err(TnefError::Checksum { id, offset });
        }
        if level != LVL_MESSAGE && level != LVL_ATTACHMENT {
            return Err(TnefError::Level { level, offset });
        }
        out.push(Attribute {
            level,
            id,
            data,
            offset,
        });
    }
    Ok(out)
}

/// Decode a whole TNEF stream.
pub fn parse(input: &[u8]) -> Result<Tnef<'_>, TnefError> {
    let mut t = Tnef::default();
    for a in attributes(input)? {
        let mapi_err = |what| TnefError::Mapi {
            id: a.id,
            offset: a.offset,
            what,
        };
        if a.level == LVL_ATTACHMENT {
            if a.id == ATT_ATTACH_REND_DATA || t.attachments.is_empty() {
                t.attachments.push(Attachment::default());
            }
            let Some(att) = t.attachments.last_mut() else {
                continue;
            };
            attachment_attribute(att, &a).map_err(mapi_err)?;
            continue;
        }
        match a.id {
            ATT_MESSAGE_CLASS => t.message_class = Some(Text::new(a.data, false)),
            ATT_BODY => t.body = Some(Text::new(a.data, false)),
            ATT_OEM_CODEPAGE => {
                t.oem_codepage = Reader { b: a.data, pos: 0 }.u32();
            }
            ATT_MAPI_PROPS => {
                let props = properties(a.data).map_err(mapi_err)?;
                message_properties(&mut t, &props);
            }
            _ => {}
        }
    }
    Ok(t)
}

fn attachment_attribute<'a>(att: &mut Attachment<'a>, a: &Attribute<'a>) -> Result<(), PropError> {
    match a.id {
        ATT_ATTACH_DATA => att.att_data = Some(a.data),
        ATT_ATTACH_TITLE => att.title = Some(Text::new(a.data, false)),
        ATT_ATTACHMENT => {
            for p in properties(a.data)? {
                attachment_property(att, &p);
            }
        }
        _ => {}
    }
    Ok(())
}

fn attachment_property<'a>(att: &mut Attachment<'a>, p: &Property<'a>) {
    let text = p.text();
    match p.id {
        PR_ATTACH_LONG_FILENAME => att.long_filename = text,
        PR_ATTACH_FILENAME => att.filename = text,
        PR_DISPLAY_NAME => att.display_name = text,
        PR_ATTACH_MIME_TAG => att.mime_tag = text,
        PR_ATTACH_CONTENT_ID => att.content_id = text,
        PR_ATTACH_DATA => {
            let Some(&v) = p.values.first() else { return };
            if p.ptype == PT_OBJECT {
                att.embedded = v.starts_with(&IID_IMESSAGE);
                att.prop_data = Some(v.get(16..).unwrap_or_default());
            } else {
                att.prop_data = Some(v);
            }
        }
        _ => {}
    }
}

fn message_properties<'a>(t: &mut Tnef<'a>, props: &[Property<'a>]) {
    for p in props {
        match p.id {
            PR_MESSAGE_CLASS => t.message_class = p.text().or(t.message_class),
            PR_BODY => t.body = p.text().or(t.body),
            PR_BODY_HTML => t.html = p.text().or(t.html),
            PR_RTF_COMPRESSED => t.rtf_compressed = p.values.first().copied(),
            PR_INTERNET_CPID => t.internet_cpid = p.int(),
            PR_MESSAGE_CODEPAGE => t.message_codepage = p.int(),
            _ => {}
        }
    }
}

/// One MAPI property. Named properties (id ≥ 0x8000) are read past but not returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property<'a> {
    pub id: u16,
    /// Without the multi-value flag.
    pub ptype: u16,
    pub multi: bool,
    pub values: Vec<&'a [u8]>,
}

impl<'a> Property<'a> {
    fn text(&self) -> Option<Text<'a>> {
        let v = self.values.first()?;
        Some(Text::new(v, self.ptype == PT_UNICODE))
    }
    fn int(&self) -> Option<u32> {
        let v = self.values.first()?;
        Reader { b: v, pos: 0 }.u32()
    }
}

/// Size of one value of a fixed-size type, padding to 4 bytes included; `None` for the
/// variable-size types (string, unicode, binary, object).
fn fixed_size(ptype: u16) -> Result<Option<usize>, ()> {
    Ok(Some(match ptype {
        0x0002 | 0x000B | 0x0003 | 0x0004 | 0x000A => 4,
        0x0005 | 0x0006 | 0x0007 | 0x0014 | 0x0040 => 8,
        0x0048 => 16,
        0x001E | 0x001F | 0x0102 | 0x000D | 0x00FB => return Ok(None),
        _ => return Err(()),
    }))
}

/// The value size of the 2-byte types (Int16, Boolean) before padding.
fn value_len(ptype: u16, size: usize) -> usize {
    if matches!(ptype, 0x0002 | 0x000B) {
        2
    } else {
        size
    }
}

/// Decode a MAPI property list (`MsgPropertyList`, MS-OXTNEF 2.1.3.4).
pub fn properties(data: &[u8]) -> Result<Vec<Property<'_>>, PropError> {
    let mut r = Reader { b: data, pos: 0 };
    let count = r.u32().ok_or(PropError::Truncated(0))?;
    let mut out = Vec::new();
    for _ in 0..count {
        let p = property(&mut r)?;
        if p.id < 0x8000 {
            out.push(p);
        }
    }
    Ok(out)
}

fn property<'a>(r: &mut Reader<'a>) -> Result<Property<'a>, PropError> {
    let at = r.pos;
    let trunc = |r: &Reader<'_>| PropError::Truncated(r.pos);
    let raw_type = r.u16().ok_or_else(|| trunc(r))?;
    let id = r.u16().ok_or_else(|| trunc(r))?;
    if id >= 0x8000 {
        // PropertyName: GUID, kind, then a LID or a padded UTF-16 name.
        r.take(16).ok_or_else(|| trunc(r))?;
        if r.u32().ok_or_else(|| trunc(r))? == 0 {
            r.u32().ok_or_else(|| trunc(r))?;
        } else {
            let n = r.u32().ok_or_else(|| trunc(r))? as usize;
            take_padded(r, n).ok_or_else(|| trunc(r))?;
        }
    }
    let multi = raw_type & MV_FLAG != 0;
    let ptype = raw_type & !MV_FLAG;
    let size = fixed_size(ptype).map_err(|_| PropError::UnknownType { ptype, at })?;
    // Single fixed values have no count; everything else has one (a single variable-size
    // value's count is 1 by the specification, but a list is read if it says more).
    let count = match (multi, size) {
        (false, Some(_)) => 1,
        _ => r.u32().ok_or_else(|| trunc(r))?,
    };
    let mut values = Vec::new();
    for _ in 0..count {
        let v = match size {
            Some(size) => r.take(size).map(|v| &v[..value_len(ptype, size)]),
            None => r.u32().and_then(|n| take_padded(r, n as usize)),
        };
        values.push(v.ok_or_else(|| trunc(r))?);
    }
    Ok(Property {
        id,
        ptype,
        multi,
        values,
    })
}

/// `n` bytes followed by padding to a multiple of 4 (padding cut short at the very end of the
/// list is tolerated).
fn take_padded<'a>(r: &mut Reader<'a>, n: usize) -> Option<&'a [u8]> {
    let v = r.take(n)?;
    let pad = (4 - n % 4) % 4;
    r.pos = r.pos.saturating_add(pad).min(r.b.len());
    Some(v)
}

/// Builders of TNEF streams for the tests of this module and of [`super::mime`].
#[cfg(test)]
pub(crate) mod build {
    use super::{SIGNATURE, checksum};

    /// A stream builder for the tests.
    pub fn attr(level: u8, id: u32, data: &[u8]) -> Vec<u8> {
        let mut v = vec![level];
        v.extend_from_slice(&id.to_le_bytes());
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        v.extend_from_slice(&checksum(data).to_le_bytes());
        v
    }

    pub fn stream(attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut v = SIGNATURE.to_le_bytes().to_vec();
        v.extend_from_slice(&[0x01, 0x00]);
        for a in attrs {
            v.extend_from_slice(a);
        }
        v
    }

    pub fn string_prop(id: u16, ptype: u16, value: &[u8]) -> Vec<u8> {
        let mut v = ptype.to_le_bytes().to_vec();
        v.extend_from_slice(&id.to_le_bytes());
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&(value.len() as u32).to_le_bytes());
        v.extend_from_slice(value);
        v.resize(v.len() + (4 - value.len() % 4) % 4, 0);
        v
    }

    pub fn prop_list(props: &[Vec<u8>]) -> Vec<u8> {
        let mut v = (props.len() as u32).to_le_bytes().to_vec();
        for p in props {
            v.extend_from_slice(p);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn checksum_is_the_byte_sum_mod_65536() {
        assert_eq!(checksum(b""), 0);
        assert_eq!(checksum(&[0xFF; 3]), 0x2FD);
        assert_eq!(checksum(&vec![0xFF; 300]), (300u32 * 255 % 65536) as u16);
    }

    #[test]
    fn attachment_with_long_name_and_data() {
        let props = prop_list(&[
            string_prop(PR_ATTACH_LONG_FILENAME, 0x001E, b"a long name.txt\0"),
            {
                // An Int16 (padded) and a named property in between.
                let mut v = 0x0002u16.to_le_bytes().to_vec();
                v.extend_from_slice(&0x0E0Fu16.to_le_bytes());
                v.extend_from_slice(&[1, 0, 0, 0]);
                v
            },
            {
                let mut v = 0x0003u16.to_le_bytes().to_vec();
                v.extend_from_slice(&0x8001u16.to_le_bytes());
                v.extend_from_slice(&[0; 16]);
                v.extend_from_slice(&1u32.to_le_bytes());
                v.extend_from_slice(&6u32.to_le_bytes());
                v.extend_from_slice(b"n\0a\0\0\0\0\0");
                v.extend_from_slice(&7u32.to_le_bytes());
                v
            },
            string_prop(PR_ATTACH_MIME_TAG, 0x001F, b"t\0e\0x\0t\0/\0x\0\0\0"),
        ]);
        let s = stream(&[
            attr(1, 0x0008_8008, b"IPM.Note\0"),
            attr(2, 0x0006_9002, &[1, 0, 0, 0]),
            attr(2, 0x0001_8010, b"ALONGN~1.TXT\0"),
            attr(2, 0x0006_800F, b"hello"),
            attr(2, 0x0006_9005, &props),
        ]);
        let t = parse(&s).unwrap();
        assert_eq!(t.attachments.len(), 1);
        let a = &t.attachments[0];
        assert_eq!(a.data(), b"hello");
        assert_eq!(a.name().unwrap().bytes, b"a long name.txt");
        assert_eq!(a.title.unwrap().bytes, b"ALONGN~1.TXT");
        assert_eq!(a.mime_tag.unwrap().bytes, b"t\0e\0x\0t\0/\0x\0");
        assert!(!t.is_calendar());
    }

    #[test]
    fn errors_name_what_and_where() {
        assert_eq!(parse(b"not tnef"), Err(TnefError::Signature));
        let good = stream(&[attr(1, 0x0008_8008, b"IPM.Note\0")]);
        assert!(parse(&good).is_ok());
        assert_eq!(parse(&good[..good.len() - 3]), Err(TnefError::Truncated(6)));
        let mut bad = good.clone();
        bad[16] ^= 0x20;
        assert_eq!(
            parse(&bad),
            Err(TnefError::Checksum {
                id: 0x8008,
                offset: 6
            })
        );
        let mut extra = good.clone();
        extra.push(0);
        assert_eq!(
            parse(&extra),
            Err(TnefError::Trailing {
                offset: good.len(),
                len: 1
            })
        );
        let bad_props = stream(&[attr(1, 0x0006_9003, &[5, 0, 0, 0, 0x99, 0x00])]);
        assert!(matches!(
            parse(&bad_props),
            Err(TnefError::Mapi { id: 0x9003, .. })
        ));
    }

    #[test]
    fn calendar_classes() {
        for (class, cal) in [
            (&b"IPM.Schedule.Meeting.Request\0"[..], true),
            (b"IPM.Appointment", true),
            (b"IPM.Note", false),
        ] {
            let s = stream(&[attr(1, 0x0008_8008, class)]);
            assert_eq!(parse(&s).unwrap().is_calendar(), cal);
        }
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes);
            let mut s = SIGNATURE.to_le_bytes().to_vec();
            s.extend_from_slice(&bytes);
            let _ = parse(&s);
        }

        #[test]
        fn property_lists_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&stream(&[attr(1, 0x0006_9003, &bytes), attr(2, 0x0006_9005, &bytes)]));
        }
    }
}
