//! Self-test of the IMAP test fixtures (tests/support/{dovecot,corpus,imapcheck,imap_fault,oauth}.rs) against
//! real private Dovecot instances on loopback. Owns nothing but these checks; must never touch the system Dovecot.

#[path = "support/common.rs"]
mod common;
#[path = "support/corpus.rs"]
mod corpus;
#[path = "support/dovecot.rs"]
mod dovecot;
#[path = "support/imap_fault.rs"]
mod imap_fault;
#[path = "support/imapcheck.rs"]
mod imapcheck;
#[path = "support/oauth.rs"]
mod oauth;

use corpus::{Corpus, CorpusOptions, Kind, Manifest};
use dovecot::{Dovecot, DovecotOptions, MAIL_GID, MAIL_UID};
use imap_fault::{Action, FaultProxy};
use imapcheck::{FolderMap, MsgSnap, Snapshot};

fn expected(m: &Manifest) -> Snapshot {
    Snapshot::from_messages(m.entries.iter().map(|e| {
        (
            e.folder.clone(),
            MsgSnap {
                uid: 0,
                flags: e.flags.clone(),
                internaldate: e.internaldate,
                size: e.size as u64,
                sha256: e.sha256.clone(),
                message_id: e.message_id.clone(),
                test_id: Some(e.id.clone()),
            },
        )
    }))
}

