//! End to end with a real downstream MTA: `cutover serve` (a real child process) relays mail to
//! a private Postfix instance (tests/support/postfix.rs) whose virtual(8) agent delivers into
//! Maildirs. Both targets point at that Postfix and differ only by `rcpt_domain`, so the Maildir
//! a message lands in shows the recipient Postfix saw: split delivery (alice -> old, carol ->
//! new), dual delivery (bob -> both, each exactly once), and bytes relayed verbatim (below the
//! trace headers cutover and Postfix prepend, the stored message equals what the test sent,
//! dot-stuffed lines included).

#[path = "support/common.rs"]
mod common;
#[path = "support/postfix.rs"]
mod postfix;
#[path = "support/smtp.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use support::{Gateway, queue_len};

const BOB: usize = 20;
const ALICE: usize = 6;
const CAROL: usize = 6;
/// Messages addressed to alice, bob and carol at once (split into an old and a new leg).
const MIXED: usize = 2;
const SENDER: &str = "sender@elsewhere.example";

/// Minimal SMTP client over a blocking TcpStream, reading whole multi-line replies.
struct Smtp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Smtp {
    fn connect(addr: SocketAddr) -> Smtp {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut c = Smtp {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        c.expect(220);
        c
    }

    fn reply(&mut self) -> (u16, String) {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.r.read_line(&mut line).unwrap();
            assert!(n > 0, "connection closed; so far: {all:?}");
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return (code, all);
            }
        }
    }

    fn expect(&mut self, code: u16) -> String {
        let (c, text) = self.reply();
        assert_eq!(c, code, "unexpected reply: {text}");
        text
    }

    fn cmd(&mut self, line: &str, code: u16) -> String {
        self.w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        self.expect(code)
    }

    /// One transaction; `msg` is CRLF text ending in CRLF, dot-stuffed here.
    fn send(&mut self, rcpts: &[&str], msg: &[u8]) {
        self.cmd(&format!("MAIL FROM:<{SENDER}>"), 250);
        for r in rcpts {
            self.cmd(&format!("RCPT TO:<{r}>"), 250);
        }
        self.cmd("DATA", 354);
        let mut wire = Vec::with_capacity(msg.len() + 64);
        for line in msg.split_inclusive(|&b| b == b'\n') {
            if line.first() == Some(&b'.') {
                wire.push(b'.');
            }
            wire.extend_from_slice(line);
        }
        wire.extend_from_slice(b".\r\n");
        self.w.write_all(&wire).unwrap();
        self.expect(250);
    }
}

/// A message with a unique Message-ID, a folded header and body lines that need dot-stuffing.
fn message(tag: &str, to: &str) -> Vec<u8> {
    format!(
        "Message-ID: <{tag}@e2e.test>\r\n\
         Date: Tue, 24 Nov 2026 12:00:00 +0000\r\n\
         From: Sender <{SENDER}>\r\n\
         To: {to}\r\n\
         Subject: postfix e2e {tag}\r\n\
         X-Folded: first part\r\n\tsecond part\r\n\
         \r\n\
         Hello {tag}.\r\n\
         .leading dot\r\n\
         ..two leading dots\r\n\
         .\r\n\
         \r\n\
         From the start of a line (no mbox quoting in a Maildir)\r\n\
         \ttab-indented, trailing spaces   \r\n\
         end of {tag}\r\n"
    )
    .into_bytes()
}

/// Unfolded header fields of the block `text` (LF line ends), as `(name, value)`.
fn fields(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            let last = out.last_mut().expect("continuation line without a header");
            last.1.push(' ');
            last.1.push_str(line.trim());
        } else {
            let (name, value) = line.split_once(':').expect("header line without a colon");
            out.push((name.to_string(), value.trim().to_string()));
        }
    }
    out
}

/// Checks one stored message against what was sent; returns its Message-ID tag.
fn check_stored(stored: &[u8], sent: &BTreeMap<String, Vec<u8>>, rcpt: &str) -> String {
    let text = String::from_utf8(stored.to_vec()).unwrap();
    let start = text
        .find("Message-ID: <")
        .unwrap_or_else(|| panic!("no Message-ID in stored message:\n{text}"));
    let tag = text[start + 13..].split('@').next().unwrap().to_string();
    let original = sent
        .get(&tag)
        .unwrap_or_else(|| panic!("unknown message {tag} stored for {rcpt}"));
    // The virtual agent stores LF line ends; the rest must be byte-identical.
    let expected = String::from_utf8(original.clone())
        .unwrap()
        .replace("\r\n", "\n");
    assert!(
        text[start..] == expected,
        "message {tag} for {rcpt} altered in transit\n--- sent\n{expected}\n--- stored\n{}",
        &text[start..]
    );

    // Above it: what Postfix's virtual agent (Return-Path, X-Original-To, Delivered-To) and smtpd
    // (Received) prepended, then cutover's three fields, each exactly once: edge
    // authentication's Authentication-Results (the client is not in trusted_networks), its
    // Received: and its loop header.
    let trace = fields(&text[..start]);
    let names: Vec<&str> = trace.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Return-Path",
            "X-Original-To",
            "Delivered-To",
            "Received",
            "Authentication-Results",
            "Received",
            "X-Cutover-Loop"
        ],
        "trace headers of {tag} for {rcpt}:\n{}",
        &text[..start]
    );
    assert_eq!(trace[0].1, format!("<{SENDER}>"), "envelope sender kept");
    // The recipient Postfix saw: the rcpt_domain rewrite of the target.
    assert_eq!(trace[1].1, rcpt, "X-Original-To");
    assert_eq!(trace[2].1, rcpt, "Delivered-To");
    assert!(
        trace[3].1.contains("by pf.test (Postfix)"),
        "Postfix's Received: {}",
        trace[3].1
    );
    assert!(
        trace[4].1.starts_with("mx1.example.com;"),
        "cutover's Authentication-Results: {}",
        trace[4].1
    );
    assert!(
        trace[5].1.contains("by mx1.example.com (cutover)"),
        "cutover's Received: {}",
        trace[5].1
    );
    assert_eq!(trace[6].1, "mx1.example.com");
    tag
}

