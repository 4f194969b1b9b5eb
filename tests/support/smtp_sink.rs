//! Postfix's `smtp-sink` on a loopback port (accepts every message and discards it), killed on
//! drop: a real SMTP target for tests that need deliveries to succeed.

use super::common::{self, free_port};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Postfix's smtp-sink on a loopback port, killed on drop.
pub struct Sink {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start() -> Sink {
    let bin = common::required_tool("smtp-sink");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // As root, smtp-sink must drop to a user of its own after binding.
    let child = Command::new(bin)
        .args(["-u", "nobody"])
        .arg(addr.to_string())
        .arg("64")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "smtp-sink did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Sink { child, addr }
}
