//! kill -9 in the middle of a pass, then re-run: converged, nothing lost, nothing duplicated.
//! The destination is slowed down by a fault proxy (delayed APPENDs) so the kill lands while
//! messages are in flight; a second kill lands early (planning/indexing).

#[path = "support/backfill.rs"]
mod backfill;
#[path = "support/common.rs"]
mod common;
#[path = "support/corpus.rs"]
mod corpus;
#[path = "support/dovecot.rs"]
mod dovecot;
#[path = "support/imap_fault.rs"]
mod imap_fault;
#[path = "support/imapcheck.rs"]
mod imapcheck;

use backfill::{Job, plain_side};
use corpus::{Corpus, CorpusOptions};
use dovecot::{Dovecot, DovecotOptions, MAIL_GID, MAIL_UID};
use imap_fault::{Action, FaultProxy};
use imapcheck::{FolderMap, compare, snapshot};
use std::time::{Duration, Instant};

async fn dst_total(new: &Dovecot) -> u32 {
    let mut c = new.login("alice").await;
    let mut n = 0;
    for f in ["INBOX", "Archive", "Sent"] {
        n += c.examine(&new.wire_name(f)).await.exists;
    }
    c.logout().await;
    n
}

/// The proxy forwards APPENDs it already received after its delay even when the client is dead
/// (as a server finishes a command it fully read): wait until the destination stops changing
/// before the re-run indexes it.
async fn settle(new: &Dovecot) {
    let mut last = dst_total(new).await;
    let mut stable_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && stable_since.elapsed() < Duration::from_millis(600) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let n = dst_total(new).await;
        if n != last {
            last = n;
            stable_since = Instant::now();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_pass_then_rerun_converges_without_duplicates() {
    let old = Dovecot::start(DovecotOptions::old());
    let new = Dovecot::start(DovecotOptions::new());
    let manifest = Corpus::generate(
        &CorpusOptions::new("alice", 160)
            .big_attachment(None)
            .max_size(16 * 1024)
            .folders(&["INBOX", "Archive", "Sent"]),
    )
    .write_maildir(&old.maildir("alice"), false, Some((MAIL_UID, MAIL_GID)))
    .unwrap();
    let total = manifest.entries.len() as u32;
    let dst = FaultProxy::start(new.addr()).await;
    dst.inject_times(
        "APPEND",
        1,
        100_000,
        Action::Delay(Duration::from_millis(250)),
    );
    let job = Job::new(
        &plain_side(old.port(), &old.secret_file("alice")),
        &plain_side(dst.port(), &new.secret_file("alice")),
        "alice\n",
        "connections_per_mailbox = 1",
        "",
    );

    // Kill 1: early (while planning / indexing / the first APPENDs).
    let mut child = job.run_cmd(&[]).spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    settle(&new).await;

    // Kill 2: once some messages have arrived and more are in flight.
    let mut child = job.run_cmd(&[]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut at = 0;
    while Instant::now() < deadline {
        at = dst_total(&new).await;
        if at > 0 || child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        at < total,
        "the pass finished before the kill ({at}/{total})"
    );
    settle(&new).await;

    // Re-run without faults: converged, exact, no duplicates.
    dst.clear();
    let r = tokio::task::block_in_place(|| job.run_ok(&[]));
    let s = snapshot(old.addr(), "alice", "pw-alice").await.unwrap();
    let d = snapshot(new.addr(), "alice", "pw-alice").await.unwrap();
    let diff = compare(&s, &d, &FolderMap::identity());
    assert!(diff.is_exact(), "{}\n{r:#}", diff.summary());
    assert_eq!(diff.duplicates(), 0);
    assert_eq!(dst_total(&new).await, total);
    // And the pass after that is a no-op.
    let r = tokio::task::block_in_place(|| job.run_ok(&[]));
    assert_eq!(backfill::copied(&r), 0);
}
