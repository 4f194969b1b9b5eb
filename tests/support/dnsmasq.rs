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

/// A free loopback UDP port (bound, then released).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start dnsmasq with the fixed options and `extra`.
pub fn dnsmasq(extra: &[&str]) -> Dnsmasq {
    let bin = common::required_tool("dnsmasq");
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
