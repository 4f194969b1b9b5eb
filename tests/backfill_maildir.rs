//! Maildir as a backfill endpoint. The source is a Maildir on disk that a Dovecot instance
//! also serves (so the copy can be checked over IMAP, exactly as the IMAP tests do): Maildir ->
//! Dovecot is exact (bytes, flags, keywords, INTERNALDATE, subscriptions), a second pass copies
//! nothing. Then Dovecot -> a fresh Maildir, which a second Dovecot serves afterwards: exact too.

#[path = "support/backfill.rs"]
mod backfill;
#[path = "support/common.rs"]
mod common;
#[path = "support/corpus.rs"]
mod corpus;
#[path = "support/dovecot.rs"]
mod dovecot;
#[path = "support/imapcheck.rs"]
mod imapcheck;

use backfill::{Job, copied, plain_side};
use corpus::{Corpus, CorpusOptions};
use dovecot::{Dovecot, DovecotOptions, MAIL_GID, MAIL_UID};
use imapcheck::{FolderMap, compare, snapshot};
use std::path::Path;

fn template(maildir: &Path, user: &str) -> String {
    maildir.display().to_string().replace(user, "{user}")
}

fn chown_all(p: &Path) {
    std::os::unix::fs::chown(p, Some(MAIL_UID), Some(MAIL_GID)).unwrap();
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_all(&e.unwrap().path());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maildir_to_imap_and_back_is_exact() {
    let old = Dovecot::start(DovecotOptions::old());
    let new = Dovecot::start(DovecotOptions::new());
    let corpus = Corpus::generate(
        &CorpusOptions::new("alice", 120)
            .big_attachment(None)
            .max_size(16 * 1024),
    );
    let md = old.maildir("alice");
    corpus
        .write_maildir(&md, false, Some((MAIL_UID, MAIL_GID)))
        .unwrap();

    // Maildir -> IMAP.
    let job = Job::new(
        &format!("maildir = \"{}\"", template(&md, "alice")),
        &plain_side(new.port(), &new.secret_file("alice")),
        "alice\n",
        "",
        "",
    );
    let r = tokio::task::block_in_place(|| job.run_ok(&[]));
    assert_eq!(copied(&r), 120, "{r:#}");
    assert_eq!(r["converged"], true, "{r:#}");
    let s = snapshot(old.addr(), "alice", "pw-alice").await.unwrap();
    let d = snapshot(new.addr(), "alice", "pw-alice").await.unwrap();
    let diff = compare(&s, &d, &FolderMap::identity());
    assert!(diff.is_exact(), "{}", diff.summary());
    let r = tokio::task::block_in_place(|| job.run_ok(&[]));
    assert_eq!(copied(&r), 0, "second pass: {r:#}");
    // `--json`: the report on stdout, nothing else.
    let out = job.run_cmd(&["--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (j["converged"].clone(), copied(&j)),
        (true.into(), 0),
        "{j:#}"
    );

    // IMAP -> a fresh Maildir, then served by another Dovecot for the check.
    let other = Dovecot::start(DovecotOptions::old());
    let md2 = other.maildir("alice");
    let back = Job::new(
        &plain_side(new.port(), &new.secret_file("alice")),
        &format!("maildir = \"{}\"", template(&md2, "alice")),
        "alice\n",
        "",
        "",
    );
    let r = tokio::task::block_in_place(|| back.run_ok(&[]));
    assert_eq!(copied(&r), 120, "{r:#}");
    chown_all(&md2);
    let d2 = snapshot(other.addr(), "alice", "pw-alice").await.unwrap();
    let diff = compare(&d, &d2, &FolderMap::identity());
    assert!(diff.is_exact(), "{}", diff.summary());
    let r = tokio::task::block_in_place(|| back.run_ok(&[]));
    assert_eq!(copied(&r), 0, "second pass into the Maildir: {r:#}");
}
