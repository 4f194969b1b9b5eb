//! Power-safe acknowledgement (DESIGN.md §3 "Acceptance"): every `250 2.0.0` after DATA is sent
//! only after an `fsync`/`fdatasync` (or `syncfs`) of the sled db file `<state_dir>/db/db`
//! issued after the message's data had been written to that file; and a spooled body
//! (`<state_dir>/spool/<id>`, bodies > 128 KiB) only after an fsync of the spool file (after its
//! last write) and of the spool directory (after the rename that created `<id>`). sled's own
//! flush ends in `sync_file_range`, which writes no metadata and does not flush the disk cache:
//! it does not count.
//!
//! Method: `cutover serve --no-deliver` (intake only) runs under `strace -f -y`; 20 concurrent
//! SMTP sessions send 200 messages (5 of them 200 KiB); then the log is checked reply by reply.
//! For a reply carrying queue id X:
//!   E = X's log entry: the first write to the db file whose data carries X (sled writes the
//!       transaction's items together: record key and JSON, inline body, due key — all carry X);
//!   G = the write that completed last among E and the writes to the db file just below E's
//!       offset (within 64 KiB: sled's batch manifest precedes the items) that completed before
//!       the reply;
//!   there must be a successful sync of the db file that started after G completed and
//!       completed before the reply was sent.
//! Happened-before comes from log positions, not timestamps (see tests/support/strace.rs).
//!
//! Why not "the last db write of anyone before the reply": under group commit the next group's
//! leader is already writing while the previous group's waiters send their 250s, so a correct
//! implementation fails that rule for most replies; how many pass it is printed for
//! information. Why not "the last write carrying X": sled later rewrites whole pages
//! (consolidation) that carry X again; those copies are redundant and need not be durable.
//! sled's flusher thread also fsyncs the db file every 500 ms, which may cover a few replies by
//! luck on unfixed code; every reply must be covered, so that cannot hide the defect.
//!
//! Needs strace: under `CI=true` a missing/unusable strace fails the test; elsewhere it skips.
//! The full strace log is kept in `$CARGO_TARGET_TMPDIR/power_safe_ack.strace`.

#[path = "support/common.rs"]
mod common;
#[path = "support/smtp.rs"]
mod support;

#[path = "support/strace.rs"]
mod strace;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use strace::Call;
use support::*;

const CLIENTS: usize = 20;
const PER_CLIENT: usize = 10;
/// Every BIG_EVERY-th message is 200 KiB (spooled); the others about 2 KB (inline in sled).
const BIG_EVERY: usize = 40;
/// Length of a queue id (Crockford base32).
const ID_LEN: usize = 14;
/// How far below a message's log entry its batch may start (sled writes a small batch manifest
/// just before the items; a test message's items are a few KiB).
const BATCH_WINDOW: u64 = 64 * 1024;

const WRITES: &[&str] = &["write", "pwrite64", "writev", "pwritev", "pwritev2"];
const SENDS: &[&str] = &["write", "writev", "sendto", "sendmsg"];

fn body_for(n: usize) -> Vec<u8> {
    let token = format!("psa{n:05}x{}", fastrand::u32(..));
    let mut b = format!(
        "From: load@client.test\r\nTo: alice@example.com\r\nSubject: power-safe {token}\r\nMessage-ID: <{token}@client.test>\r\n\r\n"
    );
    let lines = if n.is_multiple_of(BIG_EVERY) {
        2800
    } else {
        25
    };
    for i in 0..lines {
        b.push_str(&format!("{token} line {i:05} {}\r\n", "z".repeat(60)));
    }
    b.into_bytes()
}

/// Sent by one client: (message number, spooled size?, queue id).
async fn client(addr: std::net::SocketAddr, k: usize) -> Vec<(usize, bool, String)> {
    let mut c = Client::greeted(addr).await;
    let r = c.cmd("EHLO load.client.test").await;
    assert_eq!(r.code, 250, "EHLO: {r:?}");
    let mut out = Vec::new();
    for j in 0..PER_CLIENT {
        let n = k * PER_CLIENT + j;
        let r = send_message(
            &mut c,
            "load@client.test",
            &["alice@example.com"],
            &body_for(n),
        )
        .await;
        let id =
            queued_id(&r).unwrap_or_else(|| panic!("message {n}: expected 250 2.0.0, got {r:?}"));
        out.push((n, n.is_multiple_of(BIG_EVERY), id));
    }
    let _ = c.cmd("QUIT").await;
    out
}

