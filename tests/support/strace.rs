//! Test helper: run a command under `strace` and read its log back as a list of system calls.
//!
//! The log must come from `strace -f -tt -y -o LOG` (one file, PID prefix, absolute times, fd
//! paths). Interleaved threads produce `name(args <unfinished ...>` / `<... name resumed>rest`
//! pairs; [`parse`] joins them into one [`Call`] with the log line where it started and the line
//! where it completed.
//!
//! Ordering: strace handles one stop at a time and writes each line as it handles the stop; a
//! traced thread stays stopped until strace has handled (and logged) that stop. So if call A's
//! completion is logged before call B's start, A had really returned from the kernel before B
//! entered it. Comparing log positions ([`Call::start`], [`Call::end`]) is therefore a sound
//! happened-before test, unlike comparing timestamps of different threads. Needs `crate::common`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

/// Whether `strace` can trace here. `Err` explains why not (missing, or ptrace refused).
pub fn usable() -> Result<(), String> {
    let out = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-e", "trace=fsync", "true"])
        .stdin(Stdio::null())
        .output();
    match out {
        Err(e) => Err(format!(
            "strace not found ({e}); install the Debian package strace (.ci/run does)"
        )),
        Ok(o) if !o.status.success() => Err(format!(
            "strace cannot trace here ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => Ok(()),
    }
}

/// `Ok` when strace works. Otherwise the skip policy ([`crate::common::skip_or_fail`]): under
/// `CI=true` panic with the reason; elsewhere print it and return `Err` so the test can skip.
pub fn require(test: &str) -> Result<(), ()> {
    usable().map_err(|why| crate::common::skip_or_fail(&format!("{test}: {why}")))
}

/// Does this strace accept `--seccomp-bpf` (stop only on traced calls: much less overhead)?
pub fn has_seccomp_bpf() -> bool {
    Command::new("strace")
        .args([
            "-f",
            "--seccomp-bpf",
            "-o",
            "/dev/null",
            "-e",
            "trace=fsync",
            "true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One system call from the log.
#[derive(Clone, Debug, Default)]
pub struct Call {
    pub pid: u32,
    pub name: String,
    /// 0-based log line where the call was entered.
    pub start: usize,
    /// 0-based log line where it returned (== `start` unless it was interrupted by other lines).
    pub end: usize,
    /// Whether a return value was logged (false: the process died inside the call).
    pub finished: bool,
    /// Timestamps as printed (for messages only).
    pub start_time: String,
    pub end_time: String,
    /// Path of the first argument when it is an fd decoded by `-y` (`9</x/db/db>` → `/x/db/db`;
    /// sockets read `socket:[123]`).
    pub fd_path: Option<String>,
    /// All string literals of the arguments, unescaped, in order.
    pub strings: Vec<Vec<u8>>,
    /// Some string literal was cut by `-s` (strace printed `"..."...`).
    pub truncated: bool,
    /// Return value (`None`: `?` or not finished).
    pub ret: Option<i64>,
    /// File offset of `pwrite64`/`pwritev`/`pwritev2`.
    pub offset: Option<u64>,
    /// The call as logged (unfinished and resumed parts joined).
    pub text: String,
}

impl Call {
    /// The string arguments concatenated (a write buffer, or the iovecs of writev/sendmsg).
    pub fn data(&self) -> Vec<u8> {
        self.strings.concat()
    }

    pub fn data_contains(&self, needle: &[u8]) -> bool {
        !needle.is_empty() && self.data().windows(needle.len()).any(|w| w == needle)
    }

    pub fn ok(&self) -> bool {
        self.finished && self.ret.is_some_and(|r| r >= 0)
    }

    /// The logged text, shortened for messages.
    pub fn short(&self, max: usize) -> String {
        let t = if self.start == self.end {
            format!(
                "[line {}] {} {}",
                self.start + 1,
                self.start_time,
                self.text
            )
        } else {
            format!(
                "[lines {}..{}] {}..{} {}",
                self.start + 1,
                self.end + 1,
                self.start_time,
                self.end_time,
                self.text
            )
        };
        if t.len() <= max {
            t
        } else {
            let mut cut = max;
            while !t.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}…({} chars)", &t[..cut], t.len())
        }
    }
}

/// Parse a whole `strace -f -tt -y` log. Calls are returned in order of their start line.
pub fn parse(log: &str) -> Vec<Call> {
    let mut calls: Vec<Call> = Vec::new();
    // pid → index in `calls` of its unfinished call.
    let mut open: HashMap<u32, usize> = HashMap::new();
    for (lineno, line) in log.lines().enumerate() {
        let (pid, rest) = split_word(line);
        let (pid, rest) = match pid.parse::<u32>() {
            Ok(p) => (p, rest),
            Err(_) => (0, line),
        };
        let (time, body) = split_word(rest);
        if body.starts_with("+++") || body.starts_with("---") || body.is_empty() {
            continue;
        }
        if let Some(after) = body.strip_prefix("<... ") {
            let Some((name, tail)) = after.split_once(" resumed>") else {
                continue;
            };
            let Some(i) = open.remove(&pid) else {
                continue;
            };
            let c = &mut calls[i];
            if c.name != name {
                continue;
            }
            c.text.push_str(tail);
            c.end = lineno;
            c.end_time = time.to_string();
            finish(c);
            continue;
        }
        let Some(paren) = body.find('(') else {
            continue;
        };
        let name = body[..paren].to_string();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let mut c = Call {
            pid,
            name,
            start: lineno,
            end: lineno,
            start_time: time.to_string(),
            end_time: time.to_string(),
            ..Default::default()
        };
        if let Some(head) = body.strip_suffix(" <unfinished ...>") {
            c.text = head.to_string();
            // A thread has at most one call in progress; a stale one never completed.
            open.insert(pid, calls.len());
            calls.push(c);
        } else {
            c.text = body.to_string();
            finish(&mut c);
            calls.push(c);
        }
    }
    calls
}

fn split_word(s: &str) -> (&str, &str) {
    match s.split_once(' ') {
        Some((a, b)) => (a, b.trim_start()),
        None => (s, ""),
    }
}

/// Decode fd path, strings and return value from the complete text.
fn finish(c: &mut Call) {
    let text = c.text.clone();
    let args = &text[c.name.len() + 1..];
    // First argument `N<path>`.
    let digits = args.bytes().take_while(|b| b.is_ascii_digit()).count();
    if digits > 0 && args[digits..].starts_with('<') {
        let rest = &args[digits + 1..];
        // The path ends at the '>' followed by ',' or ')' (paths rarely contain '>').
        let mut end = None;
        for (i, _) in rest.match_indices('>') {
            let next = rest[i + 1..].chars().next();
            if matches!(next, Some(',') | Some(')') | None) {
                end = Some(i);
                break;
            }
        }
        if let Some(e) = end {
            c.fd_path = Some(rest[..e].to_string());
        }
    }
    // String literals.
    let b = args.as_bytes();
    let mut i = 0;
    let mut ret_from = 0;
    while i < b.len() {
        if b[i] == b'"' {
            let (s, next) = unescape(b, i + 1);
            c.strings.push(s);
            i = next;
            if b[i..].starts_with(b"...") {
                c.truncated = true;
                i += 3;
            }
            ret_from = i;
        } else {
            i += 1;
        }
    }
    // pwrite offsets: the last argument (pwritev2: the one before the flags).
    if let Some(p) = args[ret_from..].rfind(") = ") {
        let nums: Vec<&str> = args[ret_from..ret_from + p]
            .split(", ")
            .map(|t| t.trim())
            .collect();
        let pick = match c.name.as_str() {
            "pwrite64" | "pwritev" => nums.last(),
            "pwritev2" => nums.len().checked_sub(2).and_then(|i| nums.get(i)),
            _ => None,
        };
        c.offset = pick.and_then(|t| t.parse().ok());
    }
    // Return value: after the last " = " that follows the last string literal.
    if let Some(p) = args[ret_from..].rfind(") = ") {
        let r = &args[ret_from + p + 4..];
        let tok = r.split_whitespace().next().unwrap_or("");
        c.ret = tok.parse::<i64>().ok().or_else(|| {
            tok.strip_prefix("0x")
                .and_then(|h| i64::from_str_radix(h, 16).ok())
        });
        c.finished = tok != "?";
    }
}

/// Unescape a strace string literal starting at `from` (just after the opening quote).
/// Returns the bytes and the index just after the closing quote.
fn unescape(b: &[u8], from: usize) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'"' => return (out, i + 1),
            b'\\' if i + 1 < b.len() => {
                let e = b[i + 1];
                i += 2;
                match e {
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'v' => out.push(0x0b),
                    b'f' => out.push(0x0c),
                    b'x' => {
                        let h = b[i..]
                            .iter()
                            .take(2)
                            .take_while(|c| c.is_ascii_hexdigit())
                            .count();
                        let v = std::str::from_utf8(&b[i..i + h])
                            .ok()
                            .and_then(|s| u8::from_str_radix(s, 16).ok())
                            .unwrap_or(0);
                        out.push(v);
                        i += h;
                    }
                    b'0'..=b'7' => {
                        let mut v: u32 = (e - b'0') as u32;
                        let mut n = 1;
                        while n < 3 && i < b.len() && (b'0'..=b'7').contains(&b[i]) {
                            v = v * 8 + (b[i] - b'0') as u32;
                            i += 1;
                            n += 1;
                        }
                        out.push(v as u8);
                    }
                    other => out.push(other),
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    (out, i)
}

/// `rename`/`renameat`/`renameat2`: (from, to) as absolute paths when strace shows them so
/// (relative names are joined to their dirfd's path).
pub fn rename_paths(c: &Call) -> Option<(String, String)> {
    let s = |k: usize| -> Option<String> {
        Some(String::from_utf8_lossy(c.strings.get(k)?).into_owned())
    };
    match c.name.as_str() {
        "rename" => Some((s(0)?, s(1)?)),
        "renameat" | "renameat2" => {
            // renameat(olddirfd<dir>, "old", newdirfd<dir>, "new"[, flags])
            let dirs: Vec<String> = dir_args(&c.text);
            let join = |d: Option<&String>, p: String| -> String {
                if p.starts_with('/') {
                    p
                } else {
                    match d {
                        Some(d) => format!("{d}/{p}"),
                        None => p,
                    }
                }
            };
            Some((join(dirs.first(), s(0)?), join(dirs.get(1), s(1)?)))
        }
        _ => None,
    }
}

/// `AT_FDCWD</x>` / `5</x>` decorations in order of appearance.
fn dir_args(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(p) = rest.find('<') {
        let before = &rest[..p];
        let is_fd = before.ends_with("AT_FDCWD")
            || before.chars().last().is_some_and(|ch| ch.is_ascii_digit());
        let after = &rest[p + 1..];
        match after.find('>') {
            Some(e) if is_fd => {
                out.push(after[..e].to_string());
                rest = &after[e + 1..];
            }
            _ => rest = after,
        }
    }
    out
}

/// `openat(dirfd, "path", flags...)`: the opened path (absolute if the log shows it so).
pub fn open_path(c: &Call) -> Option<String> {
    if c.name != "openat" && c.name != "open" {
        return None;
    }
    Some(String::from_utf8_lossy(c.strings.first()?).into_owned())
}

/// Read a log file (lossy UTF-8: strace escapes non-ASCII in strings anyway).
pub fn read_log(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

#[cfg(test)]
mod parser_tests {
    use super::*;

    #[test]
    fn joins_unfinished_and_resumed() {
        let log = "\
10 00:00:01.000001 pwrite64(9</s/db/db>, \"ab\\0\\016X\"..., 414, 0 <unfinished ...>
11 00:00:01.000002 fdatasync(11</s/db/db>) = 0
10 00:00:01.000003 <... pwrite64 resumed>) = 414
12 00:00:01.000004 sendto(13<socket:[36420]>, \"250 2.0.0 Ok: queued as ABC\\r\\n\", 33, MSG_NOSIGNAL, NULL, 0) = 33
12 00:00:01.000005 rename(\"/s/spool/1.tmp\", \"/s/spool/ABC\") = 0
";
        let c = parse(log);
        assert_eq!(c.len(), 4);
        assert_eq!(c[0].name, "pwrite64");
        assert_eq!((c[0].start, c[0].end), (0, 2));
        assert_eq!(c[0].fd_path.as_deref(), Some("/s/db/db"));
        assert_eq!(c[0].strings[0], b"ab\0\x0eX");
        assert!(c[0].truncated);
        assert_eq!(c[0].ret, Some(414));
        assert_eq!(c[0].offset, Some(0));
        assert_eq!(c[1].ret, Some(0));
        assert!(c[2].data_contains(b"queued as ABC\r\n"));
        assert_eq!(c[2].fd_path.as_deref(), Some("socket:[36420]"));
        assert_eq!(
            rename_paths(&c[3]),
            Some(("/s/spool/1.tmp".into(), "/s/spool/ABC".into()))
        );
    }
}
