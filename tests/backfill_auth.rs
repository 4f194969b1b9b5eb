//! Logins on behalf of users: Dovecot master user (`user*admin`) over IMAPS and SASL PLAIN
//! authzid over STARTTLS (certificates verified against the fixture's CA); XOAUTH2 with tokens
//! from a `token_command` and from the OAuth2 client-credentials flow, checked by Dovecot's
//! oauth2 passdb against a local token server. Each copies a small corpus exactly.

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
#[path = "support/oauth.rs"]
mod oauth;

use backfill::{Job, copied, plain_side};
use corpus::{Corpus, CorpusOptions};
use dovecot::{Dovecot, DovecotOptions, MAIL_GID, MAIL_UID};
use imapcheck::{FolderMap, compare, snapshot};

fn small(user: &str) -> Corpus {
    Corpus::generate(
        &CorpusOptions::new(user, 30)
            .big_attachment(None)
            .max_size(8 * 1024),
    )
}

async fn assert_exact(old: &Dovecot, new: &Dovecot, user: &str) {
    let s = snapshot(old.addr(), user, &old.password(user))
        .await
        .unwrap();
    let d = snapshot(new.addr(), user, &new.password(user))
        .await
        .unwrap();
    let diff = compare(&s, &d, &FolderMap::identity());
    assert!(diff.is_exact(), "{user}: {}", diff.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_user_and_authzid_over_tls() {
    let old = Dovecot::start(DovecotOptions::old());
    let new = Dovecot::start(DovecotOptions::new());
    for u in ["alice", "bob"] {
        small(u)
            .write_maildir(&old.maildir(u), false, Some((MAIL_UID, MAIL_GID)))
            .unwrap();
    }
    let src = format!(
        r#"host = "127.0.0.1", port = {}, tls = "implicit", tls_ca = "{}", auth = "plain", admin_user = "admin", admin_login = "separator", password_file = "{}""#,
        old.tls_port(),
        old.ca_pem().display(),
        old.secret_file("admin").display()
    );
    let dst = format!(
        r#"host = "127.0.0.1", port = {}, tls = "starttls", tls_ca = "{}", auth = "plain", admin_user = "admin", password_file = "{}""#,
        new.port(),
        new.ca_pem().display(),
        new.secret_file("admin").display()
    );
    let job = Job::new(&src, &dst, "alice\nbob\n", "concurrency = 2", "");
    let r = job.run_ok(&[]);
    assert_eq!(copied(&r), 60, "{r:#}");
    assert_exact(&old, &new, "alice").await;
    assert_exact(&old, &new, "bob").await;

    // Certificate verification is on: without the CA the run fails (and copies nothing).
    let src_no_ca = src.replace(&format!(r#"tls_ca = "{}", "#, old.ca_pem().display()), "");
    let job = Job::new(&src_no_ca, &dst, "alice\n", "", "");
    let (out, r) = job.run(&[]);
    assert!(!out.status.success(), "{r:#}");
    assert_eq!(r["converged"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xoauth2_token_command_and_client_credentials() {
    let tokens = oauth::OAuthServer::start().await;
    let old = Dovecot::start(DovecotOptions::old());
    let new = Dovecot::start(DovecotOptions::new().oauth2(&tokens.introspection_url()));
    let app = Dovecot::start(DovecotOptions::new().oauth2_app_tokens(&tokens.introspection_url()));
    small("alice")
        .write_maildir(&old.maildir("alice"), false, Some((MAIL_UID, MAIL_GID)))
        .unwrap();

    // token_command: a fresh per-user token (JSON with expires_in) for the destination.
    let dir = tempfile::tempdir().unwrap();
    let script = tokens.token_command_script(dir.path(), true);
    let dst = format!(
        r#"host = "127.0.0.1", port = {}, tls = "none", auth = "xoauth2", token_command = "{}""#,
        new.port(),
        script.display()
    );
    let job = Job::new(
        &plain_side(old.port(), &old.secret_file("alice")),
        &dst,
        "alice\n",
        "",
        "",
    );
    let r = job.run_ok(&[]);
    assert_eq!(copied(&r), 30, "{r:#}");
    assert_exact(&old, &new, "alice").await;
    assert!(tokens.user_token_requests() >= 1);
    assert!(tokens.introspections() >= 1);

    // A token the server rejects (AUTHENTICATIONFAILED) is dropped and fetched again.
    let flaky = dir.path().join("flaky-token.sh");
    std::fs::write(
        &flaky,
        format!(
            "#!/bin/bash\nif [ ! -e {d}/served-bogus ]; then touch {d}/served-bogus; echo not-a-valid-token; else exec {s} \"$1\"; fi\n",
            d = dir.path().display(),
            s = script.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&flaky, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let bob = small("bob");
    bob.write_maildir(&old.maildir("bob"), false, Some((MAIL_UID, MAIL_GID)))
        .unwrap();
    let dst = format!(
        r#"host = "127.0.0.1", port = {}, tls = "none", auth = "xoauth2", token_command = "{}""#,
        new.port(),
        flaky.display()
    );
    let job = Job::new(
        &plain_side(old.port(), &old.secret_file("bob")),
        &dst,
        "bob\n",
        "",
        "",
    );
    let r = job.run_ok(&[]);
    assert_eq!(copied(&r), 30, "{r:#}");
    assert!(dir.path().join("served-bogus").exists());
    assert_exact(&old, &new, "bob").await;

    // Client credentials: one app token for every mailbox.
    let secret = dir.path().join("client.secret");
    std::fs::write(&secret, format!("{}\n", oauth::CLIENT_SECRET)).unwrap();
    let dst = format!(
        r#"host = "127.0.0.1", port = {}, tls = "none", auth = "xoauth2", oauth = {{ token_url = "{}", client_id = "{}", client_secret_file = "{}", scope = "https://outlook.office365.com/.default" }}"#,
        app.port(),
        tokens.token_url(),
        oauth::CLIENT_ID,
        secret.display()
    );
    let job = Job::new(
        &plain_side(old.port(), &old.secret_file("alice")),
        &dst,
        "alice\n",
        "",
        "",
    );
    let before = tokens.token_requests();
    let r = job.run_ok(&[]);
    assert_eq!(copied(&r), 30, "{r:#}");
    assert_exact(&old, &app, "alice").await;
    // Cached: one token for the run despite several connections.
    assert_eq!(tokens.token_requests() - before, 1);
}
