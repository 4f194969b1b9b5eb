//! A private DNS server for tests: Debian's dnsmasq on a free loopback UDP/TCP port,
//! authoritative for `*.test` (names it does not know are NXDOMAIN), answering only what the
//! test passes as arguments (`--mx-host`, `--host-record`, `--txt-record`, `--local-ttl`, …).
//! The process is killed when the [`Dnsmasq`] is dropped. Needs `crate::common`.
#![allow(dead_code)]

use crate::common;
use cutover::config::Dns;
use cutover::outbound::resolve::Resolver;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running dnsmasq; `addr` is its UDP/TCP address.
pub struct Dnsmasq {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free for both UDP and TCP (bound, then released): dnsmasq binds both, and a
/// port free for UDP may be some connection's TCP port.
pub fn free_udp_port() -> u16 {
    for _ in 0..100 {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

/// Start dnsmasq with the fixed options and `extra`, on a free port. A start that fails (the
/// port taken meanwhile: dnsmasq exits at once) is retried on another port; the server is
/// returned once it accepts TCP connections, never later than a few seconds.
pub fn dnsmasq(extra: &[&str]) -> Dnsmasq {
    let bin = common::required_tool("dnsmasq");
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_udp_port();
        // Its messages go to a file (a pipe nobody reads could fill and stall it), read back
        // when the start fails.
        let log = std::env::temp_dir().join(format!("cutover-dnsmasq-{port}.log"));
        let mut child = Command::new(&bin)
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
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                let err = std::fs::read_to_string(&log).unwrap_or_default();
                last = format!("dnsmasq exited ({status}) on port {port}: {err}");
                break;
            }
            if std::net::TcpStream::connect(addr).is_ok() {
                return Dnsmasq { child, addr };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("dnsmasq did not start: {last}");
}

/// A resolver for `d`, once it answers (the test must pass `--host-record=ready.test,…`).
pub async fn resolver(d: &Dnsmasq) -> Resolver {
    let r = Resolver::new(&Dns {
        servers: vec![d.addr],
        allow_private_mx: true,
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
