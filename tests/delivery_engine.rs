//! The delivery engine in-process against loopback SMTP servers: dual delivery byte-exact,
//! per-recipient failures and DSNs, no DSN when another leg delivered, retries after a target
//! outage, expiry. (The full gateway with `cutover serve` is covered by tests/gateway_*.rs.)

#[path = "support/common.rs"]
mod common;
#[path = "support/fake_smtp.rs"]
mod fake_smtp;

use cutover::config::Config;
use cutover::outbound::scheduler::Scheduler;
use cutover::queue::{Envelope, NewLeg, Queue, QueueId};
use fake_smtp::{FakeSmtp, Script};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

fn config(dir: &std::path::Path, old: u16, new: u16, extra: &str) -> Config {
    let text = format!(
        r#"[gateway]
hostname = "mx1.example.com"
listen = ["127.0.0.1:0"]
state_dir = "{state}"
accept_domains = ["example.com"]

[targets.old]
address = "127.0.0.1:{old}"
tls = "none"
[targets.new]
address = "127.0.0.1:{new}"
tls = "none"
rcpt_domain = "new.example.net"

[queue]
retry_schedule = ["1s"]
max_age = "1h"
delay_warning = "0"
{extra}
"#,
        state = dir.join("state").display()
    );
    let path = dir.join("cutover.toml");
    std::fs::write(&path, &text).unwrap();
    cutover::loader::load(&path).unwrap().config
}

const BODY: &[u8] = b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: hello\r\nMessage-ID: <m1@example.org>\r\n\r\nHi Bob.\r\n.\r\n..\r\nBye.\r\n";

async fn enqueue(q: &Queue, from: &str, legs: Vec<(&str, Vec<&str>)>) -> QueueId {
    let mut w = q.body_writer().unwrap();
    w.write(BODY).await.unwrap();
    let env = Envelope {
        mail_from: from.into(),
        helo: "client.example.org".into(),
        client_addr: "127.0.0.1:1000".parse().unwrap(),
        received_at: SystemTime::now(),
        smtputf8: false,
        body_8bit: false,
    };
    let legs = legs
        .into_iter()
        .map(|(t, r)| NewLeg {
            target: t.into(),
            rules: vec!["test".into()],
            recipients: r.into_iter().map(String::from).collect(),
        })
        .collect();
    q.commit(w, env, legs).await.unwrap()
}

struct Engine {
    queue: Queue,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    sched: Arc<Scheduler>,
}

fn start(queue: &Queue, cfg: Config) -> Engine {
    let (tx, rx) = watch::channel(Arc::new(cfg));
    Box::leak(Box::new(tx));
    start_watching(queue, rx)
}

/// The engine on a configuration channel the test keeps (to reload).
fn start_watching(queue: &Queue, config: watch::Receiver<Arc<Config>>) -> Engine {
    let sched = Scheduler::new(queue.clone(), config, None).unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(sched.clone().run(stop_rx));
    Engine {
        queue: queue.clone(),
        stop,
        task,
        sched,
    }
}

