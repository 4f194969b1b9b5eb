//! Trace headers: building the one `Received:` (RFC 5321 §4.4) and the one `X-Cutover-Loop:`
//! cutover prepends, and scanning an incoming header section for loops (too many `Received:`, or
//! our own loop header) and for its size (`max_header_size`). Pure: bytes in, strings and verdicts out. It never rewrites, refolds or
//! removes anything in the message itself. What ends a header section (the empty line) and what
//! continues a field are [`crate::header`]'s definitions.

use crate::header;
use std::net::IpAddr;
use std::time::SystemTime;

pub use crate::header::LOOP_HEADER;

/// What the `Received:` line says about the session.
#[derive(Clone, Debug)]
pub struct TraceInfo<'a> {
    pub helo: &'a str,
    pub client_ip: IpAddr,
    pub hostname: &'a str,
    /// `(protocol version, cipher suite)` when the session is under TLS.
    pub tls: Option<(&'a str, &'a str)>,
    pub esmtp: bool,
    pub smtputf8: bool,
    /// The recipient, only when the transaction has exactly one.
    pub single_rcpt: Option<&'a str>,
    pub date: SystemTime,
}

/// Printable, space-free, bounded form of client-supplied text for a trace header.
fn sanitise(s: &str, max: usize) -> String {
    let t: String = s
        .chars()
        .filter(|c| !c.is_control() && !c.is_whitespace() && !matches!(c, '(' | ')' | ';'))
        .take(max)
        .collect();
    if t.is_empty() { "unknown".into() } else { t }
}

/// The `Received:` header, CRLF-terminated, folded with a tab.
pub fn received(info: &TraceInfo<'_>) -> String {
    let proto = match (info.smtputf8, info.esmtp, info.tls.is_some()) {
        (true, _, true) => "UTF8SMTPS",
        (true, _, false) => "UTF8SMTP",
        (false, true, true) => "ESMTPS",
        (false, true, false) => "ESMTP",
        (false, false, true) => "SMTPS",
        (false, false, false) => "SMTP",
    };
    let mut h = format!(
        "Received: from {} ([{}])\r\n",
        sanitise(info.helo, 255),
        super::policy::canonical_ip(info.client_ip)
    );
    if let Some((version, cipher)) = info.tls {
        h.push_str(&format!(
            "\t(using {} with cipher {})\r\n",
            sanitise(version, 32),
            sanitise(cipher, 64)
        ));
    }
    h.push_str(&format!("\tby {} (cutover) with {proto}", info.hostname));
    if let Some(r) = info.single_rcpt {
        h.push_str(&format!("\r\n\tfor <{}>", sanitise(r, 256)));
    }
    h.push_str(&format!(
        ";\r\n\t{}\r\n",
        crate::time::rfc5322_date(info.date)
    ));
    h
}

/// `X-Cutover-Loop: <hostname>`, CRLF-terminated.
pub fn loop_header(hostname: &str) -> String {
    format!("{LOOP_HEADER}: {hostname}\r\n")
}

/// Streaming scan of a message's header section (fed the unstuffed DATA bytes in any chunking)
/// for loop markers, and its size check. The section ends at the blank line, or at the first line
/// that is not a header field (as in Postfix's cleanup: that line starts the body). Every byte of
/// the section is scanned up to `limit` (`gateway.max_header_size`), so loop detection sees all
/// `Received:` headers a message within the limit can carry; a section larger than the limit sets
/// [`HeaderScan::too_large`] and ends the scan. O(1) work per byte; memory bounded by
/// `MAX_LINE_KEPT` plus the value of one `X-Cutover-Loop:` header.
#[derive(Debug)]
pub struct HeaderScan {
    hostname: String,
    /// The start of the current line (at most `MAX_LINE_KEPT` bytes; the buffer is reused).
    line: Vec<u8>,
    /// Bytes of the current line so far, its LF included once seen.
    line_len: usize,
    /// The header being assembled (name + unfolded value), for loop-header checks.
    current: Option<String>,
    pub received: u32,
    pub loop_seen: bool,
    /// The header section is larger than `limit`.
    pub too_large: bool,
    done: bool,
    /// Bytes of the header lines before the current one, line ends included.
    size: usize,
    limit: usize,
    first_line: bool,
    /// Classification of the current line, made incrementally: bytes of `line` examined so far
    /// and whether white space followed the field name.
    kind: LineKind,
    kind_at: usize,
    kind_wsp: bool,
}

