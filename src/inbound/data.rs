//! The DATA phase's byte decoder: incremental dot-unstuffing and end detection on `CRLF.CRLF`
//! only (a bare LF never ends or starts a line, so `\n.\r\n` cannot smuggle a second message),
//! with counters for what the session must judge afterwards (bare LF, bare CR, NUL, over-long
//! lines).
//! Pure: it never does IO and never allocates beyond the caller's output buffer.

/// Longest line RFC 5321 allows in DATA, CRLF included.
pub const MAX_DATA_LINE: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    /// At the start of a line (after CRLF, or at the very start of DATA).
    LineStart,
    /// A `.` at line start, dropped.
    Dot,
    /// `.` `CR` at line start.
    DotCr,
    /// Inside a line.
    Mid,
    /// Inside a line, the last byte was CR.
    MidCr,
}

/// Incremental decoder for one DATA block.
#[derive(Debug)]
pub struct DataDecoder {
    st: St,
    line_len: usize,
    /// Bytes of message content produced (after unstuffing).
    pub size: u64,
    pub bare_lf: u64,
    /// CR not followed by LF (the session refuses these like bare LF: see `session::data`).
    pub bare_cr: u64,
    pub nul: u64,
    pub long_lines: u64,
    done: bool,
}

impl Default for DataDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DataDecoder {
    pub fn new() -> Self {
        Self {
            st: St::LineStart,
            line_len: 0,
            size: 0,
            bare_lf: 0,
            bare_cr: 0,
            nul: 0,
            long_lines: 0,
            done: false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Decode from `input`, appending content to `out`. Returns how many input bytes were
    /// consumed: all of them, or up to and including the terminating `CRLF.CRLF` (whose final
    /// CRLF.CRLF is not content; the CRLF ending the last line is).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let start_len = out.len();
        let mut i = 0;
        while i < input.len() && !self.done {
            let b = input[i];
            match self.st {
                St::LineStart if b == b'.' => {
                    self.st = St::Dot;
                    self.line_len = 1;
                    i += 1;
                }
                St::Dot if b == b'\r' => {
                    self.st = St::DotCr;
                    i += 1;
                }
                St::DotCr if b == b'\n' => {
                    self.done = true;
                    i += 1;
                }
                St::DotCr => {
                    // ".\rX": the dot was stuffing; the CR is content (and, as X is not LF,
                    // counted as bare when X is seen in `MidCr`).
                    out.push(b'\r');
                    self.st = St::MidCr;
                }
                St::LineStart | St::Dot | St::Mid => {
                    if self.st == St::LineStart {
                        self.line_len = 0;
                    }
                    self.st = St::Mid;
                    // Fast path: copy up to the next CR, LF or NUL.
                    let rest = &input[i..];
                    let n = rest
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n' || c == 0)
                        .unwrap_or(rest.len());
                    out.extend_from_slice(&rest[..n]);
                    self.line_len += n;
                    i += n;
                    if let Some(&c) = input.get(i) {
                        out.push(c);
                        self.line_len += 1;
                        i += 1;
                        match c {
                            b'\r' => self.st = St::MidCr,
                            b'\n' => self.bare_lf += 1,
                            _ => self.nul += 1,
                        }
                    }
                }
                St::MidCr => {
                    out.push(b);
                    self.line_len += 1;
                    i += 1;
                    match b {
                        b'\n' => {
                            if self.line_len > MAX_DATA_LINE {
                                self.long_lines += 1;
                            }
                            self.st = St::LineStart;
                        }
                        b'\r' => self.bare_cr += 1,
                        0 => {
                            self.bare_cr += 1;
                            self.nul += 1;
                            self.st = St::Mid;
                        }
                        _ => {
                            self.bare_cr += 1;
                            self.st = St::Mid;
                        }
                    }
                }
            }
        }
        self.size += (out.len() - start_len) as u64;
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(input: &[u8], chunk: usize) -> (Vec<u8>, usize, DataDecoder) {
        let mut d = DataDecoder::new();
        let mut out = Vec::new();
        let mut used = 0;
        for c in input.chunks(chunk.max(1)) {
            used += d.feed(c, &mut out);
            if d.is_done() {
                break;
            }
        }
        (out, used, d)
    }

    #[test]
    fn basic_and_unstuffing() {
        let input = b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
        let (out, used, d) = decode_all(input, 64);
        assert!(d.is_done());
        assert_eq!(out, b"Subject: x\r\n\r\n.dot\r\n");
        assert_eq!(used, input.len() - 6);
        assert_eq!(d.size, out.len() as u64);
    }

    #[test]
    fn empty_message() {
        let (out, used, d) = decode_all(b".\r\nNOOP\r\n", 1);
        assert!(d.is_done());
        assert!(out.is_empty());
        assert_eq!(used, 3);
    }

    #[test]
    fn bare_lf_dot_does_not_end() {
        let (out, _, d) = decode_all(b"a\n.\r\nMAIL FROM:<x@y>\r\n", 64);
        assert!(!d.is_done());
        assert_eq!(d.bare_lf, 1);
        assert_eq!(out, b"a\n.\r\nMAIL FROM:<x@y>\r\n");
        let (_, _, d) = decode_all(b"a\r\n.\n.\r\n", 64);
        assert!(!d.is_done());
    }

    #[test]
    fn counts_bare_cr() {
        for (wire, n) in [
            (&b"a\rb\r\n.\r\n"[..], 1),
            (b"a\r\r\n.\r\n", 1),
            (b".\rx\r\n.\r\n", 1),
            (b"a\r\0\r\n.\r\n", 1),
            (b"a\rb\rc\r\n.\r\n", 2),
            (b"a\r\nb\r\n.\r\n", 0),
        ] {
            for chunk in [1, 2, 64] {
                let (out, _, d) = decode_all(wire, chunk);
                assert!(d.is_done(), "{wire:?}");
                assert_eq!(d.bare_cr, n, "{wire:?} in chunks of {chunk}");
                assert_eq!(d.bare_lf, 0);
                // Counted, never rewritten (beyond unstuffing).
                let content = &wire[..wire.len() - 3];
                let content = content.strip_prefix(b".").unwrap_or(content);
                assert_eq!(&out[..], content, "{wire:?}");
            }
        }
        // A CR at the end of a chunk is judged by the byte that follows it.
        let mut d = DataDecoder::new();
        let mut out = Vec::new();
        d.feed(b"a\r", &mut out);
        assert_eq!(d.bare_cr, 0);
        d.feed(b"\n.\r\n", &mut out);
        assert_eq!(d.bare_cr, 0);
        assert!(d.is_done());
    }

    #[test]
    fn counts_nul_and_long_lines() {
        let mut m = b"a\0b\r\n".to_vec();
        m.extend(std::iter::repeat_n(b'x', 1200));
        m.extend_from_slice(b"\r\n.\r\n");
        let (_, _, d) = decode_all(&m, 7);
        assert!(d.is_done());
        assert_eq!(d.nul, 1);
        assert_eq!(d.long_lines, 1);
    }

    proptest! {
        /// Stuffing then decoding gives the original back, in any chunking.
        #[test]
        fn roundtrip(lines in proptest::collection::vec("[.a-z ]{0,20}", 0..30), chunk in 1usize..40) {
            let mut body = Vec::new();
            let mut wire = Vec::new();
            for l in &lines {
                body.extend_from_slice(l.as_bytes());
                body.extend_from_slice(b"\r\n");
                if l.starts_with('.') { wire.push(b'.'); }
                wire.extend_from_slice(l.as_bytes());
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b".\r\nTAIL");
            let (out, used, d) = decode_all(&wire, chunk);
            prop_assert!(d.is_done());
            prop_assert_eq!(out, body);
            prop_assert_eq!(used, wire.len() - 4);
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..3000), chunk in 1usize..100) {
            let _ = decode_all(&b, chunk);
        }
    }
}
