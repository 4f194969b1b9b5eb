//! Trace headers: building the one `Received:` (RFC 5321 §4.4) and the one `X-Cutover-Loop:`
//! cutover prepends, and scanning an incoming header block for loops (too many `Received:`, or
//! our own loop header). Pure: bytes in, strings and verdicts out. It never rewrites, refolds or
//! removes anything in the message itself.

use std::net::IpAddr;
use std::time::SystemTime;

/// Name of the loop-detection header.
pub const LOOP_HEADER: &str = "X-Cutover-Loop";

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

/// RFC 5322 date-time (`Tue, 24 Nov 2026 12:15:08 +0000`).
pub fn rfc5322_date(t: SystemTime) -> String {
    let odt = time::OffsetDateTime::from(t);
    odt.format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".into())
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
    h.push_str(&format!(";\r\n\t{}\r\n", rfc5322_date(info.date)));
    h
}

/// `X-Cutover-Loop: <hostname>`, CRLF-terminated.
pub fn loop_header(hostname: &str) -> String {
    format!("{LOOP_HEADER}: {hostname}\r\n")
}

/// Streaming scan of a message's header block (fed the unstuffed DATA bytes in any chunking).
/// Stops at the blank line ending the headers, or after `MAX_HEADER_BYTES`.
#[derive(Debug)]
pub struct HeaderScan {
    hostname: String,
    line: Vec<u8>,
    /// The header being assembled (name + unfolded value), for loop-header checks.
    current: Option<String>,
    pub received: u32,
    pub loop_seen: bool,
    done: bool,
    scanned: usize,
}

const MAX_HEADER_BYTES: usize = 1 << 20;
const MAX_LINE_KEPT: usize = 4096;

impl HeaderScan {
    pub fn new(hostname: &str) -> Self {
        Self {
            hostname: hostname.to_ascii_lowercase(),
            line: Vec::new(),
            current: None,
            received: 0,
            loop_seen: false,
            done: false,
            scanned: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !self.done && !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.push(&bytes[..i]);
                    bytes = &bytes[i + 1..];
                    self.end_line();
                }
                None => {
                    self.push(bytes);
                    bytes = &[];
                }
            }
        }
    }

    /// End of message: a header block without a blank line still counts.
    pub fn finish(&mut self) {
        if !self.done {
            if !self.line.is_empty() {
                self.end_line();
            }
            self.close_current();
            self.done = true;
        }
    }

    fn push(&mut self, b: &[u8]) {
        self.scanned += b.len();
        let room = MAX_LINE_KEPT.saturating_sub(self.line.len());
        self.line.extend_from_slice(&b[..b.len().min(room)]);
        if self.scanned > MAX_HEADER_BYTES {
            self.close_current();
            self.done = true;
        }
    }

    fn end_line(&mut self) {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            self.close_current();
            self.done = true;
            return;
        }
        let text = String::from_utf8_lossy(&line);
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(cur) = self.current.as_mut() {
                cur.push(' ');
                cur.push_str(text.trim());
            }
            return;
        }
        self.close_current();
        let Some((name, value)) = text.split_once(':') else {
            return; // not a header line; keep scanning
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
        let mut s = HeaderScan::new("mx1.example.com");
        for chunk in msg.chunks(3) {
            s.feed(chunk);
        }
        s.finish();
        assert_eq!(s.received, 2);
        assert!(s.loop_seen);

        let mut s = HeaderScan::new("mx1.example.com");
        s.feed(b"X-Cutover-Loop: mx1.example.com.evil\r\nSubject: x\r\n\r\n");
        s.finish();
        assert!(!s.loop_seen);

        let mut s = HeaderScan::new("mx1.example.com");
        s.feed(b"Subject: x\r\nX-Cutover-Loop: mx1.example.com");
        s.finish();
        assert!(s.loop_seen);
    }

    proptest! {
        #[test]
        fn chunking_does_not_matter(n in 0u32..40, split in 1usize..50) {
            let mut msg = Vec::new();
            for i in 0..n { msg.extend_from_slice(format!("Received: hop {i}\r\n\tx\r\n").as_bytes()); }
            msg.extend_from_slice(b"Subject: s\r\n\r\nReceived: body\r\n");
            let mut s = HeaderScan::new("h");
            for c in msg.chunks(split) { s.feed(c); }
            s.finish();
            prop_assert_eq!(s.received, n);
        }

        #[test]
        fn scan_never_panics(b in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut s = HeaderScan::new("h");
            s.feed(&b);
            s.finish();
        }
    }
}