#[test]
fn corpus_is_deterministic_and_complete() {
    let opts = CorpusOptions::new("alice", 120).big_attachment(Some(64 * 1024));
    let a = Corpus::generate(&opts);
    let b = Corpus::generate(&opts);
    assert_eq!(a.manifest(), b.manifest());
    assert_eq!(a.messages.len(), 120);
    let m = a.manifest();
    for k in [
        Kind::NoMessageId,
        Kind::DupExact,
        Kind::DupCross,
        Kind::ListCopy,
        Kind::Big,
    ] {
        assert!(m.count_kind(k) >= 1, "no {k:?}");
    }
    for f in ["Projects/2024", "Entwürfe", "Архив", "INBOX", "Sent"] {
        assert!(m.folders.contains(f), "no folder {f}: {:?}", m.folders);
    }
    // list copy: same Message-ID as another message in the same folder, different bytes
    let lc = m.entries.iter().find(|e| e.kind == Kind::ListCopy).unwrap();
    assert!(m.entries.iter().any(|e| e.kind != Kind::ListCopy
        && e.message_id == lc.message_id
        && e.folder == lc.folder
        && e.sha256 != lc.sha256));
    // exact duplicate: same bytes twice in one folder
    let de = m.entries.iter().find(|e| e.kind == Kind::DupExact).unwrap();
    assert!(
        m.entries
            .iter()
            .filter(|e| e.sha256 == de.sha256 && e.folder == de.folder)
            .count()
            >= 2
    );
    // cross-folder copy: same Message-ID in two folders
    let dc = m.entries.iter().find(|e| e.kind == Kind::DupCross).unwrap();
    assert!(
        m.entries
            .iter()
            .any(|e| e.sha256 == dc.sha256 && e.folder != dc.folder)
    );
    let all_flags: std::collections::BTreeSet<&str> = m
        .entries
        .iter()
        .flat_map(|e| e.flags.iter().map(String::as_str))
        .collect();
    for f in [
        "\\Seen",
        "\\Answered",
        "\\Flagged",
        "\\Draft",
        "\\Deleted",
        "$Forwarded",
        "$Label1",
        "Work",
    ] {
        assert!(all_flags.contains(f), "flag {f} unused: {all_flags:?}");
    }
    let years: std::collections::BTreeSet<i64> = m
        .entries
        .iter()
        .map(|e| 1970 + e.internaldate / 31_556_952)
        .collect();
    assert!(years.contains(&2012) && years.contains(&2024), "{years:?}");
    // a later batch has new ids
    let delta = Corpus::generate(&CorpusOptions::new("alice", 20).start(120));
    assert!(
        delta
            .messages
            .iter()
            .all(|d| !a.messages.iter().any(|x| x.id == d.id))
    );
    // big attachment default: 5 MiB raw
    let big = Corpus::generate(&CorpusOptions::new("bob", 12));
    let b = big.messages.iter().find(|m| m.kind == Kind::Big).unwrap();
    assert!(b.data.len() > 5 * 1024 * 1024, "{}", b.data.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_loads_snapshot_and_compare() {
    let old = Dovecot::start(DovecotOptions::old());
    let new = Dovecot::start(DovecotOptions::new());
    let corpus =
        Corpus::generate(&CorpusOptions::new("alice", 80).big_attachment(Some(1024 * 1024)));
    // by APPEND
    let manifest = corpus
        .load_imap(old.addr(), "alice", &old.password("alice"), old.separator())
        .await
        .unwrap();
    let src = imapcheck::snapshot(old.addr(), "alice", &old.password("alice"))
        .await
        .unwrap();
    let d = imapcheck::compare(&expected(&manifest), &src, &FolderMap::identity());
    assert!(d.is_exact(), "{}", d.summary());
    assert_eq!(src.total(), 80);
    assert_eq!(src.special("\\Sent"), Some("Sent"));
    assert!(src.folders["Projects/2024"].wire == "Projects.2024");
    assert!(src.folders.contains_key("Архив"));
    // straight into a Maildir (fs layout on the new server), same result
    let md = new.maildir("bob");
    let m2 = corpus
        .write_maildir(&md, true, Some((MAIL_UID, MAIL_GID)))
        .unwrap();
    let dst = imapcheck::snapshot(new.addr(), "bob", &new.password("bob"))
        .await
        .unwrap();
    let d = imapcheck::compare(&expected(&m2), &dst, &FolderMap::identity());
    assert!(d.is_exact(), "{}", d.summary());
    assert!(dst.folders["Projects/2024"].wire == "Projects/2024");
    // old (Maildir++ ".") vs new (fs "/") compare equal through the identity map
    let d = imapcheck::compare(&src, &dst, &FolderMap::identity());
    assert!(d.is_exact(), "{}", d.summary());
    assert_eq!(d.duplicates(), 0);
    assert_eq!(dst.duplicate_count(), src.duplicate_count());
    // break the destination: one duplicate, one flag change, one missing, one changed body
    let mut c = new.login("bob").await;
    let inbox = c.fetch_all("INBOX").await;
    let (a, b, x) = (&inbox[0], &inbox[1], &inbox[2]);
    let fl: Vec<&str> = a.flags.iter().map(String::as_str).collect();
    c.append("INBOX", &fl, a.internaldate, &a.body).await;
    c.session
        .run_command_and_check_ok(format!("UID STORE {} +FLAGS (Work)", b.uid))
        .await
        .unwrap();
    c.session
        .run_command_and_check_ok(format!("UID STORE {} +FLAGS (\\Deleted)", x.uid))
        .await
        .unwrap();
    c.session
        .run_command_and_check_ok(format!("UID EXPUNGE {}", x.uid))
        .await
        .unwrap();
    let mut changed = x.body.clone();
    changed.splice(0..0, b"X-TUID: abc\r\n".iter().copied());
    let fl: Vec<&str> = x.flags.iter().map(String::as_str).collect();
    c.append("INBOX", &fl, x.internaldate, &changed).await;
    c.logout().await;
    let dst = imapcheck::snapshot(new.addr(), "bob", &new.password("bob"))
        .await
        .unwrap();
    let d = imapcheck::compare(&src, &dst, &FolderMap::identity());
    assert!(!d.is_exact());
    assert_eq!(d.duplicates(), 1, "{}", d.summary());
    assert_eq!(d.flag_mismatches(), 1, "{}", d.summary());
    assert_eq!(d.body_mismatches(), 1, "{}", d.summary());
    assert_eq!(d.missing(), 0, "{}", d.summary());
    assert!(!d.converged());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_logins_and_uidvalidity_reset() {
    let mut dc = Dovecot::start(DovecotOptions::old());
    // plain login, master user, SASL PLAIN authzid
    let mut c = dc.login("alice").await;
    let list = c.list().await;
    assert!(
        list.iter()
            .any(|(n, a)| n == "Sent" && a.iter().any(|x| x.contains("Sent"))),
        "{list:?}"
    );
    let wire = dc.wire_name("Projects/2024");
    assert_eq!(wire, "Projects.2024");
    c.create(&wire).await;
    c.subscribe(&wire).await;
    c.append(
        &wire,
        &["\\Seen", "$Label1"],
        1_500_000_000,
        b"Subject: x\r\n\r\nhello\r\n",
    )
    .await;
    let msgs = c.fetch_all(&wire).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].internaldate, 1_500_000_000);
    c.append("INBOX", &[], 1_400_000_000, b"Subject: y\r\n\r\nhi\r\n")
        .await;
    c.logout().await;
    let c = dc.login_master("alice").await;
    c.logout().await;
    let mut c = dc.login_authzid("alice").await;
    assert_eq!(c.fetch_all(&wire).await.len(), 1);
    c.logout().await;
    // wrong password rejected
    assert!(
        dovecot::ImapClient::login(dc.addr(), "alice", "nope", '.')
            .await
            .is_err()
    );
    let (a, b) = dc.uidvalidity_reset("alice", "Projects/2024").await;
    assert_ne!(a, b);
    let (a, b) = dc.uidvalidity_reset("alice", "INBOX").await;
    assert_ne!(a, b);
    let c = dc.login("bob").await;
    c.logout().await;
    let mut c = dc.login("alice").await;
    let msgs = c.fetch_all(&wire).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        msgs[0].flags,
        vec!["\\Seen".to_string(), "$Label1".to_string()]
    );
    assert_eq!(msgs[0].internaldate, 1_500_000_000);
    assert_eq!(c.fetch_all("INBOX").await.len(), 1);
    c.logout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_proxy_injects_as_told() {
    let dc = Dovecot::start(DovecotOptions::new());
    let pw = dc.password("alice");
    let proxy = FaultProxy::start(dc.addr()).await;
    proxy.inject("APPEND", 2, Action::throttled());
    proxy.inject("SELECT", 1, Action::o365_backoff(500));
    proxy.inject("EXAMINE", 1, Action::unavailable());
    let mut c = dovecot::ImapClient::login(proxy.addr(), "alice", &pw, '/')
        .await
        .unwrap();
    let msg =
        |i: u32| format!("Subject: m{i}\r\nX-Test-Id: t-{i}\r\n\r\nbody {i}\r\n").into_bytes();
    let s = &mut c.session;
    s.append("INBOX", Some("(\\Seen)"), None, msg(1))
        .await
        .unwrap();
    let e = s
        .append("INBOX", Some("(\\Seen)"), None, msg(2))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("[THROTTLED]"), "{e}");
    s.append("INBOX", Some("(\\Seen)"), None, msg(3))
        .await
        .unwrap();
    for i in 4..=6 {
        s.append("INBOX", None, None, msg(i)).await.unwrap();
    }
    let e = s.select("INBOX").await.unwrap_err();
    assert!(
        e.to_string()
            .contains("Suggested Backoff Time: 500 milliseconds"),
        "{e}"
    );
    let e = s.examine("INBOX").await.unwrap_err();
    assert!(e.to_string().contains("[UNAVAILABLE]"), "{e}");
    let mb = s.select("INBOX").await.unwrap();
    assert_eq!(
        mb.exists, 5,
        "the throttled APPEND must not reach the server"
    );
    // BYE after the first FETCH response
    proxy.inject_next("FETCH", 1, Action::bye_mid_fetch());
    let got = {
        use futures_util::StreamExt as _;
        let stream = s.uid_fetch("1:*", "(UID BODY.PEEK[])").await.unwrap();
        let items: Vec<_> = stream.collect().await;
        items
            .iter()
            .filter(|r| r.as_ref().is_ok_and(|f| f.uid.is_some()))
            .count()
    };
    assert_eq!(got, 1, "relayed {got} FETCH responses before the BYE");
    assert!(
        s.noop().await.is_err(),
        "connection must be closed after BYE"
    );
    // reset on the next NOOP of a new connection
    let mut c = dovecot::ImapClient::login(proxy.addr(), "alice", &pw, '/')
        .await
        .unwrap();
    proxy.inject_next("NOOP", 1, Action::Reset);
    assert!(c.session.noop().await.is_err());
    // truncated literal
    let mut c = dovecot::ImapClient::login(proxy.addr(), "alice", &pw, '/')
        .await
        .unwrap();
    c.session.select("INBOX").await.unwrap();
    proxy.inject_next("FETCH", 1, Action::CloseMidLiteral);
    {
        use futures_util::StreamExt as _;
        let r = c.session.uid_fetch("1:*", "(UID BODY.PEEK[])").await;
        if let Ok(stream) = r {
            let items: Vec<_> = stream.collect().await;
            assert!(items.iter().filter(|r| r.is_ok()).count() < 5);
        }
    }
    assert!(c.session.noop().await.is_err());
    // untouched traffic still works
    let mut c = dovecot::ImapClient::login(proxy.addr(), "alice", &pw, '/')
        .await
        .unwrap();
    assert_eq!(c.fetch_all("INBOX").await.len(), 5);
    c.logout().await;
    let labels: Vec<String> = proxy.injected().iter().map(|i| i.label.clone()).collect();
    assert_eq!(
        labels,
        [
            "throttled",
            "o365-backoff",
            "unavailable",
            "bye-mid-fetch",
            "reset",
            "close-mid-literal"
        ]
    );
    assert_eq!(proxy.injected_with("throttled"), 1);
    assert!(proxy.seen("APPEND") == 6 && proxy.connections() == 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_token_server_and_dovecot_xoauth2() {
    let auth = oauth::OAuthServer::start().await;
    // user-bound tokens (token_command style)
    let dc = Dovecot::start(DovecotOptions::new().oauth2(&auth.introspection_url()));
    let t_alice = auth.issue_token("alice");
    let c = dc
        .login_xoauth2("alice", &t_alice)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", dc.log_tail()));
    c.logout().await;
    assert!(
        dc.login_xoauth2("bob", &t_alice).await.is_err(),
        "alice's token must not open bob"
    );
    assert!(dc.login_xoauth2("alice", "bogus").await.is_err());
    auth.revoke_all();
    let e = dc
        .login_xoauth2("alice", &t_alice)
        .await
        .err()
        .expect("revoked token accepted");
    assert!(
        e.contains("AUTHENTICATIONFAILED") || e.contains("uthentication failed"),
        "{e}"
    );
    // password logins still work next to oauth2
    dc.login("carol").await.logout().await;
    // token_command script: a fresh user token per run
    let dir = tempfile::tempdir().unwrap();
    let script = auth.token_command_script(dir.path(), false);
    let run = |script: std::path::PathBuf, user: &'static str| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(script)
                .arg(user)
                .output()
                .unwrap()
        })
    };
    let out = run(script.clone(), "bob").await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t_bob = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(t_bob.starts_with("tok-"), "{t_bob}");
    dc.login_xoauth2("bob", &t_bob)
        .await
        .unwrap()
        .logout()
        .await;
    let json_script = auth.token_command_script(dir.path(), true);
    let out = run(json_script, "bob").await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["expires_in"], 3600);
    assert_eq!(auth.user_token_requests(), 2);
    // client-credentials app tokens, valid for every mailbox
    let app = Dovecot::start(DovecotOptions::old().oauth2_app_tokens(&auth.introspection_url()));
    auth.fail_next_token_requests(1);
    assert!(
        oauth::client_credentials(
            &auth.token_url(),
            oauth::CLIENT_ID,
            oauth::CLIENT_SECRET,
            "imap"
        )
        .await
        .is_err()
    );
    assert!(
        oauth::client_credentials(&auth.token_url(), oauth::CLIENT_ID, "wrong", "imap")
            .await
            .is_err()
    );
    let tok = oauth::client_credentials(
        &auth.token_url(),
        oauth::CLIENT_ID,
        oauth::CLIENT_SECRET,
        "imap",
    )
    .await
    .unwrap();
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["expires_in"], 3600);
    let token = tok["access_token"].as_str().unwrap().to_string();
    for user in ["alice", "bob"] {
        let c = app
            .login_xoauth2(user, &token)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", app.log_tail()));
        c.logout().await;
    }
    assert_eq!(auth.token_requests(), 3);
    assert!(auth.introspections() >= 6);
    // expiry
    auth.set_expires_in(0);
    let short = oauth::client_credentials(
        &auth.token_url(),
        oauth::CLIENT_ID,
        oauth::CLIENT_SECRET,
        "imap",
    )
    .await
    .unwrap();
    assert!(
        app.login_xoauth2("alice", short["access_token"].as_str().unwrap())
            .await
            .is_err()
    );
}

