//! Finding the TNEF parts of a MIME message and rewriting them in place. mail-parser locates the
//! parts and undoes their transfer encoding; the rewrite splices by byte offsets, so every byte
//! outside a replaced part stays identical. Renders the replacement: a `multipart/mixed` with
//! the body, the attachments and (calendar / `keep_original`) the TNEF itself. Pure; never
//! panics; a part it cannot convert is left untouched and reported `Kept` with the reason.

use super::tnef::{self, Attachment, Text, Tnef};
use super::{Conversion, PartOutcome, PartReport, TnefOptions, rtf};
use base64::Engine as _;
use mail_parser::{MessageParser, MessagePart, MimeHeaders, PartType};
use sha2::{Digest, Sha256};

/// Every boundary this module writes starts with this; a TNEF part directly below such a
/// boundary is our own output and is not converted again.
pub const BOUNDARY_PREFIX: &str = "=_cutover-tnef-";
/// TNEF parts nested deeper than this many multiparts are left alone.
const MAX_DEPTH: usize = 8;

/// One replacement: `input[start..end]` becomes `bytes`.
struct Edit {
    start: usize,
    end: usize,
    bytes: Vec<u8>,
}

pub(super) fn convert(message: &[u8], opts: TnefOptions) -> Option<Conversion> {
    let parsed = MessageParser::default().parse(message)?;
    let eol: &'static [u8] = if uses_crlf(message) { b"\r\n" } else { b"\n" };
    let hash = hex::encode(Sha256::digest(message));
    let parents = parents(&parsed.parts);
    let mut reports = Vec::new();
    let mut edits = Vec::new();
    for (i, part) in parsed.parts.iter().enumerate() {
        if !is_tnef(part) {
            continue;
        }
        let name = part.attachment_name().unwrap_or("(unnamed)").to_string();
        let ctx = PartCtx {
            message,
            part,
            index: i,
            eol,
            boundary: format!("{BOUNDARY_PREFIX}{}-{i}", &hash[..32]),
            keep_original: opts.keep_original,
        };
        let outcome = match check_place(&parsed.parts, &parents, i).and_then(|()| ctx.edit()) {
            Ok((edit, outcome)) if edits.last().is_none_or(|l: &Edit| l.end <= edit.start) => {
                edits.push(edit);
                outcome
            }
            Ok(_) => PartOutcome::Kept {
                reason: "overlaps another TNEF part".into(),
            },
            Err(reason) => PartOutcome::Kept { reason },
        };
        reports.push(PartReport { name, outcome });
    }
    if reports.is_empty() {
        return None;
    }
    Some(Conversion {
        bytes: splice(message, &edits),
        parts: reports,
    })
}

/// Whether the message's first line ends in CRLF (the style of everything written).
fn uses_crlf(message: &[u8]) -> bool {
    match message.iter().position(|&b| b == b'\n') {
        Some(i) => i > 0 && message[i - 1] == b'\r',
        None => true,
    }
}

/// The parent multipart of each part (`None` for the root).
fn parents(parts: &[MessagePart<'_>]) -> Vec<Option<usize>> {
    let mut out = vec![None; parts.len()];
    for (i, p) in parts.iter().enumerate() {
        if let PartType::Multipart(children) = &p.body {
            for &c in children {
                if let Some(slot) = out.get_mut(c as usize) {
                    *slot = Some(i);
                }
            }
        }
    }
    out
}

/// A part declared as TNEF: application/ms-tnef (or vnd.ms-tnef), or application/octet-stream
/// named winmail.dat.
fn is_tnef(part: &MessagePart<'_>) -> bool {
    if !matches!(part.body, PartType::Binary(_) | PartType::InlineBinary(_)) {
        return false;
    }
    let Some(ct) = part.content_type() else {
        return false;
    };
    let sub = ct.subtype().unwrap_or("");
    let named_winmail = || {
        part.attachment_name()
            .is_some_and(|n| n.trim().eq_ignore_ascii_case("winmail.dat"))
    };
    ct.ctype().eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("ms-tnef")
            || sub.eq_ignore_ascii_case("vnd.ms-tnef")
            || (sub.eq_ignore_ascii_case("octet-stream") && named_winmail()))
}

