//! Server quirks never fail a folder for one message: a keyword the destination refuses (here
//! Dovecot's `mail_max_keyword_length` on the destination, shorter than the source's) is
//! dropped for that message only, which is copied with its other flags and reported under
//! `adjusted`; the folder converges and a second pass copies nothing. UID sets are sent in
//! commands that fit the server's line length (a sparse folder under Dovecot's
//! `imap_max_line_length`).

#[path = "support/backfill.rs"]
mod backfill;
#[path = "support/common.rs"]
mod common;
#[path = "support/cyrus.rs"]
mod cyrus;
#[path = "support/dovecot.rs"]
mod dovecot;
#[path = "support/imapcheck.rs"]
mod imapcheck;

use backfill::{Job, copied, folder, plain_side};
use cyrus::{Cyrus, CyrusOptions};
use dovecot::{Dovecot, DovecotOptions, ImapClient, MAIL_GID, MAIL_UID};
use futures_util::TryStreamExt;
use imapcheck::{FolderMap, compare, snapshot};

/// alice's Maildir under a temp dir holding `bodies` (flagged \Seen), each with the mtime
/// (INTERNALDATE) of `dates` when given, and a job copying it to the IMAP `destination`.
fn maildir_job(
    destination: &str,
    bodies: &[Vec<u8>],
    dates: Option<&[i64]>,
) -> (tempfile::TempDir, Job) {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("alice");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).unwrap();
    }
    for (i, b) in bodies.iter().enumerate() {
        let p = md
            .join("cur")
            .join(format!("{}.M{i}.test:2,S", 1_600_000_000 + i));
        std::fs::write(&p, b).unwrap();
        if let Some(&t) = dates.and_then(|d| d.get(i)) {
            let secs = std::time::Duration::from_secs(t.unsigned_abs());
            let at = if t < 0 {
                std::time::UNIX_EPOCH - secs
            } else {
                std::time::UNIX_EPOCH + secs
            };
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(at).unwrap();
        }
    }
    let job = Job::new(
        &format!("maildir = \"{}/{{user}}\"", dir.path().display()),
        destination,
        "alice\n",
        "",
        "",
    );
    (dir, job)
}

/// A job copying alice from Dovecot `old` to Dovecot `new`.
fn alice_job(old: &Dovecot, new: &Dovecot) -> Job {
    Job::new(
        &plain_side(old.port(), &old.secret_file("alice")),
        &plain_side(new.port(), &new.secret_file("alice")),
        "alice\n",
        "",
        "",
    )
}

fn maildir_source(new: &Dovecot, bodies: &[Vec<u8>]) -> (tempfile::TempDir, Job) {
    maildir_job(
        &plain_side(new.port(), &new.secret_file("alice")),
        bodies,
        None,
    )
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
    let job = alice_job(&old, &new);
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

/// `UID STORE <uids> <what>` in commands of 500 UIDs (short lines), on the selected folder.
async fn store_in_batches(c: &mut ImapClient, uids: &[u32], what: &str) {
    for batch in uids.chunks(500) {
        let set: Vec<String> = batch.iter().map(u32::to_string).collect();
        let stream = c.session.uid_store(set.join(","), what).await.unwrap();
        let _: Vec<_> =
            tokio::time::timeout(std::time::Duration::from_secs(60), stream.try_collect())
                .await
                .unwrap()
                .unwrap();
    }
}

/// Source and destination compared the way every backfill test does (bytes, flags, keywords,
/// INTERNALDATE instants, subscriptions).
async fn assert_exact(old: &Dovecot, new: &Dovecot) {
    let s = snapshot(old.addr(), "alice", "pw-alice").await.unwrap();
    let d = snapshot(new.addr(), "alice", "pw-alice").await.unwrap();
    let diff = compare(&s, &d, &FolderMap::identity());
    assert!(diff.is_exact(), "{}", diff.summary());
}

/// Sparse UIDs (every other message of 10,000 expunged) make a 2,000-UID set about 9.4 KB long:
/// under `imap_max_line_length = 8192` (RFC 7162 §4's recommended limit) every UID command —
/// the copy's FETCH on the source, the flag update's STORE on the destination — still fits,
/// and the folder is copied exactly. (4,000 would be below cutover's own 8,000-octet bound.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_uids_fit_the_servers_line_length() {
    const N: u32 = 10_000;
    let limit = "imap_max_line_length = 8192";
    let old = Dovecot::start(DovecotOptions::old().extra_conf(limit));
    let new = Dovecot::start(DovecotOptions::new().extra_conf(limit));
    let cur = old.maildir("alice").join("cur");
    for i in 0..N {
        let p = cur.join(format!("{}.M{i}.test:2,S", 1_600_000_000 + i));
        let msg = format!("Message-ID: <sparse{i}@example.com>\nSubject: {i}\n\nbody {i}\n");
        std::fs::write(&p, msg).unwrap();
        std::os::unix::fs::chown(&p, Some(MAIL_UID), Some(MAIL_GID)).unwrap();
    }
    let mut c = old.login("alice").await;
    assert_eq!(c.select("INBOX").await.exists, N);
    let even: Vec<u32> = (2..=N).step_by(2).collect();
    let odd: Vec<u32> = (1..=N).step_by(2).collect();
    store_in_batches(&mut c, &odd, "+FLAGS.SILENT (\\Deleted)").await;
    let _: Vec<_> = c
        .session
        .expunge()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(c.select("INBOX").await.exists, N / 2);

    let job = alice_job(&old, &new);
    let r = tokio::task::block_in_place(|| job.run_ok(&[]));
    assert_eq!(copied(&r), u64::from(N / 2), "{r:#}");
    assert_eq!(r["converged"], true, "{r:#}");
    assert_exact(&old, &new).await;

    // Every other copy flagged on the source: the destination's STORE names sparse UIDs.
    let flag: Vec<u32> = even.iter().copied().step_by(2).collect();
    store_in_batches(&mut c, &flag, "+FLAGS.SILENT (\\Flagged)").await;
    c.logout().await;
    let r = tokio::task::block_in_place(|| job.run_ok(&[]));
    assert_eq!(copied(&r), 0, "{r:#}");
    assert_eq!(r["converged"], true, "{r:#}");
    assert_eq!(folder(&r, "INBOX")["flags_updated"], flag.len(), "{r:#}");
    assert_exact(&old, &new).await;
    for d in [&old, &new] {
        let log = d.log_tail().to_ascii_lowercase();
        assert!(!log.contains("too long"), "{log}");
    }
}

