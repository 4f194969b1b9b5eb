//! Self-test of the Cyrus fixture (tests/support/cyrus.rs): each namespace combination starts, NAMESPACE
//! and LIST say what the module doc says, nested + non-ASCII folders, APPEND with flags, keywords and
//! INTERNALDATE round-trip through `imapcheck::snapshot`, the SPECIAL-USE folder is listed; plus the
//! server quirks a backfill meets (time-zone offsets, empty and 8-bit messages, NUL, many keywords).

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

use cyrus::{Cyrus, CyrusOptions};
use imapcheck::snapshot;

const SENT: &str = "Sent Messages";
/// 2020-02-29T12:34:56Z.
const T: i64 = 1_582_979_696;

/// Start `opts` (+ a `\Sent` folder), check NAMESPACE, build folders and messages, snapshot them.
async fn check_combination(opts: CyrusOptions, namespace: &str, list_inbox_child: &str) {
    let cy = Cyrus::start(opts.special_use(&[(SENT, "\\Sent")]));
    eprintln!("{}: started in {:?}", cy.options().label, cy.startup_time());
    assert!(
        cy.startup_time().as_secs() < 5,
        "slow start {:?}",
        cy.startup_time()
    );
    assert_eq!(cy.namespace("alice"), format!("* NAMESPACE {namespace}"));

    let mut c = cy.login("alice").await;
    for f in ["Projects/Alpha", "Entwürfe/Ärger"] {
        c.create(&cy.wire_name(f)).await;
        c.subscribe(&cy.wire_name(f)).await;
    }
    c.append(
        "INBOX",
        &["\\Seen", "$Label1", "Work"],
        T,
        b"Subject: a\r\nX-Test-Id: a\r\n\r\na\r\n",
    )
    .await;
    c.append(
        &cy.wire_name("Projects/Alpha"),
        &["\\Flagged", "\\Answered", "$Forwarded"],
        T - 86_400 * 365 * 7,
        b"Subject: b\r\nX-Test-Id: b\r\n\r\nb\r\n",
    )
    .await;
    c.append(
        &cy.wire_name("Entwürfe/Ärger"),
        &["\\Draft"],
        T + 1,
        b"Subject: c\r\nX-Test-Id: c\r\n\r\nc\r\n",
    )
    .await;
    let listed: Vec<String> = c.list().await.into_iter().map(|(n, _)| n).collect();
    assert!(
        listed.iter().any(|n| n == list_inbox_child),
        "{list_inbox_child} not in {listed:?}"
    );
    c.logout().await;

    let snap = snapshot(cy.addr(), "alice", &cy.password("alice"))
        .await
        .unwrap();
    let p = cy.personal_prefix_utf8();
    assert_eq!(snap.separator, cy.separator().to_string());
    assert_eq!(snap.special("\\Sent"), Some(format!("{p}{SENT}").as_str()));
    assert!(
        snap.subscriptions.contains(&format!("{p}{SENT}")),
        "{:?}",
        snap.subscriptions
    );
    assert!(snap.subscriptions.contains(&format!("{p}Entwürfe/Ärger")));
    let inbox = &snap.folders["INBOX"].messages;
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].flags, ["$Label1", "Work", "\\Seen"]);
    assert_eq!(inbox[0].internaldate, T);
    let alpha = &snap.folders[&format!("{p}Projects/Alpha")].messages;
    assert_eq!(alpha[0].flags, ["$Forwarded", "\\Answered", "\\Flagged"]);
    assert_eq!(alpha[0].internaldate, T - 86_400 * 365 * 7);
    let draft = &snap.folders[&format!("{p}Entwürfe/Ärger")];
    assert_eq!(draft.messages[0].flags, ["\\Draft"]);
    assert_eq!(draft.wire, cy.wire_name("Entwürfe/Ärger"));
    // Cyrus 3 makes the intermediate `Projects` a real (selectable, empty) mailbox.
    let projects = &snap.folders[&format!("{p}Projects")];
    eprintln!(
        "{}: Projects attributes {:?}",
        cy.options().label,
        projects.attributes
    );
    eprintln!(
        "{}: folders {:?}",
        cy.options().label,
        snap.folders.keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_no_prefix_slash() {
    check_combination(
        CyrusOptions::default().label("default"),
        r#"(("" "/")) (("Other Users/" "/")) (("Shared Folders/" "/"))"#,
        "Projects/Alpha",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altnamespace_dot() {
    check_combination(
        CyrusOptions::alt_dot().label("alt-dot"),
        r#"(("" ".")) (("Other Users." ".")) (("Shared Folders." "."))"#,
        "Projects.Alpha",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_slash() {
    check_combination(
        CyrusOptions::inbox_slash().label("inbox-slash"),
        r#"(("INBOX/" "/")) (("user/" "/")) (("" "/"))"#,
        "INBOX/Projects/Alpha",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_dot_classic() {
    check_combination(
        CyrusOptions::inbox_dot().label("inbox-dot"),
        r#"(("INBOX." ".")) (("user." ".")) (("" "."))"#,
        "INBOX.Projects.Alpha",
    )
    .await;
}

/// APPEND `bytes` with `flags` and `date` on a fresh session (a failed APPEND can leave async-imap's
/// session out of step): the outcome as text.
async fn try_append(cy: &Cyrus, flags: &str, date: Option<&str>, bytes: &[u8]) -> String {
    let mut c = cy.login("alice").await;
    let r = c.session.append("INBOX", Some(flags), date, bytes).await;
    c.logout().await;
    match r {
        Ok(()) => "OK".into(),
        Err(e) => e.to_string(),
    }
}

/// What Cyrus does with the awkward messages and arguments a backfill may send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quirks() {
    let cy = Cyrus::start(CyrusOptions::inbox_dot().label("quirks"));
    // INTERNALDATE with a non-UTC offset: the instant survives (read back as T).
    let tz = try_append(
        &cy,
        "()",
        Some("\"29-Feb-2020 14:34:56 +0200\""),
        b"X-Test-Id: tz\r\n\r\ntz\r\n",
    );
    assert_eq!(tz.await, "OK");
    let many: Vec<String> = (0..200).map(|i| format!("kw{i}")).collect();
    let many = format!("({})", many.join(" "));
    let cases: [(&str, &str, &[u8]); 7] = [
        ("empty", "()", b""),
        (
            "8-bit header",
            "()",
            "Subject: Grüße\r\nX-Test-Id: 8bit\r\n\r\nbody\r\n".as_bytes(),
        ),
        (
            "NUL in body",
            "()",
            b"Subject: nul\r\nX-Test-Id: nul\r\n\r\na\0b\r\n",
        ),
        ("bare LF", "()", b"Subject: lf\nX-Test-Id: lf\n\nbody\n"),
        ("no body", "()", b"Subject: nobody\r\nX-Test-Id: nobody\r\n"),
        (
            "200 keywords",
            &many,
            b"Subject: kw\r\nX-Test-Id: kw\r\n\r\nkw\r\n",
        ),
        (
            "1 MB",
            "()",
            &[b"X-Test-Id: big\r\n\r\n".as_slice(), &[b'a'; 1 << 20]].concat(),
        ),
    ];
    for (what, flags, bytes) in cases {
        eprintln!(
            "append {what}: {}",
            try_append(&cy, flags, None, bytes).await
        );
    }
    let snap = snapshot(cy.addr(), "alice", &cy.password("alice"))
        .await
        .unwrap();
    let inbox = &snap.folders["INBOX"].messages;
    for m in inbox {
        eprintln!(
            "stored uid {} {:?} size {} date {} {} flags",
            m.uid,
            m.test_id,
            m.size,
            m.internaldate,
            m.flags.len()
        );
    }
    assert_eq!(inbox[0].internaldate, T);
    // munge8bit (default yes): 8-bit header bytes are replaced by 'X', same size, different bytes.
    let eight = inbox.iter().find(|m| m.test_id.as_deref() == Some("8bit"));
    let want = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(cases[1].2));
    eprintln!(
        "8-bit header stored unchanged: {}",
        eight.map(|m| &m.sha256) == Some(&want)
    );
    // The user-flag limit is per mailbox: exactly 100 distinct keywords fit in one folder.
    let mut c = cy.login("alice").await;
    c.create("INBOX.kw").await;
    let hundred: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let msg = b"X: y\r\n\r\nz\r\n";
    let flags = format!("({})", hundred.join(" "));
    let r = c.session.append("INBOX.kw", Some(&flags), None, msg).await;
    assert!(r.is_ok(), "100 keywords: {r:?}");
    let r = c
        .session
        .append("INBOX.kw", Some("(k100)"), None, msg)
        .await;
    let err = r.expect_err("the 101st keyword of a mailbox").to_string();
    assert!(err.contains("Too many user flags"), "{err}");
    c.logout().await;
    // An admin may act for a user (SASL PLAIN authzid=alice authcid=admin): cutover's admin_user mode.
    let mut c = cy.login_authzid("alice").await;
    assert!(c.select("INBOX").await.exists >= 4);
    c.logout().await;
}

/// FolderMap prefixes: Dovecot `Projects/Alpha` <-> Cyrus `INBOX/Projects/Alpha`; INBOX stays INBOX.
#[test]
fn folder_map_prefixes() {
    use imapcheck::{FolderMap, Snapshot};
    let (empty, to) = (
        Snapshot::default(),
        FolderMap::identity().prefixes("", "INBOX/"),
    );
    assert_eq!(
        to.resolve(&empty, &empty, "Projects/Alpha").as_deref(),
        Some("INBOX/Projects/Alpha")
    );
    assert_eq!(
        to.resolve(&empty, &empty, "INBOX").as_deref(),
        Some("INBOX")
    );
    let back = FolderMap::identity().prefixes("INBOX/", "");
    assert_eq!(
        back.resolve(&empty, &empty, "INBOX/Projects/Alpha")
            .as_deref(),
        Some("Projects/Alpha")
    );
}