/// Refuse parts nested too deep or inside our own output.
fn check_place(
    parts: &[MessagePart<'_>],
    parents: &[Option<usize>],
    i: usize,
) -> Result<(), String> {
    let parent = parents.get(i).copied().flatten();
    let boundary = parent
        .and_then(|p| parts.get(p))
        .and_then(|p| p.content_type())
        .and_then(|ct| ct.attribute("boundary"));
    if boundary.is_some_and(|b| b.starts_with(BOUNDARY_PREFIX)) {
        return Err("already converted (inside a part cutover wrote)".into());
    }
    let (mut depth, mut at) = (0, parent);
    while let Some(p) = at {
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} multiparts"));
        }
        at = parents.get(p).copied().flatten();
    }
    Ok(())
}

fn splice(message: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    let mut at = 0;
    for e in edits {
        if e.start < at || e.end > message.len() || e.start > e.end {
            continue; // cannot happen for leaf parts; never corrupt the output if it does
        }
        out.extend_from_slice(&message[at..e.start]);
        out.extend_from_slice(&e.bytes);
        at = e.end;
    }
    out.extend_from_slice(&message[at..]);
    out
}

/// Everything needed to rewrite one part.
struct PartCtx<'m, 'p> {
    message: &'m [u8],
    part: &'p MessagePart<'m>,
    index: usize,
    eol: &'static [u8],
    boundary: String,
    keep_original: bool,
}

impl PartCtx<'_, '_> {
    fn edit(&self) -> Result<(Edit, PartOutcome), String> {
        if self.part.is_encoding_problem {
            return Err("its transfer encoding could not be decoded".into());
        }
        let data = self.part.contents();
        let t = tnef::parse(data).map_err(|e| e.to_string())?;
        let (start, body, end) = (
            self.part.offset_header as usize,
            self.part.offset_body as usize,
            self.part.offset_end as usize,
        );
        if !(start <= body && body <= end && end <= self.message.len()) {
            return Err("part offsets out of range".into());
        }
        if self.index == 0 {
            self.root_edit(&t, data)
        } else {
            let original = self.keep_original.then(|| &self.message[start..end]);
            let (parts, outcome) = render(&t, data, original, self.eol)?;
            let mut bytes = self.multipart_header();
            bytes.extend_from_slice(self.eol);
            bytes.extend_from_slice(&multipart_body(&self.boundary, &parts, self.eol));
            Ok((Edit { start, end, bytes }, outcome))
        }
    }

    fn multipart_header(&self) -> Vec<u8> {
        let mut h = b"Content-Type: multipart/mixed;".to_vec();
        h.extend_from_slice(self.eol);
        h.extend_from_slice(format!(" boundary=\"{}\"", self.boundary).as_bytes());
        h.extend_from_slice(self.eol);
        h
    }

    /// The TNEF is the message's body: new Content-* fields where the old ones were, the other
    /// fields verbatim, the converted multipart as the body.
    fn root_edit(&self, t: &Tnef<'_>, data: &[u8]) -> Result<(Edit, PartOutcome), String> {
        let msg = self.message;
        let (head_end, body_start) = crate::header::split(msg).ok_or("no header section")?;
        let fields = fields(&msg[..head_end]);
        let replaced = |name: &[u8]| {
            [
                &b"content-type"[..],
                b"content-transfer-encoding",
                b"content-disposition",
            ]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
        };
        let mut head = Vec::new();
        let mut old = Vec::new();
        let mut inserted = false;
        for (name, range) in &fields {
            if !replaced(name) {
                head.extend_from_slice(&msg[range.clone()]);
            } else {
                old.extend_from_slice(&msg[range.clone()]);
                if !inserted {
                    head.extend_from_slice(&self.multipart_header());
                    inserted = true;
                }
            }
        }
        if !inserted {
            head.extend_from_slice(&self.multipart_header());
        }
        if !fields
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(b"mime-version"))
        {
            head.extend_from_slice(b"MIME-Version: 1.0");
            head.extend_from_slice(self.eol);
        }
        let original = self.keep_original.then(|| {
            let mut o = old;
            o.extend_from_slice(&msg[head_end..]);
            o
        });
        let (parts, outcome) = render(t, data, original.as_deref(), self.eol)?;
        let mut bytes = head;
        bytes.extend_from_slice(&msg[head_end..body_start]);
        bytes.extend_from_slice(&multipart_body(&self.boundary, &parts, self.eol));
        bytes.extend_from_slice(self.eol);
        let edit = Edit {
            start: 0,
            end: msg.len(),
            bytes,
        };
        Ok((edit, outcome))
    }
}