impl Engine {
    async fn until_empty(&self, limit: Duration) {
        let t = Instant::now();
        while !self.queue.list().unwrap().is_empty() {
            assert!(
                t.elapsed() < limit,
                "queue not drained: {:#?}",
                self.queue.list().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

async fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "condition not met in {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until leg 0 of `id` is deferred; the last reply of its first recipient.
async fn deferred_reply(q: &Queue, id: &QueueId) -> String {
    wait_for(Duration::from_secs(10), || {
        q.record(id)
            .map(|r| r.legs[0].state.as_str() == "deferred")
            .unwrap_or(false)
    })
    .await;
    let rec = q.record(id).unwrap();
    let reply = rec.legs[0].recipients[0].state.last_reply();
    reply.unwrap_or_default().to_string()
}

fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_delivery_is_byte_exact_and_rewrites_per_target() {
    init();
    let (old, new) = (
        FakeSmtp::start(Script::default()).await,
        FakeSmtp::start(Script::default()).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), old.addr.port(), new.addr.port(), "");
    let q = Queue::open(&cfg.gateway.state_dir).unwrap();
    enqueue(
        &q,
        "alice@example.org",
        vec![
            ("old", vec!["bob@example.com"]),
            ("new", vec!["bob@example.com"]),
        ],
    )
    .await;
    let e = start(&q, cfg);
    e.until_empty(Duration::from_secs(10)).await;
    let (o, n) = (old.received(), new.received());
    assert_eq!(o.len(), 1);
    assert_eq!(n.len(), 1);
    assert_eq!(o[0].body, BODY);
    assert_eq!(n[0].body, BODY);
    assert_eq!(o[0].rcpts, vec!["bob@example.com"]);
    assert_eq!(
        n[0].rcpts,
        vec!["bob@new.example.net"],
        "rcpt_domain applied on that target only"
    );
    let t = e.sched.telemetry.snapshot();
    assert_eq!(
        (t.targets["old"].delivered, t.targets["new"].delivered),
        (1, 1)
    );
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_bounces_once_unless_another_leg_delivered() {
    init();
    // new rejects its 1st RCPT permanently.
    let old = FakeSmtp::start(Script::default()).await;
    let new = FakeSmtp::start(Script {
        rcpt_replies: vec![(1, "550 5.1.1 no such user".into())],
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        old.addr.port(),
        new.addr.port(),
        "[bounce]\nvia = \"old\"\n",
    );
    let q = Queue::open(&cfg.gateway.state_dir).unwrap();
    // carol only on new: fails -> DSN to alice via old.
    enqueue(
        &q,
        "alice@example.org",
        vec![("new", vec!["carol@example.com"])],
    )
    .await;
    // bob on both: new fails, old delivers -> no DSN.
    enqueue(
        &q,
        "alice@example.org",
        vec![
            ("old", vec!["bob@example.com"]),
            ("new", vec!["bob@example.com"]),
        ],
    )
    .await;
    // A bounce itself (sender <>) never bounces.
    enqueue(&q, "", vec![("new", vec!["dave@example.com"])]).await;
    let e = start(&q, cfg);
    e.until_empty(Duration::from_secs(10)).await;
    let got = old.received();
    let dsns: Vec<_> = got.iter().filter(|m| m.mail_from.is_empty()).collect();
    assert_eq!(dsns.len(), 1, "exactly one DSN: {got:#?}");
    assert_eq!(dsns[0].rcpts, vec!["alice@example.org"]);
    let text = String::from_utf8_lossy(&dsns[0].body);
    assert!(text.contains("report-type=delivery-status"), "{text}");
    assert!(text.contains("Final-Recipient: rfc822; carol@new.example.net\r\nOriginal-Recipient: rfc822; carol@example.com\r\nAction: failed\r\nStatus: 5.1.1"), "{text}");
    assert!(
        text.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user"),
        "{text}"
    );
    assert!(text.contains("Subject: hello"), "original headers included");
    // Counted once the update is durable, which is after the queue shows the message gone.
    let dual = || {
        e.sched
            .stats
            .dual_leg_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    wait_for(Duration::from_secs(5), || dual() >= 1).await;
    assert_eq!(dual(), 1);
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_outage_defers_then_delivers() {
    init();
    let old = FakeSmtp::start(Script::default()).await;
    // Reserve a port for "new" but do not listen yet.
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), old.addr.port(), port, "");
    let q = Queue::open(&cfg.gateway.state_dir).unwrap();
    let id = enqueue(
        &q,
        "alice@example.org",
        vec![("new", vec!["bob@example.com", "carol@example.com"])],
    )
    .await;
    let e = start(&q, cfg);
    let reply = deferred_reply(&q, &id).await;
    assert!(reply.contains("connect to"), "{reply}");
    // The target comes back on the same port.
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    drop(l);
    let new = fake_on(port).await;
    e.until_empty(Duration::from_secs(15)).await;
    assert_eq!(new.received().len(), 1);
    assert_eq!(new.received()[0].rcpts.len(), 2);
    e.stop().await;
}

async fn fake_on(port: u16) -> FakeSmtp {
    FakeSmtp::start_on(&format!("127.0.0.1:{port}"), Script::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_leg_fails_and_bounces() {
    init();
    let old = FakeSmtp::start(Script::default()).await;
    let dead = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), old.addr.port(), dead, "");
    cfg.queue.max_age = cutover::config::values::HumanDuration(Duration::from_secs(2));
    let q = Queue::open(&cfg.gateway.state_dir).unwrap();
    enqueue(
        &q,
        "alice@example.org",
        vec![("new", vec!["bob@example.com"])],
    )
    .await;
    let e = start(&q, cfg);
    e.until_empty(Duration::from_secs(15)).await;
    let got = old.received();
    assert_eq!(got.len(), 1, "{got:#?}");
    let text = String::from_utf8_lossy(&got[0].body);
    assert!(
        text.contains("message expired after 2s in the queue"),
        "{text}"
    );
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_until_delivered() {
    init();
    let dir = tempfile::tempdir().unwrap();
    // old: 451 on the 2nd RCPT of the first connection, then normal.
    let old = FakeSmtp::start(Script {
        rcpt_replies: vec![(2, "451 4.3.0 try again later".into())],
        first_connection_only: true,
        ..Default::default()
    })
    .await;
    // new: the first connection is cut in the middle of DATA.
    let new = FakeSmtp::start(Script {
        cut_data_after: Some(30),
        first_connection_only: true,
        ..Default::default()
    })
    .await;
    let cfg = config(dir.path(), old.addr.port(), new.addr.port(), "");
    let q = Queue::open(&cfg.gateway.state_dir).unwrap();
    enqueue(
        &q,
        "alice@example.org",
        vec![("old", vec!["a@example.com", "b@example.com"])],
    )
    .await;
    enqueue(
        &q,
        "alice@example.org",
        vec![("new", vec!["c@example.com"])],
    )
    .await;
    let e = start(&q, cfg);
    e.until_empty(Duration::from_secs(20)).await;
    // old: a delivered on the first try, b on the retry; nothing twice.
    let o = old.received();
    let mut rcpts: Vec<String> = o.iter().flat_map(|m| m.rcpts.clone()).collect();
    rcpts.sort();
    assert_eq!(rcpts, vec!["a@example.com", "b@example.com"], "{o:#?}");
    assert!(*old.connections.lock().unwrap() >= 2 || o.len() == 2);
    // new: the cut transaction was redelivered, complete and byte-exact.
    let n = new.received();
    assert_eq!(n.len(), 1, "{n:#?}");
    assert_eq!(n[0].body, BODY);
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_421_defers_then_delivers() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let old = FakeSmtp::start(Script {
        greeting: Some("421 4.3.2 busy, try later".into()),
        first_connection_only: true,
        ..Default::default()
    })
    .await;
    let new = FakeSmtp::start(Script::default()).await;
    let cfg = config(dir.path(), old.addr.port(), new.addr.port(), "");
    let q = Queue::open(&cfg.gateway.state_dir).unwrap();
    let id = enqueue(
        &q,
        "alice@example.org",
        vec![("old", vec!["a@example.com"])],
    )
    .await;
    let e = start(&q, cfg);
    wait_for(Duration::from_secs(10), || {
        *old.connections.lock().unwrap() >= 1
    })
    .await;
    e.until_empty(Duration::from_secs(20)).await;
    assert_eq!(old.received().len(), 1, "delivered after the 421 ({id})");
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_legs_failing_gives_exactly_one_parseable_dsn() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let sink = FakeSmtp::start(Script::default()).await; // where DSNs go
    let reject = Script {
        rcpt_replies: vec![(1, "550 5.1.1 <bob>: no such user".into())],
        ..Default::default()
    };
    let (old, new) = (
        FakeSmtp::start(reject.clone()).await,
        FakeSmtp::start(reject).await,
    );
    let extra = format!(
        "[targets.bounces]\naddress = \"127.0.0.1:{}\"\ntls = \"none\"\n[bounce]\nvia = \"bounces\"\n",
        sink.addr.port()
    );
    let cfg = config(dir.path(), old.addr.port(), new.addr.port(), &extra);
    let q = Queue::open(&cfg.gateway.state_dir).unwrap();
    enqueue(
        &q,
        "alice@example.org",
        vec![
            ("old", vec!["bob@example.com"]),
            ("new", vec!["bob@example.com"]),
        ],
    )
    .await;
    let e = start(&q, cfg);
    e.until_empty(Duration::from_secs(10)).await;
    let dsns = sink.received();
    assert_eq!(
        dsns.len(),
        1,
        "exactly one DSN for a recipient failing on both legs: {dsns:#?}"
    );
    assert_eq!(dsns[0].mail_from, "");
    let parsed = mail_parser::MessageParser::default()
        .parse(&dsns[0].body)
        .expect("DSN parses");
    use mail_parser::MimeHeaders;
    let ct = parsed.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    let text = String::from_utf8_lossy(&dsns[0].body);
    // Both legs are reported, each with its target's final address, status and reply.
    assert!(
        text.contains("Final-Recipient: rfc822; bob@new.example.net"),
        "{text}"
    );
    assert!(
        text.contains(
            "Final-Recipient: rfc822; bob@example.com\r\nAction: failed\r\nStatus: 5.1.1"
        ),
        "{text}"
    );
    assert!(text.contains("<bob@example.com>: via old"), "{text}");
    assert!(text.contains("<bob@example.com>: via new"), "{text}");
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rcpt_domain_rewrites_only_our_domains_and_never_dsns() {
    init();
    let old = FakeSmtp::start(Script {
        rcpt_replies: vec![(1, "550 5.1.1 no such user".into())],
        ..Default::default()
    })
    .await;
    let new = FakeSmtp::start(Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // DSNs go out through "new", whose rcpt_domain is new.example.net.
    let cfg = config(
        dir.path(),
        old.addr.port(),
        new.addr.port(),
        "[bounce]\nvia = \"new\"\n",
    );
    let q = Queue::open(&cfg.gateway.state_dir).unwrap();
    // Our user: rewritten. A relayed recipient in another domain: untouched.
    enqueue(
        &q,
        "alice@example.org",
        vec![("new", vec!["carol@example.com", "bob@partner.example"])],
    )
    .await;
    // Fails on old: the DSN to a sender whose domain is ours must not be rewritten either.
    enqueue(
        &q,
        "sender@example.com",
        vec![("old", vec!["x@example.com"])],
    )
    .await;
    let e = start(&q, cfg);
    e.until_empty(Duration::from_secs(20)).await;
    e.stop().await;
    let got = new.received.lock().unwrap().clone();
    let mut rcpts: Vec<(String, Vec<String>)> = got
        .iter()
        .map(|r| (r.mail_from.clone(), r.rcpts.clone()))
        .collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        vec![
            ("".to_string(), vec!["sender@example.com".to_string()]),
            (
                "alice@example.org".to_string(),
                vec![
                    "carol@new.example.net".to_string(),
                    "bob@partner.example".to_string()
                ]
            ),
        ],
        "{got:#?}"
    );
    let dsn = got.iter().find(|r| r.mail_from.is_empty()).unwrap();
    let text = String::from_utf8_lossy(&dsn.body);
    assert!(
        text.contains("Final-Recipient: rfc822; x@example.com"),
        "{text}"
    );
}

/// Connection settings (here `tls_ca`) are read once per loaded configuration: the file going
/// away changes nothing until the next reload, which reports it (the leg defers with the reason),
/// and a reload once it is back delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_settings_are_resolved_once_per_loaded_config() {
    init();
    let new = FakeSmtp::start(Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, fake_smtp::self_signed("new.test").1).unwrap();
    // "old" is never used here.
    config(dir.path(), 9, new.addr.port(), "");
    let path = dir.path().join("cutover.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "rcpt_domain = \"new.example.net\"",
        // One message per connection: no pooled session hides the settings.
        "rcpt_domain = \"new.example.net\"\ntls_ca = \"ca.pem\"\nmessages_per_connection = 1",
    );
    std::fs::write(&path, text).unwrap();
    let cfg = cutover::loader::load(&path).unwrap().config;
    let q = Queue::open(&cfg.gateway.state_dir).unwrap();
    let (cfg_tx, cfg_rx) = watch::channel(Arc::new(cfg.clone()));
    let e = start_watching(&q, cfg_rx);

    std::fs::remove_file(&ca_path).unwrap();
    enqueue(
        &q,
        "alice@example.org",
        vec![("new", vec!["bob@example.com"])],
    )
    .await;
    e.until_empty(Duration::from_secs(10)).await;
    assert_eq!(
        new.received().len(),
        1,
        "settings loaded before the file went"
    );

    // A reload without the file: reported, and deliveries to the target defer with the reason.
    cfg_tx.send(Arc::new(cfg.clone())).unwrap();
    let id = enqueue(
        &q,
        "alice@example.org",
        vec![("new", vec!["bob@example.com"])],
    )
    .await;
    let reply = deferred_reply(&q, &id).await;
    assert!(reply.contains("ca.pem"), "{reply}");

    // The file is back and the configuration reloaded: delivered at the next retry.
    std::fs::write(&ca_path, fake_smtp::self_signed("new.test").1).unwrap();
    cfg_tx.send(Arc::new(cfg)).unwrap();
    e.until_empty(Duration::from_secs(10)).await;
    assert_eq!(new.received().len(), 2);
    e.stop().await;
}
