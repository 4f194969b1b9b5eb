//! Micro-benchmark of queue commit throughput and latency (not a test): 1/10/50 concurrent
//! committers, 2 KB / 32 KB / 100 KB bodies, inline (in sled) vs spool file, each run bounded
//! to ~2 s. Also times the JSON record encoding. Run once, in release:
//!
//!     cargo bench --bench queue_commit
//!
//! `CUTOVER_BENCH_SIZES=262144,1048576` picks other body sizes. The state dir is created under `$CUTOVER_BENCH_DIR` (default: `target/bench-queue`), which
//! must be on a real disk (not tmpfs) for the fsync costs to mean anything.

use cutover::queue::model::{BodyLocation, MessageRecord};
use cutover::queue::{Envelope, NewLeg, Queue, QueueId, QueueOptions};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

fn envelope() -> Envelope {
    Envelope {
        mail_from: "sender@example.org".into(),
        helo: "client.example.org".into(),
        client_addr: "192.0.2.1:40000".parse().unwrap(),
        received_at: SystemTime::now(),
        smtputf8: false,
        body_8bit: false,
    }
}

fn legs() -> Vec<NewLeg> {
    vec![
        NewLeg {
            target: "old".into(),
            rules: vec!["default".into()],
            recipients: vec!["carol@example.com".into()],
        },
        NewLeg {
            target: "new".into(),
            rules: vec!["pilot".into(), "wave-1".into()],
            recipients: vec!["bob@example.com".into(), "alice@example.com".into()],
        },
    ]
}

struct Outcome {
    msgs: usize,
    secs: f64,
    p50: Duration,
    p99: Duration,
    flushes: u64,
}

async fn run(dir: &std::path::Path, conc: usize, size: usize, spool: bool) -> Outcome {
    let _ = std::fs::remove_dir_all(dir);
    let q = Queue::open_with(
        dir,
        QueueOptions {
            inline_threshold: if spool { 0 } else { 1 << 20 },
            ..QueueOptions::default()
        },
    )
    .unwrap();
    let body: Arc<Vec<u8>> = Arc::new((0..size).map(|i| b'a' + (i % 26) as u8).collect());
    let budget = Duration::from_secs(2);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let q = q.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while start.elapsed() < budget && lat.len() < 20_000 {
                let t = Instant::now();
                let mut w = q.body_writer().unwrap();
                for c in body.chunks(16 * 1024) {
                    w.write(c).await.unwrap();
                }
                q.commit(w, envelope(), legs()).await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let out = Outcome {
        msgs: lat.len(),
        secs,
        p50: pct(0.50),
        p99: pct(0.99),
        flushes: q.flush_count(),
    };
    q.close().unwrap();
    out
}

fn encoding() {
    let now = SystemTime::now();
    let rec = MessageRecord::planned(
        QueueId("0V5KQ2H8M3A7C0".into()),
        envelope(),
        2048,
        BodyLocation::Inline,
        legs(),
        now,
    );
    let n = 100_000;
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..n {
        bytes = std::hint::black_box(rec.encode().unwrap()).len();
    }
    let enc = t.elapsed() / n;
    let encoded = rec.encode().unwrap();
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(MessageRecord::decode(&encoded).unwrap());
    }
    let dec = t.elapsed() / n;
    println!(
        "record encoding (JSON, 2 legs, 3 recipients): {bytes} bytes, encode {enc:?}, decode {dec:?}"
    );
}

/// Peak RSS (VmHWM) of this process in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Peak RSS added by streaming one 50 MiB body through a body writer into the spool.
async fn big_message(dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir);
    let q = Queue::open(dir).unwrap();
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let before = peak_rss_kib();
    let t = Instant::now();
    let mut w = q.body_writer().unwrap();
    for _ in 0..(50 * 16) {
        w.write(&chunk).await.unwrap();
    }
    let id = q.commit(w, envelope(), legs()).await.unwrap();
    let after = peak_rss_kib();
    println!(
        "50 MiB body streamed to the spool in {:?}: peak RSS {} KiB -> {} KiB (+{} KiB), id {id}",
        t.elapsed(),
        before,
        after,
        after.saturating_sub(before)
    );
    q.close().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    let base = std::env::var_os("CUTOVER_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("target/bench-queue"));
    std::fs::create_dir_all(&base).unwrap();
    encoding();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(big_message(&base.join("big")));
    println!(
        "{:>5} {:>7} {:>6} {:>8} {:>9} {:>9} {:>9} {:>8}",
        "conc", "size", "body", "msgs", "msgs/s", "p50 ms", "p99 ms", "flushes"
    );
    // Body sizes in bytes: `CUTOVER_BENCH_SIZES=2048,262144` overrides the default set.
    let sizes: Vec<usize> = std::env::var("CUTOVER_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![2 * 1024, 32 * 1024, 100 * 1024]);
    for &size in &sizes {
        for &spool in &[false, true] {
            for &conc in &[1, 10, 50] {
                let dir = base.join(format!("c{conc}-s{size}-{spool}"));
                let o = rt.block_on(run(&dir, conc, size, spool));
                let _ = std::fs::remove_dir_all(&dir);
                println!(
                    "{:>5} {:>7} {:>6} {:>8} {:>9.0} {:>9.2} {:>9.2} {:>8}",
                    conc,
                    size,
                    if spool { "spool" } else { "inline" },
                    o.msgs,
                    o.msgs as f64 / o.secs,
                    o.p50.as_secs_f64() * 1e3,
                    o.p99.as_secs_f64() * 1e3,
                    o.flushes
                );
            }
        }
    }
}