/// The header fields of a section: (name, byte range including continuation lines and line
/// ends).
fn fields(section: &[u8]) -> Vec<(&[u8], std::ops::Range<usize>)> {
    let mut out: Vec<(&[u8], std::ops::Range<usize>)> = Vec::new();
    let mut at = 0;
    while at < section.len() {
        let end = section[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(section.len(), |i| at + i + 1);
        let line = &section[at..end];
        match out.last_mut() {
            Some(last) if crate::header::is_wsp(line[0]) => last.1.end = end,
            _ => {
                let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
                out.push((line[..colon].trim_ascii(), at..end));
            }
        }
        at = end;
    }
    out
}

fn multipart_body(boundary: &str, parts: &[Vec<u8>], eol: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(b"--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(eol);
        out.extend_from_slice(p);
        out.extend_from_slice(eol);
    }
    out.extend_from_slice(b"--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--");
    out
}

/// The parts that replace a TNEF: body, attachments, the TNEF of a calendar item, the original.
fn render(
    t: &Tnef<'_>,
    data: &[u8],
    original: Option<&[u8]>,
    eol: &[u8],
) -> Result<(Vec<Vec<u8>>, PartOutcome), String> {
    let mut parts = Vec::new();
    let body = body_part(t, eol)?;
    let body_type = body.map(|(ty, part)| {
        parts.push(part);
        ty.to_string()
    });
    let mut names = Vec::new();
    for (n, a) in t.attachments.iter().enumerate() {
        let name = attachment_name(t, a, n);
        parts.push(attachment_part(a, &name, eol));
        names.push(name.0);
    }
    let calendar = usize::from(t.is_calendar());
    if body_type.is_none() && names.is_empty() {
        return Err(if calendar == 1 {
            "a calendar item with no body or attachments (nothing to convert)".into()
        } else {
            "no body or attachments in the TNEF".into()
        });
    }
    if calendar == 1 && original.is_none() {
        let name = Name("winmail.dat".into());
        parts.push(binary_part("application/ms-tnef", &name, None, data, eol));
    }
    if let Some(o) = original {
        parts.push(o.to_vec());
    }
    let outcome = PartOutcome::Converted {
        attachments: names,
        body: body_type,
        calendar,
    };
    Ok((parts, outcome))
}

/// The body part, best form first: HTML, plain text, RTF.
fn body_part(t: &Tnef<'_>, eol: &[u8]) -> Result<Option<(&'static str, Vec<u8>)>, String> {
    fn pick(text: Option<Text<'_>>) -> Option<Text<'_>> {
        text.filter(|x| !x.is_blank())
    }
    let (ty, bytes, charset) = if let Some(h) = pick(t.html) {
        let (bytes, cs) = text_bytes(h, t.html_codepage());
        ("text/html", bytes, cs)
    } else if let Some(b) = pick(t.body) {
        let (bytes, cs) = text_bytes(b, t.text_codepage());
        ("text/plain", bytes, cs)
    } else if let Some(r) = t.rtf_compressed {
        let rtf = rtf::decompress(r).map_err(|e| e.to_string())?;
        if rtf.iter().all(|b| b.is_ascii_whitespace() || *b == 0) {
            return Ok(None);
        }
        ("text/rtf", rtf, None)
    } else {
        return Ok(None);
    };
    let mut part = format!("Content-Type: {ty}").into_bytes();
    if let Some(cs) = charset {
        part.extend_from_slice(format!("; charset=\"{cs}\"").as_bytes());
    }
    part.extend_from_slice(eol);
    part.extend_from_slice(b"Content-Transfer-Encoding: quoted-printable");
    part.extend_from_slice(eol);
    part.extend_from_slice(eol);
    part.extend_from_slice(&quoted_printable(&bytes, eol));
    Ok(Some((ty, part)))
}

/// A text value's bytes and charset: UTF-16 becomes UTF-8, 8-bit text keeps its bytes and is
/// labelled with its code page's charset (none when the code page is unknown).
fn text_bytes(t: Text<'_>, codepage: Option<u32>) -> (Vec<u8>, Option<&'static str>) {
    if t.unicode {
        (utf16(t.bytes).into_bytes(), Some("utf-8"))
    } else {
        (t.bytes.to_vec(), codepage.and_then(charset_name))
    }
}

fn utf16(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// The MIME charset of a Windows code page.
pub fn charset_name(cp: u32) -> Option<&'static str> {
    Some(match cp {
        437 => "ibm437",
        850 => "ibm850",
        852 => "ibm852",
        866 => "ibm866",
        874 => "windows-874",
        932 => "shift_jis",
        936 => "gbk",
        949 => "ks_c_5601-1987",
        950 => "big5",
        1250 => "windows-1250",
        1251 => "windows-1251",
        1252 => "windows-1252",
        1253 => "windows-1253",
        1254 => "windows-1254",
        1255 => "windows-1255",
        1256 => "windows-1256",
        1257 => "windows-1257",
        1258 => "windows-1258",
        10000 => "macintosh",
        20127 => "us-ascii",
        20866 => "koi8-r",
        21866 => "koi8-u",
        28591 => "iso-8859-1",
        28592 => "iso-8859-2",
        28593 => "iso-8859-3",
        28594 => "iso-8859-4",
        28595 => "iso-8859-5",
        28596 => "iso-8859-6",
        28597 => "iso-8859-7",
        28598 => "iso-8859-8",
        28599 => "iso-8859-9",
        28603 => "iso-8859-13",
        28605 => "iso-8859-15",
        50220 => "iso-2022-jp",
        51932 => "euc-jp",
        51949 => "euc-kr",
        54936 => "gb18030",
        65001 => "utf-8",
        _ => return None,
    })
}

/// An attachment's file name, as text (8-bit names decoded from their code page).
struct Name(String);

fn attachment_name(t: &Tnef<'_>, a: &Attachment<'_>, n: usize) -> Name {
    let Some(text) = a.name() else {
        return Name(format!("attachment{}.dat", n + 1));
    };
    if text.unicode {
        return Name(utf16(text.bytes));
    }
    let charset = t
        .text_codepage()
        .and_then(charset_name)
        .unwrap_or("windows-1252");
    Name(
        mail_parser::decoders::charsets::map::charset_decoder(charset.as_bytes()).map_or_else(
            || String::from_utf8_lossy(text.bytes).into_owned(),
            |decode| decode(text.bytes),
        ),
    )
}

fn attachment_part(a: &Attachment<'_>, name: &Name, eol: &[u8]) -> Vec<u8> {
    let ty = if a.embedded {
        "application/ms-tnef".to_string()
    } else {
        mime_tag(a).unwrap_or_else(|| by_extension(&name.0).to_string())
    };
    let cid = a.content_id.and_then(|c| ascii(c)).filter(|c| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_graphic() && !b"<>\"\\()".contains(&b))
    });
    binary_part(&ty, name, cid.as_deref(), a.data(), eol)
}

