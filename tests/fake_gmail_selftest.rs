//! Self-test of the fake Gmail IMAP server (tests/support/fake_gmail.rs): labels as folders that
//! share messages, X-GM-EXT-1 items parsed by async-imap, APPEND/STORE X-GM-LABELS, STATUS and
//! SELECT agreeing, literal limits on the raw wire. cutover's backfill against it:
//! tests/backfill_gmail.rs.

#[path = "support/fake_gmail.rs"]
mod fake_gmail;

use async_imap::types::NameAttribute;
use fake_gmail::FakeGmail;
use futures_util::TryStreamExt as _;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

type Session = async_imap::Session<TcpStream>;

const MSG1: &[u8] =
    b"Message-ID: <one@example.com>\r\nFrom: a@example.com\r\nSubject: one\r\n\r\nfirst body\r\n";
const MSG2: &[u8] = b"Message-ID: <two@example.com>\r\nSubject: two\r\n\r\nsecond body\r\n";
const MSG3: &[u8] = b"Message-ID: <three@example.com>\r\nSubject: three\r\n\r\nthird body\r\n";

async fn login(g: &FakeGmail, user: &str, pw: &str) -> Session {
    let tcp = TcpStream::connect(g.addr()).await.unwrap();
    let mut c = async_imap::Client::new(tcp);
    c.read_response().await.unwrap().expect("greeting");
    c.login(user, pw).await.map_err(|(e, _)| e).unwrap()
}