/// What the checker needs to know about the state directory.
struct Paths {
    state: String,
    db: String,
    spool: String,
}

impl Paths {
    fn new(state: &Path) -> Paths {
        let state = state.canonicalize().unwrap_or_else(|_| state.to_path_buf());
        let s = |p: PathBuf| p.to_string_lossy().into_owned();
        Paths {
            db: s(state.join("db").join("db")),
            spool: s(state.join("spool")),
            state: s(state),
        }
    }
}

/// Result of checking one log.
#[derive(Default)]
struct Report {
    /// Replies seen (queue id, call index).
    replies: Vec<(String, usize)>,
    violations: Vec<String>,
    /// fsync/fdatasync/syncfs calls that count for the db file.
    db_syncs: usize,
    /// sync_file_range calls on the db file (sled's own flush; do not count).
    db_sync_file_ranges: usize,
    /// Replies whose own last db write was synced before them.
    covered: usize,
    /// Distinct syncs that were the first to cover some reply.
    covering_syncs: HashSet<usize>,
    /// Replies for which even the last db write of *anyone* before the reply was synced.
    strict_rule_ok: usize,
    spooled_checked: usize,
}

fn is_sync(c: &Call) -> bool {
    matches!(c.name.as_str(), "fsync" | "fdatasync" | "syncfs")
}

/// A successful sync that makes a file at one of `paths` durable (syncfs: any fd in the state
/// directory's filesystem).
fn syncs_file(c: &Call, paths: &[&str], p: &Paths) -> bool {
    if !c.ok() || !is_sync(c) {
        return false;
    }
    let Some(fd) = c.fd_path.as_deref() else {
        return false;
    };
    match c.name.as_str() {
        "syncfs" => fd.starts_with(&p.state),
        _ => paths.contains(&fd),
    }
}

