//! Self-test of the IMAP test fixtures (tests/support/{dovecot,corpus,imapcheck,imap_fault,oauth}.rs) against
//! real private Dovecot instances on loopback. Owns nothing but these checks; must never touch the system Dovecot.

#[path = "support/dovecot.rs"]
mod dovecot;

use dovecot::{Dovecot, DovecotOptions};

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
