//! MX resolution against a real DNS server: Debian's dnsmasq on a loopback port, authoritative
//! for a test zone. Preference order, fallback to A/AAAA of the next MX, implicit MX, NXDOMAIN;
//! MX safety: private exchange addresses refused unless `dns.allow_private_mx`, at most 5 MX
//! hosts per attempt, per-domain pools for MX-routed DSNs.

#[path = "support/common.rs"]
mod common;
#[path = "support/dnsmasq.rs"]
mod dnsmasq;
#[path = "support/fake_smtp.rs"]
mod fake_smtp;

use cutover::outbound::reply::Outcome;
use dnsmasq::{Dnsmasq, dnsmasq, resolver};
use std::net::SocketAddr;
use std::time::Duration;

#[tokio::test]
async fn mx_preference_order_and_addresses() {
    let d = dnsmasq(&[
        "--host-record=ready.test,127.0.0.9",
        "--mx-host=example.test,mx-b.example.test,20",
        "--mx-host=example.test,mx-a.example.test,10",
        "--host-record=mx-a.example.test,127.0.0.11",
        "--host-record=mx-b.example.test,127.0.0.12",
    ]);
    let r = resolver(&d).await;
    let hops = r.hops_for_domain("example.test", 2525, true).await.unwrap();
    let hosts: Vec<&str> = hops.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(hosts, vec!["mx-a.example.test", "mx-b.example.test"]);
    assert_eq!(
        hops[0].addrs,
        vec!["127.0.0.11:2525".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(
        hops[1].addrs,
        vec!["127.0.0.12:2525".parse::<SocketAddr>().unwrap()]
    );
}

#[tokio::test]
async fn mx_without_address_falls_back_to_the_next_mx() {
    let d = dnsmasq(&[
        "--host-record=ready.test,127.0.0.9",
        "--mx-host=example.test,gone.example.test,10",
        "--mx-host=example.test,mx-b.example.test,20",
        "--host-record=mx-b.example.test,127.0.0.12",
    ]);
    let r = resolver(&d).await;
    let hops = r.hops_for_domain("example.test", 25, true).await.unwrap();
    let hosts: Vec<&str> = hops.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(hosts, vec!["mx-b.example.test"]);
}

#[tokio::test]
async fn implicit_mx_and_nxdomain() {
    let d = dnsmasq(&[
        "--host-record=ready.test,127.0.0.9",
        "--host-record=plain.test,127.0.0.13",
    ]);
    let r = resolver(&d).await;
    let hops = r.hops_for_domain("plain.test", 25, true).await.unwrap();
    assert_eq!(hops[0].host, "plain.test");
    assert_eq!(
        hops[0].addrs,
        vec!["127.0.0.13:25".parse::<SocketAddr>().unwrap()]
    );
    let err = r
        .hops_for_domain("nonexistent.test", 25, true)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Outcome::Failed { reply } if reply.contains("does not exist")),
        "{err:?}"
    );
}

/// The delivery engine with an `mx` target: the preferred MX refuses connections, the second one
/// takes the mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_falls_back_to_the_second_mx() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let fake = fake_smtp::FakeSmtp::start(fake_smtp::Script::default()).await;
    let port = fake.addr.port();
    let d = dnsmasq(&[
        "--host-record=ready.test,127.0.0.9",
        "--mx-host=example.test,mx-a.example.test,10",
        "--mx-host=example.test,mx-b.example.test,20",
        "--host-record=mx-a.example.test,127.0.0.11",
        "--host-record=mx-b.example.test,127.0.0.1",
    ]);
    let _ = resolver(&d).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\naccept_domains = [\"example.com\"]\nstate_dir = \"{}\"\n[targets.new]\nmx = \"example.test\"\nport = {port}\ntls = \"none\"\n[routing]\ndefault = [\"new\"]\n[dns]\nservers = [\"{}\"]\nallow_private_mx = true\n[queue]\nretry_schedule = [\"1s\"]\n[bounce]\nvia = \"mx\"\n",
            dir.path().join("state").display(),
            d.addr
        ),
    )
    .unwrap();
    let cfg = cutover::loader::load(&path).unwrap().config;
    let q = cutover::queue::Queue::open(&cfg.gateway.state_dir).unwrap();
    let mut w = q.body_writer().unwrap();
    w.write(b"Subject: mx\r\n\r\nhello\r\n").await.unwrap();
    q.commit(
        w,
        cutover::queue::Envelope {
            mail_from: "a@example.org".into(),
            helo: "h".into(),
            client_addr: "127.0.0.1:1".parse().unwrap(),
            received_at: std::time::SystemTime::now(),
            smtputf8: false,
            body_8bit: false,
        },
        vec![cutover::queue::NewLeg {
            target: "new".into(),
            rules: vec!["default".into()],
            recipients: vec!["bob@example.com".into()],
        }],
    )
    .await
    .unwrap();
    let (_cfg_tx, cfg_rx) = tokio::sync::watch::channel(std::sync::Arc::new(cfg));
    let sched = cutover::outbound::scheduler::Scheduler::new(q.clone(), cfg_rx, None).unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(sched.clone().run(stop_rx));
    let t = std::time::Instant::now();
    while fake.received().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "not delivered via the second MX"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fake.received()[0].rcpts, vec!["bob@example.com"]);
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}

