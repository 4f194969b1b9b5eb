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
