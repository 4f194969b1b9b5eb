//! Crash test of the store: the test re-executes its own test binary, running just itself, as a
//! writer child (env var `CUTOVER_QUEUE_CRASH_DIR` set: the same test then writes instead), which commits messages from several concurrent tasks and prints
//! `ACK <id> <seed> <size>` after each commit returned. The parent SIGKILLs it at a random
//! moment, reopens the queue and checks every acknowledged id is there with a byte-identical
//! body, and that nothing half-written survived (no temp/orphan spool files, every record has
//! its body). Several rounds on the same state dir, bounded in time.

#[path = "support/common.rs"]
mod common;
#[path = "support/queue.rs"]
mod support;

use cutover::queue::model::BodyLocation;
use cutover::queue::{Queue, QueueId};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DIR_ENV: &str = "CUTOVER_QUEUE_CRASH_DIR";
const ROUND_ENV: &str = "CUTOVER_QUEUE_CRASH_ROUND";

fn size_for(seed: u64) -> usize {
    // Mostly small (inline), every fifth one large (spooled).
    if seed.is_multiple_of(5) {
        80_000 + (seed as usize % 7) * 10_000
    } else {
        500 + (seed as usize % 13) * 300
    }
}

/// The writer child: commits until killed, printing `ACK` lines.
fn writer(dir: &str) {
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let q = Queue::open(std::path::Path::new(&dir)).unwrap();
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let q = q.clone();
            tasks.push(tokio::spawn(async move {
                // Bounded: the parent kills us long before this ends.
                for i in 0..100_000u64 {
                    let seed = round * 10_000_000 + w * 1_000_000 + i;
                    let data = support::body(seed, size_for(seed));
                    let id = support::commit(&q, "crash@example.org", &data, support::legs()).await;
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {} {} {}", id.0, seed, data.len()).unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn acknowledged_messages_survive_kill_9() {
    if let Ok(dir) = std::env::var(DIR_ENV) {
        return writer(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut acked: HashMap<String, (u64, usize)> = HashMap::new();
    for round in 1..=6u64 {
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "acknowledged_messages_survive_kill_9",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("ACK ") && tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Kill after a random number of acknowledgements plus a random delay.
        let want = fastrand::usize(1..300);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut lines = Vec::new();
        while lines.len() < want && Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(50)) {
                lines.push(l);
            }
        }
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..30)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        assert!(
            !lines.is_empty(),
            "round {round}: the writer acknowledged nothing"
        );
        for l in &lines {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 4, "{l}");
            let prev = acked.insert(
                f[1].to_string(),
                (f[2].parse().unwrap(), f[3].parse().unwrap()),
            );
            assert!(prev.is_none(), "id {} acknowledged twice", f[1]);
        }

        // Reopen and check.
        let q = Queue::open(dir.path()).unwrap();
        let rec = q.recovery().clone();
        assert_eq!(rec.missing_bodies, 0, "round {round}: {rec:?}");
        for (id, (seed, size)) in &acked {
            let body = q
                .read_body(&QueueId::parse(id).unwrap())
                .unwrap_or_else(|e| panic!("round {round}: acknowledged {id} lost: {e}"));
            assert_eq!(body.len(), *size, "{id}");
            assert!(
                body == support::body(*seed, *size),
                "round {round}: body of {id} differs"
            );
        }
        let list = q.list().unwrap();
        assert!(list.len() >= acked.len());
        let mut spooled = Vec::new();
        for m in &list {
            assert_eq!(m.legs.len(), 2, "{}: half-written legs", m.id);
            let r = q.record(&m.id).unwrap();
            assert_eq!(q.read_body(&m.id).unwrap().len() as u64, r.size, "{}", m.id);
            if let BodyLocation::Spool { file } = r.body {
                spooled.push(file);
            }
        }
        // Files only: `spool/orphans/` holds bodies written but never acknowledged (killed
        // between the spool rename and the transaction), quarantined by recovery.
        let mut files: Vec<String> = std::fs::read_dir(dir.path().join("spool"))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        spooled.sort();
        assert_eq!(files, spooled, "round {round}: spool files without records");
        eprintln!(
            "round {round}: {} acknowledged this round, {} total, {} in queue, recovery {rec:?}",
            lines.len(),
            acked.len(),
            list.len()
        );
        q.close().unwrap();
    }
}