#[test]
fn split_and_dual_delivery_into_postfix_maildirs() {
    let dir = tempfile::tempdir().unwrap();
    // Postfix's daemons (user postfix) and its virtual agent (user nobody) traverse the temp dir.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Every (user, domain) pair has a mailbox, so a wrongly routed copy is stored (and caught),
    // not rejected.
    let mut mailboxes = Vec::new();
    for user in ["alice", "bob", "carol"] {
        for side in ["old", "new"] {
            mailboxes.push((format!("{user}@{side}.example"), format!("{user}/{side}/")));
        }
    }
    let mb: Vec<(&str, &str)> = mailboxes
        .iter()
        .map(|(a, m)| (a.as_str(), m.as_str()))
        .collect();
    let pf = postfix::Postfix::start(
        &dir.path().join("postfix"),
        &["old.example", "new.example"],
        &mb,
    );

    let gw = Gateway::start_config(|smtp, admin, state| {
        format!(
            r#"[gateway]
hostname = "mx1.example.com"
listen = ["{smtp}"]
state_dir = "{state}"
accept_domains = ["example.com"]
min_free_space = "1MiB"

[targets.old]
address = "127.0.0.1:{port}"
tls = "none"
rcpt_domain = "old.example"
[targets.new]
address = "127.0.0.1:{port}"
tls = "none"
rcpt_domain = "new.example"

[routing]
default = ["old"]
[[routing.rule]]
name = "pilot"
recipients = ["bob@example.com"]
deliver = ["old", "new"]
[[routing.rule]]
name = "migrated"
recipients = ["carol@example.com"]
deliver = ["new"]

[queue]
retry_schedule = ["1s"]

[admin]
listen = "{admin}"
"#,
            state = state.display(),
            port = pf.port,
        )
    });
    let (smtp, cfg) = (gw.smtp, gw.config.clone());

    // Send: tag -> bytes; expected: mailbox address -> tags.
    let mut sent: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut c = Smtp::connect(smtp);
    c.cmd("EHLO client.e2e.test", 250);
    let plan = [
        ("bob", BOB, vec!["bob@example.com"]),
        ("alice", ALICE, vec!["alice@example.com"]),
        ("carol", CAROL, vec!["carol@example.com"]),
        (
            "mixed",
            MIXED,
            vec!["alice@example.com", "bob@example.com", "carol@example.com"],
        ),
    ];
    for (kind, n, rcpts) in &plan {
        for i in 0..*n {
            let tag = format!("{kind}-{i}");
            let msg = message(&tag, &rcpts.join(", "));
            c.send(rcpts, &msg);
            sent.insert(tag.clone(), msg);
            for r in rcpts {
                let user = r.split('@').next().unwrap();
                let sides: &[&str] = match user {
                    "bob" => &["old", "new"],
                    "alice" => &["old"],
                    _ => &["new"],
                };
                for side in sides {
                    expected
                        .entry(format!("{user}@{side}.example"))
                        .or_default()
                        .push(tag.clone());
                }
            }
        }
    }
    c.cmd("QUIT", 221);

    // Wait until every expected copy is stored and cutover's queue is empty.
    let total: usize = expected.values().map(Vec::len).sum();
    let t = Instant::now();
    loop {
        let stored: usize = pf.mailboxes.keys().map(|a| pf.count(a)).sum();
        if stored >= total && queue_len(&cfg) == Some(0) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "only {stored}/{total} copies stored after 60 s (queue: {:?}); maillog:\n{}\ncutover log:\n{}",
            queue_len(&cfg),
            pf.maillog_text(),
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Each mailbox holds exactly its expected messages, each once, each byte-identical.
    for address in pf.mailboxes.keys() {
        let mut got: Vec<String> = pf
            .messages(address)
            .iter()
            .map(|m| check_stored(m, &sent, address))
            .collect();
        got.sort();
        let mut want = expected.get(address).cloned().unwrap_or_default();
        want.sort();
        assert_eq!(got, want, "messages in the Maildir of {address}");
    }
    assert_eq!(expected["bob@old.example"].len(), BOB + MIXED);
    assert_eq!(expected["bob@new.example"].len(), BOB + MIXED);

    // Postfix logged every delivery and nothing else of note (postlogd writes asynchronously:
    // poll briefly).
    let t = Instant::now();
    loop {
        let log = pf.maillog_text();
        let sent_lines = log
            .lines()
            .filter(|l| l.contains("relay=virtual") && l.contains("status=sent"))
            .count();
        if sent_lines >= total {
            assert_eq!(sent_lines, total, "maillog:\n{log}");
            let bad: Vec<&str> = log
                .lines()
                .filter(|l| {
                    ["warning:", "fatal:", "panic:", "reject:"]
                        .iter()
                        .any(|w| l.contains(w))
                })
                .collect();
            assert!(bad.is_empty(), "Postfix complained: {bad:#?}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{sent_lines}/{total} status=sent lines; maillog:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
