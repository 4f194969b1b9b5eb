//! Storage health: a real probe of the queue's storage ([`Queue::probe`]), the cached view of it
//! that `/healthz` serves ([`Health::check`]), and the watchdog ([`Health::watchdog`]) that tells
//! the gateway to exit when the store has failed for good.
//!
//! The probe does what an acceptance does, in miniature: it writes a small key to the `health`
//! tree of the sled db, makes it durable with [`Queue::flush`], reads it back, then writes,
//! fsyncs and removes `spool/.health-probe.tmp` (a leftover one is a temp file that recovery
//! removes). The whole probe is bounded by [`PROBE_TIMEOUT`]; a slower one counts as a failure.
//!
//! Why the watchdog exists: sled 0.34 poisons itself on an IO error during a flush (disk full,
//! EIO): from then on every write and flush returns that error until the db is opened again, so
//! the gateway would answer `451 4.3.0` to every message forever. The db has too many handles
//! (sessions, scheduler, ledger, admin) to be reopened in place, so the watchdog reports the
//! failure and the gateway exits (code 75) for its supervisor to restart it; the reopen runs
//! recovery. Only *store* failures count towards that: a spool-only failure (the spool file
//! cannot be written, e.g. a transiently full disk while sled still works) makes `/healthz`
//! unhealthy but never restarts anything, and a store that answers again resets the count.
//! Never does network IO.

use super::{Queue, QueueError};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// The sled tree the probe writes to (one key).
const PROBE_KEY: &[u8] = b"probe";
/// The spool file the probe writes (its `.tmp` suffix makes recovery remove a leftover).
pub const SPOOL_PROBE_FILE: &str = ".health-probe.tmp";
/// A probe that takes longer than this fails.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a probe result is served from cache (so `/healthz` cannot hammer the disk).
pub const PROBE_CACHE: Duration = Duration::from_secs(1);
/// The store and spool calls of a series of probes that are still running (past their probe's
/// timeout: hung storage). While one is, the next probe of that stage fails at once instead of
/// piling up stuck calls. Probes sharing one `ProbeCalls` must not overlap ([`Health`]
/// serialises them).
#[derive(Debug, Default)]
pub struct ProbeCalls {
    store: Arc<AtomicUsize>,
    spool: Arc<AtomicUsize>,
}

impl ProbeCalls {
    /// Count one call of `stage` until the returned guard drops; `Err` when an earlier probe's
    /// call of this stage is still running.
    fn start(&self, stage: &'static str) -> Result<InFlight, ProbeError> {
        let counter = if stage == "spool" {
            &self.spool
        } else {
            &self.store
        };
        if counter.fetch_add(1, Ordering::SeqCst) > 0 {
            counter.fetch_sub(1, Ordering::SeqCst);
            return Err(ProbeError::Stuck { stage });
        }
        Ok(InFlight(counter.clone()))
    }
}

/// One probe call in flight (see [`ProbeCalls`]).
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why a storage probe failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The sled store refused the write, the flush or the read.
    #[error("store: {0}")]
    Store(String),
    /// The store gave back something else than what was written and flushed.
    #[error("store: read back a different value than the one written")]
    Mismatch,
    /// The spool directory refused the probe file.
    #[error("spool: {0}")]
    Spool(String),
    /// The probe did not finish in time (`stage` is `store` or `spool`).
    #[error("{stage}: probe did not finish within {limit:?}")]
    Timeout {
        stage: &'static str,
        limit: Duration,
    },
    /// An earlier probe's call of this stage (`store` or `spool`) has not returned yet.
    #[error("{stage}: an earlier probe is still blocked in a storage call")]
    Stuck { stage: &'static str },
}

impl ProbeError {
    /// A failure of the store itself (sled), the kind that needs a reopen when it persists.
    pub fn is_store(&self) -> bool {
        !matches!(
            self,
            ProbeError::Spool(_)
                | ProbeError::Timeout { stage: "spool", .. }
                | ProbeError::Stuck { stage: "spool" }
        )
    }
}