/// A running scheduler over a fresh queue configured by `extra` (appended to a base config
/// that resolves through `d`).
struct Engine {
    _dir: tempfile::TempDir,
    queue: cutover::queue::Queue,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn engine(d: &Dnsmasq, extra: &str) -> Engine {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\naccept_domains = [\"example.com\"]\nstate_dir = \"{}\"\n[queue]\nretry_schedule = [\"1h\"]\n{extra}",
            dir.path().join("state").display(),
        )
        .replace("DNS", &d.addr.to_string()),
    )
    .unwrap();
    let cfg = cutover::loader::load(&path).unwrap().config;
    let queue = cutover::queue::Queue::open(&cfg.gateway.state_dir).unwrap();
    let (cfg_tx, cfg_rx) = tokio::sync::watch::channel(std::sync::Arc::new(cfg));
    let sched = cutover::outbound::scheduler::Scheduler::new(queue.clone(), cfg_rx, None).unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let _keep = (cfg_tx, stop);
        sched.run(stop_rx).await;
    });
    Engine {
        _dir: dir,
        queue,
        task,
    }
}

async fn enqueue(
    q: &cutover::queue::Queue,
    target: &str,
    rule: &str,
    rcpt: &str,
) -> cutover::queue::QueueId {
    let mut w = q.body_writer().unwrap();
    w.write(b"Subject: mx\r\n\r\nhello\r\n").await.unwrap();
    q.commit(
        w,
        cutover::queue::Envelope {
            mail_from: "a@example.org".into(),
            helo: "h".into(),
            client_addr: "127.0.0.1:1".parse().unwrap(),
            received_at: std::time::SystemTime::now(),
            smtputf8: false,
            body_8bit: false,
        },
        vec![cutover::queue::NewLeg {
            target: target.into(),
            rules: vec![rule.into()],
            recipients: vec![rcpt.into()],
        }],
    )
    .await
    .unwrap()
}