/// (UID, X-GM-MSGID, X-GM-LABELS) of every message of `folder`.
async fn gm_items(s: &mut Session, folder: &str) -> Vec<(u32, u64, Vec<String>)> {
    s.select(folder).await.unwrap();
    let fetched: Vec<_> = s
        .uid_fetch("1:*", "(UID X-GM-MSGID X-GM-LABELS FLAGS)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    fetched
        .iter()
        .map(|f| {
            let labels = f
                .gmail_labels()
                .map(|l| l.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default();
            (f.uid.unwrap(), *f.gmail_msg_id().unwrap(), labels)
        })
        .collect()
}

async fn list(s: &mut Session) -> BTreeMap<String, Vec<String>> {
    let names: Vec<_> = s
        .list(Some(""), Some("* RETURN (SPECIAL-USE)"))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    names
        .iter()
        .map(|n| {
            let attrs = n
                .attributes()
                .iter()
                .map(|a| match a {
                    NameAttribute::NoSelect => "\\Noselect".to_string(),
                    NameAttribute::All => "\\All".into(),
                    NameAttribute::Sent => "\\Sent".into(),
                    NameAttribute::Junk => "\\Junk".into(),
                    NameAttribute::Trash => "\\Trash".into(),
                    NameAttribute::Drafts => "\\Drafts".into(),
                    NameAttribute::Flagged => "\\Flagged".into(),
                    NameAttribute::Extension(e) => e.to_string(),
                    other => format!("{other:?}"),
                })
                .collect();
            (n.name().to_string(), attrs)
        })
        .collect()
}

#[tokio::test]
async fn labels_are_folders_sharing_messages() {
    let g = FakeGmail::start(&[("alice@example.com", "pw")]).await;
    let u = "alice@example.com";
    let id1 = g.add(
        u,
        MSG1,
        &["\\Inbox", "Work"],
        &["\\Seen"],
        "01-Jan-2024 10:00:00 +0000",
    );
    let id2 = g.add(
        u,
        MSG2,
        &["Work/Projects", "\\Important", "\\Starred"],
        &[],
        " 5-Mar-2024 08:00:00 +0100",
    );
    assert!(id2 > id1);
    let mut s = login(&g, u, "pw").await;
    let caps = s.capabilities().await.unwrap();
    assert!(caps.has_str("X-GM-EXT-1") && caps.has_str("SPECIAL-USE") && caps.has_str("UIDPLUS"));
    for absent in [
        "IDLE",
        "CONDSTORE",
        "MULTIAPPEND",
        "LITERAL+",
        "BINARY",
        "COMPRESS=DEFLATE",
    ] {
        assert!(!caps.has_str(absent), "{absent} advertised");
    }

    let folders = list(&mut s).await;
    let has = |name: &str, attr: &str| {
        folders
            .get(name)
            .is_some_and(|a| a.iter().any(|x| x == attr))
    };
    assert!(has("INBOX", "\\HasNoChildren"), "{folders:?}");
    assert!(
        has("Work", "\\HasChildren") && has("Work/Projects", "\\HasNoChildren"),
        "{folders:?}"
    );
    assert!(
        has("[Gmail]", "\\Noselect") && has("[Gmail]/All Mail", "\\All"),
        "{folders:?}"
    );
    assert!(
        has("[Gmail]/Sent Mail", "\\Sent") && has("[Gmail]/Spam", "\\Junk"),
        "{folders:?}"
    );
    assert!(
        has("[Gmail]/Trash", "\\Trash") && has("[Gmail]/Drafts", "\\Drafts"),
        "{folders:?}"
    );
    assert!(
        has("[Gmail]/Starred", "\\Flagged") && has("[Gmail]/Important", "\\Important"),
        "{folders:?}"
    );

    // The same message in INBOX, Work and All Mail, its own folder's label left out.
    let inbox = gm_items(&mut s, "INBOX").await;
    assert_eq!(inbox, vec![(1, id1, vec!["Work".to_string()])]);
    let work = gm_items(&mut s, "Work").await;
    assert_eq!(work, vec![(1, id1, vec!["\\Inbox".to_string()])]);
    let all = gm_items(&mut s, "[Gmail]/All Mail").await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        all[0],
        (1, id1, vec!["\\Inbox".to_string(), "Work".to_string()])
    );
    assert_eq!(
        all[1],
        (
            2,
            id2,
            vec![
                "\\Important".to_string(),
                "Work/Projects".to_string(),
                "\\Starred".to_string()
            ]
        )
    );
    let starred = gm_items(&mut s, "[Gmail]/Starred").await;
    assert_eq!(
        starred,
        vec![(
            1,
            id2,
            vec!["\\Important".to_string(), "Work/Projects".to_string()]
        )]
    );

    // APPEND to a label folder, then give it another label.
    s.append(
        "Work",
        Some("(\\Seen $Custom)"),
        Some("\"02-Feb-2024 12:00:00 +0000\""),
        MSG3,
    )
    .await
    .unwrap();
    let work = gm_items(&mut s, "Work").await;
    assert_eq!(work.len(), 2, "{work:?}");
    let (uid3, id3, _) = work[1].clone();
    assert!(id3 > id2);
    let stored: Vec<_> = s
        .uid_store(uid3.to_string(), "+X-GM-LABELS (Other)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(list(&mut s).await.contains_key("Other"));
    let other = gm_items(&mut s, "Other").await;
    assert_eq!(other, vec![(1, id3, vec!["Work".to_string()])]);
    let m3 = g.messages(u).into_iter().find(|m| m.msgid == id3).unwrap();
    assert_eq!(m3.labels, vec!["Other".to_string(), "Work".to_string()]);
    assert_eq!(m3.flags, vec!["\\Seen".to_string(), "$Custom".to_string()]);
    assert_eq!(m3.internal_date, "02-Feb-2024 12:00:00 +0000");

    // STATUS and SELECT agree; UIDs are never reused after a message leaves a folder.
    for name in ["Work", "INBOX", "[Gmail]/All Mail", "Other"] {
        let st = s
            .status(name, "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
            .await
            .unwrap();
        let mb = s.select(name).await.unwrap();
        assert_eq!(
            (st.exists, st.uid_next, st.uid_validity),
            (mb.exists, mb.uid_next, mb.uid_validity),
            "{name}"
        );
        let f = g.folder(u, name).unwrap();
        assert_eq!(
            (f.uids.len() as u32, Some(f.uidnext)),
            (mb.exists, mb.uid_next),
            "{name}"
        );
    }
    s.select("Other").await.unwrap();
    s.run_command_and_check_ok("UID STORE 1 -X-GM-LABELS.SILENT (Other)")
        .await
        .unwrap();
    assert_eq!(s.select("Other").await.unwrap().exists, 0);
    s.select("Work").await.unwrap();
    s.run_command_and_check_ok(format!("UID COPY {uid3} Other"))
        .await
        .unwrap();
    let other = gm_items(&mut s, "Other").await;
    assert_eq!(
        other,
        vec![(2, id3, vec!["Work".to_string()])],
        "a new UID, never 1 again"
    );
    // The switch for tests that want the selected folder's own label listed too.
    g.set_show_selected_label(true);
    let inbox = gm_items(&mut s, "INBOX").await;
    assert_eq!(inbox[0].2, vec!["\\Inbox".to_string(), "Work".to_string()]);
    s.logout().await.unwrap();
}

#[tokio::test]
async fn index_items_and_search_as_cutover_sends_them() {
    let g = FakeGmail::start(&[("bob", "secret")]).await;
    g.add(
        "bob",
        MSG1,
        &["\\Inbox"],
        &["\\Seen"],
        "01-Jan-2024 10:00:00 +0000",
    );
    g.add("bob", MSG2, &["\\Inbox"], &[], "10-Jun-2024 10:00:00 +0000");
    let no_id =
        b"Subject: no id\r\nX-Cutover-Loop: x\r\n\r\nbody without message id, long enough\r\n";
    g.add(
        "bob",
        no_id,
        &["\\Inbox"],
        &[],
        "20-Dec-2024 23:00:00 -0500",
    );
    let mut s = login(&g, "bob", "secret").await;
    s.noop().await.unwrap();
    s.examine("INBOX").await.unwrap();
    let fetched: Vec<_> = s
        .uid_fetch("1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID X-CUTOVER-LOOP)])")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(fetched.len(), 3);
    assert_eq!(
        fetched[0].header(),
        Some(&b"Message-ID: <one@example.com>\r\n\r\n"[..])
    );
    assert_eq!(fetched[0].size, Some(MSG1.len() as u32));
    assert!(fetched[0].internal_date().is_some());
    assert_eq!(fetched[2].header(), Some(&b"X-Cutover-Loop: x\r\n\r\n"[..]));
    let prefix: Vec<_> = s
        .uid_fetch(
            "3",
            "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] BODY.PEEK[TEXT]<0.4>)",
        )
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(prefix[0].header(), Some(&b"Subject: no id\r\n\r\n"[..]));
    assert_eq!(prefix[0].text(), Some(&b"body"[..]));
    let bodies: Vec<_> = s
        .uid_fetch("2:*", "(UID BODY.PEEK[])")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(bodies[0].body(), Some(MSG2));
    let found = s
        .uid_search("SINCE 31-Dec-2023 BEFORE 11-Jun-2024")
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    let found = s.uid_search("UID 2:3").await.unwrap();
    assert_eq!(found.len(), 2);
    let found = s.uid_search("UNSEEN SINCE 1-Dec-2024").await.unwrap();
    assert!(found.contains(&3) && found.len() == 1);
    // Pipelined UID STORE with FLAGS.SILENT (cutover's store_flags) on a read-write SELECT.
    s.select("INBOX").await.unwrap();
    s.run_command_and_check_ok("UID STORE 1:2 FLAGS.SILENT (\\Answered)")
        .await
        .unwrap();
    let flags: Vec<_> = g.messages("bob").into_iter().map(|m| m.flags).collect();
    assert_eq!(flags[0], vec!["\\Answered".to_string()]);
    assert!(
        g.commands()
            .iter()
            .any(|c| c.starts_with("UID FETCH 1:* (UID FLAGS")),
        "{:?}",
        g.commands()
    );
    assert!(
        g.commands().iter().any(|c| c == "LOGIN \"bob\" ***"),
        "{:?}",
        g.commands()
    );
}

async fn raw_line(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
    let mut l = String::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut l))
        .await
        .unwrap()
        .unwrap();
    l
}

/// Read lines until the tagged reply of `tag`; all lines read.
async fn raw_until(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>, tag: &str) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..200 {
        let l = raw_line(r).await;
        assert!(!l.is_empty(), "EOF before {tag}: {out:?}");
        let done = l.starts_with(&format!("{tag} "));
        out.push(l);
        if done {
            return out;
        }
    }
    panic!("no tagged reply {tag}: {out:?}");
}

