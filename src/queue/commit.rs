//! Group commit: many sessions write their transactions without flushing, then wait here. One
//! of them (the leader, holding the flush lock) reads how many writes have completed, flushes
//! once, and publishes that count as durable; every waiter whose write completed before the
//! flush started is released by that one flush. Owns the ordering and the flush counter;
//! never writes data itself (the caller supplies the flush).

use super::QueueError;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shared group-commit state (one per queue).
#[derive(Debug, Default)]
pub struct GroupCommit {
    /// Writes completed so far (tickets handed out).
    written: AtomicU64,
    /// Every ticket at or below this is durable.
    durable: AtomicU64,
    /// Flushes started (for tests and metrics).
    flushes: AtomicU64,
    /// Held by the leader while it flushes; FIFO, so waiters queue in arrival order.
    lock: tokio::sync::Mutex<()>,
}

/// Proof that a write completed; redeem it with [`GroupCommit::wait_durable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

impl GroupCommit {
    pub fn new() -> Self {
        Self::default()
    }

    /// Call right after a write completed (never before).
    pub fn ticket(&self) -> Ticket {
        Ticket(self.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Flushes performed so far.
    pub fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::SeqCst)
    }

    /// Return once the write behind `ticket` is durable, flushing (as leader) if nobody else
    /// has covered it. An error of the leader's flush is returned to that leader only; the
    /// waiters behind it try a flush of their own.
    pub async fn wait_durable<F, Fut>(&self, ticket: Ticket, flush: F) -> Result<(), QueueError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), QueueError>>,
    {
        if self.durable.load(Ordering::SeqCst) >= ticket.0 {
            return Ok(());
        }
        let _leader = self.lock.lock().await;
        if self.durable.load(Ordering::SeqCst) >= ticket.0 {
            return Ok(());
        }
        // Every ticket up to `upto` belongs to a write that completed before this point, so
        // the flush below covers it.
        let upto = self.written.load(Ordering::SeqCst);
        self.flushes.fetch_add(1, Ordering::SeqCst);
        flush().await?;
        self.durable.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_waiters_share_flushes() {
        let gc = Arc::new(GroupCommit::new());
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let gc = gc.clone();
            tasks.push(tokio::spawn(async move {
                let t = gc.ticket();
                gc.wait_durable(t, || async {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok(())
                })
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let n = gc.flush_count();
        assert!((1..50).contains(&n), "{n} flushes for 100 writers");
    }

    #[tokio::test]
    async fn a_write_after_a_flush_started_needs_another_flush() {
        let gc = GroupCommit::new();
        let t1 = gc.ticket();
        gc.wait_durable(t1, || async { Ok(()) }).await.unwrap();
        // Already durable: no new flush.
        gc.wait_durable(t1, || async { panic!("no flush needed") })
            .await
            .unwrap();
        let t2 = gc.ticket();
        let flushed = AtomicBool::new(false);
        gc.wait_durable(t2, || async {
            flushed.store(true, Ordering::SeqCst);
            Ok(())
        })
        .await
        .unwrap();
        assert!(flushed.load(Ordering::SeqCst));
        assert_eq!(gc.flush_count(), 2);
    }

    #[tokio::test]
    async fn flush_error_reaches_the_leader_and_is_not_marked_durable() {
        let gc = GroupCommit::new();
        let t = gc.ticket();
        let r = gc
            .wait_durable(t, || async { Err(QueueError::Storage("disk gone".into())) })
            .await;
        assert!(r.is_err());
        // Not durable: the next wait flushes again.
        gc.wait_durable(t, || async { Ok(()) }).await.unwrap();
        assert_eq!(gc.flush_count(), 2);
    }
}
