//! Crash safety of delivery: `cutover serve` (a real child process) relays 1,000 messages to two
//! real Postfix smtp-sink servers (single and dual delivery) and is killed with SIGKILL several
//! times while delivering. After the last restart drains the queue, every recipient of every leg
//! has arrived at least once, and duplicates stay within the legs that can have been in flight
//! at the kills (connections per target x targets x kills).

#[path = "support/common.rs"]
mod common;
#[path = "support/smtp.rs"]
mod support;

use common::{free_port, required_tool};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{Gateway, queue_len};

const N: usize = 1000;
const KILLS: usize = 3;
const CONNECTIONS: usize = 4;

struct Sink {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sink(dir: &Path) -> Sink {
    let bin = required_tool("smtp-sink");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let port = free_port();
    let child = Command::new(bin)
        .args(["-u", "nobody", "-D"])
        .arg(dir.join("%d.%H%M%S."))
        .arg(format!("127.0.0.1:{port}"))
        .arg("256")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Sink {
        child,
        dir: dir.to_path_buf(),
        port,
    }
}

/// (Message-ID local part, recipient) pairs received, with multiplicity.
fn received(s: &Sink) -> HashMap<(String, String), usize> {
    let mut out = HashMap::new();
    let Ok(rd) = std::fs::read_dir(&s.dir) else {
        return out;
    };
    for f in rd.flatten() {
        let Ok(text) = std::fs::read_to_string(f.path()) else {
            continue;
        };
        for block in text.split("X-Client-Addr:").skip(1) {
            let rcpts: Vec<String> = block
                .lines()
                .filter_map(|l| l.strip_prefix("X-Rcpt-Args: <"))
                .map(|r| r.trim_end_matches('>').to_string())
                .collect();
            let Some(mid) = block.lines().find_map(|l| l.strip_prefix("Message-ID: <")) else {
                continue;
            };
            // A message is complete when its body's last line is present.
            if !block.contains("end-of-message") {
                continue;
            }
            let mid = mid.split('@').next().unwrap_or("").to_string();
            for r in rcpts {
                *out.entry((mid.clone(), r)).or_insert(0) += 1;
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_delivery_loses_nothing() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (sink(&dir.path().join("old")), sink(&dir.path().join("new")));
    let mut server = Gateway::start_config(|smtp, admin, state| {
        format!(
            r#"[gateway]
hostname = "mx1.example.com"
listen = ["{smtp}"]
state_dir = "{state}"
accept_domains = ["example.com"]
min_free_space = "1MiB"
[targets.old]
address = "127.0.0.1:{old}"
tls = "none"
connections = {CONNECTIONS}
[targets.new]
address = "127.0.0.1:{new}"
tls = "none"
connections = {CONNECTIONS}
[routing]
default = ["old"]
[[routing.rule]]
name = "dual"
recipients = ["d*@example.com"]
deliver = ["old", "new"]
[queue]
retry_schedule = ["1s"]
delay_warning = "0"
[admin]
listen = "{admin}"
"#,
            state = state.display(),
            old = old.port,
            new = new.port
        )
    });
    let (smtp, cfg) = (server.smtp, server.config.clone());

    // Send N messages over 10 connections; each has one single-delivery and one dual recipient.
    let mut expected: Vec<(String, String, u16)> = Vec::new();
    let mut accepted = 0usize;
    let mut kills = 0usize;
    let mut handles = Vec::new();
    for c in 0..10 {
        handles.push(tokio::spawn(async move {
            let spec = cutover::outbound::client::ConnectSpec {
                host: "localhost".into(),
                addr: smtp,
                tls: cutover::config::TlsMode::None,
                connector: cutover::tls_client::connector(false, None).unwrap(),
                helo: "client.example.org".into(),
                connect_timeout: Duration::from_secs(5),
                timeout: Duration::from_secs(30),
                auth: None,
            };
            let mut ok = Vec::new();
            let mut s = cutover::outbound::client::Session::open(&spec)
                .await
                .unwrap();
            for i in (c..N).step_by(10) {
                let rcpts = vec![format!("u{i}@example.com"), format!("d{i}@example.com")];
                let body = format!(
                    "Subject: m{i}\r\nMessage-ID: <m{i}@test>\r\n\r\nbody {i}\r\nend-of-message\r\n"
                );
                let r = s
                    .send(&cutover::outbound::client::Transaction {
                        mail_from: "a@example.org",
                        rcpts: &rcpts,
                        body: cutover::outbound::client::Body::Bytes(body.as_bytes()),
                        size: body.len() as u64,
                        smtputf8: false,
                        body_8bit: false,
                    })
                    .await;
                if r.iter()
                    .all(|o| matches!(o, cutover::outbound::reply::Outcome::Delivered { .. }))
                {
                    ok.push(i);
                }
            }
            s.quit().await;
            ok
        }));
    }
    for h in handles {
        for i in h.await.unwrap() {
            accepted += 1;
            expected.push((format!("m{i}"), format!("u{i}@example.com"), old.port));
            expected.push((format!("m{i}"), format!("d{i}@example.com"), old.port));
            expected.push((format!("m{i}"), format!("d{i}@example.com"), new.port));
        }
    }
    assert_eq!(accepted, N, "all messages accepted before the kills");

    // Kill -9 while delivering, restart, repeat.
    while kills < KILLS {
        tokio::time::sleep(Duration::from_millis(150 + 200 * kills as u64)).await;
        let delivered: usize =
            received(&old).values().sum::<usize>() + received(&new).values().sum::<usize>();
        if delivered >= expected.len() {
            break; // drained before we could kill again
        }
        server.kill9();
        kills += 1;
        server.spawn();
    }

    // Drain.
    let t = Instant::now();
    loop {
        if queue_len(&cfg) == Some(0) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "queue did not drain: {:?}",
            queue_len(&cfg)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.kill9();

    let (got_old, got_new) = (received(&old), received(&new));
    let mut missing = Vec::new();
    for (mid, rcpt, port) in &expected {
        let got = if *port == old.port {
            &got_old
        } else {
            &got_new
        };
        if got.get(&(mid.clone(), rcpt.clone())).copied().unwrap_or(0) == 0 {
            missing.push((mid, rcpt, port));
        }
    }
    assert!(
        missing.is_empty(),
        "{} recipient legs never arrived, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let dups: usize = got_old
        .values()
        .chain(got_new.values())
        .map(|n| n - 1)
        .sum();
    let bound = kills * CONNECTIONS * 2 * 2; // each in-flight leg carries at most 2 recipients
    eprintln!(
        "kills={kills} delivered recipient-legs={} duplicates={dups} bound={bound}",
        expected.len()
    );
    assert!(dups <= bound, "{dups} duplicates > bound {bound}");
}
