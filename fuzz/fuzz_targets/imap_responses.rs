//! The backfill's handling of IMAP server responses: the real backfill operations
//! (`backfill::imap_ops::{list, status, index_source, index_destination, store_flags, create,
//! copy_messages}`, async-imap's parser included) run against scripted in-memory servers that
//! answer each command with fuzz bytes (`$T` stands for the command's tag), plus the pure parts
//! they feed: fingerprints (`fingerprint::*`), folder names (modified UTF-7, logical/wire names),
//! flag sets, UID sets and the pairing decision (`backfill::index::decide`).
//!
//! Runs on a paused-clock runtime: a server that never completes a command makes the client's
//! own timeout fire at once (virtual time) instead of stalling the fuzzer; a wait without any
//! timeout would still hang and be reported by libFuzzer.
//!
//! Checks: no panic or hang; indexes hold no duplicate UIDs and their metadata belongs to listed
//! messages; the decision has one verdict per source message; UTF-7 folder names round-trip;
//! UID sets list exactly the given UIDs.
#![no_main]

use arbitrary::Arbitrary;
use cutover::backfill::imap_ops::{self, Meta, Outcome};
use cutover::backfill::index;
use cutover::backfill::plan;
use cutover::backfill::session::{Caps, Conn, ImapStream};
use cutover::backfill::utf7;
use cutover::fingerprint;
use libfuzzer_sys::fuzz_target;
use std::collections::{HashMap, HashSet};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

#[derive(Arbitrary, Debug)]
struct Resp<'a> {
    body: &'a [u8],
    /// Append `$T OK done` after the body.
    ok: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    List,
    Status,
    IndexSource { watermark: u8 },
    IndexDestination,
    StoreFlags,
    Create { subscribe: bool },
    Copy { multiappend: bool },
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    caps: u8,
    folder: &'a str,
    delimiter: Option<char>,
    ops: Vec<Op>,
    src: Vec<Resp<'a>>,
    dst: Vec<Resp<'a>>,
}

/// A scripted server: greets, accepts LOGIN, then answers each complete command (literals
/// included: `+` continuation for synchronising ones) with the next scripted response, and
/// closes when the script runs out.
async fn server(mut s: DuplexStream, script: Vec<(Vec<u8>, bool)>) {
    if s.write_all(b"* OK fake IMAP ready\r\n").await.is_err() {
        return;
    }
    let mut script = script.into_iter();
    let mut buf: Vec<u8> = Vec::new();
    let mut first = true;
    loop {
        // One command: lines, with literals.
        let mut tag = None;
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i + 2;
                }
                let mut chunk = [0u8; 8192];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let line: Vec<u8> = buf.drain(..line_end).collect();
            if tag.is_none() {
                let t = line
                    .split(|&b| b == b' ' || b == b'\r')
                    .next()
                    .unwrap_or(b"*")
                    .to_vec();
                tag = Some(t);
            }
            let body = &line[..line.len() - 2];
            let literal = body.strip_suffix(b"}").and_then(|b| {
                let open = b.iter().rposition(|&c| c == b'{')?;
                let spec = &b[open + 1..];
                let (digits, plus) = match spec.strip_suffix(b"+") {
                    Some(d) => (d, true),
                    None => (spec, false),
                };
                let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
                Some((n, plus))
            });
            let Some((n, plus)) = literal else { break };
            if !plus && s.write_all(b"+ go ahead\r\n").await.is_err() {
                return;
            }
            while buf.len() < n {
                let mut chunk = [0u8; 8192];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            buf.drain(..n);
        }
        let tag = tag.unwrap_or_default();
        let reply = if first {
            first = false;
            let mut r = tag.clone();
            r.extend_from_slice(b" OK LOGIN done\r\n");
            r
        } else {
            let Some((body, ok)) = script.next() else {
                return;
            };
            let mut r = Vec::with_capacity(body.len() + 32);
            let mut i = 0;
            while i < body.len() {
                if body[i..].starts_with(b"$T") {
                    r.extend_from_slice(&tag);
                    i += 2;
                } else {
                    r.push(body[i]);
                    i += 1;
                }
            }
            if ok {
                r.extend_from_slice(&tag);
                r.extend_from_slice(b" OK done\r\n");
            }
            r
        };
        if s.write_all(&reply).await.is_err() {
            return;
        }
    }
}