fn tls_connector(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_ports_verify_with_exposed_ca_and_lda_delivers() {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    let dc = Dovecot::start(DovecotOptions::new());
    let tls = tls_connector(&dc.ca_pem());
    // implicit TLS, by IP and by name
    for name in ["127.0.0.1", "localhost"] {
        let tcp = tokio::net::TcpStream::connect(dc.tls_addr()).await.unwrap();
        let sn = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let s = tls.connect(sn, tcp).await.unwrap();
        let mut client = async_imap::Client::new(s);
        client.read_response().await.unwrap().unwrap();
        let mut sess = client
            .login("alice", "pw-alice")
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        sess.select("INBOX").await.unwrap();
        sess.logout().await.unwrap();
    }
    // STARTTLS on the plain port
    let mut tcp = BufReader::new(tokio::net::TcpStream::connect(dc.addr()).await.unwrap());
    let mut line = String::new();
    tcp.read_line(&mut line).await.unwrap();
    assert!(
        line.starts_with("* OK") && line.contains("STARTTLS"),
        "{line}"
    );
    tcp.get_mut().write_all(b"a STARTTLS\r\n").await.unwrap();
    line.clear();
    tcp.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("a OK"), "{line}");
    let sn = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let s = tls.connect(sn, tcp.into_inner()).await.unwrap();
    let client = async_imap::Client::new(s);
    let sess = client
        .login("bob", "pw-bob")
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    drop(sess);
    // a foreign CA is rejected
    let other = Dovecot::start(DovecotOptions::old());
    let tcp = tokio::net::TcpStream::connect(other.tls_addr())
        .await
        .unwrap();
    let sn = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    assert!(tls.connect(sn, tcp).await.is_err());
    // LDA delivery (what dual delivery leaves on the destination)
    dc.lda_deliver(
        "carol",
        "INBOX",
        b"From: a@example.net\nSubject: lda\nMessage-ID: <lda-1@example.net>\n\nhello\n",
    );
    dc.lda_deliver("carol", "Projects/2024", b"Subject: lda2\n\nhello\n");
    let snap = imapcheck::snapshot(dc.addr(), "carol", "pw-carol")
        .await
        .unwrap();
    assert_eq!(snap.folders["INBOX"].messages.len(), 1);
    assert_eq!(
        snap.folders["INBOX"].messages[0].message_id.as_deref(),
        Some("<lda-1@example.net>")
    );
    assert_eq!(snap.folders["Projects/2024"].messages.len(), 1);
}

