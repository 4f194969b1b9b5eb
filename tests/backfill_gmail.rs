//! Provider profiles end to end (the real `cutover backfill run` binary) against the in-process
//! fake Gmail (tests/support/fake_gmail.rs; no real Gmail is reachable here): labels as folders
//! or as keywords, All Mail → Archive, X-GM-MSGID identity across passes, a Gmail destination
//! appended once then labelled, and an Exchange destination's size limit and folder names.

#[path = "support/backfill.rs"]
mod backfill;
#[path = "support/fake_gmail.rs"]
mod fake_gmail;

use cutover::backfill::maildir::Maildir;
use fake_gmail::FakeGmail;
use std::path::Path;

const DATE: &str = "01-Jan-2024 10:00:00 +0000";

fn msg(id: &str, body: &str) -> Vec<u8> {
    format!(
        "Message-ID: <{id}@example.com>\r\nFrom: a@example.com\r\nSubject: {id}\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// A job from the fake `src` for user `u` to `destination` (`None`: a Maildir), with `extra`
/// job keys and `dst_extra` destination keys; the directory holding both (kept until dropped).
fn gmail_job(
    src: &FakeGmail,
    u: &str,
    destination: Option<&FakeGmail>,
    extra: &str,
    dst_extra: &str,
) -> (backfill::Job, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("cutover-gm-pw-")
        .tempdir_in("/tmp")
        .unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pw\n").unwrap();
    let dst = match destination {
        Some(d) => backfill::plain_side(d.port(), &pw),
        None => format!(
            "maildir = \"{}\"",
            dir.path().join("{user}").join("Maildir").display()
        ),
    };
    let job = backfill::Job::new(
        &format!(
            "{}, profile = \"gmail\"",
            backfill::plain_side(src.port(), &pw)
        ),
        &format!("{dst}{dst_extra}"),
        &format!("{u}\n"),
        extra,
        "",
    );
    (job, dir)
}

/// Run one pass (which must converge) and a second one (which must copy nothing); the first
/// report.
fn run_twice(job: &backfill::Job, what: &str) -> serde_json::Value {
    let (o, r) = tokio::task::block_in_place(|| job.run(&[]));
    assert!(
        o.status.success() && r["converged"] == true,
        "{what}: backfill failed ({}):\n{}\nreport: {r:#}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let (_, r2) = tokio::task::block_in_place(|| job.run(&[]));
    assert_eq!(backfill::copied(&r2), 0, "{what}: second pass: {r2:#}");
    r
}

/// Per destination Maildir folder (logical name): (body bytes with LF, flags) of each message.
fn maildir_folder(root: &Path, folder: &str) -> Vec<(Vec<u8>, String)> {
    let md = Maildir::open(root).unwrap();
    let f = md.folder(folder).unwrap();
    let mut out: Vec<(Vec<u8>, String)> = f
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| (std::fs::read(&e.path).unwrap(), e.flags))
        .collect();
    out.sort();
    out
}

fn crlf_to_lf(b: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(b)
        .replace("\r\n", "\n")
        .into_bytes()
}

/// The source every Gmail test uses: messages in several labels, only in All Mail, starred.
fn seed(g: &FakeGmail, u: &str) -> [Vec<u8>; 5] {
    let m = [
        msg("one", "in Inbox and Work"),
        msg("two", "sent, in Work/Projects"),
        msg("three", "in Inbox, starred, important"),
        msg("four", "archived: only in All Mail"),
        msg("five", "archived, important"),
    ];
    g.add(u, &m[0], &["\\Inbox", "Work"], &["\\Seen"], DATE);
    g.add(u, &m[1], &["\\Sent", "Work/Projects"], &["\\Seen"], DATE);
    g.add(
        u,
        &m[2],
        &["\\Inbox", "\\Starred", "\\Important"],
        &[],
        DATE,
    );
    g.add(u, &m[3], &[], &["\\Seen"], DATE);
    g.add(u, &m[4], &["\\Important"], &[], DATE);
    m
}

/// `gmail_labels = "folders"` (the default), Gmail detected from X-GM-EXT-1: a copy in every
/// label's folder, messages without a label in Archive, nothing from the Starred/Important
/// views or All Mail twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_as_folders() {
    let u = "dave@example.com";
    let g = FakeGmail::start(&[(u, "pw")]).await;
    let m = seed(&g, u);
    let (job, dir) = gmail_job(&g, u, None, "", "");
    // No `profile` here: Gmail is recognised by its X-GM-EXT-1 capability.
    let cfg = std::fs::read_to_string(job.config()).unwrap();
    std::fs::write(job.config(), cfg.replacen(", profile = \"gmail\"", "", 1)).unwrap();
    let r = run_twice(&job, "folders");
    assert_eq!(backfill::copied(&r), 7, "{r:#}");
    let root = dir.path().join(u).join("Maildir");
    let bodies = |f: &str| -> Vec<Vec<u8>> {
        maildir_folder(&root, f)
            .into_iter()
            .map(|(b, _)| b)
            .collect()
    };
    let lf = |i: usize| crlf_to_lf(&m[i]);
    assert_eq!(bodies("INBOX"), sorted(vec![lf(0), lf(2)]));
    assert_eq!(bodies("Work"), vec![lf(0)]);
    assert_eq!(bodies("Work/Projects"), vec![lf(1)]);
    assert_eq!(bodies("Sent"), vec![lf(1)]);
    assert_eq!(bodies("Archive"), sorted(vec![lf(3), lf(4)]));
    let names: Vec<String> = Maildir::open(&root)
        .unwrap()
        .list()
        .unwrap()
        .folders
        .iter()
        .map(|f| f.wire.clone())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("Starred") || n.contains("Important") || n.contains("All Mail")),
        "{names:?}"
    );
    // Starred is the \Flagged flag.
    let inbox = maildir_folder(&root, "INBOX");
    assert!(
        inbox
            .iter()
            .any(|(b, f)| *b == lf(2) && f.contains("\\Flagged")),
        "{inbox:?}"
    );
    let all = backfill::folder(&r, "[Gmail]/All Mail");
    assert_eq!(all["skipped"]["gmail_label_elsewhere"], 3, "{all:#}");
    assert_eq!(all["destination"], "Archive");
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