/// (a) An MX exchange on 127.0.0.x: refused with a reply naming the key while
/// `dns.allow_private_mx` is off, delivered when it is on. Old code delivered either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_mx_is_refused_unless_allowed() {
    let fake = fake_smtp::FakeSmtp::start(fake_smtp::Script::default()).await;
    let port = fake.addr.port();
    let d = dnsmasq(&[
        "--host-record=ready.test,127.0.0.9",
        "--mx-host=example.test,mx-a.example.test,10",
        "--host-record=mx-a.example.test,127.0.0.1",
    ]);
    let r = resolver(&d).await;
    let err = r
        .hops_for_domain("example.test", port, false)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Outcome::Deferred { reply } if reply.contains("mx-a.example.test") && reply.contains("resolves only to private addresses (set dns.allow_private_mx)")),
        "{err:?}"
    );
    let target = format!(
        "[targets.new]\nmx = \"example.test\"\nport = {port}\ntls = \"none\"\n[routing]\ndefault = [\"new\"]\n[dns]\nservers = [\"DNS\"]\n"
    );

    let off = engine(&d, &target).await;
    let id = enqueue(&off.queue, "new", "default", "bob@example.com").await;
    let t = std::time::Instant::now();
    let reply = loop {
        let rec = off.queue.record(&id).unwrap();
        if let Some(r) = rec.legs[0].last_reply() {
            break r.to_string();
        }
        assert!(t.elapsed() < Duration::from_secs(15), "never attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        reply.contains("resolves only to private addresses (set dns.allow_private_mx)"),
        "{reply}"
    );
    assert!(fake.received().is_empty(), "delivered to a loopback MX");
    drop(off);

    let on = engine(&d, &format!("{target}allow_private_mx = true\n")).await;
    enqueue(&on.queue, "new", "default", "bob@example.com").await;
    let t = std::time::Instant::now();
    while fake.received().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(15), "not delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (b) Eight MX hosts that all drop the connection: one attempt connects to at most five.
/// Old code tried all eight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_five_mx_hosts_per_attempt() {
    let port = common::free_port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut args = vec!["--host-record=ready.test,127.0.0.9".to_string()];
    for i in 1..=8u8 {
        let l = tokio::net::TcpListener::bind(format!("127.0.0.4{i}:{port}"))
            .await
            .unwrap();
        let n = accepted.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(s);
            }
        });
        args.push(format!(
            "--mx-host=many.test,mx{i}.many.test,{}",
            i as u16 * 10
        ));
        args.push(format!("--host-record=mx{i}.many.test,127.0.0.4{i}"));
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = dnsmasq(&argv);
    let r = resolver(&d).await;
    let hops = r.hops_for_domain("many.test", port, true).await.unwrap();
    assert_eq!(hops.len(), 5, "{hops:?}");

    let e = engine(
        &d,
        &format!(
            "[targets.new]\nmx = \"many.test\"\nport = {port}\ntls = \"none\"\n[routing]\ndefault = [\"new\"]\n[dns]\nservers = [\"DNS\"]\nallow_private_mx = true\n"
        ),
    )
    .await;
    let id = enqueue(&e.queue, "new", "default", "bob@example.com").await;
    let t = std::time::Instant::now();
    while e.queue.record(&id).unwrap().legs[0].last_reply().is_none() {
        assert!(t.elapsed() < Duration::from_secs(15), "never attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The attempt is recorded; give any stray connection time to land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 5);
}

/// (c) MX-routed DSNs: a tarpit domain (accepts TCP, never greets) holding every slot of its
/// pool does not hold up a DSN to another domain. Old code shared four slots among all
/// domains, so the second DSN waited for the 300 s greeting timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tarpit_domain_does_not_stall_mx_dsns_to_others() {
    let tarpit = tokio::net::TcpListener::bind("127.0.0.51:25")
        .await
        .unwrap();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = tarpit.accept().await {
            h.lock().unwrap().push(s);
        }
    });
    let fast = fake_smtp::FakeSmtp::start_on("127.0.0.52:25", fake_smtp::Script::default()).await;
    let d = dnsmasq(&[
        "--host-record=ready.test,127.0.0.9",
        "--mx-host=slow.test,mx.slow.test,10",
        "--host-record=mx.slow.test,127.0.0.51",
        "--mx-host=fast.test,mx.fast.test,10",
        "--host-record=mx.fast.test,127.0.0.52",
    ]);
    let _ = resolver(&d).await;
    let e = engine(
        &d,
        "[targets.new]\naddress = \"127.0.0.1:9\"\ntls = \"none\"\n[routing]\ndefault = [\"new\"]\n[dns]\nservers = [\"DNS\"]\nallow_private_mx = true\n[bounce]\nvia = \"mx\"\n",
    )
    .await;
    for i in 0..6 {
        enqueue(&e.queue, "@mx", "bounce", &format!("u{i}@slow.test")).await;
    }
    let t = std::time::Instant::now();
    while held.lock().unwrap().len() < 4 {
        assert!(t.elapsed() < Duration::from_secs(15), "tarpit not reached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    enqueue(&e.queue, "@mx", "bounce", "v@fast.test").await;
    let t = std::time::Instant::now();
    while fast.received().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "DSN to fast.test stalled behind the tarpit domain"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fast.received()[0].rcpts, vec!["v@fast.test"]);
}
