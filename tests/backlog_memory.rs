//! A released backlog must not blow up memory: peak RSS of `cutover serve` must not grow with
//! the size of the queue.
//!
//! The gateway's target is a loopback port where nothing listens (down); 4 SMTP sessions queue
//! 200 messages of 5 MiB (1 GiB, spooled to files). Then a sink starts on that port, `cutover
//! queue retry --all` releases the backlog, and the test waits (bounded) until the sink has
//! every message and the queue is empty. `retry_schedule = ["1s", "10m"]`: the first step caps
//! the whole-target back-off after connection failures (so the released legs are not postponed
//! for long), the second keeps legs from cycling while the target is down. Meanwhile a thread
//! samples `VmRSS` and `VmHWM` (peak RSS) of the gateway from `/proc/<pid>/status` every
//! 100 ms. Asserts: VmHWM at the end < 160 MiB, and every message arrived exactly once with its
//! full body. Prints the intake-phase and final peaks and the RSS series.
//!
//! The sink (tests/support/counting_sink.rs) runs in the test process and counts bytes
//! instead of storing bodies; the gateway is the real `cutover serve` child process.

#[path = "support/common.rs"]
mod common;
#[path = "support/smtp.rs"]
mod support;

#[path = "support/counting_sink.rs"]
mod counting_sink;

use counting_sink::CountingSink;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const MESSAGES: usize = 200;
const SESSIONS: usize = 4;
const BODY_BYTES: usize = 5 << 20;
/// Peak RSS allowed for the whole run.
const LIMIT_KIB: u64 = 160 * 1024;
const INTAKE_LIMIT: Duration = Duration::from_secs(120);
const DRAIN_LIMIT: Duration = Duration::from_secs(240);

/// (seconds since start, phase, VmRSS KiB, VmHWM KiB)
type Sample = (f64, &'static str, u64, u64);

fn status_kib(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU seconds (user + system) the process has used.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    // After "pid (comm)": state is field 3, utime 14, stime 15.
    let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(14) + ticks(15)) as f64 / hz
}

/// The shared body: 5 MiB of 1000-byte lines, dot-stuffed and terminated, built once.
fn stuffed_body() -> Vec<u8> {
    let mut body = Vec::with_capacity(BODY_BYTES + 16);
    let mut i = 0;
    while body.len() < BODY_BYTES {
        let head = format!("line {i:06} ");
        body.extend_from_slice(head.as_bytes());
        let fill = 998 - head.len();
        body.extend((0..fill).map(|k| b"abcdefghijklmnopqrstuvwxyz0123456789"[(i + k) % 36]));
        body.extend_from_slice(b"\r\n");
        i += 1;
    }
    stuffed(&body)
}

fn message_id(n: usize) -> String {
    format!("backlog{n:04}.{}@client.test", std::process::id())
}

