//! `since` / `before` are applied on the server: the source folder is narrowed with `UID SEARCH
//! SINCE .. BEFORE ..` (counted by a proxy in front of Dovecot) and only the messages in the
//! window are fetched and copied; the exact boundary is the INTERNALDATE instant. Messages
//! outside the window are neither copied nor indexed.

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

use backfill::{Job, copied, plain_side};
use corpus::{Corpus, CorpusOptions};
use dovecot::{Dovecot, DovecotOptions, MAIL_GID, MAIL_UID};
use imap_fault::FaultProxy;
use imapcheck::snapshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_and_before_are_searched_on_the_server() {
    let old = Dovecot::start(DovecotOptions::old());
    let new = Dovecot::start(DovecotOptions::new());
    let manifest = Corpus::generate(
        &CorpusOptions::new("alice", 300)
            .big_attachment(None)
            .max_size(8 * 1024),
    )
    .write_maildir(&old.maildir("alice"), false, Some((MAIL_UID, MAIL_GID)))
    .unwrap();
    // A window in the middle of the corpus' dates, on day boundaries (UTC).
    let mut dates: Vec<i64> = manifest.entries.iter().map(|e| e.internaldate).collect();
    dates.sort_unstable();
    let day = 86_400;
    let since = dates[dates.len() / 4] / day * day;
    let before = dates[dates.len() * 3 / 4] / day * day;
    let mut in_window: Vec<String> = manifest
        .entries
        .iter()
        .filter(|e| e.internaldate >= since && e.internaldate < before)
        .map(|e| e.sha256.clone())
        .collect();
    in_window.sort();
    assert!(
        in_window.len() > 50 && in_window.len() < 250,
        "{}",
        in_window.len()
    );
    let ymd = |t: i64| {
        let (y, m, d) = dovecot::civil_from_days(t / day);
        format!("{y:04}-{m:02}-{d:02}")
    };

    let src = FaultProxy::start(old.addr()).await;
    let job = Job::new(
        &plain_side(src.port(), &old.secret_file("alice")),
        &plain_side(new.port(), &new.secret_file("alice")),
        "alice\n",
        &format!("since = \"{}\"\nbefore = \"{}\"", ymd(since), ymd(before)),
        "",
    );
    let r = tokio::task::block_in_place(|| job.run_ok(&[]));
    assert!(src.seen("SEARCH") >= 1, "no UID SEARCH sent to the source");
    assert_eq!(copied(&r), in_window.len() as u64, "{r:#}");
    assert_eq!(r["converged"], true, "{r:#}");

    let d = snapshot(new.addr(), "alice", "pw-alice").await.unwrap();
    let mut got: Vec<String> = d
        .folders
        .values()
        .flat_map(|f| f.messages.iter().map(|m| m.sha256.clone()))
        .collect();
    got.sort();
    assert_eq!(got, in_window);

    // Second pass: nothing to copy, still only the window considered.
    let r = tokio::task::block_in_place(|| job.run_ok(&[]));
    assert_eq!(copied(&r), 0, "{r:#}");
}