/// A text value as ASCII, when it is ASCII.
fn ascii(t: Text<'_>) -> Option<String> {
    let s = if t.unicode {
        utf16(t.bytes)
    } else {
        String::from_utf8(t.bytes.to_vec()).ok()?
    };
    s.is_ascii().then_some(s)
}

/// PR_ATTACH_MIME_TAG when it is a plain `type/subtype` that may be base64-encoded.
fn mime_tag(a: &Attachment<'_>) -> Option<String> {
    let tag = ascii(a.mime_tag?)?.trim().to_ascii_lowercase();
    let (ty, sub) = tag.split_once('/')?;
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let ok = token(ty) && token(sub) && ty != "multipart" && ty != "message";
    ok.then_some(tag)
}

/// The MIME type of a file name's extension (a small table), else application/octet-stream.
fn by_extension(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" | "ini" | "cfg" | "bat" => "text/plain",
        "htm" | "html" => "text/html",
        "csv" => "text/csv",
        "rtf" => "application/rtf",
        "xml" => "application/xml",
        "ics" => "text/calendar",
        "vcf" => "text/vcard",
        "pdf" => "application/pdf",
        "doc" | "dot" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "ppt" => "application/vnd.ms-powerpoint",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "msg" => "application/vnd.ms-outlook",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "7z" => "application/x-7z-compressed",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}