async fn sender(
    addr: std::net::SocketAddr,
    body: Arc<Vec<u8>>,
    ns: Vec<usize>,
) -> Vec<(usize, String)> {
    let mut c = Client::greeted(addr).await;
    assert_eq!(c.cmd("EHLO load.client.test").await.code, 250);
    let mut out = Vec::new();
    for n in ns {
        let r = c.cmd("MAIL FROM:<load@client.test>").await;
        assert_eq!(r.code, 250, "MAIL {n}: {r:?}");
        let r = c.cmd("RCPT TO:<alice@example.com>").await;
        assert_eq!(r.code, 250, "RCPT {n}: {r:?}");
        let r = c.cmd("DATA").await;
        assert_eq!(r.code, 354, "DATA {n}: {r:?}");
        let head = format!(
            "From: load@client.test\r\nTo: alice@example.com\r\nSubject: backlog {n}\r\nMessage-ID: <{}>\r\n\r\n",
            message_id(n)
        );
        c.send(head.as_bytes()).await;
        c.send(&body).await;
        let r = c.read_reply().await;
        let id = queued_id(&r).unwrap_or_else(|| panic!("message {n}: expected 250, got {r:?}"));
        out.push((n, id));
    }
    let _ = c.cmd("QUIT").await;
    out
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The series at about one sample per second (and the sample with the highest RSS).
fn series(samples: &[Sample]) -> String {
    let mut out = Vec::new();
    let mut next = 0.0;
    let top = samples.iter().max_by_key(|s| s.2).map(|s| s.0);
    for s in samples {
        if s.0 >= next || Some(s.0) == top {
            out.push(format!(
                "{:6.1}s {:7} rss {:7.1} MiB  hwm {:7.1} MiB",
                s.0,
                s.1,
                mib(s.2),
                mib(s.3)
            ));
            next = s.0 + 1.0;
        }
    }
    out.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_backlog_keeps_peak_rss_low() {
    let t0 = Instant::now();
    let port = common::free_port();
    let g = Gateway::start(Opts {
        target: Some(format!("127.0.0.1:{port}")),
        extra: "[queue]\nretry_schedule = [\"1s\", \"10m\"]\n".into(),
        ..Default::default()
    });
    let pid = g.server_pid();
    println!("gateway up in {:.1}s", t0.elapsed().as_secs_f64());

    // Sampler: every 100 ms until told to stop (bounded by the test's own limits plus slack).
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::new(Mutex::new(Vec::new()));
    let phase: Arc<Mutex<&'static str>> = Arc::new(Mutex::new("intake"));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, phase, stop) = (samples.clone(), phase.clone(), stop.clone());
        std::thread::spawn(move || {
            let limit = INTAKE_LIMIT + DRAIN_LIMIT + Duration::from_secs(60);
            while !stop.load(Ordering::SeqCst) && t0.elapsed() < limit {
                if let Some((rss, hwm)) = status_kib(pid) {
                    let p = *phase.lock().unwrap();
                    samples
                        .lock()
                        .unwrap()
                        .push((t0.elapsed().as_secs_f64(), p, rss, hwm));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let dump = |why: &str| -> String {
        let s = samples.lock().unwrap();
        format!(
            "{why}\nRSS series (~1/s):\n{}\ngateway log tail:\n{}",
            series(&s),
            {
                let log = g.log();
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(15)..].join("\n")
            }
        )
    };

    // Intake: 200 × 5 MiB over 4 sessions.
    let body = Arc::new(stuffed_body());
    let addr = g.smtp;
    let intake = tokio::time::timeout(INTAKE_LIMIT, async {
        let tasks: Vec<_> = (0..SESSIONS)
            .map(|k| {
                let ns: Vec<usize> = (k..MESSAGES).step_by(SESSIONS).collect();
                tokio::spawn(sender(addr, body.clone(), ns))
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    })
    .await;
    let Ok(queued) = intake else {
        panic!("{}", dump("intake of 200 × 5 MiB did not finish in time"));
    };
    drop(body);
    let intake_secs = t0.elapsed().as_secs_f64();
    let (intake_rss, intake_hwm) = status_kib(pid).expect("gateway gone after intake");
    let intake_cpu = cpu_secs(pid);
    println!(
        "intake: {} messages × 5 MiB in {intake_secs:.1}s (gateway CPU {intake_cpu:.1}s); gateway VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        queued.len(),
        mib(intake_rss),
        mib(intake_hwm)
    );
    assert_eq!(queued.len(), MESSAGES);

    // Release: the target comes up, and the backlog is made due now.
    *phase.lock().unwrap() = "deliver";
    let t_release = Instant::now();
    let sink = CountingSink::start_on(&format!("127.0.0.1:{port}"))
        .await
        .expect("binding the sink on the target port");
    let cfg = g.config.clone();
    let retry = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin())
            .args(["queue", "retry", "--all", "-c"])
            .arg(&cfg)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        retry.status.success(),
        "queue retry --all failed: {}",
        String::from_utf8_lossy(&retry.stderr)
    );

    // Wait until every message arrived and the queue is empty (bounded in time and polls).
    let mut last_len = None;
    let mut polls = 0;
    loop {
        polls += 1;
        if sink.distinct() >= MESSAGES {
            let cfg = g.config.clone();
            last_len = tokio::task::spawn_blocking(move || queue_len(&cfg))
                .await
                .unwrap();
            if last_len == Some(0) {
                break;
            }
        }
        if t_release.elapsed() > DRAIN_LIMIT || polls > 4 * DRAIN_LIMIT.as_secs() as usize {
            let t = sink.tally();
            panic!(
                "{}",
                dump(&format!(
                    "backlog not delivered within {DRAIN_LIMIT:?}: sink has {} distinct of {MESSAGES} ({} messages, {:.0} MiB), queue length {last_len:?}",
                    t.by_id.len(),
                    t.messages,
                    t.bytes as f64 / 1048576.0
                ))
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drain_secs = t_release.elapsed().as_secs_f64();
    let (end_rss, end_hwm) = status_kib(pid).expect("gateway gone after delivery");
    let deliver_cpu = cpu_secs(pid) - intake_cpu;
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let max_rss_sampled = samples
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.2)
        .max()
        .unwrap_or(0);
    let tally = sink.tally();
    println!(
        "delivery: {} messages, {:.0} MiB to the sink over {} connections in {drain_secs:.1}s (gateway CPU {deliver_cpu:.1}s)",
        tally.messages,
        tally.bytes as f64 / 1048576.0,
        tally.connections
    );
    println!(
        "peak RSS (VmHWM): after intake {:.1} MiB, at the end {:.1} MiB (highest sampled VmRSS {:.1} MiB; VmRSS now {:.1} MiB); limit {:.0} MiB; total {:.1}s",
        mib(intake_hwm),
        mib(end_hwm),
        mib(max_rss_sampled),
        mib(end_rss),
        mib(LIMIT_KIB),
        t0.elapsed().as_secs_f64()
    );
    println!("RSS series (~1/s):\n{}", series(&samples.lock().unwrap()));

    // Every message exactly once, whole.
    let expected: HashSet<String> = (0..MESSAGES).map(message_id).collect();
    let got: HashSet<String> = tally.by_id.keys().cloned().collect();
    let missing: Vec<&String> = expected.difference(&got).collect();
    let unexpected: Vec<&String> = got.difference(&expected).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty() && tally.without_id == 0,
        "sink: missing {} (e.g. {:?}), unexpected {:?}, without Message-ID {}",
        missing.len(),
        missing.iter().take(3).collect::<Vec<_>>(),
        unexpected.iter().take(3).collect::<Vec<_>>(),
        tally.without_id
    );
    assert!(
        tally.duplicates().is_empty(),
        "delivered more than once: {:?}",
        tally.duplicates()
    );
    let short: Vec<(&String, &Vec<u64>)> = tally
        .by_id
        .iter()
        .filter(|(_, b)| b.iter().any(|&n| n < BODY_BYTES as u64))
        .collect();
    assert!(
        short.is_empty(),
        "bodies shorter than 5 MiB arrived: {:?}",
        short.iter().take(3).collect::<Vec<_>>()
    );

    assert!(
        end_hwm < LIMIT_KIB,
        "peak RSS of cutover serve {:.1} MiB (VmHWM) ≥ {:.0} MiB while a backlog of {MESSAGES} × 5 MiB was released (after intake it was {:.1} MiB): memory grows with the backlog (RSS series above)",
        mib(end_hwm),
        mib(LIMIT_KIB),
        mib(intake_hwm),
    );
}
