//! Dovecot compatibility of `backfill::maildir` against a real private Dovecot (Maildir++
//! layout): what Dovecot writes over IMAP, the module reads (folders, subscriptions, flags,
//! keywords, INTERNALDATE, RFC822.SIZE, bytes); what the module writes, Dovecot serves.
//! Owns nothing but these checks; must never touch the system Dovecot.

#[path = "support/common.rs"]
mod common;
#[path = "support/dovecot.rs"]
mod dovecot;

use cutover::backfill::meta::Flags;

fn flag_set(list: &str) -> std::collections::BTreeSet<String> {
    Flags::parse(list).set()
}
use cutover::backfill::maildir::{Entry, Maildir};
use cutover::backfill::plan;
use dovecot::{Dovecot, DovecotOptions, MAIL_GID, MAIL_UID};
use std::collections::BTreeSet;
use std::path::Path;

fn chown_all(p: &Path) {
    std::os::unix::fs::chown(p, Some(MAIL_UID), Some(MAIL_GID)).unwrap();
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_all(&e.unwrap().path());
        }
    }
}

fn set(flags: &[&str]) -> BTreeSet<String> {
    flag_set(&format!("({})", flags.join(" ")))
}

fn set_of(v: &[String]) -> BTreeSet<String> {
    flag_set(&format!("({})", v.join(" ")))
}

const MSGS: [(&[&str], i64, &[u8]); 4] = [
    (
        &["\\Seen", "$Label1"],
        1_500_000_000,
        b"Message-ID: <a@x>\r\nSubject: one\r\n\r\nhello\r\nworld\r\n",
    ),
    (
        &["\\Answered", "\\Flagged", "Work", "$Forwarded"],
        1_600_000_000,
        b"Message-ID: <b@x>\r\nSubject: two\r\n\r\nbody\r\n",
    ),
    (
        &["\\Draft", "\\Deleted", "\\Seen"],
        1_400_000_000,
        b"Subject: three\r\n\r\nno id\r\n",
    ),
    (&[], 1_700_000_000, b"Subject: four\r\n\r\nunseen\r\n"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_what_dovecot_wrote() {
    let old = Dovecot::start(DovecotOptions::old().no_special_use());
    let root = old.maildir("alice");
    let mut c = old.login("alice").await;
    let folders = ["INBOX", "Projects/Alpha", "Entwürfe"];
    for f in &folders[1..] {
        c.create(&old.wire_name(f)).await;
        c.subscribe(&old.wire_name(f)).await;
    }
    for f in folders {
        for (flags, date, body) in MSGS {
            c.append(&old.wire_name(f), flags, date, body).await;
        }
    }
    let mut fetched = Vec::new();
    for f in folders {
        fetched.push(c.fetch_all(&old.wire_name(f)).await);
    }
    c.logout().await;

    let md = Maildir::open(&root).unwrap();
    let l = md.list().unwrap();
    let names: Vec<(String, bool, bool)> = l
        .folders
        .iter()
        .map(|f| {
            (
                plan::logical(&f.wire, l.delimiter),
                f.selectable(),
                f.subscribed,
            )
        })
        .collect();
    for want in [
        ("INBOX".to_string(), true),
        ("Projects".to_string(), false),
        ("Projects/Alpha".to_string(), true),
        ("Entwürfe".to_string(), true),
    ] {
        assert!(
            names.iter().any(|n| (n.0.clone(), n.1) == want),
            "{want:?} in {names:?}"
        );
    }
    let subscribed: BTreeSet<&str> = names.iter().filter(|n| n.2).map(|n| n.0.as_str()).collect();
    assert!(
        subscribed.contains("Projects/Alpha") && subscribed.contains("Entwürfe"),
        "{names:?}, subscriptions file: {:?}",
        std::fs::read_to_string(root.join("subscriptions"))
    );

    for (f, imap) in folders.iter().zip(&fetched) {
        let folder = md.folder(f).unwrap();
        let mut entries = folder.entries().unwrap();
        assert_eq!(entries.len(), MSGS.len(), "{f}");
        // Match by INTERNALDATE (distinct per message).
        entries.sort_by_key(|e| e.internaldate);
        let mut imap = imap.clone();
        imap.sort_by_key(|m| m.internaldate);
        for (e, m) in entries.iter().zip(&imap) {
            assert_eq!(e.internaldate, m.internaldate, "{f} {e:?}");
            assert_eq!(flag_set(&e.flags), set_of(&m.flags), "{f} {e:?}");
            assert_eq!(e.size, m.size, "{f} {e:?}");
            assert_eq!(folder.read(e).unwrap(), m.body, "{f} {e:?}");
        }
        // And against what was appended.
        for (flags, date, body) in MSGS {
            let e: &Entry = entries.iter().find(|e| e.internaldate == date).unwrap();
            assert_eq!(flag_set(&e.flags), set(flags), "{f} {e:?}");
            assert_eq!(e.size as usize, body.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_serves_what_we_wrote() {
    let old = Dovecot::start(DovecotOptions::old().no_special_use());
    let root = old.maildir("bob");
    let md = Maildir::open(&root).unwrap();
    let folders = ["INBOX", "Reports/2024", "Ünïcödé"];
    for f in &folders[1..] {
        md.create(f).unwrap();
        md.subscribe(f).unwrap();
    }
    for f in folders {
        let folder = md.folder(f).unwrap();
        for (flags, date, body) in MSGS {
            let s = folder
                .append(body, &format!("({})", flags.join(" ")), date)
                .unwrap();
            assert!(s.dropped.is_empty());
        }
    }
    chown_all(&root);

    let mut c = old.login("bob").await;
    let listed: Vec<String> = c.list().await.into_iter().map(|x| x.0).collect();
    for f in folders {
        assert!(listed.contains(&old.wire_name(f)), "{f} in {listed:?}");
    }
    let lsub = {
        use futures_util::TryStreamExt;
        let s = c.session.lsub(Some(""), Some("*")).await.unwrap();
        let v: Vec<_> = s.try_collect().await.unwrap();
        v.iter().map(|n| n.name().to_string()).collect::<Vec<_>>()
    };
    for f in &folders[1..] {
        assert!(lsub.contains(&old.wire_name(f)), "{f} in LSUB {lsub:?}");
    }
    for f in folders {
        let mut got = c.fetch_all(&old.wire_name(f)).await;
        assert_eq!(got.len(), MSGS.len(), "{f}");
        got.sort_by_key(|m| m.internaldate);
        let mut want = MSGS.to_vec();
        want.sort_by_key(|m| m.1);
        for (m, (flags, date, body)) in got.iter().zip(want) {
            assert_eq!(m.internaldate, date, "{f}");
            assert_eq!(set_of(&m.flags), set(flags), "{f} {m:?}");
            assert_eq!(m.size as usize, body.len(), "{f}");
            assert_eq!(m.body, body, "{f}");
        }
    }
    c.logout().await;

    // Flag changes by rename are seen too.
    let inbox = md.folder("INBOX").unwrap();
    for e in inbox.entries().unwrap() {
        inbox.set_flags(&e, "(\\Flagged NewKw)").unwrap();
    }
    chown_all(&root);
    let mut c = old.login("bob").await;
    for m in c.fetch_all("INBOX").await {
        assert_eq!(set_of(&m.flags), set(&["\\Flagged", "NewKw"]), "{m:?}");
    }
    c.logout().await;
}
