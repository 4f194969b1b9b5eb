//! Scale-out and options: `--shard I/N` splits mailboxes across workers (disjoint, complete,
//! separate state dirs); `direction = "both"` also copies new → old without bouncing copies
//! back; `max_bytes_per_day` stops uploads at the cap and the next pass continues.

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

use backfill::{Job, copied};
use corpus::{Corpus, CorpusOptions};
use dovecot::{Dovecot, DovecotOptions, MAIL_GID, MAIL_UID};
use imapcheck::{FolderMap, compare, snapshot};
use std::collections::BTreeSet;

fn small(user: &str, n: usize) -> Corpus {
    Corpus::generate(
        &CorpusOptions::new(user, n)
            .big_attachment(None)
            .max_size(8 * 1024)
            .folders(&["INBOX", "Archive", "Projects/2024"]),
    )
}

fn admin_side(d: &Dovecot) -> String {
    format!(
        r#"host = "127.0.0.1", port = {}, tls = "none", auth = "plain", admin_user = "admin", password_file = "{}""#,
        d.port(),
        d.secret_file("admin").display()
    )
}

async fn diff(a: &Dovecot, b: &Dovecot, user: &str) -> imapcheck::Diff {
    let s = snapshot(a.addr(), user, &a.password(user)).await.unwrap();
    let d = snapshot(b.addr(), user, &b.password(user)).await.unwrap();
    compare(&s, &d, &FolderMap::identity())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_split_mailboxes_disjointly() {
    let old = Dovecot::start(DovecotOptions::old());
    let new = Dovecot::start(DovecotOptions::new());
    let users = ["alice", "bob", "carol", "dave", "erin", "frank"];
    for u in users {
        small(u, 12)
            .write_maildir(&old.maildir(u), false, Some((MAIL_UID, MAIL_GID)))
            .unwrap();
        new.ensure_user(u);
    }
    let job = Job::new(
        &admin_side(&old),
        &admin_side(&new),
        &users.join("\n"),
        "concurrency = 3",
        "",
    );
    let mut seen = BTreeSet::new();
    for i in 0..2 {
        let r = job.run_ok(&["--shard", &format!("{i}/2")]);
        assert_eq!(r["shard"], format!("{i}/2"));
        for m in r["mailboxes"].as_array().unwrap() {
            let u = m["source_user"].as_str().unwrap().to_string();
            assert!(seen.insert(u.clone()), "{u} in two shards");
        }
        assert!(
            job.state_dir()
                .join(format!("backfill/t.shard{i}-2/state.sled"))
                .exists()
        );
    }
    assert_eq!(seen.len(), users.len());
    for u in users {
        let d = diff(&old, &new, u).await;
        assert!(d.is_exact(), "{u}: {}", d.summary());
    }
    assert!(
        job.run_cmd(&["--shard", "2/2"])
            .output()
            .unwrap()
            .status
            .code()
            == Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_directions_without_ping_pong() {
    let old = Dovecot::start(DovecotOptions::old());
    let new = Dovecot::start(DovecotOptions::new());
    small("alice", 20)
        .write_maildir(&old.maildir("alice"), false, Some((MAIL_UID, MAIL_GID)))
        .unwrap();
    let job = Job::new(
        &admin_side(&old),
        &admin_side(&new),
        "alice\n",
        "direction = \"both\"",
        "",
    );
    let r = job.run_ok(&[]);
    assert_eq!(copied(&r), 20, "{r:#}");
    // The user works on the new side during the pilot.
    let mut c = new.login("alice").await;
    c.create_if_missing(&new.wire_name("FromNew")).await;
    c.subscribe(&new.wire_name("FromNew")).await;
    for i in 0..3 {
        let m = format!(
            "Message-ID: <pilot{i}@example.com>\r\nSubject: pilot {i}\r\nFrom: a@example.com\r\n\r\nbody {i}\r\n"
        );
        c.append(
            "INBOX",
            &["\\Seen", "$Label1"],
            1_780_000_000 + i,
            m.as_bytes(),
        )
        .await;
    }
    c.append(
        &new.wire_name("FromNew"),
        &[],
        1_780_000_100,
        b"Subject: no id\r\nFrom: b@example.com\r\n\r\nnew side only\r\n",
    )
    .await;
    c.logout().await;
    let r = job.run_ok(&[]);
    assert_eq!(copied(&r), 4, "{r:#}");
    let there = diff(&old, &new, "alice").await;
    let back = diff(&new, &old, "alice").await;
    assert!(there.is_exact(), "{}", there.summary());
    assert!(back.is_exact(), "{}", back.summary());
    let r = job.run_ok(&[]);
    assert_eq!(copied(&r), 0, "{r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_byte_cap_stops_and_the_next_pass_continues() {
    let old = Dovecot::start(DovecotOptions::old());
    let new = Dovecot::start(DovecotOptions::new());
    let corpus = Corpus::generate(
        &CorpusOptions::new("alice", 30)
            .big_attachment(None)
            .max_size(4 * 1024)
            .folders(&["INBOX"]),
    );
    let manifest = corpus
        .write_maildir(&old.maildir("alice"), false, Some((MAIL_UID, MAIL_GID)))
        .unwrap();
    let total = manifest.total_bytes() as u64;
    let dst = format!(r#"{}, max_bytes_per_day = {}"#, admin_side(&new), total / 2);
    let job = Job::new(&admin_side(&old), &dst, "alice\n", "", "");
    let (out, r) = job.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    let n = copied(&r);
    assert!(n > 0 && n < 30, "{r:#}");
    assert!(r["bytes"].as_u64().unwrap() <= total / 2, "{r:#}");
    assert!(r.to_string().contains("max_bytes_per_day"), "{r:#}");
    // Same day, still capped: nothing more.
    let (_, r2) = job.run(&[]);
    assert_eq!(copied(&r2), 0, "{r2:#}");
    // Raise the cap (a new day, in effect): the rest arrives, no duplicates.
    let cfg = std::fs::read_to_string(job.config()).unwrap();
    std::fs::write(
        job.config(),
        cfg.replace(
            &format!("max_bytes_per_day = {}", total / 2),
            &format!("max_bytes_per_day = {}", total * 2),
        ),
    )
    .unwrap();
    let r = job.run_ok(&[]);
    assert_eq!(copied(&r) + n, 30, "{r:#}");
    let d = diff(&old, &new, "alice").await;
    assert!(d.is_exact(), "{}", d.summary());
}