/// `gmail_labels = "keywords"`: each message once (Inbox first, then Sent, then its first
/// label), the other labels as keywords; a message relabelled later is not copied again
/// (X-GM-MSGID identity), and new mail is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_as_keywords_one_copy_per_message() {
    let u = "erin@example.com";
    let g = FakeGmail::start(&[(u, "pw")]).await;
    let m = seed(&g, u);
    let (job, dir) = gmail_job(&g, u, None, "gmail_labels = \"keywords\"", "");
    let r = run_twice(&job, "keywords");
    assert_eq!(backfill::copied(&r), 5, "{r:#}");
    let root = dir.path().join(u).join("Maildir");
    let lf = |i: usize| crlf_to_lf(&m[i]);
    let inbox = maildir_folder(&root, "INBOX");
    assert_eq!(inbox.len(), 2, "{inbox:?}");
    let one = inbox.iter().find(|(b, _)| *b == lf(0)).unwrap();
    assert!(one.1.contains("Work"), "Work as a keyword: {one:?}");
    let sent = maildir_folder(&root, "Sent");
    assert_eq!(sent.len(), 1);
    assert!(sent[0].1.contains("Work/Projects"), "{sent:?}");
    assert_eq!(maildir_folder(&root, "Archive").len(), 2);
    assert!(
        Maildir::open(&root)
            .unwrap()
            .folder("Work")
            .unwrap()
            .entries()
            .map(|e| e.is_empty())
            .unwrap_or(true)
    );
    let inbox_report = backfill::folder(&r, "INBOX");
    let notes = inbox_report["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        notes.iter().any(|n| n["kind"] == "gmail_keywords"),
        "per-message notes: {inbox_report:#}"
    );
    // Relabel message one (add "Later", drop \Inbox: its first home becomes "Later") and add
    // new mail: only the new message is copied.
    g.add(u, &msg("six", "new"), &["\\Inbox"], &[], DATE);
    g.relabel(u, "<one@example.com>", &["Later", "Work"]);
    let (o, r3) = tokio::task::block_in_place(|| job.run(&[]));
    assert!(o.status.success(), "{r3:#}");
    assert_eq!(backfill::copied(&r3), 1, "{r3:#}");
}

/// A Gmail destination: a message in two source folders is appended once and labelled twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gmail_destination_appends_once_then_labels() {
    let u = "fay@example.com";
    let src = FakeGmail::start(&[(u, "pw")]).await;
    let dst = FakeGmail::start(&[(u, "pw")]).await;
    let m = seed(&src, u);
    let (job, _dir) = gmail_job(&src, u, Some(&dst), "", ", profile = \"gmail\"");
    let r = run_twice(&job, "gmail->gmail");
    let got = dst.messages(u);
    for g in &got {
        eprintln!("dst {} labels {:?} flags {:?}", g.msgid, g.labels, g.flags);
    }
    assert_eq!(
        got.len(),
        5,
        "one Gmail message per source message: {got:#?}"
    );
    let one = got.iter().find(|g| g.bytes == m[0]).unwrap();
    let mut labels = one.labels.clone();
    labels.sort();
    assert_eq!(labels, ["Work", "\\Inbox"], "{one:?}");
    let two = got.iter().find(|g| g.bytes == m[1]).unwrap();
    assert!(
        two.labels.iter().any(|l| l == "Work/Projects") && two.labels.iter().any(|l| l == "\\Sent"),
        "{two:?}"
    );
    assert!(
        dst.commands().iter().any(|c| c.contains("+X-GM-LABELS")),
        "{:?}",
        dst.commands()
    );
    assert!(backfill::copied(&r) >= 5, "{r:#}");
    // Filed into one more label on the source since: a label on the same Gmail message.
    src.relabel(u, "<one@example.com>", &["\\Inbox", "Work", "Later"]);
    let (o, r3) = tokio::task::block_in_place(|| job.run(&[]));
    assert!(o.status.success() && r3["converged"] == true, "{r3:#}");
    let got = dst.messages(u);
    assert_eq!(got.len(), 5, "no second APPEND: {got:#?}");
    let one = got.iter().find(|g| g.bytes == m[0]).unwrap();
    assert!(one.labels.iter().any(|l| l == "Later"), "{one:?}");
}