/// Every queue id (14 chars of [0-9A-Z]) that occurs in `data`.
fn ids_in(data: &[u8], wanted: &HashSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let ok = |b: u8| b.is_ascii_digit() || b.is_ascii_uppercase();
    let mut i = 0;
    while i < data.len() {
        if !ok(data[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < data.len() && ok(data[i]) {
            i += 1;
        }
        if i - start >= ID_LEN {
            for w in data[start..i].windows(ID_LEN) {
                let s = String::from_utf8_lossy(w);
                if wanted.contains(s.as_ref()) {
                    out.push(s.into_owned());
                }
            }
        }
    }
    out
}

/// Queue ids in `250 2.0.0 ... queued as ID` replies of a socket write.
fn reply_ids(c: &Call) -> Vec<String> {
    if !SENDS.contains(&c.name.as_str()) {
        return Vec::new();
    }
    // Sockets: `socket:[n]` (-y) or `TCP:[..]` (-yy); never a file path.
    if c.fd_path.as_deref().is_none_or(|p| p.starts_with('/')) {
        return Vec::new();
    }
    let data = String::from_utf8_lossy(&c.data()).into_owned();
    let mut out = Vec::new();
    for line in data.split("\r\n") {
        if line.starts_with("250 2.0.0")
            && let Some((_, rest)) = line.split_once("queued as ")
        {
            let id: String = rest
                .chars()
                .take_while(|ch| ch.is_ascii_alphanumeric())
                .collect();
            if !id.is_empty() {
                out.push(id.to_ascii_uppercase());
            }
        }
    }
    out
}

fn around(calls: &[Call], from_line: usize, to_line: usize, p: &Paths, max: usize) -> String {
    let mut lines: Vec<String> = calls
        .iter()
        .filter(|c| c.start >= from_line && c.start <= to_line)
        .filter(|c| {
            c.fd_path.as_deref().is_some_and(|f| f == p.db)
                && (is_sync(c) || c.name == "sync_file_range" || WRITES.contains(&c.name.as_str()))
        })
        .map(|c| format!("      {}", c.short(220)))
        .collect();
    if lines.len() > max {
        let n = lines.len();
        lines.drain(max / 2..n - max / 2);
        lines.insert(max / 2, format!("      … ({} more)", n - max));
    }
    if lines.is_empty() {
        "      (no write or sync of the db file in between)".into()
    } else {
        lines.join("\n")
    }
}

/// Check a parsed log. `spooled` are the ids whose bodies must be in spool files.
fn check(calls: &[Call], p: &Paths, spooled: &HashSet<String>) -> Report {
    let mut rep = Report::default();
    for (i, c) in calls.iter().enumerate() {
        for id in reply_ids(c) {
            rep.replies.push((id, i));
        }
    }
    let wanted: HashSet<String> = rep.replies.iter().map(|(id, _)| id.clone()).collect();
    let on_db = |c: &Call| c.fd_path.as_deref() == Some(p.db.as_str());
    // Writes to the db file, and the reply ids each carries.
    let db_writes: Vec<usize> = (0..calls.len())
        .filter(|&i| {
            let c = &calls[i];
            on_db(c) && WRITES.contains(&c.name.as_str()) && c.ok()
        })
        .collect();
    let mut writes_of: HashMap<String, Vec<usize>> = HashMap::new();
    for &w in &db_writes {
        for id in ids_in(&calls[w].data(), &wanted) {
            writes_of.entry(id).or_default().push(w);
        }
        if calls[w].truncated {
            rep.violations.push(format!(
                "strace cut a db write short (raise -s): {}",
                calls[w].short(200)
            ));
        }
    }
    let db_syncs: Vec<usize> = (0..calls.len())
        .filter(|&i| syncs_file(&calls[i], &[p.db.as_str()], p))
        .collect();
    rep.db_syncs = db_syncs.len();
    rep.db_sync_file_ranges = calls
        .iter()
        .filter(|c| on_db(c) && c.name == "sync_file_range")
        .count();

    for (id, ri) in &rep.replies {
        let r = &calls[*ri];
        // Per message: X's log entry (the first db write carrying X) and everything the log
        // holds below it (within BATCH_WINDOW: sled's batch manifest precedes the items), then a
        // sync, then the reply.
        let first = writes_of
            .get(id)
            .into_iter()
            .flatten()
            .filter(|&&w| calls[w].end < r.start)
            .min_by_key(|&&w| calls[w].end);
        match first {
            None => rep.violations.push(format!(
                "{id}: no write to {} carrying this queue id before its reply\n    reply: {}",
                p.db,
                r.short(200)
            )),
            Some(&w) => {
                let wc = &calls[w];
                // The write that completed last among X's entry and the log below it.
                let gate = match (wc.offset, wc.ret) {
                    (Some(off), Some(len)) => {
                        let end_off = off + len.max(0) as u64;
                        let low = off.saturating_sub(BATCH_WINDOW);
                        db_writes
                            .iter()
                            .map(|&i| &calls[i])
                            .filter(|c| c.end < r.start)
                            .filter(|c| match (c.offset, c.ret) {
                                (Some(o), Some(n)) => o < end_off && o + n.max(0) as u64 > low,
                                _ => false,
                            })
                            .chain(std::iter::once(wc))
                            .max_by_key(|c| c.end)
                            .unwrap_or(wc)
                    }
                    _ => wc,
                };
                let cover = db_syncs
                    .iter()
                    .find(|&&s| calls[s].start > gate.end && calls[s].end < r.start);
                match cover {
                    Some(&s) => {
                        rep.covered += 1;
                        rep.covering_syncs.insert(s);
                    }
                    None => {
                        let next = db_syncs
                            .iter()
                            .find(|&&s| calls[s].start > gate.end)
                            .map(|&s| calls[s].short(200))
                            .unwrap_or_else(|| "(none in the whole log)".into());
                        let gate_line = if std::ptr::eq(gate, wc) {
                            String::new()
                        } else {
                            format!(
                                "\n    last-completed write of the log up to that entry: {}",
                                gate.short(200)
                            )
                        };
                        rep.violations.push(format!(
                            "{id}: 250 sent with no fsync/fdatasync of the db file between the write of its log entry and the reply\n    \
                             log entry of {id}: {}{gate_line}\n    \
                             db writes/syncs from there to the reply:\n{}\n    \
                             reply: {}\n    \
                             first db sync that started after that write: {}",
                            wc.short(220),
                            around(calls, wc.start.min(gate.start), r.start, p, 8),
                            r.short(200),
                            next
                        ));
                    }
                }
            }
        }
        // The brief's stricter rule, for information: the last db write of anyone.
        if let Some(&w) = db_writes
            .iter()
            .filter(|&&w| calls[w].end < r.start)
            .max_by_key(|&&w| calls[w].end)
            && db_syncs
                .iter()
                .any(|&s| calls[s].start > calls[w].end && calls[s].end < r.start)
        {
            rep.strict_rule_ok += 1;
        }

        // Spooled body: file synced after its last write, directory synced after the rename.
        let final_path = format!("{}/{id}", p.spool);
        let created = calls
            .iter()
            .filter(|c| c.ok() && c.end < r.start)
            .filter_map(|c| {
                if let Some((from, to)) = strace::rename_paths(c)
                    && to == final_path
                {
                    return Some((c.end, Some(from)));
                }
                if strace::open_path(c).is_some_and(|o| o == final_path)
                    && c.text.contains("O_CREAT")
                {
                    return Some((c.end, None));
                }
                None
            })
            .max_by_key(|(end, _)| *end);
        let Some((created_at, tmp)) = created else {
            if spooled.contains(id) {
                rep.violations.push(format!(
                    "{id}: a 200 KiB body, but no {final_path} was created before the reply \
                     (bodies > 128 KiB are spooled)\n    reply: {}",
                    r.short(200)
                ));
            }
            continue;
        };
        rep.spooled_checked += 1;
        let mut names: Vec<&str> = vec![final_path.as_str()];
        if let Some(t) = tmp.as_deref() {
            names.push(t);
        }
        let last_write = calls
            .iter()
            .filter(|c| {
                WRITES.contains(&c.name.as_str())
                    && c.ok()
                    && c.end < r.start
                    && c.fd_path.as_deref().is_some_and(|f| names.contains(&f))
            })
            .max_by_key(|c| c.end);
        let Some(lw) = last_write else {
            rep.violations.push(format!(
                "{id}: no write to its spool file ({}) seen before the reply",
                names.join(" or ")
            ));
            continue;
        };
        let file_synced = calls
            .iter()
            .any(|c| syncs_file(c, &names, p) && c.start > lw.end && c.end < r.start);
        if !file_synced {
            rep.violations.push(format!(
                "{id}: spool file not fsynced between its last write and the reply\n    \
                 last write: {}\n    reply: {}",
                lw.short(200),
                r.short(200)
            ));
        }
        let dir_synced = calls.iter().any(|c| {
            syncs_file(c, &[p.spool.as_str()], p) && c.start > created_at && c.end < r.start
        });
        if !dir_synced {
            rep.violations.push(format!(
                "{id}: spool directory {} not fsynced between creating {final_path} and the reply\n    \
                 created: {}\n    reply: {}",
                p.spool,
                calls
                    .iter()
                    .find(|c| c.end == created_at)
                    .map(|c| c.short(200))
                    .unwrap_or_default(),
                r.short(200)
            ));
        }
    }
    rep
}

fn strace_cmd(log: &Path) -> Vec<String> {
    let mut v: Vec<String> = ["strace", "-f", "-tt", "-y", "-s", "8388608"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if strace::has_seccomp_bpf() {
        v.push("--seccomp-bpf".into());
    }
    v.extend([
        "-e".into(),
        "trace=pwrite64,pwritev,pwritev2,write,writev,sendto,sendmsg,fsync,fdatasync,sync_file_range,syncfs,openat,rename,renameat,renameat2".into(),
        "-o".into(),
        log.display().to_string(),
    ]);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_250_follows_an_fsync_of_the_store() {
    if strace::require("every_250_follows_an_fsync_of_the_store").is_err() {
        return;
    }
    let t0 = Instant::now();
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("serve.strace");
    let mut g = Gateway::start(Opts {
        args: vec!["--no-deliver".into()],
        wrap: strace_cmd(&log),
        ..Default::default()
    });
    let addr = g.smtp;
    let sent = tokio::time::timeout(Duration::from_secs(180), async move {
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|k| tokio::spawn(client(addr, k)))
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    })
    .await
    .expect("intake under strace did not finish within 180 s");
    let intake = t0.elapsed();
    let state = g.state_dir();
    // Stop the gateway (strace then exits and flushes its log).
    g.kill9();
    let text = strace::read_log(&log);
    let keep = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("power_safe_ack.strace");
    let _ = std::fs::write(&keep, &text);

    let calls = strace::parse(&text);
    let paths = Paths::new(&state);
    let spooled: HashSet<String> = sent
        .iter()
        .filter(|(_, big, _)| *big)
        .map(|(_, _, id)| id.clone())
        .collect();
    let rep = check(&calls, &paths, &spooled);

    let acked: HashSet<String> = sent.iter().map(|(_, _, id)| id.clone()).collect();
    let traced: HashSet<String> = rep.replies.iter().map(|(id, _)| id.clone()).collect();
    println!(
        "intake: {} messages ({} spooled) from {CLIENTS} sessions in {:.1}s under strace; log: {} lines, kept at {}",
        sent.len(),
        spooled.len(),
        intake.as_secs_f64(),
        text.lines().count(),
        keep.display()
    );
    let per_sync = if rep.covering_syncs.is_empty() {
        "n/a".to_string()
    } else {
        format!(
            "{:.1}",
            rep.covered as f64 / rep.covering_syncs.len() as f64
        )
    };
    println!(
        "db file {}: {} fsync/fdatasync/syncfs, {} sync_file_range (sled's flush) in the whole trace",
        paths.db, rep.db_syncs, rep.db_sync_file_ranges,
    );
    println!(
        "{} of {} replies covered by a sync after their own log entry was written, by {} distinct syncs ({per_sync} replies per sync: group commit); spooled bodies checked: {}",
        rep.covered,
        rep.replies.len(),
        rep.covering_syncs.len(),
        rep.spooled_checked,
    );
    println!(
        "informative: {} of {} replies also had the last db write of anyone before them synced",
        rep.strict_rule_ok,
        rep.replies.len()
    );
    // The trace must show every acknowledged message, or the check below proves nothing.
    let missing: Vec<&String> = acked.difference(&traced).collect();
    assert!(
        missing.is_empty() && rep.replies.len() == sent.len(),
        "the strace log does not show every 250 the clients got: {} acked, {} traced replies, missing e.g. {:?} (log kept at {})",
        sent.len(),
        rep.replies.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        keep.display()
    );
    assert!(
        rep.db_syncs >= 1,
        "no fsync/fdatasync/syncfs of {} at all in the trace (log kept at {})",
        paths.db,
        keep.display()
    );
    if !rep.violations.is_empty() {
        let shown: Vec<&String> = rep.violations.iter().take(4).collect();
        panic!(
            "{} of {} acknowledgements are not power-safe (DESIGN.md §3 Acceptance: 250 only after fsync/fdatasync).\n\
             First {}:\n  {}\n(full strace log kept at {})",
            rep.violations.len(),
            rep.replies.len(),
            shown.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  "),
            keep.display()
        );
    }
}

/// The checker itself on hand-written logs: it must flag a reply after sled's
/// `sync_file_range` only, a sync that began before the write completed, and a spooled body
/// without a directory fsync; and accept the correct orders.
#[test]
fn checker_flags_unsafe_orders() {
    let p = Paths {
        state: "/s".into(),
        db: "/s/db/db".into(),
        spool: "/s/spool".into(),
    };
    let id = "01M8MWJHZT0000";
    let w = format!(
        "pwrite64(9</s/db/db>, \"\\4\\0\\016{id}\\362N{{\\\"id\\\":\\\"{id}\\\"}}\", 40, 438)"
    );
    let reply = format!(
        "sendto(13<socket:[1]>, \"250 2.0.0 Ok: queued as {id}\\r\\n\", 40, MSG_NOSIGNAL, NULL, 0) = 40"
    );
    let run = |log: String, spooled: &[&str]| {
        let calls = strace::parse(&log);
        let sp: HashSet<String> = spooled.iter().map(|s| s.to_string()).collect();
        check(&calls, &p, &sp)
    };

    // Today's order: write, sync_file_range, reply.
    let r = run(
        format!(
            "1 00:00:00.000001 {w} = 40\n\
             1 00:00:00.000002 sync_file_range(9</s/db/db>, 438, 40, SYNC_FILE_RANGE_WRITE) = 0\n\
             2 00:00:00.000003 {reply}\n"
        ),
        &[],
    );
    assert_eq!(r.replies.len(), 1);
    assert_eq!(r.violations.len(), 1, "{:?}", r.violations);

    // Correct: write, fdatasync (through another fd on the same file), reply.
    let r = run(
        format!(
            "1 00:00:00.000001 {w} = 40\n\
             3 00:00:00.000002 fdatasync(11</s/db/db>) = 0\n\
             2 00:00:00.000003 {reply}\n"
        ),
        &[],
    );
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.covering_syncs.len(), 1);

    // The sync started while the write was still in progress: not proof.
    let r = run(
        format!(
            "1 00:00:00.000001 {w} <unfinished ...>\n\
             3 00:00:00.000002 fsync(9</s/db/db> <unfinished ...>\n\
             1 00:00:00.000003 <... pwrite64 resumed>) = 40\n\
             3 00:00:00.000004 <... fsync resumed>) = 0\n\
             2 00:00:00.000005 {reply}\n"
        ),
        &[],
    );
    assert_eq!(r.violations.len(), 1, "{:?}", r.violations);

    // The sync completed only after the reply was sent.
    let r = run(
        format!(
            "1 00:00:00.000001 {w} = 40\n\
             3 00:00:00.000002 fsync(9</s/db/db> <unfinished ...>\n\
             2 00:00:00.000003 {reply}\n\
             3 00:00:00.000004 <... fsync resumed>) = 0\n"
        ),
        &[],
    );
    assert_eq!(r.violations.len(), 1, "{:?}", r.violations);

    // A failed fsync does not count.
    let r = run(
        format!(
            "1 00:00:00.000001 {w} = 40\n\
             3 00:00:00.000002 fsync(9</s/db/db>) = -1 EIO (Input/output error)\n\
             2 00:00:00.000003 {reply}\n"
        ),
        &[],
    );
    assert_eq!(r.violations.len(), 1, "{:?}", r.violations);

    // A newer write of another message between the sync and the reply is fine.
    let r = run(
        format!(
            "1 00:00:00.000001 {w} = 40\n\
             3 00:00:00.000002 fdatasync(9</s/db/db>) = 0\n\
             1 00:00:00.000003 pwrite64(9</s/db/db>, \"{{\\\"id\\\":\\\"01M8MWJHZT0001\\\"}}\", 24, 478) = 24\n\
             2 00:00:00.000004 {reply}\n"
        ),
        &[],
    );
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.strict_rule_ok, 0);

    // A later page rewrite that carries the id again (sled consolidating a page) need not be
    // synced before the reply: the entry itself was.
    let r = run(
        format!(
            "1 00:00:00.000001 {w} = 40\n\
             3 00:00:00.000002 fdatasync(11</s/db/db>) = 0\n\
             1 00:00:00.000003 pwrite64(9</s/db/db>, \"\\016{id}\\01601M8MWJHZT0001\", 30, 9000) = 30\n\
             2 00:00:00.000004 {reply}\n"
        ),
        &[],
    );
    assert!(r.violations.is_empty(), "{:?}", r.violations);

    // The log just below the entry (sled's batch manifest, no id in it) completed only after
    // the sync had started: not proof.
    let r = run(
        format!(
            "1 00:00:00.000001 {w} = 40\n\
             5 00:00:00.000002 pwrite64(9</s/db/db>, \"\\3\\10\\0\\377\", 24, 414 <unfinished ...>\n\
             3 00:00:00.000003 fdatasync(11</s/db/db>) = 0\n\
             5 00:00:00.000004 <... pwrite64 resumed>) = 24\n\
             2 00:00:00.000005 {reply}\n"
        ),
        &[],
    );
    assert_eq!(r.violations.len(), 1, "{:?}", r.violations);

    // Spooled body: file fsynced, renamed, directory fsynced → fine; without the directory
    // fsync → flagged; a big body with no spool file → flagged.
    let spool_ok = format!(
        "4 00:00:00.000001 write(15</s/spool/a.tmp>, \"Received: x\\r\\n\", 13) = 13\n\
         4 00:00:00.000002 fsync(15</s/spool/a.tmp>) = 0\n\
         4 00:00:00.000003 rename(\"/s/spool/a.tmp\", \"/s/spool/{id}\") = 0\n\
         4 00:00:00.000004 openat(AT_FDCWD</>, \"/s/spool\", O_RDONLY|O_CLOEXEC) = 15</s/spool>\n\
         4 00:00:00.000005 fsync(15</s/spool>) = 0\n\
         1 00:00:00.000006 {w} = 40\n\
         3 00:00:00.000007 fdatasync(11</s/db/db>) = 0\n\
         2 00:00:00.000008 {reply}\n"
    );
    let r = run(spool_ok.clone(), &[id]);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.spooled_checked, 1);
    let r = run(
        spool_ok.replace("fsync(15</s/spool>) = 0", "close(15) = 0"),
        &[id],
    );
    assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
    assert!(r.violations[0].contains("spool directory"));
    let r = run(
        spool_ok.replace("fsync(15</s/spool/a.tmp>) = 0", "close(15) = 0"),
        &[id],
    );
    assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
    assert!(r.violations[0].contains("spool file not fsynced"));
    let r = run(
        format!(
            "1 00:00:00.000001 {w} = 40\n\
             3 00:00:00.000002 fdatasync(11</s/db/db>) = 0\n\
             2 00:00:00.000003 {reply}\n"
        ),
        &[id],
    );
    assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
}