fn msg(uid: u32, sha: &str, flags: &[&str], date: i64) -> MsgSnap {
    MsgSnap {
        uid,
        flags: flags.iter().map(|f| f.to_string()).collect(),
        internaldate: date,
        size: 10,
        sha256: sha.into(),
        message_id: Some(format!("<{sha}@x>")),
        test_id: Some(sha.into()),
    }
}

#[test]
fn compare_multiplicity_and_special_use_mapping() {
    let mut src = Snapshot::from_messages([
        ("INBOX".to_string(), msg(1, "a", &["\\Seen"], 10)),
        ("INBOX".to_string(), msg(2, "a", &["\\Seen"], 10)), // identical duplicate on the source
        ("Sent".to_string(), msg(1, "b", &[], 20)),
    ]);
    src.folders.get_mut("Sent").unwrap().special_use = Some("\\Sent".into());
    let mut dst = Snapshot::from_messages([
        ("INBOX".to_string(), msg(7, "a", &["\\Seen"], 10)),
        ("INBOX".to_string(), msg(8, "a", &["\\Seen"], 10)),
        ("Sent Items".to_string(), msg(3, "b", &[], 20)),
    ]);
    dst.folders.get_mut("Sent Items").unwrap().special_use = Some("\\Sent".into());
    dst.subscriptions.insert("Sent".into()); // irrelevant: mapped name is what counts
    let d = imapcheck::compare(&src, &dst, &FolderMap::identity());
    assert!(d.is_exact(), "{}", d.summary());
    assert_eq!(src.duplicate_count(), 1);
    // a third copy is a duplicate, one copy only is a missing message
    let mut dst3 = dst.clone();
    dst3.folders
        .get_mut("INBOX")
        .unwrap()
        .messages
        .push(msg(9, "a", &["\\Seen"], 10));
    let d = imapcheck::compare(&src, &dst3, &FolderMap::identity());
    assert_eq!((d.duplicates(), d.missing()), (1, 0));
    let mut dst1 = dst.clone();
    dst1.folders.get_mut("INBOX").unwrap().messages.pop();
    let d = imapcheck::compare(&src, &dst1, &FolderMap::identity());
    assert_eq!((d.duplicates(), d.missing()), (0, 1));
    assert!(!d.converged());
    // without SPECIAL-USE mapping, Sent is missing on the destination and "Sent Items" is extra
    let d = imapcheck::compare(&src, &dst, &FolderMap::identity().no_special_use());
    assert_eq!(d.missing_folders, vec!["Sent".to_string()]);
    assert_eq!(d.extra_folders, vec!["Sent Items".to_string()]);
    // explicit map and exclusion
    let d = imapcheck::compare(
        &src,
        &dst,
        &FolderMap::identity()
            .no_special_use()
            .map("Sent", "Sent Items"),
    );
    assert!(d.is_exact(), "{}", d.summary());
    let d = imapcheck::compare(&src, &dst1, &FolderMap::identity().exclude("INBOX"));
    assert!(!d.folders.contains_key("INBOX"));
    // date mismatch
    let mut dd = dst.clone();
    dd.folders.get_mut("Sent Items").unwrap().messages[0].internaldate = 21;
    let d = imapcheck::compare(&src, &dd, &FolderMap::identity());
    assert_eq!(d.date_mismatches(), 1);
    assert!(d.converged() && !d.is_exact());
}
