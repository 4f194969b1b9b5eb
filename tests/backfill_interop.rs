//! Backfill between two different IMAP implementations: Dovecot (tests/support/dovecot.rs) and Cyrus 3.6
//! (tests/support/cyrus.rs), whose classic personal namespace puts every folder under `INBOX.`.
//! The engine must map folders by their logical name (personal prefix stripped, separator translated):
//! Dovecot `Projects/2024` <-> Cyrus `INBOX.Projects.2024`; a destination's existing `\Sent` folder
//! ("Sent Messages") receives the source's Sent mail (no new "Sent" folder). Each test: generated corpus
//! (nested + non-ASCII folders, flags + keywords, dates over years, duplicates, a 1 MB attachment), first
//! pass = exact copy (bytes, flags, keywords, INTERNALDATE, subscriptions), second pass copies nothing.
//! Cyrus runs with `munge8bit: no`: its default rewrites the corpus's raw 8-bit headers (Subject words
//! like "Grüße") to `X`, which no client can prevent and which would make every such copy differ.

#[path = "support/backfill.rs"]
mod backfill;
#[path = "support/common.rs"]
mod common;
#[path = "support/corpus.rs"]
mod corpus;
#[path = "support/cyrus.rs"]
mod cyrus;
#[path = "support/dovecot.rs"]
mod dovecot;
#[path = "support/imapcheck.rs"]
mod imapcheck;

use std::net::SocketAddr;
use std::path::PathBuf;

use backfill::{Job, copied, plain_side};
use corpus::{Corpus, CorpusOptions, Manifest};
use cyrus::{Cyrus, CyrusOptions};
use dovecot::{Dovecot, DovecotOptions, MAIL_GID, MAIL_UID};
use imapcheck::{FolderMap, Snapshot, compare, snapshot};

const SENT: &str = "Sent Messages";

fn corpus() -> Corpus {
    Corpus::generate(&CorpusOptions::new("alice", 120).big_attachment(Some(1 << 20)))
}

async fn snap(addr: SocketAddr) -> Snapshot {
    snapshot(addr, "alice", "pw-alice").await.unwrap()
}

/// First pass copies the whole manifest exactly (through `map`), the second copies nothing.
async fn two_passes(
    job: &Job,
    manifest: &Manifest,
    src: SocketAddr,
    dst: SocketAddr,
    map: &FolderMap,
) -> Snapshot {
    let r = job.run_ok(&[]);
    assert_eq!(copied(&r), manifest.entries.len() as u64, "{r:#}");
    let (s, d) = (snap(src).await, snap(dst).await);
    let diff = compare(&s, &d, map);
    assert!(diff.is_exact(), "{}", diff.summary());
    assert_eq!(diff.duplicates(), 0);
    let r = job.run_ok(&[]);
    assert_eq!(copied(&r), 0, "second pass: {r:#}");
    d
}

/// A job copying alice from the plain port `src` to `dst`, each with its password file.
fn job(src: (u16, PathBuf), dst: (u16, PathBuf)) -> Job {
    Job::new(
        &plain_side(src.0, &src.1),
        &plain_side(dst.0, &dst.1),
        "alice\n",
        "",
        "",
    )
}

/// A Cyrus source (`opts`, its `Sent` is \Sent) holding the corpus, a Dovecot "new" destination
/// with an existing `Sent Messages` (\Sent), and the job between them.
async fn cyrus_to_dovecot(opts: CyrusOptions) -> (Cyrus, Dovecot, Manifest, Job) {
    let cy = Cyrus::start(
        opts.munge8bit(false)
            .special_use(&[("Sent", "\\Sent")])
            .label("src"),
    );
    let new = Dovecot::start(DovecotOptions::new().special_use(&[(SENT, "\\Sent")]));
    let manifest = corpus()
        .load_imap_prefixed(
            cy.addr(),
            "alice",
            &cy.password("alice"),
            cy.separator(),
            &cy.personal_prefix(),
        )
        .await
        .unwrap();
    let j = job(
        (cy.port(), cy.secret_file("alice")),
        (new.port(), new.secret_file("alice")),
    );
    (cy, new, manifest, j)
}

/// Dovecot "old" (Maildir++, '.') with the corpus written into alice's Maildir.
fn old_with_corpus() -> (Dovecot, Manifest) {
    let old = Dovecot::start(DovecotOptions::old());
    let manifest = corpus()
        .write_maildir(&old.maildir("alice"), false, Some((MAIL_UID, MAIL_GID)))
        .unwrap();
    (old, manifest)
}

/// Dovecot "old" (Maildir++, '.', no prefix) -> Cyrus classic (`INBOX.`, '.') with an existing
/// `INBOX.Sent Messages` (\Sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_old_to_cyrus_inbox_prefix() {
    let (old, manifest) = old_with_corpus();
    let cy = Cyrus::start(
        CyrusOptions::inbox_dot()
            .munge8bit(false)
            .special_use(&[(SENT, "\\Sent")])
            .label("dst"),
    );
    let job = job(
        (old.port(), old.secret_file("alice")),
        (cy.port(), cy.secret_file("alice")),
    );
    let map = FolderMap::identity().prefixes("", &cy.personal_prefix_utf8());
    let d = two_passes(&job, &manifest, old.addr(), cy.addr(), &map).await;
    assert_eq!(d.special("\\Sent"), Some("INBOX/Sent Messages"));
    assert!(
        !d.folders.contains_key("INBOX/Sent"),
        "a new Sent folder: {:?}",
        d.folders.keys()
    );
    assert!(
        d.folders.contains_key("INBOX/Projects/2024"),
        "{:?}",
        d.folders.keys()
    );
    assert!(
        !d.folders.keys().any(|f| f.starts_with("Projects")),
        "{:?}",
        d.folders.keys()
    );
}

