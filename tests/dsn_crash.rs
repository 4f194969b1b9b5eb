//! A crash can never lose a bounce: the final leg update and its DSN are one transaction.
//! `cutover serve` (debug build) runs with the test-only fault point `after-leg-update`, which
//! aborts the process right after the durable leg update that fails a recipient permanently
//! (as a kill -9 or a power cut at that instant would). The queue, read offline afterwards,
//! must hold the DSN for the sender and no longer the finished original. With a DSN queued in
//! a second step after the update (the old design), the abort lands between the two and the
//! sender never hears of the failure.

#[path = "support/common.rs"]
mod common;
#[path = "support/fake_smtp.rs"]
mod fake_smtp;
#[path = "support/smtp.rs"]
mod smtp;

use smtp::{Client, Gateway, Opts, send_message};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_right_after_the_failing_leg_update_keeps_the_dsn() {
    let target = fake_smtp::FakeSmtp::start(fake_smtp::Script {
        rcpt_replies: vec![(1, "550 5.1.1 <alice@example.com>: no such user".into())],
        ..Default::default()
    })
    .await;
    let mut g = Gateway::start(Opts {
        target: Some(target.addr.to_string()),
        env: vec![("CUTOVER_FAULT".into(), "after-leg-update".into())],
        extra: "[targets.bounces]\naddress = \"127.0.0.1:9\"\ntls = \"none\"\n\n[bounce]\nvia = \"bounces\"\n"
            .into(),
        ..Default::default()
    });
    let mut c = Client::greeted(g.smtp).await;
    c.cmd("EHLO client.example.org").await;
    let r = send_message(
        &mut c,
        "sender@example.org",
        &["alice@example.com"],
        b"From: sender@example.org\r\nTo: alice@example.com\r\nSubject: will bounce\r\nMessage-ID: <b1@example.org>\r\n\r\nhello\r\n",
    )
    .await;
    assert_eq!(r.code, 250, "{r:?}");
    let status = g.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| !s.success()),
        "the fault point did not abort the gateway ({status:?}): {}",
        g.log()
    );
    assert!(
        g.log().contains("fault point after-leg-update"),
        "{}",
        g.log()
    );

    let list = g.queue_list();
    let msgs = list
        .as_array()
        .or_else(|| list["messages"].as_array())
        .cloned()
        .unwrap_or_default();
    assert_eq!(msgs.len(), 1, "exactly the DSN must be queued: {list:#}");
    let dsn = &msgs[0];
    assert_eq!(dsn["mail_from"], "", "{dsn:#}");
    let leg = &dsn["legs"][0];
    assert_eq!(leg["target"], "bounces", "{dsn:#}");
    assert_eq!(
        leg["recipients"][0]["address"], "sender@example.org",
        "{dsn:#}"
    );
    assert_eq!(leg["recipients"][0]["rule"], "bounce", "{dsn:#}");
}