/// Runs `f` on the blocking pool, counted as a call of `stage` until it returns (even when the
/// caller gave up waiting).
async fn blocking<T: Send + 'static>(
    calls: &ProbeCalls,
    stage: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ProbeError> {
    let guard = calls.start(stage)?;
    tokio::task::spawn_blocking(move || {
        let r = f();
        drop(guard);
        r
    })
    .await
    .map_err(|e| ProbeError::Store(format!("probe task: {e}")))
}

impl Queue {
    /// Probe the storage: a small durable write to the store read back, and a spool file written
    /// and fsynced, within [`PROBE_TIMEOUT`]. Returns how long it took.
    pub async fn probe(&self) -> Result<Duration, ProbeError> {
        self.probe_within(PROBE_TIMEOUT, &ProbeCalls::default())
            .await
    }

    /// [`Queue::probe`] with an explicit time bound, failing at once while a call of an earlier
    /// probe of the same series (`calls`) is still stuck.
    pub async fn probe_within(
        &self,
        limit: Duration,
        calls: &ProbeCalls,
    ) -> Result<Duration, ProbeError> {
        let started = Instant::now();
        match tokio::time::timeout(limit, self.probe_store(calls)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ProbeError::Timeout {
                    stage: "store",
                    limit,
                });
            }
        }
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, self.probe_spool(calls)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ProbeError::Timeout {
                    stage: "spool",
                    limit,
                });
            }
        }
        Ok(started.elapsed())
    }

    async fn probe_store(&self, calls: &ProbeCalls) -> Result<(), ProbeError> {
        let now = crate::time::unix_ms(SystemTime::now());
        let value = format!("{now} {:016x}", fastrand::u64(..)).into_bytes();
        let store = self.store().clone();
        let written = value.clone();
        blocking(calls, "store", move || {
            store.put_health(PROBE_KEY, &written)
        })
        .await?
        .map_err(|e| ProbeError::Store(e.to_string()))?;
        // A task of its own, counted until the flush returns even if this probe times out.
        let guard = calls.start("store")?;
        let queue = self.clone();
        let flushed = tokio::spawn(async move {
            let r = queue.flush().await;
            drop(guard);
            r
        });
        match flushed.await {
            Ok(Ok(())) => {}
            Ok(Err(QueueError::Storage(s))) => return Err(ProbeError::Store(s)),
            Ok(Err(e)) => return Err(ProbeError::Store(e.to_string())),
            Err(e) => return Err(ProbeError::Store(format!("probe task: {e}"))),
        }
        let store = self.store().clone();
        let read = blocking(calls, "store", move || store.get_health(PROBE_KEY))
            .await?
            .map_err(|e| ProbeError::Store(e.to_string()))?;
        match read {
            Some(v) if v == value => Ok(()),
            _ => Err(ProbeError::Mismatch),
        }
    }

    async fn probe_spool(&self, calls: &ProbeCalls) -> Result<(), ProbeError> {
        let path = self.state_dir().join("spool").join(SPOOL_PROBE_FILE);
        blocking(calls, "spool", move || -> std::io::Result<()> {
            let r = (|| {
                let mut f = std::fs::File::create(&path)?;
                f.write_all(b"cutover storage probe\n")?;
                f.sync_all()
            })();
            let removed = std::fs::remove_file(&path);
            r?;
            removed
        })
        .await?
        .map_err(|e| ProbeError::Spool(e.to_string()))
    }
}

/// The latest probe result, as `/healthz` reports it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HealthStatus {
    pub ok: bool,
    /// Why the storage is unhealthy (absent when healthy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The failure is in the store itself (what makes the watchdog restart the gateway).
    pub store_failed: bool,
    /// How long the probe took, in milliseconds.
    pub probe_ms: u64,
    /// Failed probes in a row (0 when healthy).
    pub consecutive_failures: u32,
    /// Seconds since the probe ran (it is cached for [`PROBE_CACHE`]).
    pub age_s: f64,
    #[serde(skip)]
    checked: Instant,
}

/// When the watchdog gives up on the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchdogOptions {
    /// Time between probes.
    pub interval: Duration,
    /// Store failures in a row that make the failure persistent.
    pub failures: u32,
}

