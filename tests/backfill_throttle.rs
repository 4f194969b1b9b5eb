//! Server back-off: an in-process fault proxy in front of each Dovecot injects `NO [THROTTLED]`,
//! `NO [UNAVAILABLE]`, Office 365's "Suggested Backoff Time", a `BYE` in the middle of a FETCH
//! and a TCP reset; the job pauses that account, reconnects, resumes, and ends converged with an
//! exact copy and no duplicates. A folder that keeps failing is reported failed while the others
//! complete. A flag update the destination refuses is reported, never counted as done.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_pauses_resumes_and_converges() {
    let old = Dovecot::start(DovecotOptions::old());
    let new = Dovecot::start(DovecotOptions::new());
    Corpus::generate(
        &CorpusOptions::new("alice", 80)
            .big_attachment(None)
            .max_size(16 * 1024),
    )
    .write_maildir(&old.maildir("alice"), false, Some((MAIL_UID, MAIL_GID)))
    .unwrap();
    let src = FaultProxy::start(old.addr()).await;
    let dst = FaultProxy::start(new.addr()).await;
    src.inject("FETCH", 2, Action::throttled());
    src.inject("FETCH", 5, Action::bye_mid_fetch());
    src.inject("FETCH", 8, Action::o365_backoff(150));
    src.inject("EXAMINE", 3, Action::unavailable());
    src.inject("STATUS", 4, Action::Reset);
    dst.inject("APPEND", 2, Action::throttled());
    dst.inject("APPEND", 4, Action::bye());

    let job = Job::new(
        &plain_side(src.port(), &old.secret_file("alice")),
        &plain_side(dst.port(), &new.secret_file("alice")),
        "alice\n",
        "connections_per_mailbox = 2",
        "",
    );
    let r = tokio::task::block_in_place(|| job.run_ok(&[]));
    assert!(
        src.injected_count() + dst.injected_count() >= 5,
        "{:?} {:?}",
        src.injected(),
        dst.injected()
    );
    assert!(r["mailboxes"][0]["retries"].as_u64().unwrap() >= 1, "{r:#}");
    let s = snapshot(old.addr(), "alice", "pw-alice").await.unwrap();
    let d = snapshot(new.addr(), "alice", "pw-alice").await.unwrap();
    let diff = compare(&s, &d, &FolderMap::identity());
    assert!(diff.is_exact(), "{}", diff.summary());
    assert_eq!(diff.duplicates(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_that_keeps_failing_is_reported_and_the_rest_completes() {
    let (old, new) = alice_on_dovecots(40, 8 * 1024, &["INBOX", "Lists/rust-users"]);
    let dst = FaultProxy::start(new.addr()).await;
    // Every APPEND is throttled (with a short hint): the folders fail after their retries.
    dst.inject_times("APPEND", 1, 10_000, Action::o365_backoff(20));
    let job = alice_job(&old, &new, dst.port());
    let (out, r) = tokio::task::block_in_place(|| job.run(&[]));
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(r["converged"], false);
    let folders = r["mailboxes"][0]["folders"].as_array().unwrap();
    assert!(
        folders.iter().any(|f| f["error"]
            .as_str()
            .unwrap_or("")
            .contains("Suggested Backoff Time")),
        "{r:#}"
    );
    // Then the server recovers: the next pass converges with an exact copy.
    dst.clear();
    let r = tokio::task::block_in_place(|| job.run_ok(&[]));
    assert!(backfill::copied(&r) > 0);
    assert_exact(&old, &new).await;
}

/// A flag update the destination refuses (`NO` to the `UID STORE`) is an error of that folder,
/// not a silent success: the pass is not converged and says why; once the server takes it, the
/// next pass updates the flags and the copy is exact. (async-imap's `uid_store` stream ends at
/// the tagged reply whatever it says, so the STORE is checked for its tagged OK.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_flag_update_is_reported_not_counted_done() {
    let (old, new) = alice_on_dovecots(12, 4 * 1024, &["INBOX"]);
    let dst = FaultProxy::start(new.addr()).await;
    let job = alice_job(&old, &new, dst.port());
    tokio::task::block_in_place(|| job.run_ok(&[]));

    // Every message flagged on the source; the destination refuses the first flag update.
    let mut c = old.login("alice").await;
    c.select("INBOX").await;
    c.session
        .run_command_and_check_ok("UID STORE 1:* +FLAGS.SILENT (\\Flagged)")
        .await
        .unwrap();
    c.logout().await;
    dst.inject_times("STORE", 1, 1_000, Action::No("refused by the test".into()));
    let (out, r) = tokio::task::block_in_place(|| job.run(&[]));
    assert!(dst.injected_count() >= 1, "{r:#}");
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(r["converged"], false, "{r:#}");
    assert!(
        r.to_string().contains("refused by the test"),
        "the refusal is reported: {r:#}"
    );

    dst.clear();
    let r = tokio::task::block_in_place(|| job.run_ok(&[]));
    assert_eq!(backfill::copied(&r), 0, "{r:#}");
    assert_eq!(r["converged"], true, "{r:#}");
    assert_exact(&old, &new).await;
}

/// Two Dovecots, alice's mailbox on the old one: `n` messages of at most `max_size` bytes in
/// `folders`.
fn alice_on_dovecots(n: usize, max_size: usize, folders: &[&str]) -> (Dovecot, Dovecot) {
    let old = Dovecot::start(DovecotOptions::old());
    let new = Dovecot::start(DovecotOptions::new());
    Corpus::generate(
        &CorpusOptions::new("alice", n)
            .big_attachment(None)
            .max_size(max_size)
            .folders(folders),
    )
    .write_maildir(&old.maildir("alice"), false, Some((MAIL_UID, MAIL_GID)))
    .unwrap();
    (old, new)
}

/// alice's job from the old Dovecot to the new one reached at `dst_port` (its fault proxy).
fn alice_job(old: &Dovecot, new: &Dovecot, dst_port: u16) -> Job {
    Job::new(
        &plain_side(old.port(), &old.secret_file("alice")),
        &plain_side(dst_port, &new.secret_file("alice")),
        "alice\n",
        "",
        "",
    )
}

/// Old and new compared exactly (bytes, flags, keywords, INTERNALDATE, subscriptions).
async fn assert_exact(old: &Dovecot, new: &Dovecot) {
    let s = snapshot(old.addr(), "alice", "pw-alice").await.unwrap();
    let d = snapshot(new.addr(), "alice", "pw-alice").await.unwrap();
    let diff = compare(&s, &d, &FolderMap::identity());
    assert!(diff.is_exact(), "{}", diff.summary());
}