#[tokio::test]
async fn raw_wire_literals_namespace_and_errors() {
    let g = FakeGmail::start(&[("carol", "pw")]).await;
    let tcp = TcpStream::connect(g.addr()).await.unwrap();
    let (r, mut w) = tcp.into_split();
    let mut r = BufReader::new(r);
    assert!(raw_line(&mut r).await.starts_with("* OK Gimap ready"));
    w.write_all(b"a1 AUTHENTICATE PLAIN\r\n").await.unwrap();
    assert_eq!(raw_line(&mut r).await, "+ \r\n");
    w.write_all(b"AGNhcm9sAHB3\r\n").await.unwrap(); // "\0carol\0pw"
    assert!(
        raw_until(&mut r, "a1")
            .await
            .last()
            .unwrap()
            .starts_with("a1 OK")
    );
    w.write_all(b"a2 NAMESPACE\r\n").await.unwrap();
    let ns = raw_until(&mut r, "a2").await;
    assert_eq!(ns[0], "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
    w.write_all(b"a3 FROBNICATE\r\n").await.unwrap();
    assert!(raw_until(&mut r, "a3").await[0].starts_with("a3 BAD"));
    // Non-synchronising literal within LITERAL-'s 4096 octets; synchronising one with "+".
    w.write_all(b"a4 APPEND INBOX (\\Seen) {12+}\r\nSubject: x\r\n\r\n")
        .await
        .unwrap();
    let a4 = raw_until(&mut r, "a4").await;
    assert!(
        a4.last().unwrap().starts_with("a4 OK [APPENDUID "),
        "{a4:?}"
    );
    w.write_all(b"a5 APPEND \"[Gmail]/All Mail\" {12}\r\n")
        .await
        .unwrap();
    assert!(raw_line(&mut r).await.starts_with("+ "));
    w.write_all(b"Subject: y\r\n\r\n").await.unwrap();
    assert!(
        raw_until(&mut r, "a5")
            .await
            .last()
            .unwrap()
            .starts_with("a5 OK [APPENDUID ")
    );
    let msgs = g.messages("carol");
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].labels, vec!["\\Inbox".to_string()]);
    assert!(msgs[1].labels.is_empty(), "All Mail adds no label");
    w.write_all(b"a6 APPEND Nowhere {1}\r\n").await.unwrap();
    assert!(raw_line(&mut r).await.starts_with("+ "));
    w.write_all(b"x\r\n").await.unwrap();
    assert!(
        raw_until(&mut r, "a6")
            .await
            .last()
            .unwrap()
            .starts_with("a6 NO [TRYCREATE]")
    );
    w.write_all(b"a7 SELECT \"[Gmail]\"\r\n").await.unwrap();
    assert!(
        raw_until(&mut r, "a7")
            .await
            .last()
            .unwrap()
            .starts_with("a7 NO")
    );
    // Over LITERAL-'s limit: BAD [TOOBIG] and the connection closes.
    w.write_all(b"a8 APPEND INBOX {5000+}\r\n").await.unwrap();
    assert!(raw_line(&mut r).await.starts_with("a8 BAD [TOOBIG]"));
    assert_eq!(
        raw_line(&mut r).await,
        "",
        "closed after a too-big non-synchronising literal"
    );
    assert!(
        g.commands().contains(&"AUTHENTICATE PLAIN".to_string()),
        "{:?}",
        g.commands()
    );
    assert!(
        g.commands()
            .contains(&"APPEND INBOX (\\Seen) {12}".to_string()),
        "{:?}",
        g.commands()
    );
}