/// Bytes of a line kept for classification and for header values (longer lines are legal only
/// up to 998 bytes; the rest of an over-long line still counts towards the size).
const MAX_LINE_KEPT: usize = 4096;

/// What a line of the message is, as far as its start tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineKind {
    /// A header field (`Name:`) or the continuation of one (starts with SP/HT).
    Header,
    /// Not a header field (or the blank line): the header section ends before it.
    Body,
    /// Too little of the line seen yet (a field name without its colon so far).
    Undecided,
}

impl HeaderScan {
    /// A scan for this gateway's `hostname`, with the header section limited to `limit` bytes.
    pub fn new(hostname: &str, limit: usize) -> Self {
        Self {
            hostname: hostname.to_ascii_lowercase(),
            line: Vec::new(),
            line_len: 0,
            current: None,
            received: 0,
            loop_seen: false,
            too_large: false,
            done: false,
            size: 0,
            limit,
            first_line: true,
            kind: LineKind::Undecided,
            kind_at: 0,
            kind_wsp: false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Bytes of the header section scanned so far (line ends included, the empty line not): the
    /// whole section once the scan is done within the limit.
    pub fn header_size(&self) -> usize {
        self.size
    }

    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !self.done && !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.push(&bytes[..i]);
                    bytes = &bytes[i + 1..];
                    if !self.done {
                        self.line_len += 1;
                        self.end_line();
                    }
                }
                None => {
                    self.push(bytes);
                    bytes = &[];
                }
            }
        }
    }

    /// End of message: a header section without a blank line still counts.
    pub fn finish(&mut self) {
        if !self.done {
            if self.line_len > 0 {
                self.end_line();
            }
            self.close_current();
            self.done = true;
        }
    }

    fn push(&mut self, b: &[u8]) {
        self.line_len += b.len();
        let room = MAX_LINE_KEPT.saturating_sub(self.line.len());
        self.line.extend_from_slice(&b[..b.len().min(room)]);
        if self.size.saturating_add(self.line_len) > self.limit {
            // Over the limit mid-line: too large if this line belongs to the header section; if
            // it starts the body, the section ended within the limit.
            match self.classify() {
                LineKind::Header => self.too_large = true,
                LineKind::Undecided if self.line.len() < MAX_LINE_KEPT => return,
                LineKind::Body | LineKind::Undecided => {}
            }
            self.close_current();
            self.done = true;
        }
    }

    /// Classify the current line from the bytes kept so far, resuming where the last call
    /// stopped (so each byte is examined once). RFC 5322 field name: printable ASCII except ':';
    /// the obsolete syntax allows white space before the colon.
    fn classify(&mut self) -> LineKind {
        if self.kind != LineKind::Undecided {
            return self.kind;
        }
        if self.kind_at == 0 {
            match self.line.first() {
                None => return LineKind::Undecided,
                Some(&b) if header::is_wsp(b) => {
                    self.kind = if self.first_line {
                        LineKind::Body
                    } else {
                        LineKind::Header
                    };
                    return self.kind;
                }
                Some(_) => {}
            }
        }
        for (i, &c) in self.line.iter().enumerate().skip(self.kind_at) {
            match c {
                b':' if i > 0 => {
                    self.kind = LineKind::Header;
                    return self.kind;
                }
                b' ' | b'\t' => self.kind_wsp = true,
                33..=126 if !self.kind_wsp && c != b':' => {}
                _ => {
                    self.kind = LineKind::Body;
                    return self.kind;
                }
            }
        }
        self.kind_at = self.line.len();
        LineKind::Undecided
    }

    fn end_line(&mut self) {
        // A line that ended without a colon is not a header field.
        let kind = match self.classify() {
            LineKind::Undecided => LineKind::Body,
            k => k,
        };
        let mut line = std::mem::take(&mut self.line);
        self.scan_line(&mut line, kind);
        line.clear();
        self.line = line;
        self.line_len = 0;
        self.first_line = false;
        self.kind = LineKind::Undecided;
        self.kind_at = 0;
        self.kind_wsp = false;
    }

    fn scan_line(&mut self, line: &mut Vec<u8>, kind: LineKind) {
        if header::is_blank(line) || kind != LineKind::Header {
            // The blank line, or the first line of the body: the header section ends before it.
            self.close_current();
            self.done = true;
            return;
        }
        self.size = self.size.saturating_add(self.line_len);
        if self.size > self.limit {
            self.too_large = true;
            self.close_current();
            self.done = true;
            return;
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let text = String::from_utf8_lossy(line);
        if line.first().copied().is_some_and(header::is_wsp) {
            if let Some(cur) = self.current.as_mut() {
                cur.push(' ');
                cur.push_str(text.trim());
            }
            return;
        }
        self.close_current();
        let Some((name, value)) = text.split_once(':') else {
            return;
        };
        let name = name.trim_end();
        if name.eq_ignore_ascii_case("Received") {
            self.received += 1;
        } else if name.eq_ignore_ascii_case(LOOP_HEADER) {
            self.current = Some(value.trim().to_string());
        }
    }

    fn close_current(&mut self) {
        if let Some(v) = self.current.take()
            && v.split(|c: char| c.is_whitespace() || c == ',' || c == ';')
                .any(|tok| {
                    tok.trim_end_matches('.')
                        .eq_ignore_ascii_case(&self.hostname)
                })
        {
            self.loop_seen = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn info<'a>(rcpt: Option<&'a str>, tls: Option<(&'a str, &'a str)>) -> TraceInfo<'a> {
        TraceInfo {
            helo: "client.example.net",
            client_ip: "192.0.2.7".parse().unwrap(),
            hostname: "mx1.example.com",
            tls,
            esmtp: true,
            smtputf8: false,
            single_rcpt: rcpt,
            date: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000),
        }
    }

    #[test]
    fn received_forms() {
        let h = received(&info(Some("alice@example.com"), None));
        assert!(h.starts_with("Received: from client.example.net ([192.0.2.7])\r\n"));
        assert!(h.contains(
            "\tby mx1.example.com (cutover) with ESMTP\r\n\tfor <alice@example.com>;\r\n\t"
        ));
        assert!(h.ends_with("+0000\r\n"));
        let h = received(&info(None, Some(("TLSv1.3", "TLS13_AES_256_GCM_SHA384"))));
        assert!(h.contains("(using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)"));
        assert!(h.contains("with ESMTPS;"));
        assert!(!h.contains("for <"));
        // Every line but the first is folded; no bare LF.
        assert_eq!(h.matches('\n').count(), h.matches("\r\n").count());
    }

    #[test]
    fn hostile_helo_cannot_break_the_header() {
        let mut i = info(None, None);
        i.helo = "evil\r\nBcc: x@y (comment); a";
        let h = received(&i);
        assert!(
            h.starts_with("Received: from evilBcc:x@ycommenta ([192.0.2.7])\r\n"),
            "{h}"
        );
    }

    #[test]
    fn scan_counts_received_and_finds_loop() {
        let msg = b"Received: a\r\nreceived:b\r\n\tfolded\r\nX-Cutover-Loop: other.host\r\nX-CUTOVER-LOOP:\r\n MX1.example.com\r\n\r\nReceived: in body\r\n";
        let mut s = HeaderScan::new("mx1.example.com", 1 << 20);
        for chunk in msg.chunks(3) {
            s.feed(chunk);
        }
        s.finish();
        assert_eq!(s.received, 2);
        assert!(s.loop_seen);

        let mut s = HeaderScan::new("mx1.example.com", 1 << 20);
        s.feed(b"X-Cutover-Loop: mx1.example.com.evil\r\nSubject: x\r\n\r\n");
        s.finish();
        assert!(!s.loop_seen);

        let mut s = HeaderScan::new("mx1.example.com", 1 << 20);
        s.feed(b"Subject: x\r\nX-Cutover-Loop: mx1.example.com");
        s.finish();
        assert!(s.loop_seen);
    }

    fn scan(msg: &[u8], limit: usize, chunk: usize) -> HeaderScan {
        let mut s = HeaderScan::new("mx1.example.com", limit);
        for c in msg.chunks(chunk) {
            s.feed(c);
        }
        s.finish();
        s
    }

    #[test]
    fn header_section_limit_is_exact() {
        // 10 header lines of 8 bytes each (CRLF included) = 80 bytes; the blank line and the
        // body do not count.
        let mut msg = b"X-A: 1\r\n".repeat(10);
        msg.extend_from_slice(b"\r\n");
        msg.extend(b"body line\r\n".repeat(1000));
        for chunk in [1, 3, 80, 4096] {
            assert!(!scan(&msg, 80, chunk).too_large, "chunk {chunk}");
            assert!(scan(&msg, 79, chunk).too_large, "chunk {chunk}");
        }
        // One over-long header line without an end is too large as soon as it passes the limit.
        let mut s = HeaderScan::new("h", 1000);
        s.feed(b"X-Long: ");
        s.feed(&[b'v'; 2000]);
        assert!(s.too_large && s.is_done());
    }

    #[test]
    fn the_body_starts_at_the_first_non_header_line() {
        // No blank line: a message whose first line is not a header field has an empty header
        // section, however long it is.
        let body = b"just text, no headers at all\r\n".repeat(10_000);
        for chunk in [1, 7, 65536] {
            let s = scan(&body, 1024, chunk);
            assert!(!s.too_large, "chunk {chunk}");
        }
        let mut msg = b"Subject: x\r\nplain text line\r\n".to_vec();
        msg.extend(b"Received: not a header any more\r\n".repeat(100));
        let s = scan(&msg, 1024, 5);
        assert!(!s.too_large);
        assert_eq!(s.received, 0);
        // A long field name is still a field (decided at its colon, in any chunking).
        let mut msg = format!("X-{}: v\r\n", "n".repeat(3000)).into_bytes();
        msg.extend_from_slice(b"\r\nbody\r\n");
        assert!(scan(&msg, 1000, 1).too_large);
        assert!(!scan(&msg, 4000, 1).too_large);
    }

    #[test]
    fn loop_scan_covers_the_whole_limit() {
        // 1.5 MiB of headers, then 31 Received: all counted under a 2 MiB limit.
        let mut msg = Vec::new();
        while msg.len() < 1536 * 1024 {
            msg.extend_from_slice(format!("X-Pad: {}\r\n", "p".repeat(70)).as_bytes());
        }
        for i in 0..31 {
            msg.extend_from_slice(format!("Received: from h{i}\r\n").as_bytes());
        }
        msg.extend_from_slice(b"X-Cutover-Loop: mx1.example.com\r\n\r\nbody\r\n");
        let s = scan(&msg, 2 << 20, 65536);
        assert!(!s.too_large);
        assert_eq!(s.received, 31);
        assert!(s.loop_seen);
        let s = scan(&msg, 1 << 20, 65536);
        assert!(s.too_large);
    }

    proptest! {
        #[test]
        fn chunking_does_not_matter(n in 0u32..40, split in 1usize..50) {
            let mut msg = Vec::new();
            for i in 0..n { msg.extend_from_slice(format!("Received: hop {i}\r\n\tx\r\n").as_bytes()); }
            msg.extend_from_slice(b"Subject: s\r\n\r\nReceived: body\r\n");
            let mut s = HeaderScan::new("h", 1 << 20);
            for c in msg.chunks(split) { s.feed(c); }
            s.finish();
            prop_assert_eq!(s.received, n);
        }

        #[test]
        fn scan_never_panics(b in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut s = HeaderScan::new("h", 1 << 20);
            s.feed(&b);
            s.finish();
        }
    }
}
