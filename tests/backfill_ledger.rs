//! Ledger credits: messages cutover dual-delivered into the destination INBOX (here with Dovecot's
//! LDA, plus a ledger record as the delivery engine writes it) are not copied again when backfill
//! copies the source folder that holds them, even though that folder is not INBOX. Read once
//! straight from `<state_dir>/db` (no gateway running) and once through the admin API
//! `GET /api/ledger/{mailbox}` while another process (this test) holds the db lock.

#[path = "support/backfill.rs"]
mod backfill;
#[path = "support/common.rs"]
mod common;
#[path = "support/dovecot.rs"]
mod dovecot;

use backfill::{Job, folder, plain_side};
use cutover::fingerprint::fingerprint;
use cutover::ledger::Ledger;
use dovecot::{Dovecot, DovecotOptions};

fn msg(id: Option<&str>, subject: &str) -> Vec<u8> {
    let mid = id
        .map(|i| format!("Message-ID: <{i}@example.com>\r\n"))
        .unwrap_or_default();
    format!(
        "From: Sender <s@example.net>\r\nTo: user@example.com\r\nDate: Tue, 3 Mar 2026 10:00:00 +0000\r\n{mid}Subject: {subject}\r\n\r\nBody of {subject}.\r\n"
    )
    .into_bytes()
}

/// Source INBOX: A1..A3; source Archive: B1..B3 (B3 without Message-ID) and C1, C2.
/// Destination INBOX (dual delivery): A1..A3, B1..B3. Ledger: A and B for the user.
async fn setup(old: &Dovecot, new: &Dovecot, user: &str, db: &sled::Db) {
    let a: Vec<Vec<u8>> = (1..=3)
        .map(|i| msg(Some(&format!("a{i}-{user}")), &format!("A{i}")))
        .collect();
    let b: Vec<Vec<u8>> = vec![
        msg(Some(&format!("b1-{user}")), "B1"),
        msg(Some(&format!("b2-{user}")), "B2"),
        msg(None, &format!("B3 {user}")),
    ];
    let c: Vec<Vec<u8>> = (1..=2)
        .map(|i| msg(Some(&format!("c{i}-{user}")), &format!("C{i}")))
        .collect();
    let mut s = old.login(user).await;
    s.create_if_missing(&old.wire_name("Archive")).await;
    for m in &a {
        s.append("INBOX", &["\\Seen"], 1_770_000_000, m).await;
    }
    for m in b.iter().chain(&c) {
        s.append(&old.wire_name("Archive"), &["\\Seen"], 1_770_000_000, m)
            .await;
    }
    s.logout().await;
    let ledger = Ledger::open(db).unwrap();
    for (i, m) in a.iter().chain(&b).enumerate() {
        // What the delivery engine hands over: LF line endings as received over SMTP.
        let lf = String::from_utf8_lossy(m).replace("\r\n", "\n");
        new.lda_deliver(user, "INBOX", lf.as_bytes());
        ledger
            .record(
                "new",
                user,
                user,
                &fingerprint(lf.as_bytes()),
                &format!("Q{user}{i}"),
            )
            .unwrap();
        // A delivery to the old side does not count for the new one.
        ledger
            .record(
                "old",
                user,
                user,
                &fingerprint(lf.as_bytes()),
                &format!("Q{user}{i}"),
            )
            .unwrap();
    }
    ledger.sync().await.unwrap();
}

async fn count(d: &Dovecot, user: &str, folder: &str) -> u32 {
    let mut c = d.login(user).await;
    let n = c.examine(&d.wire_name(folder)).await.exists;
    c.logout().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_credits_skip_dual_delivered_mail() {
    let old = Dovecot::start(DovecotOptions::old());
    let new = Dovecot::start(DovecotOptions::new());
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = api.local_addr().unwrap();
    // Both users log in with their own password files: the passwords file holds both.
    let pw = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pw.path(), "alice,pw-alice\nbob,pw-bob\n").unwrap();
    let side = |port: u16| {
        format!(
            r#"host = "127.0.0.1", port = {port}, tls = "none", auth = "plain", passwords_file = "{}""#,
            pw.path().display()
        )
    };
    let job = Job::new(
        &side(old.port()),
        &side(new.port()),
        "alice\nbob\n",
        "ledger_target = \"new\"",
        &format!("[admin]\nlisten = \"{api_addr}\""),
    );
    let _ = plain_side; // (password_file form is used by the other tests)
    let db_path = job.state_dir().join("db");

    // alice: the db is not locked; backfill opens it directly.
    {
        let db = sled::open(&db_path).unwrap();
        setup(&old, &new, "alice", &db).await;
        setup(&old, &new, "bob", &db).await;
        db.flush().unwrap();
    }
    let r = job.run_ok(&["--mailbox", "alice"]);
    let inbox = folder(&r, "INBOX");
    assert_eq!(inbox["copied"], 0, "{r:#}");
    assert_eq!(inbox["skipped"]["present"], 3, "{r:#}");
    let archive = folder(&r, "Archive");
    assert_eq!(archive["copied"], 2, "{r:#}");
    assert_eq!(archive["skipped"]["ledger"], 3, "{r:#}");
    assert_eq!(count(&new, "alice", "INBOX").await, 6);
    assert_eq!(count(&new, "alice", "Archive").await, 2);

    // bob: a "gateway" (this process) holds the db lock and serves the ledger API.
    let db = sled::open(&db_path).unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(api, cutover::ledger::api_router(db)).await;
    });
    let r = job.run_ok(&["--mailbox", "bob"]);
    let archive = folder(&r, "Archive");
    assert_eq!(archive["copied"], 2, "{r:#}");
    assert_eq!(archive["skipped"]["ledger"], 3, "{r:#}");
    assert_eq!(count(&new, "bob", "Archive").await, 2);
    assert_eq!(count(&new, "bob", "INBOX").await, 6);

    // A second pass changes nothing.
    server.abort();
    let _ = server.await;
    let r = job.run_ok(&["--mailbox", "bob"]);
    assert_eq!(backfill::copied(&r), 0, "{r:#}");
    assert_eq!(count(&new, "bob", "Archive").await, 2);
}