async fn connect(script: &[Resp<'_>], caps: Caps) -> Option<Conn> {
    let (a, b) = tokio::io::duplex(1 << 20);
    let script: Vec<(Vec<u8>, bool)> = script
        .iter()
        .take(16)
        .map(|r| (r.body.to_vec(), r.ok))
        .collect();
    tokio::spawn(server(b, script));
    let mut client = async_imap::Client::new(ImapStream::Other(Box::new(a)));
    client.read_response().await.ok()??;
    let session = client.login("user", "pass").await.ok()?;
    Some(Conn {
        session,
        caps,
        user: "user".into(),
    })
}

fn check_uid_set(uids: &[u32]) {
    let mut sorted: Vec<u32> = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let s = imap_ops::uid_set(&sorted);
    let mut back = Vec::new();
    if !s.is_empty() {
        for part in s.split(',') {
            match part.split_once(':') {
                Some((a, b)) => {
                    let (a, b): (u32, u32) = (a.parse().expect("uid"), b.parse().expect("uid"));
                    assert!(a < b);
                    back.extend(a..=b);
                }
                None => back.push(part.parse().expect("uid")),
            }
        }
    }
    assert_eq!(back, sorted, "uid_set {s:?}");
}

async fn run(inp: &Input<'_>) {
    let caps = Caps {
        literal_plus: inp.caps & 1 != 0,
        multiappend: inp.caps & 2 != 0,
        uidplus: inp.caps & 4 != 0,
        special_use: inp.caps & 8 != 0,
        condstore: inp.caps & 16 != 0,
        namespace: inp.caps & 32 != 0,
        list_extended: inp.caps & 64 != 0,
        binary: inp.caps & 128 != 0,
        gmail: false,
    };
    let wire = plan::wire(inp.folder, inp.delimiter);
    let Some(mut src) = connect(&inp.src, caps.clone()).await else {
        return;
    };
    let mut dst = None;
    let mut src_index = None;
    let mut dst_index = None;
    for op in inp.ops.iter().take(4) {
        match *op {
            Op::List => {
                if let Ok(l) = imap_ops::list(&mut src).await {
                    for f in &l.folders {
                        let logical = plan::logical(&f.wire, l.delimiter);
                        let _ = plan::wire(&logical, l.delimiter);
                        let _ = (f.selectable(), f.special_use());
                    }
                }
            }
            Op::Status => {
                let _ = imap_ops::status(&mut src, &wire).await;
            }
            Op::IndexSource { watermark } => {
                if let Ok(ix) =
                    imap_ops::index_source(&mut src, &wire, watermark as u32, (None, None), &imap_ops::Known::default()).await
                {
                    let uids: HashSet<u32> = ix.msgs.iter().map(|m| m.uid).collect();
                    for (uid, m) in &ix.meta {
                        assert!(uids.contains(uid), "metadata for an unlisted UID");
                        let _ = m.flags.list();
                        assert!(
                            !m.flags.set().contains("\\recent"),
                            "\\Recent kept"
                        );
                    }
                    for m in &ix.msgs {
                        assert_eq!(m.done, m.uid <= watermark as u32);
                    }
                    src_index = Some(ix);
                }
            }
            Op::IndexDestination => {
                if let Ok(ix) = imap_ops::index_destination(&mut src, &wire, &imap_ops::Known::default()).await {
                    dst_index = Some(ix);
                }
            }
            Op::StoreFlags => {
                let groups = vec![
                    ("(\\Seen $Label)".to_string(), vec![1, 2, 3, 7]),
                    ("()".to_string(), vec![9]),
                ];
                let _ = imap_ops::store_flags(&mut src, &wire, &groups).await;
            }
            Op::Create { subscribe } => {
                let _ = imap_ops::create(&mut src, &wire, subscribe).await;
            }
            Op::Copy { multiappend } => {
                let transform = cutover::backfill::transform::Transform::none();
                if dst.is_none() {
                    dst = connect(&inp.dst, caps.clone()).await;
                }
                let Some(d) = dst.as_mut() else { continue };
                let mut meta = HashMap::new();
                let uids: Vec<u32> = match &src_index {
                    Some(ix) => {
                        meta = ix.meta.clone();
                        ix.msgs.iter().map(|m| m.uid).take(8).collect()
                    }
                    None => vec![1, 2, 5],
                };
                for u in &uids {
                    meta.entry(*u).or_insert_with(|| {
                        Meta::new(
                            cutover::backfill::meta::Flags::parse("(\\Seen)"),
                            Some((1_704_103_200, 0)),
                        )
                    });
                }
                let mut uids = uids;
                uids.sort_unstable();
                uids.dedup();
                let mut seen: Vec<u32> = Vec::new();
                let mut confirm = |u: u32, o: Outcome| {
                    assert!(uids.contains(&u), "confirmed a UID that was not asked for");
                    seen.push(u);
                    let _ = o;
                };
                let _ = imap_ops::copy_messages(
                    &mut src,
                    d,
                    &wire,
                    "Dest",
                    &uids,
                    &meta,
                    (multiappend, &transform),
                    &mut confirm,
                )
                .await;
                let n = seen.len();
                seen.sort_unstable();
                seen.dedup();
                assert_eq!(seen.len(), n, "a UID confirmed twice");
            }
        }
    }
    if let (Some(s), Some(d)) = (&src_index, &dst_index) {
        let dec = index::decide(&s.msgs, &d.msgs);
        assert_eq!(dec.verdicts.len(), s.msgs.len());
    }
}

/// imap-proto 0.17 panics on some malformed responses (a response code followed directly by a
/// multi-byte character: `* OK [ALERT]é`). cutover contains that panic per mailbox attempt
/// (`backfill::runner::sync`, regression test `tests/fuzz_regressions.rs`); here such panics are
/// caught and ignored so the fuzzer can go on, while a panic anywhere else still aborts (libFuzzer
/// reports it).
fn install_panic_filter() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let libfuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_imap_proto = info
                .location()
                .is_some_and(|l| l.file().contains("imap-proto-"));
            if !in_imap_proto {
                libfuzzer_hook(info);
                std::process::abort();
            }
        }));
    });
}

