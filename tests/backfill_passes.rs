//! Backfill passes against two real Dovecot servers (old: Maildir++ "." / new: fs "/"): a
//! generated corpus (nested + non-ASCII folders, flags + keywords, dates over years, messages
//! without Message-ID, identical duplicates, one Message-ID in two folders, a 5 MB attachment);
//! dry run; first pass = exact copy; second pass copies nothing; 20 new messages + a changed
//! UIDVALIDITY on the destination → the third pass copies exactly those 20; status --json.

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

use backfill::{Job, copied, folder, plain_side};
use corpus::{Corpus, CorpusOptions};
use dovecot::{Dovecot, DovecotOptions, MAIL_GID, MAIL_UID};
use imapcheck::{FolderMap, compare, snapshot};

async fn exact(old: &Dovecot, new: &Dovecot, user: &str) -> imapcheck::Diff {
    let s = snapshot(old.addr(), user, &old.password(user))
        .await
        .unwrap();
    let d = snapshot(new.addr(), user, &new.password(user))
        .await
        .unwrap();
    compare(&s, &d, &FolderMap::identity())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_noop_and_uidvalidity_passes() {
    let old = Dovecot::start(DovecotOptions::old());
    let mut new = Dovecot::start(DovecotOptions::new());
    let corpus = Corpus::generate(&CorpusOptions::new("alice", 240));
    let manifest = corpus
        .write_maildir(&old.maildir("alice"), false, Some((MAIL_UID, MAIL_GID)))
        .unwrap();
    let job = Job::new(
        &plain_side(old.port(), &old.secret_file("alice")),
        &plain_side(new.port(), &new.secret_file("alice")),
        "alice\n",
        "connections_per_mailbox = 3",
        "",
    );

    // Dry run: counts, writes nothing.
    let (out, r) = job.run(&["--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(copied(&r), 0);
    assert_eq!(r["converged"], false);
    assert_eq!(
        folder(&r, "INBOX")["skipped"]["would_copy"],
        manifest.counts()["INBOX"] as u64
    );
    let d = exact(&old, &new, "alice").await;
    assert_eq!(d.missing(), manifest.entries.len(), "dry run wrote nothing");

    // First pass: an exact copy.
    let r = job.run_ok(&[]);
    assert_eq!(copied(&r), manifest.entries.len() as u64, "{r:#}");
    let d = exact(&old, &new, "alice").await;
    assert!(d.is_exact(), "{}", d.summary());
    assert_eq!(d.duplicates(), 0);

    // Second pass: nothing to do.
    let r = job.run_ok(&[]);
    assert_eq!(copied(&r), 0, "{r:#}");

    // 20 new messages on the source, and a folder recreated on the destination (new UIDVALIDITY).
    let delta = Corpus::generate(
        &CorpusOptions::new("alice", 20)
            .start(240)
            .big_attachment(None),
    );
    delta
        .load_imap(old.addr(), "alice", "pw-alice", old.separator())
        .await
        .unwrap();
    let (a, b) = new.uidvalidity_reset("alice", "Projects/2024").await;
    assert_ne!(a, b);
    let (a, b) = new.uidvalidity_reset("alice", "INBOX").await;
    assert_ne!(a, b);
    let r = job.run_ok(&[]);
    assert_eq!(copied(&r), 20, "{r:#}");
    let d = exact(&old, &new, "alice").await;
    assert!(d.is_exact(), "{}", d.summary());
    assert_eq!(d.duplicates(), 0);
    assert_eq!(folder(&r, "INBOX")["converged"], true);

    // Flag changes on the source (no new mail): the next pass copies nothing and sets the
    // destination flags of those messages to the source's.
    let mut c = old.login("alice").await;
    c.select("INBOX").await;
    let stored: Vec<_> = futures_util::TryStreamExt::try_collect::<Vec<_>>(
        c.session
            .uid_store("1:5", "FLAGS (\\Flagged $Label2)")
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(stored.len(), 5);
    c.logout().await;
    let r = job.run_ok(&[]);
    assert_eq!(copied(&r), 0, "{r:#}");
    assert_eq!(folder(&r, "INBOX")["flags_updated"], 5, "{r:#}");
    let d = exact(&old, &new, "alice").await;
    assert!(d.is_exact(), "{}", d.summary());

    // status --json reads the last report.
    let s = job.status_json();
    assert_eq!(s["converged"], true);
    assert_eq!(s["running"], false);
    assert_eq!(s["copied"], 0);
}
