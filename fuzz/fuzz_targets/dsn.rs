//! The DSN builder: `bounce::build` through `bounce::stage` (the pure staging of a bounce as a
//! queue message) with arbitrary original header bytes and arbitrary sender, recipient, target,
//! remote-MTA and reply strings; `cutover::header::section`, and (for some inputs)
//! `bounce::original_headers` reading an arbitrary body back from a real queue on tmpfs.
//!
//! Checks: the DSN is CRLF-only 7-bit text with lines of at most 998 bytes outside the returned
//! headers, its own header section has exactly the fixed fields (nothing injected), it parses
//! (mail-parser) as `multipart/report; report-type=delivery-status` with the three RFC 3464
//! parts (text/plain, message/delivery-status with one recipient block per recipient,
//! text/rfc822-headers), and it is staged from `<>` to the original sender on one leg.
#![no_main]

use arbitrary::Arbitrary;
use cutover::bounce::{self, DsnKind, DsnRecipient};
use cutover::config::Config;
use cutover::queue::model::{BodyLocation, MessageRecord};
use cutover::queue::{Envelope, Queue, QueueId};
use libfuzzer_sys::fuzz_target;
use mail_parser::MimeHeaders;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

#[derive(Arbitrary, Debug)]
struct Rcpt<'a> {
    original: &'a str,
    final_rcpt: &'a str,
    target: &'a str,
    remote_mta: Option<&'a str>,
    diagnostic: &'a str,
    last_attempt: Option<u32>,
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    delay: Option<u32>,
    sender: &'a str,
    queue_id: &'a str,
    arrival: u32,
    now: u32,
    rcpts: Vec<Rcpt<'a>>,
    through_queue: bool,
    headers: &'a [u8],
}

struct Env {
    cfg: Config,
    rt: tokio::runtime::Runtime,
    queue: Queue,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = cutover_fuzz::scratch("dsn");
        let text = cutover_fuzz::config_text(&dir.join("state"), None);
        let cfg = cutover::loader::parse(&text, &dir.join("cutover.toml"))
            .expect("fuzz config is valid")
            .config;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let queue = Queue::open(&dir.join("state")).expect("queue");
        Env { cfg, rt, queue }
    })
}

fn t(s: u32) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(s as u64)
}