/// Cyrus classic (`INBOX.`, '.', `INBOX.Sent` is \Sent) -> Dovecot "new" (fs layout, '/', no prefix)
/// with an existing `Sent Messages` (\Sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cyrus_inbox_prefix_to_dovecot_new() {
    let (cy, new, manifest, job) = cyrus_to_dovecot(CyrusOptions::inbox_dot()).await;
    let map = FolderMap::identity().prefixes(&cy.personal_prefix_utf8(), "");
    let d = two_passes(&job, &manifest, cy.addr(), new.addr(), &map).await;
    assert_eq!(d.special("\\Sent"), Some(SENT));
    assert!(
        !d.folders.contains_key("Sent"),
        "a new Sent folder: {:?}",
        d.folders.keys()
    );
    assert!(
        !d.folders.keys().any(|f| f.starts_with("INBOX/")),
        "{:?}",
        d.folders.keys()
    );
}

/// Baseline without a prefix: Dovecot "old" -> Cyrus with its 3.6 defaults (altnamespace, '/'), where
/// only the server implementation differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_old_to_cyrus_default_namespace() {
    let (old, manifest) = old_with_corpus();
    let cy = Cyrus::start(
        CyrusOptions::default()
            .munge8bit(false)
            .special_use(&[(SENT, "\\Sent")])
            .label("dst"),
    );
    let job = job(
        (old.port(), old.secret_file("alice")),
        (cy.port(), cy.secret_file("alice")),
    );
    let d = two_passes(
        &job,
        &manifest,
        old.addr(),
        cy.addr(),
        &FolderMap::identity(),
    )
    .await;
    assert_eq!(d.special("\\Sent"), Some(SENT));
    assert!(
        !d.folders.contains_key("Sent"),
        "a new Sent folder: {:?}",
        d.folders.keys()
    );
}

/// The other two Cyrus delimiter/namespace combinations: Dovecot "old" -> Cyrus `INBOX/` ('/',
/// no altnamespace), and Cyrus with altnamespace and '.' -> Dovecot "new" ('/').
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cyrus_delimiter_both_ways() {
    let (old, manifest) = old_with_corpus();
    let cy = Cyrus::start(
        CyrusOptions::inbox_slash()
            .munge8bit(false)
            .special_use(&[(SENT, "\\Sent")])
            .label("dst"),
    );
    let j = job(
        (old.port(), old.secret_file("alice")),
        (cy.port(), cy.secret_file("alice")),
    );
    let map = FolderMap::identity().prefixes("", &cy.personal_prefix_utf8());
    let d = two_passes(&j, &manifest, old.addr(), cy.addr(), &map).await;
    assert_eq!(d.special("\\Sent"), Some("INBOX/Sent Messages"));

    let (src, new, manifest, j) = cyrus_to_dovecot(CyrusOptions::alt_dot()).await;
    let d = two_passes(
        &j,
        &manifest,
        src.addr(),
        new.addr(),
        &FolderMap::identity(),
    )
    .await;
    assert_eq!(d.special("\\Sent"), Some(SENT));
}

/// Cyrus allows 100 keywords per mailbox. 105 messages, each with its own keyword, from Dovecot:
/// the first 100 keep theirs, the last 5 are refused as they are, then stored without the new
/// keyword (reported under `adjusted`); nothing fails, the folder converges, no duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cyrus_keyword_limit_keeps_the_message() {
    let old = Dovecot::start(DovecotOptions::old());
    {
        let mut c = old.login("alice").await;
        for i in 0..105 {
            let kw = format!("$Tag{i:03}");
            let msg =
                format!("Message-ID: <kw{i}@example.com>\r\nSubject: {i}\r\n\r\nbody {i}\r\n");
            c.append(
                "INBOX",
                &["\\Seen", kw.as_str()],
                1_600_000_000 + i,
                msg.as_bytes(),
            )
            .await;
        }
        c.logout().await;
    }
    let cy = Cyrus::start(CyrusOptions::inbox_dot().label("dst"));
    let j = job(
        (old.port(), old.secret_file("alice")),
        (cy.port(), cy.secret_file("alice")),
    );
    let r = tokio::task::block_in_place(|| j.run_ok(&[]));
    assert_eq!(copied(&r), 105, "{r:#}");
    assert_eq!(r["converged"], true, "{r:#}");
    let inbox = backfill::folder(&r, "INBOX");
    let adjusted = inbox["adjusted"].as_array().cloned().unwrap_or_default();
    assert_eq!(adjusted.len(), 5, "{r:#}");
    assert!(
        inbox["failed"].as_array().is_none_or(|f| f.is_empty()),
        "{r:#}"
    );
    let d = snap(cy.addr()).await;
    let msgs = &d.folders["INBOX"].messages;
    assert_eq!(msgs.len(), 105);
    let with_tag = msgs
        .iter()
        .filter(|m| m.flags.iter().any(|f| f.starts_with("$Tag")))
        .count();
    assert_eq!(with_tag, 100);
    assert!(msgs.iter().all(|m| m.flags.contains(&"\\Seen".to_string())));
    let r = tokio::task::block_in_place(|| j.run_ok(&[]));
    assert_eq!(copied(&r), 0, "{r:#}");
}