/// 01-Jan-1965 12:00:00 +0000.
const IN_1965: i64 = -157_723_200;

/// Three CRLF messages (Cyrus refuses bare LF), the middle one dated 1965, and their dates.
fn with_a_1965_message() -> (Vec<Vec<u8>>, Vec<i64>) {
    let bodies = (0..3)
        .map(|i| {
            format!("Message-ID: <d{i}@example.com>\r\nSubject: {i}\r\n\r\nbody\r\n").into_bytes()
        })
        .collect();
    (bodies, vec![1_600_000_000, IN_1965, 1_600_000_002])
}

/// (Message-ID number, INTERNALDATE) of alice's INBOX, by Message-ID.
fn dates_of(msgs: &[dovecot::FetchedMessage]) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = msgs
        .iter()
        .map(|m| {
            let id = imapcheck::header_value(&m.body, "Message-ID").unwrap_or_default();
            (id, m.internaldate)
        })
        .collect();
    out.sort();
    out
}

/// Dovecot (Maildir, as in tests/support/dovecot.rs) takes `APPEND ... "01-Jan-1965 12:00:00
/// +0000"` as it is: the pre-1970 INTERNALDATE arrives exactly (instant compared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1965_internaldate_arrives_exactly_in_dovecot() {
    let new = Dovecot::start(DovecotOptions::new());
    let (bodies, dates) = with_a_1965_message();
    let dst = plain_side(new.port(), &new.secret_file("alice"));
    let (_dir, job) = maildir_job(&dst, &bodies, Some(&dates));
    let r = tokio::task::block_in_place(|| job.run_ok(&[]));
    assert_eq!(copied(&r), 3, "{r:#}");
    assert_eq!(
        folder(&r, "INBOX")["adjusted"]
            .as_array()
            .map_or(0, Vec::len),
        0,
        "{r:#}"
    );
    let mut c = new.login("alice").await;
    let got = dates_of(&c.fetch_all("INBOX").await);
    let ids = ["<d0@example.com>", "<d1@example.com>", "<d2@example.com>"];
    let want: Vec<(String, i64)> = ids.iter().map(|s| s.to_string()).zip(dates).collect();
    assert_eq!(got, want);
}

/// Cyrus 3.6 answers `BAD Invalid date-time in Append command` to any INTERNALDATE before 1970
/// (and stores the time of the APPEND for 01-Jan-1970 00:00:00 +0000): the 1965 message is
/// copied dated 01-Jan-1970 00:00:01 +0000, the report says so under `adjusted`, its neighbours
/// keep their dates, and a second pass copies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1965_internaldate_cyrus_refuses_is_copied_as_1970() {
    let cy = Cyrus::start(CyrusOptions::default());
    let (bodies, dates) = with_a_1965_message();
    let dst = plain_side(cy.port(), &cy.secret_file("alice"));
    let (_dir, job) = maildir_job(&dst, &bodies, Some(&dates));
    let r = tokio::task::block_in_place(|| job.run_ok(&[]));
    assert_eq!(copied(&r), 3, "{r:#}");
    assert_eq!(r["converged"], true, "{r:#}");
    let adjusted = folder(&r, "INBOX")["adjusted"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(adjusted.len(), 1, "{r:#}");
    let reply = adjusted[0]["reply"].as_str().unwrap_or("");
    assert!(
        reply.contains("01-Jan-1965 12:00:00 +0000")
            && reply.contains("stored as 01-Jan-1970 00:00:01 +0000"),
        "{r:#}"
    );
    let mut c = cy.login("alice").await;
    let got = dates_of(&c.fetch_all("INBOX").await);
    let ids = ["<d0@example.com>", "<d1@example.com>", "<d2@example.com>"];
    let want: Vec<(String, i64)> = ids
        .iter()
        .map(|s| s.to_string())
        .zip([dates[0], 1, dates[2]])
        .collect();
    assert_eq!(got, want);
    let r = tokio::task::block_in_place(|| job.run_ok(&[]));
    assert_eq!(copied(&r), 0, "second pass: {r:#}");
    assert_eq!(c.fetch_all("INBOX").await.len(), 3);
}
