//! Crash safety of intake: `cutover serve` takes ≥ 2,000 messages from 20 concurrent clients
//! while it is `kill -9`ed at random moments and restarted. Afterwards every message that got a
//! 250 is in `cutover queue list` with the right legs, nothing that was not answered 250 is
//! half-present (an in-flight one may be there, but then whole), and bodies are byte-identical
//! (SHA-256). Size: `CUTOVER_CRASH_MESSAGES` (default 2000), `CUTOVER_CRASH_KILLS` (default 4).

#[path = "support/common.rs"]
mod common;
#[path = "support/smtp.rs"]
mod support;

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const CLIENTS: usize = 20;

#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    /// 250 with this queue id.
    Acked(String),
    /// The whole body was sent, no reply (the server died): may or may not be queued.
    InFlight,
    /// Refused with this reply code after the body was sent.
    Refused(u16),
}

struct Attempt {
    token: String,
    rcpts: Vec<&'static str>,
    sha: [u8; 32],
    outcome: Outcome,
}

fn recipients_for(n: usize) -> Vec<&'static str> {
    match n % 5 {
        0 => vec!["alice@example.com"],
        1 => vec!["bob@example.com"],
        2 => vec!["carol@example.com"],
        3 => vec!["alice@example.com", "carol@example.com"],
        _ => vec!["alice@example.com", "bob@example.com", "carol@example.com"],
    }
}

/// Expected legs: target → recipients.
fn legs_for(rcpts: &[&str]) -> Vec<(String, Vec<String>)> {
    let mut old = Vec::new();
    let mut new = Vec::new();
    for r in rcpts {
        match *r {
            "alice@example.com" => old.push(r.to_string()),
            "bob@example.com" => {
                old.push(r.to_string());
                new.push(r.to_string());
            }
            _ => new.push(r.to_string()),
        }
    }
    let mut v = Vec::new();
    if !old.is_empty() {
        v.push(("old".to_string(), old));
    }
    if !new.is_empty() {
        v.push(("new".to_string(), new));
    }
    v.sort();
    v
}

fn body_for(token: &str, n: usize) -> Vec<u8> {
    let mut b = format!(
        "From: load@client.test\r\nTo: someone@example.com\r\nSubject: crash {token}\r\nMessage-ID: <{token}@client.test>\r\nX-Token: {token}\r\n\r\n"
    );
    // Mostly ~2 KB; every 40th is 200 KB (spooled rather than inline).
    let lines = if n.is_multiple_of(40) { 2600 } else { 25 };
    for i in 0..lines {
        b.push_str(&format!("{token} line {i:05} .{}\r\n", "z".repeat(60)));
        if i % 7 == 0 {
            b.push_str(".dot-started line\r\n");
        }
    }
    b.into_bytes()
}

async fn try_connect(addr: std::net::SocketAddr) -> Option<Client> {
    let s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let mut c = Client::from_stream(s);
    (c.read_reply().await.code == 220).then_some(c)
}

