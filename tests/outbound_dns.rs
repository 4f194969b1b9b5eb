//! MX resolution against a real DNS server: Debian's dnsmasq on a loopback port, authoritative
//! for a test zone. Preference order, fallback to A/AAAA of the next MX, implicit MX, NXDOMAIN.

#[path = "support/fake_smtp.rs"]
mod fake_smtp;

use cutover::config::Dns;
use cutover::outbound::reply::Outcome;
use cutover::outbound::resolve::Resolver;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn dnsmasq(extra: &[&str]) -> Dnsmasq {
    let bin = "/usr/sbin/dnsmasq";
    assert!(
        std::path::Path::new(bin).exists(),
        "dnsmasq (Debian package dnsmasq-base) is required; .ci/run installs it"
    );
    let port = free_udp_port();
    let child = Command::new(bin)
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--user=root",
            "--pid-file",
            "--log-facility=-",
            &format!("--port={port}"),
            "--local=/test/",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    Dnsmasq { child, addr }
}

async fn resolver(d: &Dnsmasq) -> Resolver {
    let r = Resolver::new(&Dns {
        servers: vec![d.addr],
    })
    .unwrap();
    // Readiness: poll until the server answers.
    for _ in 0..100 {
        if r.addresses("ready.test", 25).await.is_ok() {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("dnsmasq did not come up");
}

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
    let hops = r.hops_for_domain("example.test", 2525).await.unwrap();
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
    let hops = r.hops_for_domain("example.test", 25).await.unwrap();
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
    let hops = r.hops_for_domain("plain.test", 25).await.unwrap();
    assert_eq!(hops[0].host, "plain.test");
    assert_eq!(
        hops[0].addrs,
        vec!["127.0.0.13:25".parse::<SocketAddr>().unwrap()]
    );
    let err = r.hops_for_domain("nonexistent.test", 25).await.unwrap_err();
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
            "[gateway]\naccept_domains = [\"example.com\"]\nstate_dir = \"{}\"\n[targets.new]\nmx = \"example.test\"\nport = {port}\ntls = \"none\"\n[routing]\ndefault = [\"new\"]\n[dns]\nservers = [\"{}\"]\n[queue]\nretry_schedule = [\"1s\"]\n[bounce]\nvia = \"mx\"\n",
            dir.path().join("state").display(),
            d.addr
        ),
    )
    .unwrap();
    let cfg = cutover::config::load(&path).unwrap().config;
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
