//! A gateway's ledger outbox (fleet mode): every delivery record is also written to the tree
//! `ledger_outbox` of the queue's db, in the same group commit as the local record, and the
//! [`Shipper`] moves them to the shared PostgreSQL in batches. Delivery never waits for
//! PostgreSQL: when it is down the records stay here, durable, and are replayed when it is
//! back. After each round the shipper reports its outbox (`shared::report_outbox`), which is
//! how a backfill knows the ledger is complete (see `shared.rs`). Owns the outbox tree and the
//! shipping loop; never reads credits.

use super::{LedgerError, Record, shared};
use crate::pgdb::{PgDb, PgError};
use std::time::{Duration, SystemTime};

/// The sled tree holding records not yet shipped.
pub const TREE: &str = "ledger_outbox";

/// The longest pause between two attempts while PostgreSQL is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Append `rec` to the outbox (durable with the caller's next group commit).
pub(super) fn push(tree: &sled::Tree, db: &sled::Db, rec: &Record) -> Result<(), LedgerError> {
    let id = db.generate_id()?;
    tree.insert(id.to_be_bytes(), serde_json::to_vec(rec)?)?;
    Ok(())
}

/// Ships one gateway's outbox.
pub struct Shipper {
    tree: sled::Tree,
    db: PgDb,
    instance: String,
    batch: usize,
    every: Duration,
}

impl Shipper {
    /// The shipper of the outbox in `store` (the queue's db).
    pub fn new(
        store: &sled::Db,
        db: PgDb,
        instance: String,
        batch: usize,
        every: Duration,
    ) -> Result<Shipper, LedgerError> {
        Ok(Shipper {
            tree: store.open_tree(TREE)?,
            db,
            instance,
            batch: batch.max(1),
            every,
        })
    }

    /// Records waiting.
    pub fn pending(&self) -> usize {
        self.tree.len()
    }

    /// Ship every `every` (backing off up to 30 s while PostgreSQL fails) until `stop` turns
    /// true; then one last round, and a clean-stop report when the outbox is empty.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut pause = self.every;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => break,
            }
            match self.round(false).await {
                Ok(()) => {
                    if failing {
                        tracing::info!(database = %self.db.url(), "ledger outbox: PostgreSQL reachable again, replayed");
                    }
                    failing = false;
                    pause = self.every;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(pending = self.pending(), error = %e,
                            "ledger outbox: cannot ship to PostgreSQL; records kept and retried");
                    }
                    failing = true;
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
            }
        }
        let last = tokio::time::timeout(Duration::from_secs(5), self.round(true)).await;
        if !matches!(last, Ok(Ok(()))) {
            tracing::warn!(
                pending = self.pending(),
                "ledger outbox: not drained at shutdown; shipped at the next start"
            );
        }
    }

    /// Ship everything there is, then report. `stopping`: report a clean stop when drained.
    pub async fn round(&self, stopping: bool) -> Result<(), LedgerError> {
        let client = self.db.client().await?;
        let mark: SystemTime = client
            .query_one("SELECT now()", &[])
            .await
            .map_err(PgError::from)?
            .get(0);
        loop {
            let (keys, recs) = self.take()?;
            if keys.is_empty() {
                break;
            }
            shared::insert(&client, &self.instance, &recs).await?;
            for k in keys {
                self.tree.remove(k)?;
            }
        }
        let pending = self.tree.len();
        let drained = (pending == 0).then_some(mark);
        shared::report_outbox(
            &client,
            &self.instance,
            i64::try_from(pending).unwrap_or(i64::MAX),
            drained,
            stopping && pending == 0,
        )
        .await?;
        Ok(())
    }

    /// Up to `batch` records from the front of the outbox. A record that does not parse is
    /// logged and dropped (it can only mean a damaged db; the local ledger still has it).
    fn take(&self) -> Result<(Vec<sled::IVec>, Vec<Record>), LedgerError> {
        let mut keys = Vec::new();
        let mut recs = Vec::new();
        for kv in self.tree.iter().take(self.batch) {
            let (k, v) = kv?;
            match serde_json::from_slice::<Record>(&v) {
                Ok(r) => recs.push(r),
                Err(e) => tracing::error!(error = %e, "ledger outbox: unreadable record dropped"),
            }
            keys.push(k);
        }
        Ok((keys, recs))
    }
}
