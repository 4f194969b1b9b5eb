//! Shared helpers for the queue integration tests: temp configs, sample envelopes, legs and
//! bodies, and running the real `cutover` binary. Needs `crate::common`.
#![allow(dead_code)]

use cutover::queue::{Envelope, NewLeg, Queue, QueueId};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

/// A minimal valid config using `state_dir` and `admin`.
pub fn write_config(dir: &Path, state_dir: &Path, admin: SocketAddr) -> PathBuf {
    let text = format!(
        r#"[gateway]
hostname = "mx.test"
listen = ["127.0.0.1:0"]
state_dir = "{}"
accept_domains = ["example.com"]

[targets.old]
address = "127.0.0.1:2525"
tls = "none"
[targets.new]
address = "127.0.0.1:2526"
tls = "none"

[routing]
default = ["old"]
[[routing.rule]]
name = "pilot"
recipients = ["bob@example.com"]
deliver = ["old", "new"]

[admin]
listen = "{admin}"
"#,
        state_dir.display()
    );
    let path = dir.join("cutover.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// An address on which nothing listens (bound then released).
pub fn dead_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], crate::common::free_port()))
}

pub fn envelope(from: &str, at_ms: u64) -> Envelope {
    Envelope {
        mail_from: from.into(),
        helo: "client.test".into(),
        client_addr: "127.0.0.1:40000".parse().unwrap(),
        received_at: SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms),
        smtputf8: false,
        body_8bit: true,
    }
}

/// Legs for a dual-delivered (`bob`) and a default-routed (`carol`) recipient.
pub fn legs() -> Vec<NewLeg> {
    vec![
        NewLeg {
            target: "old".into(),
            rules: vec!["pilot".into(), "default".into()],
            recipients: vec!["bob@example.com".into(), "carol@example.com".into()],
        },
        NewLeg {
            target: "new".into(),
            rules: vec!["pilot".into()],
            recipients: vec!["bob@example.com".into()],
        },
    ]
}

/// A deterministic body of about `size` bytes with a recognisable header block.
pub fn body(seed: u64, size: usize) -> Vec<u8> {
    let mut b = format!(
        "Received: from client.test\r\nFrom: <sender{seed}@example.org>\r\nTo: <bob@example.com>\r\n\
         Subject: message {seed}\r\nMessage-ID: <{seed}@example.org>\r\n\r\n"
    )
    .into_bytes();
    let mut i = 0u64;
    while b.len() < size {
        b.extend_from_slice(format!("body {seed} line {i} ......................\r\n").as_bytes());
        i += 1;
    }
    b.truncate(size.max(120));
    b
}

/// Commit one message in chunks, as a session would.
pub async fn commit(q: &Queue, from: &str, data: &[u8], legs: Vec<NewLeg>) -> QueueId {
    let mut w = q.body_writer().unwrap();
    for c in data.chunks(16 * 1024) {
        w.write(c).await.unwrap();
    }
    q.commit(w, envelope(from, 1_790_000_000_000), legs)
        .await
        .unwrap()
}

/// Run the real binary.
pub fn cutover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(args)
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