fuzz_target!(|inp: Input<'_>| {
    let e = env();
    let rcpts: Vec<DsnRecipient> = inp
        .rcpts
        .iter()
        .take(8)
        .map(|r| DsnRecipient {
            original: r.original.into(),
            final_rcpt: r.final_rcpt.into(),
            target: r.target.into(),
            remote_mta: r.remote_mta.map(str::to_string),
            diagnostic: r.diagnostic.into(),
            last_attempt: r.last_attempt.map(t),
        })
        .collect();
    let kind = match inp.delay {
        Some(s) => DsnKind::Delay {
            will_retry_until: t(s),
        },
        None => DsnKind::Failure,
    };

    // The header block of the original, as `original_headers` returns it.
    let block = cutover::header::section(inp.headers);
    assert!(inp.headers.starts_with(block));
    let headers = if inp.through_queue {
        e.rt.block_on(async {
            let mut w = e.queue.body_writer().expect("body writer");
            w.write(inp.headers).await.expect("body write");
            let env = Envelope {
                mail_from: "a@example.org".into(),
                helo: "h".into(),
                client_addr: "127.0.0.1:0".parse().expect("addr"),
                received_at: t(inp.arrival),
                smtputf8: false,
                body_8bit: false,
            };
            let id = e.queue.commit(w, env, Vec::new()).await.expect("commit");
            let got = bounce::original_headers(&e.queue, &id).await;
            e.queue.remove(&id).await.expect("remove");
            let limit = inp.headers.len().min(64 * 1024);
            assert_eq!(
                got,
                cutover::header::section(&inp.headers[..limit]),
                "original_headers"
            );
            got
        })
    } else {
        block.to_vec()
    };

    let original = MessageRecord {
        id: QueueId(inp.queue_id.to_string()),
        envelope: Envelope {
            mail_from: inp.sender.to_string(),
            helo: "client.example.org".into(),
            client_addr: "192.0.2.1:25".parse().expect("addr"),
            received_at: t(inp.arrival),
            smtputf8: false,
            body_8bit: false,
        },
        size: inp.headers.len() as u64,
        body: BodyLocation::Inline,
        legs: Vec::new(),
        next_leg_id: 0,
        body_missing: false,
        seals: Default::default(),
    };
    let staged = bounce::stage(
        QueueId("DSN0001".into()),
        &e.cfg,
        &original,
        kind,
        &rcpts,
        &headers,
        t(inp.now),
    );
    let Some(staged) = staged else {
        assert!(
            inp.sender.is_empty() || rcpts.is_empty(),
            "no DSN for a real sender and recipients"
        );
        return;
    };
    assert!(
        !inp.sender.is_empty() && !rcpts.is_empty(),
        "DSN to <> or about nobody"
    );
    assert_eq!(staged.rec.envelope.mail_from, "", "a DSN is sent from <>");
    assert_eq!(staged.rec.legs.len(), 1);
    let msg = staged.inline_body.expect("inline DSN body");

    // CRLF only; 7-bit and short lines outside the returned original headers.
    for (i, &c) in msg.iter().enumerate() {
        match c {
            b'\n' => assert!(i > 0 && msg[i - 1] == b'\r', "bare LF in DSN at {i}"),
            b'\r' if !headers.contains(&b'\r') => {
                assert!(msg.get(i + 1) == Some(&b'\n'), "bare CR in DSN at {i}")
            }
            _ => {}
        }
    }
    let marker = b"Content-Type: text/rfc822-headers\r\n\r\n";
    let part3 = msg
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("part 3");
    let ours = &msg[..part3];
    assert!(ours.is_ascii(), "non-ASCII outside the returned headers");
    for line in ours.split(|&b| b == b'\n') {
        assert!(line.len() <= 1000, "line over 998 bytes in the DSN");
    }

    // The DSN's own header section: exactly our fields.
    let head_end = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header section");
    let head = std::str::from_utf8(&msg[..head_end]).expect("ASCII header");
    let names: Vec<&str> = head
        .split("\r\n")
        .filter(|l| !l.starts_with('\t') && !l.starts_with(' '))
        .map(|l| l.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "From",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "Auto-Submitted",
            "MIME-Version",
            "Content-Type"
        ],
        "DSN header fields"
    );

    // MIME structure (RFC 3464), unless an input string contains the boundary delimiter itself
    // (the boundary is built from the queue id and the time of the bounce, which a sender cannot
    // know in advance; the fuzzer chooses both).
    let host = "mx1.example.com";
    let id: String = inp
        .queue_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(40)
        .collect();
    let boundary = format!("--{id}.{}/{host}", inp.now);
    // Three part delimiters and the closing one; more means an input string carries the
    // boundary (in the headers, or in a recipient or reply text).
    let in_inputs = msg
        .windows(boundary.len())
        .filter(|w| *w == boundary.as_bytes())
        .count()
        > 4;
    if in_inputs {
        return;
    }
    let parsed = mail_parser::MessageParser::default()
        .parse(&msg)
        .expect("DSN parses");
    let ct = parsed.content_type().expect("content type");
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("report"));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    assert_eq!(parsed.parts.len(), 4, "root + 3 parts");
    let sub = |i: usize| {
        let c = parsed.parts[i].content_type().expect("part content type");
        format!("{}/{}", c.ctype(), c.subtype().unwrap_or(""))
    };
    assert_eq!(sub(1), "text/plain");
    assert_eq!(sub(2), "message/delivery-status");
    assert_eq!(sub(3), "text/rfc822-headers");
    let status = std::str::from_utf8(&msg)
        .ok()
        .map(|s| s.matches("\r\nFinal-Recipient: rfc822; ").count());
    if let Some(n) = status {
        assert!(n >= rcpts.len(), "one recipient block per recipient");
    }
});