impl Default for WatchdogOptions {
    /// A probe every 2 s; 3 store failures in a row end the gateway: ≈ 6 s when the store
    /// answers with errors, ≈ 11 s when it hangs (the first probe waits for its 5 s timeout, the
    /// next ones fail at once while its storage call is still stuck).
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            failures: 3,
        }
    }
}

/// Cached probe results for one queue, shared by `/healthz` and the watchdog.
pub struct Health {
    queue: Queue,
    /// Serialises the probes (and holds the last result).
    last: tokio::sync::Mutex<Option<HealthStatus>>,
    calls: ProbeCalls,
    failures: AtomicU32,
}

impl Health {
    pub fn new(queue: Queue) -> Arc<Health> {
        Arc::new(Health {
            queue,
            last: tokio::sync::Mutex::new(None),
            calls: ProbeCalls::default(),
            failures: AtomicU32::new(0),
        })
    }

    /// The storage's health: the last probe if it is younger than [`PROBE_CACHE`], otherwise a
    /// fresh one. Concurrent callers share one probe.
    pub async fn check(&self) -> HealthStatus {
        let mut last = self.last.lock().await;
        if let Some(s) = last.as_ref()
            && s.checked.elapsed() < PROBE_CACHE
        {
            let mut s = s.clone();
            s.age_s = s.checked.elapsed().as_secs_f64();
            return s;
        }
        let started = Instant::now();
        let r = self.queue.probe_within(PROBE_TIMEOUT, &self.calls).await;
        let probe_ms = started.elapsed().as_millis() as u64;
        let status = match r {
            Ok(_) => {
                if self.failures.swap(0, Ordering::SeqCst) > 0 {
                    tracing::info!("storage probe succeeds again");
                }
                HealthStatus {
                    ok: true,
                    reason: None,
                    store_failed: false,
                    probe_ms,
                    consecutive_failures: 0,
                    age_s: 0.0,
                    checked: Instant::now(),
                }
            }
            Err(e) => {
                let n = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
                tracing::warn!(error = %e, consecutive = n, "storage probe failed");
                HealthStatus {
                    ok: false,
                    reason: Some(e.to_string()),
                    store_failed: e.is_store(),
                    probe_ms,
                    consecutive_failures: n,
                    age_s: 0.0,
                    checked: Instant::now(),
                }
            }
        };
        *last = Some(status.clone());
        status
    }

