//! The DATA decoder (dot-unstuffing, end detection, counters), the header scan (loop detection,
//! header size) and the trace stamps, fed arbitrary bytes in input-chosen chunkings.
//!
//! Checks: the decoder's result does not depend on how the input is chunked (output, bytes used,
//! counters, end); `size` is the output length; a block it ends really ends in `CRLF.CRLF` (or is
//! `.CRLF` alone); re-stuffing a clean output decodes to the same bytes; the header scan gives the
//! same verdict in any chunking; a `Received:` stamp built from arbitrary HELO/recipient/TLS text is
//! one well-formed CRLF header that the scan counts once, and the loop header is recognised.
#![no_main]

use arbitrary::Arbitrary;
use cutover::inbound::data::DataDecoder;
use cutover::inbound::stamp::{self, HeaderScan, TraceInfo};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// Chunk sizes (cycled; 0 is read as 1).
    cuts: Vec<u8>,
    /// Index into HOSTS.
    host: u8,
    /// Header-section limit for the scan.
    limit: u16,
    helo: &'a str,
    rcpt: Option<&'a str>,
    tls: Option<(&'a str, &'a str)>,
    ip: [u8; 16],
    v6: bool,
    esmtp: bool,
    smtputf8: bool,
    secs: u32,
    data: &'a [u8],
}

const HOSTS: [&str; 3] = ["mx1.example.com", "MX.Test", "a.b"];

struct Decoded {
    out: Vec<u8>,
    used: usize,
    done: bool,
    counters: [u64; 5],
}

fn decode(input: &[u8], cuts: &[u8]) -> Decoded {
    let mut d = DataDecoder::new();
    let mut out = Vec::new();
    let mut used = 0;
    let mut pos = 0;
    let mut k = 0;
    while pos < input.len() && !d.is_done() {
        let n = if cuts.is_empty() {
            input.len()
        } else {
            (cuts[k % cuts.len()] as usize).max(1)
        };
        k += 1;
        let end = (pos + n).min(input.len());
        let u = d.feed(&input[pos..end], &mut out);
        assert!(u <= end - pos, "consumed more than given");
        if !d.is_done() {
            assert_eq!(u, end - pos, "stopped early without ending the block");
        }
        used += u;
        pos = end;
    }
    assert_eq!(d.size, out.len() as u64, "size is the output length");
    Decoded {
        counters: [d.size, d.bare_lf, d.bare_cr, d.nul, d.long_lines],
        out,
        used,
        done: d.is_done(),
    }
}

/// SMTP dot-stuffing of a (CRLF-clean) body, plus the terminator.
fn stuff(body: &[u8]) -> Vec<u8> {
    let mut w = Vec::with_capacity(body.len() + 8);
    let mut at_line_start = true;
    for &b in body {
        if at_line_start && b == b'.' {
            w.push(b'.');
        }
        w.push(b);
        at_line_start = b == b'\n';
    }
    if !at_line_start && !body.is_empty() {
        w.extend_from_slice(b"\r\n");
    }
    w.extend_from_slice(b".\r\n");
    w
}

fn scan(bytes: &[u8], host: &str, limit: usize, cuts: &[u8]) -> (u32, bool, bool) {
    let mut s = HeaderScan::new(host, limit);
    let mut pos = 0;
    let mut k = 0;
    while pos < bytes.len() && !s.is_done() {
        let n = if cuts.is_empty() {
            bytes.len()
        } else {
            (cuts[k % cuts.len()] as usize).max(1)
        };
        k += 1;
        let end = (pos + n).min(bytes.len());
        s.feed(&bytes[pos..end]);
        pos = end;
    }
    s.finish();
    (s.received, s.loop_seen, s.too_large)
}

fuzz_target!(|inp: Input<'_>| {
    let whole = decode(inp.data, &[]);
    let chunked = decode(inp.data, &inp.cuts);
    assert_eq!(whole.out, chunked.out, "output depends on chunking");
    assert_eq!(whole.used, chunked.used, "bytes used depend on chunking");
    assert_eq!(whole.done, chunked.done, "end depends on chunking");
    assert_eq!(
        whole.counters, chunked.counters,
        "counters depend on chunking"
    );
    if whole.done {
        let consumed = &inp.data[..whole.used];
        assert!(
            consumed == b".\r\n" || consumed.ends_with(b"\r\n.\r\n"),
            "ended without CRLF.CRLF"
        );
        // A clean body (no bare CR/LF) comes back unchanged through stuffing and decoding.
        if whole.counters[1] == 0 && whole.counters[2] == 0 {
            let again = decode(&stuff(&whole.out), &inp.cuts);
            assert!(again.done);
            assert_eq!(again.out, whole.out, "stuff/unstuff round trip");
        }
    } else {
        assert_eq!(whole.used, inp.data.len());
    }

    // Header scan: same verdict in any chunking.
    let host = HOSTS[inp.host as usize % HOSTS.len()];
    let limit = inp.limit as usize;
    let a = scan(&whole.out, host, limit, &[]);
    let b = scan(&whole.out, host, limit, &inp.cuts);
    assert_eq!(a, b, "header scan depends on chunking");

    // The stamps cutover prepends.
    let ip = if inp.v6 {
        IpAddr::from(inp.ip)
    } else {
        IpAddr::from([inp.ip[0], inp.ip[1], inp.ip[2], inp.ip[3]])
    };
    let info = TraceInfo {
        helo: inp.helo,
        client_ip: ip,
        hostname: host,
        tls: inp.tls,
        esmtp: inp.esmtp,
        smtputf8: inp.smtputf8,
        single_rcpt: inp.rcpt,
        date: SystemTime::UNIX_EPOCH + Duration::from_secs(inp.secs as u64),
    };
    let mut stamp_text = stamp::received(&info);
    let b = stamp_text.as_bytes();
    assert!(stamp_text.starts_with("Received: from "));
    assert!(stamp_text.ends_with("\r\n"));
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'\n' => assert!(i > 0 && b[i - 1] == b'\r', "bare LF in stamp"),
            b'\r' => assert!(b.get(i + 1) == Some(&b'\n'), "bare CR in stamp"),
            _ => {}
        }
    }
    // Every continuation line is folded (starts with a tab): one header field.
    for line in stamp_text.split("\r\n").skip(1).filter(|l| !l.is_empty()) {
        assert!(
            line.starts_with('\t'),
            "unfolded line in Received: {line:?}"
        );
    }
    stamp_text.push_str(&stamp::loop_header(host));
    let (received, loop_seen, too_large) = scan(stamp_text.as_bytes(), host, 1 << 20, &inp.cuts);
    assert_eq!(received, 1, "our stamp counts once");
    assert!(loop_seen, "our loop header is recognised");
    assert!(!too_large);
});