/// An Exchange destination: a message over its size limit is skipped and reported (and not
/// tried again by the next pass); a folder named like one of Exchange's non-mail folders gets
/// a name of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_size_limit_and_reserved_names() {
    let u = "gus@example.com";
    let g = FakeGmail::start(&[(u, "pw")]).await;
    let big = msg("big", &"x".repeat(4000));
    g.add(u, &big, &["\\Inbox"], &[], DATE);
    g.add(u, &msg("small", "fits"), &["\\Inbox"], &[], DATE);
    g.add(
        u,
        &msg("cal", "a folder called Calendar"),
        &["Calendar"],
        &[],
        DATE,
    );
    let (job, dir) = gmail_job(
        &g,
        u,
        None,
        "",
        ", profile = \"exchange\", max_message_size = \"2KiB\"",
    );
    let r = run_twice(&job, "exchange");
    assert_eq!(backfill::copied(&r), 2, "{r:#}");
    let inbox = backfill::folder(&r, "INBOX");
    assert_eq!(inbox["skipped"]["too_large"], 1, "{inbox:#}");
    let note = &inbox["messages"][0];
    assert_eq!(note["action"], "skipped");
    assert!(
        note["detail"].as_str().unwrap_or("").contains("2048"),
        "{note:#}"
    );
    let cal = backfill::folder(&r, "Calendar");
    assert_eq!(cal["destination"], "Calendar (mail)", "{cal:#}");
    let root = dir.path().join(u).join("Maildir");
    assert_eq!(maildir_folder(&root, "Calendar (mail)").len(), 1);
    // New mail later: copied; the oversize message is neither retried nor counted missing.
    g.add(u, &msg("later", "new"), &["\\Inbox"], &[], DATE);
    let (o, r3) = tokio::task::block_in_place(|| job.run(&[]));
    assert!(o.status.success() && r3["converged"] == true, "{r3:#}");
    assert_eq!(backfill::copied(&r3), 1, "{r3:#}");
    assert_eq!(backfill::folder(&r3, "INBOX")["missing"], 0, "{r3:#}");
}

/// A message carrying `fixture` as its winmail.dat; with or without a Message-ID.
fn tnef_msg(subject: &str, with_id: bool) -> Vec<u8> {
    use base64::Engine as _;
    let tnef = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tnef/two-files.tnef"
    ))
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&tnef);
    let id = if with_id {
        format!("Message-ID: <{subject}@example.com>\r\n")
    } else {
        String::new()
    };
    format!(
        "{id}From: a@example.com\r\nTo: b@example.com\r\nSubject: {subject}\r\n\
         Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: application/ms-tnef; name=\"winmail.dat\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n"
    )
    .into_bytes()
}

/// `convert_tnef = true` on a backfill job: winmail.dat arrives as MIME parts, the report
/// says so per message, and a pass that starts over without state (new UIDVALIDITY, lost job
/// state) still recognises the converted copies by the original's fingerprint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tnef_converted_on_the_way_and_recognised_later() {
    let u = "hal@example.com";
    let g = FakeGmail::start(&[(u, "pw")]).await;
    g.add(u, &tnef_msg("with-id", true), &["\\Inbox"], &[], DATE);
    g.add(u, &tnef_msg("no-id", false), &["\\Inbox"], &[], DATE);
    let (job, dir) = gmail_job(&g, u, None, "convert_tnef = true", "");
    let r = run_twice(&job, "tnef");
    assert_eq!(backfill::copied(&r), 2, "{r:#}");
    let inbox = backfill::folder(&r, "INBOX");
    assert_eq!(inbox["converted"], 2, "{inbox:#}");
    assert_eq!(r["mailboxes"][0]["converted"], 2);
    let root = dir.path().join(u).join("Maildir");
    for (body, _) in maildir_folder(&root, "INBOX") {
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("ms-tnef") && text.contains("filename="),
            "{text}"
        );
    }
    // Start over without the job's state: every copy is recognised, none made again.
    std::fs::remove_dir_all(job.state_dir()).unwrap();
    let (o, r3) = tokio::task::block_in_place(|| job.run(&[]));
    assert!(o.status.success() && r3["converged"] == true, "{r3:#}");
    assert_eq!(backfill::copied(&r3), 0, "{r3:#}");
    assert_eq!(maildir_folder(&root, "INBOX").len(), 2);
}