    /// Probe every `opts.interval` until `stop` turns true (→ `None`) or the store has failed
    /// `opts.failures` probes in a row (→ `Some(reason)`: the gateway must exit and be
    /// restarted). A success, or a spool-only failure, resets the count. A check that does not
    /// even finish within twice [`PROBE_TIMEOUT`] (the cache lock held by a stuck caller) counts
    /// as a store failure.
    pub async fn watchdog(
        &self,
        opts: WatchdogOptions,
        mut stop: watch::Receiver<bool>,
    ) -> Option<String> {
        let mut streak = 0u32;
        let mut last_probe: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(opts.interval) => {}
                _ = stop.wait_for(|s| *s) => return None,
            }
            if *stop.borrow() {
                return None;
            }
            let checked = tokio::select! {
                r = tokio::time::timeout(2 * PROBE_TIMEOUT, self.check()) => r,
                _ = stop.wait_for(|s| *s) => return None,
            };
            let (failed, reason) = match checked {
                // The same (cached) probe as last time: nothing new to count.
                Ok(s) if last_probe == Some(s.checked) => continue,
                Ok(s) => {
                    last_probe = Some(s.checked);
                    (!s.ok && s.store_failed, s.reason.unwrap_or_default())
                }
                Err(_) => (
                    true,
                    format!(
                        "storage check did not finish within {:?}",
                        2 * PROBE_TIMEOUT
                    ),
                ),
            };
            if !failed {
                streak = 0;
                continue;
            }
            streak += 1;
            if streak >= opts.failures.max(1) {
                return Some(format!(
                    "queue storage failed {streak} probes in a row ({:?} apart): {reason}",
                    opts.interval
                ));
            }
        }
    }

    /// Run [`Health::watchdog`] on a thread of its own, with its own small runtime: after a
    /// storage failure sled can block the threads that call it forever, and async workers stuck
    /// that way can stall the gateway's runtime; the watchdog must still see and report it.
    /// `on_failure` gets the reason (not called when `stop` ends it). `done` is dropped when the
    /// thread ends.
    pub fn spawn_watchdog(
        self: &Arc<Self>,
        opts: WatchdogOptions,
        stop: watch::Receiver<bool>,
        on_failure: impl FnOnce(String) + Send + 'static,
        done: tokio::sync::oneshot::Sender<()>,
    ) -> std::io::Result<()> {
        let health = self.clone();
        crate::own_thread::spawn("storage-watchdog", done, move || async move {
            if let Some(reason) = health.watchdog(opts, stop).await {
                on_failure(reason);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probe_passes_on_a_working_queue_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path()).unwrap();
        q.probe().await.unwrap();
        q.probe().await.unwrap();
        assert!(!dir.path().join("spool").join(SPOOL_PROBE_FILE).exists());
        assert!(q.list().unwrap().is_empty());
        let h = Health::new(q);
        let s = h.check().await;
        assert!(s.ok, "{s:?}");
        assert_eq!(s.consecutive_failures, 0);
    }

    #[tokio::test]
    async fn spool_failure_is_unhealthy_but_not_a_store_failure() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path()).unwrap();
        // A directory where the probe file should go: creating the file fails.
        std::fs::create_dir(dir.path().join("spool").join(SPOOL_PROBE_FILE)).unwrap();
        let e = q.probe().await.unwrap_err();
        assert!(matches!(e, ProbeError::Spool(_)), "{e:?}");
        assert!(!e.is_store());
        let h = Health::new(q);
        let s = h.check().await;
        assert!(!s.ok && !s.store_failed, "{s:?}");
        // Cached: the same result within PROBE_CACHE, without a new probe.
        let again = h.check().await;
        assert_eq!(again.consecutive_failures, 1);
        std::fs::remove_dir(dir.path().join("spool").join(SPOOL_PROBE_FILE)).unwrap();
        // Spool-only failures never end the watchdog; once it passes, stop ends it.
        let opts = WatchdogOptions {
            interval: Duration::from_millis(10),
            failures: 1,
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let w = tokio::spawn(async move { h.watchdog(opts, stop_rx).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop_tx.send(true).unwrap();
        assert_eq!(w.await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_stuck_call_fails_the_next_probes_at_once_until_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path()).unwrap();
        let calls = ProbeCalls::default();
        let held = calls.start("store").unwrap();
        let e = q.probe_within(PROBE_TIMEOUT, &calls).await.unwrap_err();
        assert_eq!(e, ProbeError::Stuck { stage: "store" });
        assert!(e.is_store());
        drop(held);
        q.probe_within(PROBE_TIMEOUT, &calls).await.unwrap();
    }

    #[tokio::test]
    async fn watchdog_gives_up_after_consecutive_store_failures() {
        let dir = tempfile::tempdir().unwrap();
        let h = Health::new(Queue::open(dir.path()).unwrap());
        // A store call that never returns: every probe fails.
        let held = h.calls.start("store").unwrap();
        let (_stop_tx, stop_rx) = watch::channel(false);
        let opts = WatchdogOptions {
            interval: Duration::from_millis(10),
            failures: 3,
        };
        let reason = h.watchdog(opts, stop_rx).await.unwrap();
        assert!(reason.contains("3 probes in a row"), "{reason}");
        assert_eq!(
            h.failures.load(Ordering::SeqCst),
            3,
            "cached results count once"
        );
        drop(held);
    }

    #[test]
    fn store_errors_are_store_failures() {
        assert!(ProbeError::Store("x".into()).is_store());
        assert!(ProbeError::Mismatch.is_store());
        assert!(ProbeError::Stuck { stage: "store" }.is_store());
        assert!(!ProbeError::Stuck { stage: "spool" }.is_store());
        assert!(
            ProbeError::Timeout {
                stage: "store",
                limit: PROBE_TIMEOUT
            }
            .is_store()
        );
        assert!(
            !ProbeError::Timeout {
                stage: "spool",
                limit: PROBE_TIMEOUT
            }
            .is_store()
        );
    }
}
