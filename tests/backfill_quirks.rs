//! Server quirks never fail a folder for one message: a keyword the destination refuses (here
//! Dovecot's `mail_max_keyword_length` on the destination, shorter than the source's) is
//! dropped for that message only, which is copied with its other flags and reported under
//! `adjusted`; the folder converges and a second pass copies nothing.

#[path = "support/backfill.rs"]
mod backfill;
#[path = "support/common.rs"]
mod common;
#[path = "support/dovecot.rs"]
mod dovecot;
#[path = "support/imapcheck.rs"]
mod imapcheck;

use backfill::{Job, copied, folder, plain_side};
use dovecot::{Dovecot, DovecotOptions};
use imapcheck::snapshot;

/// alice's Maildir under a temp dir holding `bodies` (flagged \Seen), and a job copying it to
/// `new`.
fn maildir_source(new: &Dovecot, bodies: &[Vec<u8>]) -> (tempfile::TempDir, Job) {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("alice");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).unwrap();
    }
    for (i, b) in bodies.iter().enumerate() {
        let name = format!("{}.M{i}.test:2,S", 1_600_000_000 + i);
        std::fs::write(md.join("cur").join(name), b).unwrap();
    }
    let job = Job::new(
        &format!("maildir = \"{}/{{user}}\"", dir.path().display()),
        &plain_side(new.port(), &new.secret_file("alice")),
        "alice\n",
        "",
        "",
    );
    (dir, job)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_keyword_is_dropped_for_that_message_only() {
    let old = Dovecot::start(DovecotOptions::old().extra_conf("mail_max_keyword_length = 200"));
    let new = Dovecot::start(DovecotOptions::new().extra_conf("mail_max_keyword_length = 20"));
    let long_kw = format!("$Project{}", "x".repeat(60));
    {
        let mut c = old.login("alice").await;
        for i in 0..5 {
            let flags: Vec<&str> = if i == 2 {
                vec!["\\Seen", "$Short", long_kw.as_str()]
            } else {
                vec!["\\Seen", "$Short"]
            };
            let msg = format!("Message-ID: <q{i}@example.com>\r\nSubject: {i}\r\n\r\nbody {i}\r\n");
            c.append("INBOX", &flags, 1_600_000_000 + i, msg.as_bytes())
                .await;
        }
        c.logout().await;
    }
    let job = Job::new(
        &plain_side(old.port(), &old.secret_file("alice")),
        &plain_side(new.port(), &new.secret_file("alice")),
        "alice\n",
        "",
        "",
    );
    let r = tokio::task::block_in_place(|| job.run_ok(&[]));
    assert_eq!(copied(&r), 5, "{r:#}");
    assert_eq!(r["converged"], true, "{r:#}");
    let inbox = folder(&r, "INBOX");
    let adjusted = inbox["adjusted"].as_array().cloned().unwrap_or_default();
    assert_eq!(adjusted.len(), 1, "{r:#}");
    assert!(
        adjusted[0]["reply"]
            .as_str()
            .unwrap_or("")
            .contains(&long_kw),
        "{r:#}"
    );

    let d = snapshot(new.addr(), "alice", "pw-alice").await.unwrap();
    let msgs = &d.folders["INBOX"].messages;
    assert_eq!(msgs.len(), 5);
    for m in msgs {
        assert_eq!(
            m.flags,
            vec!["$Short".to_string(), "\\Seen".to_string()],
            "{m:?}"
        );
    }
    let r = tokio::task::block_in_place(|| job.run_ok(&[]));
    assert_eq!(copied(&r), 0, "{r:#}");
}

/// A message holding a NUL byte (possible in a Maildir file, not in an IMAP literal) travels in a
/// `literal8` (RFC 3516 BINARY, which Dovecot offers) and is stored byte for byte (read back from
/// Dovecot's files: over IMAP4rev1's BODY[] Dovecot shows a NUL as 0x80); its neighbours are
/// copied as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_byte_travels_in_a_literal8() {
    let new = Dovecot::start(DovecotOptions::new());
    let bodies: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            let mut b = format!("Message-ID: <nul{i}@example.com>\r\nSubject: {i}\r\n\r\nbody ")
                .into_bytes();
            if i == 1 {
                b.extend_from_slice(b"with a \x00 NUL");
            }
            b.extend_from_slice(b"\r\n");
            b
        })
        .collect();
    let (_dir, job) = maildir_source(&new, &bodies);
    let r = tokio::task::block_in_place(|| job.run_ok(&[]));
    assert_eq!(copied(&r), 3, "{r:#}");
    let mut c = new.login("alice").await;
    assert_eq!(c.fetch_all("INBOX").await.len(), 3);
    let mut bytes: Vec<Vec<u8>> = std::fs::read_dir(new.maildir("alice").join("cur"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    bytes.sort();
    // Dovecot stores LF line ends.
    let mut want: Vec<Vec<u8>> = bodies
        .iter()
        .map(|b| {
            String::from_utf8_lossy(b)
                .replace("\r\n", "\n")
                .into_bytes()
        })
        .collect();
    want.sort();
    assert_eq!(bytes, want);
}

/// An empty message (a 0-byte file in the source Maildir; some servers refuse an empty APPEND)
/// never fails its folder: the others are copied, and it is either copied too or reported with
/// the server's reply, by UID, under the folder's `failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_message_is_copied_or_reported_alone() {
    let new = Dovecot::start(DovecotOptions::new());
    let bodies: Vec<Vec<u8>> = (0..3)
        .map(|i| match i {
            1 => Vec::new(),
            _ => format!("Message-ID: <e{i}@example.com>\r\nSubject: {i}\r\n\r\nbody\r\n")
                .into_bytes(),
        })
        .collect();
    let (_dir, job) = maildir_source(&new, &bodies);
    let (out, r) = tokio::task::block_in_place(|| job.run(&[]));
    let inbox = folder(&r, "INBOX");
    assert!(inbox["error"].is_null(), "{r:#}");
    let failed = inbox["failed"].as_array().cloned().unwrap_or_default();
    let mut c = new.login("alice").await;
    let there = c.fetch_all("INBOX").await.len();
    match failed.as_slice() {
        [] => {
            assert_eq!((copied(&r), there), (3, 3), "{r:#}");
            assert!(out.status.success());
        }
        [f] => {
            assert_eq!((copied(&r), there), (2, 2), "{r:#}");
            assert!(!f["reply"].as_str().unwrap_or("").is_empty(), "{f}");
            assert_eq!(r["converged"], false, "a refused message is not converged");
        }
        _ => panic!("only the empty message may fail: {r:#}"),
    }
}