async fn client_loop(
    addr: std::net::SocketAddr,
    target: usize,
    acked: Arc<AtomicUsize>,
    seq: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<Attempt>>>,
) {
    let deadline = Instant::now() + Duration::from_secs(150);
    'conn: while acked.load(Ordering::SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "crash test did not finish in time"
        );
        let Some(mut c) = try_connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if c.cmd("EHLO load").await.code != 250 {
            continue;
        }
        while acked.load(Ordering::SeqCst) < target {
            let n = seq.fetch_add(1, Ordering::SeqCst);
            let token = format!("tok{n:06}x{}", fastrand::u32(..));
            let rcpts = recipients_for(n);
            let body = body_for(&token, n);
            if c.cmd("MAIL FROM:<load@client.test>").await.code != 250 {
                continue 'conn;
            }
            for r in &rcpts {
                if c.cmd(&format!("RCPT TO:<{r}>")).await.code != 250 {
                    continue 'conn;
                }
            }
            if c.cmd("DATA").await.code != 354 {
                continue 'conn;
            }
            c.send_lossy(&stuffed(&body)).await;
            let r = c.read_reply().await;
            let outcome = match (r.code, queued_id(&r)) {
                (250, Some(id)) => {
                    acked.fetch_add(1, Ordering::SeqCst);
                    Outcome::Acked(id)
                }
                (0, _) => Outcome::InFlight,
                (code, _) => Outcome::Refused(code),
            };
            let again = matches!(outcome, Outcome::Acked(_));
            log.lock().unwrap().push(Attempt {
                token,
                rcpts,
                sha: Sha256::digest(&body).into(),
                outcome,
            });
            if !again {
                continue 'conn;
            }
        }
        let _ = c.cmd("QUIT").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_intake_loses_nothing_acknowledged() {
    let target: usize = std::env::var("CUTOVER_CRASH_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let kills: usize = std::env::var("CUTOVER_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    // The clients reconnect as fast as they can after each kill: no connection-rate limit.
    let mut g = Gateway::start(Opts {
        extra_gateway: "max_connection_rate = 0\n".into(),
        ..Default::default()
    });
    let acked = Arc::new(AtomicUsize::new(0));
    let seq = Arc::new(AtomicUsize::new(0));
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        tasks.push(tokio::spawn(client_loop(
            g.smtp,
            target,
            acked.clone(),
            seq.clone(),
            log.clone(),
        )));
    }
    // Kill at random moments spread over the run (by acknowledged count), restart each time.
    let mut done_kills = 0;
    let mut next_at = target / (kills + 1) + fastrand::usize(..target / (kills + 1) / 2 + 1);
    while done_kills < kills && acked.load(Ordering::SeqCst) < target {
        if acked.load(Ordering::SeqCst) >= next_at {
            // A random extra delay so the kill lands anywhere in a transaction.
            tokio::time::sleep(Duration::from_micros(fastrand::u64(0..20_000))).await;
            tokio::task::block_in_place(|| {
                g.kill9();
                g.spawn();
            });
            done_kills += 1;
            next_at = (done_kills + 1) * target / (kills + 1)
                + fastrand::usize(..target / (kills + 1) / 2 + 1);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    g.kill9();
    assert_eq!(done_kills, kills, "not every kill happened");

    // What `cutover queue list` reports (offline, after recovery).
    let list = g.queue_list();
    let list = list.as_array().unwrap();
    let q = cutover::queue::Queue::open(&g.state_dir()).unwrap();
    let log = log.lock().unwrap();
    let by_token: HashMap<&str, &Attempt> = log.iter().map(|a| (a.token.as_str(), a)).collect();
    let mut seen_tokens = HashMap::new();
    let mut in_flight_present = 0;
    for m in list {
        let id = m["id"].as_str().unwrap();
        let body = q
            .read_body(&cutover::queue::QueueId::parse(id).unwrap())
            .unwrap();
        let marker = b"X-Cutover-Loop: mx.test\r\n";
        let start = body
            .windows(marker.len())
            .position(|w| w == marker)
            .expect("stamp missing")
            + marker.len();
        let original = &body[start..];
        let text = String::from_utf8_lossy(original);
        let token = text
            .lines()
            .find_map(|l| l.strip_prefix("X-Token: "))
            .expect("token header")
            .to_string();
        let a = by_token
            .get(token.as_str())
            .unwrap_or_else(|| panic!("{id}: token {token} was never sent through DATA"));
        assert_eq!(
            <[u8; 32]>::from(Sha256::digest(original)),
            a.sha,
            "{id}: body differs"
        );
        let mut legs: Vec<(String, Vec<String>)> = m["legs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["target"].as_str().unwrap().to_string(),
                    l["recipients"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r["address"].as_str().unwrap().to_string())
                        .collect(),
                )
            })
            .collect();
        legs.sort();
        assert_eq!(legs, legs_for(&a.rcpts), "{id}: legs");
        match &a.outcome {
            Outcome::Acked(acked_id) => assert_eq!(acked_id, id, "{token}: id mismatch"),
            Outcome::InFlight => in_flight_present += 1,
            Outcome::Refused(code) => panic!("{id}: refused with {code} but queued"),
        }
        assert!(
            seen_tokens.insert(token.clone(), id.to_string()).is_none(),
            "{token} queued twice"
        );
    }
    let acked_attempts: Vec<&Attempt> = log
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Acked(_)))
        .collect();
    for a in &acked_attempts {
        assert!(
            seen_tokens.contains_key(a.token.as_str()),
            "{} got 250 ({:?}) but is not in the queue",
            a.token,
            a.outcome
        );
    }
    assert!(acked_attempts.len() >= target);
    let in_flight = log
        .iter()
        .filter(|a| a.outcome == Outcome::InFlight)
        .count();
    eprintln!(
        "crash test: {} acknowledged, {} in flight at a kill ({} of them queued), {} kills, {} in queue",
        acked_attempts.len(),
        in_flight,
        in_flight_present,
        kills,
        list.len()
    );
}