/// A base64 attachment part (headers, empty line, base64 lines; no final line end).
fn binary_part(ty: &str, name: &Name, cid: Option<&str>, data: &[u8], eol: &[u8]) -> Vec<u8> {
    let mut p = format!("Content-Type: {ty}").into_bytes();
    p.extend_from_slice(&param("name", name, eol));
    p.extend_from_slice(eol);
    p.extend_from_slice(b"Content-Transfer-Encoding: base64");
    p.extend_from_slice(eol);
    p.extend_from_slice(b"Content-Disposition: attachment");
    p.extend_from_slice(&param("filename", name, eol));
    p.extend_from_slice(eol);
    if let Some(cid) = cid {
        p.extend_from_slice(format!("Content-ID: <{cid}>").as_bytes());
        p.extend_from_slice(eol);
    }
    p.extend_from_slice(eol);
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    for (i, line) in b64.as_bytes().chunks(76).enumerate() {
        if i > 0 {
            p.extend_from_slice(eol);
        }
        p.extend_from_slice(line);
    }
    p
}

/// `;` and a folded `key="value"`, or RFC 2231 `key*=utf-8''%XX` when the value is not short
/// printable ASCII (split into `key*N*` continuations, at character boundaries, only when very
/// long: some parsers apply the charset to the first section only).
fn param(key: &str, name: &Name, eol: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let value = name.0.as_str();
    if value.len() <= 60 && value.bytes().all(|b| (0x20..0x7F).contains(&b)) {
        out.extend_from_slice(b";");
        out.extend_from_slice(eol);
        out.extend_from_slice(format!(" {key}=\"").as_bytes());
        for b in value.bytes() {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
        return out;
    }
    let encoded: Vec<String> = value.chars().map(percent_encode).collect();
    let total: usize = encoded.iter().map(String::len).sum();
    if total <= 900 {
        out.extend_from_slice(b";");
        out.extend_from_slice(eol);
        out.extend_from_slice(format!(" {key}*=utf-8''{}", encoded.concat()).as_bytes());
        return out;
    }
    for (i, chunk) in encoded.chunks(20).enumerate() {
        out.extend_from_slice(b";");
        out.extend_from_slice(eol);
        let charset = if i == 0 { "utf-8''" } else { "" };
        out.extend_from_slice(format!(" {key}*{i}*={charset}{}", chunk.concat()).as_bytes());
    }
    out
}

/// One character as RFC 2231 `attr-char`s and `%XX` escapes of its UTF-8 bytes.
fn percent_encode(c: char) -> String {
    let mut buf = [0u8; 4];
    c.encode_utf8(&mut buf)
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Quoted-printable (RFC 2045 6.7): lines ≤ 76 characters, line breaks (LF or CRLF) written as
/// `eol`, trailing white space and every non-printable byte encoded.
fn quoted_printable(data: &[u8], eol: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 11 / 10);
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let last_line = i + 1 == lines.len();
        let line = match line.strip_suffix(b"\r") {
            Some(l) if !last_line => l,
            _ => line,
        };
        let mut col = 0;
        for (j, &b) in line.iter().enumerate() {
            let at_end = j + 1 == line.len();
            let literal =
                (b'!'..=b'~').contains(&b) && b != b'=' || (b == b' ' || b == b'\t') && !at_end;
            let token = if literal {
                vec![b]
            } else {
                format!("={b:02X}").into_bytes()
            };
            // Room for a soft break '=' unless this token ends the line.
            let limit = if at_end { 76 } else { 75 };
            if col + token.len() > limit {
                out.extend_from_slice(b"=");
                out.extend_from_slice(eol);
                col = 0;
            }
            out.extend_from_slice(&token);
            col += token.len();
        }
        if !last_line {
            out.extend_from_slice(eol);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::tnef::build::*;
    use proptest::prelude::*;

    const PR_ATTACH_LONG_FILENAME: u16 = 0x3707;
    const PR_ATTACH_DATA: u16 = 0x3701;

    /// A TNEF with a plain-text body and the given attachments (names as PT_UNICODE or as
    /// 8-bit windows-1252 text).
    fn tnef_of(body: &str, atts: &[(String, Vec<u8>)], unicode: bool) -> Vec<u8> {
        let mut attrs = vec![
            attr(1, 0x0006_9007, &[0xE4, 0x04, 0, 0, 0, 0, 0, 0]), // OEM code page 1252
            attr(1, 0x0008_8008, b"IPM.Microsoft Mail.Note\0"),
            attr(1, 0x0002_800C, body.as_bytes()),
        ];
        for (name, data) in atts {
            let name_prop = if unicode {
                let mut v: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
                v.extend_from_slice(&[0, 0]);
                string_prop(PR_ATTACH_LONG_FILENAME, 0x001F, &v)
            } else {
                let mut v: Vec<u8> = name.chars().map(|c| c as u32 as u8).collect();
                v.push(0);
                string_prop(PR_ATTACH_LONG_FILENAME, 0x001E, &v)
            };
            let props = prop_list(&[name_prop, string_prop(PR_ATTACH_DATA, 0x0102, data)]);
            attrs.push(attr(2, 0x0006_9002, &[1, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]));
            attrs.push(attr(2, 0x0006_9005, &props));
        }
        stream(&attrs)
    }

    fn message(prefix: &str, tnef: &[u8], suffix: &str) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(tnef);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "Subject: t\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\n{prefix}\r\n--b\r\n\
             Content-Type: application/vnd.ms-tnef\r\nContent-Transfer-Encoding: base64\r\n\r\n\
             {}\r\n--b\r\nContent-Type: text/plain\r\n\r\n{suffix}\r\n--b--\r\n",
            lines.join("\r\n")
        )
        .into_bytes()
    }

    fn decoded_attachments(msg: &[u8]) -> Vec<(String, Vec<u8>)> {
        let parsed = MessageParser::default().parse(msg).unwrap();
        parsed
            .parts
            .iter()
            .filter(|p| p.content_disposition().is_some())
            .map(|p| {
                let raw: Vec<u8> = msg[p.offset_body as usize..p.offset_end as usize]
                    .iter()
                    .copied()
                    .filter(|b| !b.is_ascii_whitespace())
                    .collect();
                let data = base64::engine::general_purpose::STANDARD
                    .decode(raw)
                    .unwrap();
                (p.attachment_name().unwrap().to_string(), data)
            })
            .collect()
    }

    #[test]
    fn very_long_non_ascii_names_survive_continuations() {
        let name = "Übersicht ".repeat(60) + "✓.txt";
        let atts = vec![(name.clone(), b"x".to_vec())];
        let msg = message("a", &tnef_of("", &atts, true), "b");
        let conv = crate::convert::convert_tnef(&msg, TnefOptions::default()).unwrap();
        assert!(conv.bytes.split(|&b| b == b'\n').all(|l| l.len() <= 100));
        assert_eq!(decoded_attachments(&conv.bytes), atts);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Build a TNEF, convert, parse back: same names and bytes; the bytes around the part
        /// are unchanged.
        #[test]
        fn round_trip_and_bytes_outside_unchanged(
            atts in proptest::collection::vec(("[a-zA-Z0-9äöüÄÖÜß _().-]{1,80}", proptest::collection::vec(any::<u8>(), 0..200)), 1..4),
            unicode in any::<bool>(),
            body in "[a-zA-Z0-9 .,]{0,200}",
            prefix in "[a-z ]{0,50}",
            suffix in "[a-z ]{0,50}",
        ) {
            let msg = message(&prefix, &tnef_of(&body, &atts, unicode), &suffix);
            let conv = crate::convert::convert_tnef(&msg, TnefOptions::default()).unwrap();
            let names: Vec<String> = atts.iter().map(|a| a.0.clone()).collect();
            let body_type = (!body.trim().is_empty()).then(|| "text/plain".to_string());
            prop_assert_eq!(&conv.parts[0].outcome, &PartOutcome::Converted { attachments: names, body: body_type, calendar: 0 });
            prop_assert_eq!(decoded_attachments(&conv.bytes), atts);
            let needle = b"Content-Type: application/vnd.ms-tnef".as_slice();
            let part = msg.windows(needle.len()).position(|w| w == needle).unwrap();
            prop_assert_eq!(&conv.bytes[..part], &msg[..part]);
            let tail = msg.windows(6).rposition(|w| w == b"\r\n--b\r".as_slice()).unwrap();
            prop_assert!(conv.bytes.ends_with(&msg[tail..]));
        }

        #[test]
        fn arbitrary_messages_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
            let mut msg = b"Content-Type: application/ms-tnef\r\n\r\n".to_vec();
            msg.extend_from_slice(&bytes);
            for m in [&bytes[..], &msg[..]] {
                if let Some(c) = crate::convert::convert_tnef(m, TnefOptions::default())
                    && !c.changed()
                {
                    prop_assert_eq!(&c.bytes[..], m);
                }
            }
        }
    }

    #[test]
    fn qp_lines_are_short_and_decode_back() {
        let text =
            "a line with trailing space \r\nünïcödé = equals\n".repeat(20) + &"x".repeat(300);
        let qp = quoted_printable(text.as_bytes(), b"\r\n");
        for line in qp.split(|&b| b == b'\n') {
            assert!(line.len() <= 77, "{}", String::from_utf8_lossy(line));
        }
        let decoded =
            mail_parser::decoders::quoted_printable::quoted_printable_decode(&qp).expect("decodes");
        let expected = text.replace("\r\n", "\n").replace('\n', "\r\n");
        assert_eq!(String::from_utf8(decoded).unwrap(), expected);
    }

    #[test]
    fn extension_table_and_tags() {
        assert_eq!(by_extension("A.PDF"), "application/pdf");
        assert_eq!(by_extension("noext"), "application/octet-stream");
        let tag = |s: &'static [u8]| Attachment {
            mime_tag: Some(Text {
                bytes: s,
                unicode: false,
            }),
            ..Default::default()
        };
        assert_eq!(mime_tag(&tag(b"Image/PNG")).as_deref(), Some("image/png"));
        assert_eq!(mime_tag(&tag(b"message/rfc822")), None);
        assert_eq!(mime_tag(&tag(b"text/plain; x=\"y\"")), None);
    }

    #[test]
    fn header_fields_with_continuations() {
        let s = b"A: 1\r\nContent-Type: x;\r\n y=z\r\nB: 2\r\n";
        let f = fields(s);
        assert_eq!(f.len(), 3);
        assert_eq!(&s[f[1].1.clone()], b"Content-Type: x;\r\n y=z\r\n");
    }
}
