//! Open-relay battery against a real `cutover serve`: address tricks from an untrusted client
//! (127.0.0.1) must all be refused; from the trusted network (client bound to 127.0.0.2) only
//! recipients a rule routes are accepted.

#[path = "support/common.rs"]
mod common;
#[path = "support/smtp.rs"]
mod support;

use support::*;

/// (raw RCPT line argument, description). Everything here is relaying or a relay trick.
fn tricks() -> Vec<(String, &'static str)> {
    let mut v: Vec<(String, &'static str)> = [
        ("<user@evil.net>", "other domain"),
        ("<USER@EVIL.NET>", "uppercase other domain"),
        ("<user@evil.net.>", "trailing dot"),
        ("<user%evil.net@example.com>", "percent hack"),
        ("<evil.net!user@example.com>", "bang path"),
        ("<@example.com:user@evil.net>", "source route"),
        (
            "<@example.com,@relay.net:user@evil.net>",
            "multi-hop source route",
        ),
        (
            "<\"user@evil.net\"@example.com>",
            "quoted local part with @",
        ),
        ("<\"user\\@evil.net\"@example.com>", "quoted escaped @"),
        ("<\"user%evil.net\"@example.com>", "quoted percent"),
        ("<user@[192.0.2.1]>", "IPv4 literal"),
        ("<user@[IPv6:::1]>", "IPv6 literal"),
        ("<user@127.0.0.1>", "bare IP as domain"),
        ("<user@example.com.evil.net>", "our domain as prefix"),
        ("<user@EXAMPLE.COM.EVIL.NET.>", "prefix, uppercase, dot"),
        ("<user@sub.example.com>", "unlisted subdomain"),
        ("<user@evil.net@example.com>", "two @"),
        ("<user@example.com@evil.net>", "two @, ours first"),
        ("<user@example.com%evil.net>", "percent in domain"),
        ("<>", "empty"),
        ("<user@evil.net", "unterminated"),
        ("user@evil.net", "no brackets"),
        ("<user@localhost>", "localhost"),
        (
            "<user@partner.net>",
            "routed but not accepted (trusted only)",
        ),
        ("<user\0@example.com>", "NUL byte"),
        ("<us\ter@example.com>", "control char"),
        ("<user@evil.net> NOTIFY=NEVER", "with parameters"),
        ("< user@evil.net>", "space inside"),
        ("<user@evil.net\r>", "stray CR"),
    ]
    .into_iter()
    .map(|(a, d)| (a.to_string(), d))
    .collect();
    v.push((
        format!("<{}@example.com>", "a".repeat(300)),
        "very long local part",
    ));
    v.push((
        format!("<user@{}evil.net>", "a.".repeat(130)),
        "very long domain",
    ));
    v.push((format!("<{}>", "x".repeat(5000)), "over-long line"));
    v
}

async fn battery(g: &Gateway, from_ip: &str) -> Vec<String> {
    let mut c = Client::connect_from(from_ip, g.smtp).await;
    assert_eq!(c.read_reply().await.code, 220);
    assert_eq!(c.cmd("EHLO relay-tester").await.code, 250);
    let mut accepted = Vec::new();
    for (arg, what) in tricks() {
        // A fresh transaction each time so one acceptance cannot hide another.
        let r = c.cmd("MAIL FROM:<probe@tester.net>").await;
        assert_eq!(r.code, 250, "{what}: MAIL {r:?}");
        let r = c.cmd(&format!("RCPT TO:{arg}")).await;
        assert!(r.code != 0, "{what}: connection dropped");
        if r.code == 250 {
            accepted.push(format!("{what}: {arg}"));
            let r = c.cmd("DATA").await;
            assert_eq!(r.code, 354);
            c.send(&stuffed(b"Subject: relay test\r\n\r\nx\r\n")).await;
            let r = c.read_reply().await;
            assert_eq!(r.code, 250, "{r:?}");
        } else {
            assert!(r.code >= 400, "{what}: {r:?}");
            let r = c.cmd("RSET").await;
            assert_eq!(r.code, 250, "{what}: RSET after refusal {r:?}");
        }
    }
    assert_eq!(c.cmd("QUIT").await.code, 221);
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_relay_battery() {
    assert!(tricks().len() >= 15);
    // Every trick in one session: well over the 20 refusals hard_error_limit allows by default
    // (tests/smtp_limits.rs has that limit).
    let mut g = Gateway::start(Opts {
        extra_gateway: "hard_error_limit = 1000\n".into(),
        ..Default::default()
    });

    let untrusted = battery(&g, "127.0.0.1").await;
    assert!(
        untrusted.is_empty(),
        "relayed from untrusted: {untrusted:#?}"
    );
    assert!(g.queue_list().as_array().unwrap().is_empty());

    // Trusted: only what a rule routes (here `@partner.net` → new); unrouted domains are 5.1.1.
    let trusted = battery(&g, "127.0.0.2").await;
    assert_eq!(
        trusted,
        vec!["routed but not accepted (trusted only): <user@partner.net>".to_string()]
    );
    let mut c = Client::connect_from("127.0.0.2", g.smtp).await;
    c.read_reply().await;
    c.cmd("EHLO trusted").await;
    c.cmd("MAIL FROM:<a@b.net>").await;
    assert!(c.cmd("RCPT TO:<user@evil.net>").await.is(550, "5.1.1"));
    assert!(c.cmd("RCPT TO:<alice@example.com>").await.is(250, "2.1.5"));

    g.kill9();
    let list = support::queue_list(&g.config);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    let legs = list[0]["legs"].as_array().unwrap();
    assert_eq!(legs.len(), 1);
    assert_eq!(legs[0]["target"], "new");
    assert_eq!(legs[0]["recipients"][0]["address"], "user@partner.net");
}