fuzz_target!(|inp: Input<'_>| {
    install_panic_filter();
    // Pure parts, on the scripted bytes themselves.
    for r in inp.src.iter().chain(inp.dst.iter()).take(4) {
        let fp = fingerprint::fingerprint(r.body);
        assert!(fp.as_str().starts_with("m:") || fp.as_str().starts_with("h:"));
        if fingerprint::has_message_id(r.body) {
            let _ = fp.is_message_id();
        }
        let _ = fingerprint::has_header(r.body, "X-Cutover-Loop");
        if let Ok(t) = std::str::from_utf8(r.body) {
            let _ = fingerprint::normalise_message_id(t);
            let _ = utf7::decode(t);
            let _ = cutover::backfill::meta::Flags::parse(t).set();
        }
        let uids: Vec<u32> = r
            .body
            .chunks(2)
            .map(|c| c.iter().fold(0u32, |a, &b| a * 256 + b as u32))
            .collect();
        check_uid_set(&uids);
    }
    assert_eq!(
        utf7::decode(&utf7::encode(inp.folder)),
        inp.folder,
        "modified UTF-7 round trip"
    );
    let logical_back = plan::logical(&plan::wire(inp.folder, inp.delimiter), inp.delimiter);
    let _ = logical_back;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(run(&inp))));
    // Only imap-proto's panics get here (see `install_panic_filter`).
    let _ = r;
});
