//! Queue operations for the delivery engine: read the due index, apply the result of an
//! attempt to one leg (record + due entry in one transaction, then a group-committed flush, so
//! a state change is durable before the next attempt is scheduled), and remove finished
//! messages. Never does network IO and never decides what an outcome means.

use super::model::{BodyLocation, Leg, MessageRecord, RcptState};
use super::store::{self, TREE_BODIES, TREE_DUE, TREE_MESSAGES, due_keys};
use super::{Queue, QueueError};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn storage(e: sled::Error) -> QueueError {
    QueueError::Storage(e.to_string())
}

fn tx_err(e: TransactionError<QueueError>) -> QueueError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => storage(e),
    }
}

fn abort(e: QueueError) -> ConflictableTransactionError<QueueError> {
    ConflictableTransactionError::Abort(e)
}

impl Queue {
    fn tree(&self, name: &str) -> Result<sled::Tree, QueueError> {
        self.inner.store.db().open_tree(name).map_err(storage)
    }

    /// The earliest due time in the index, if any.
    pub fn next_due(&self) -> Result<Option<SystemTime>, QueueError> {
        let due = self.tree(TREE_DUE)?;
        Ok(due
            .first()
            .map_err(storage)?
            .and_then(|(k, _)| store::parse_due_key(&k))
            .map(|e| UNIX_EPOCH + Duration::from_millis(e.due_ms)))
    }

    /// Resolves when new due entries may exist (a commit or an operator action).
    pub async fn due_changed(&self) {
        self.inner.due_notify.notified().await;
    }

    /// Wake the scheduler.
    pub fn notify_due(&self) {
        self.inner.due_notify.notify_one();
    }

    /// Apply `f` to leg `leg` of `id` and rewrite the message's due entries to match, in one
    /// transaction; then wait until it is durable. `f` may run more than once (transaction
    /// retries): it must be a pure function of the leg. Returns (leg before, record after).
    ///
    /// When the update leaves every recipient of every leg delivered, the message is removed in
    /// the same transaction (record, inline body, due entries; the spool file after the flush):
    /// the common case costs one transaction and one shared flush. The returned record then shows
    /// the final state; [`Queue::record`] no longer finds it.
    pub async fn update_leg<F>(
        &self,
        id: &str,
        leg: u16,
        f: F,
    ) -> Result<(Leg, MessageRecord), QueueError>
    where
        F: Fn(&mut Leg),
    {
        let edit = |rec: &mut MessageRecord| {
            let Some(l) = rec.legs.get_mut(leg as usize) else {
                return Err(QueueError::NotFound(format!("{id} leg {leg}")));
            };
            let before = l.clone();
            f(l);
            l.refresh_state();
            Ok(before)
        };
        let (before, rec) = self.rewrite(id, edit, true).await?;
        Ok((before, rec))
    }

    /// Apply `f` to every leg of `id` (operator actions: hold, release, retry now).
    pub async fn update_legs<F>(&self, id: &str, f: F) -> Result<MessageRecord, QueueError>
    where
        F: Fn(&mut Leg),
    {
        let edit = |rec: &mut MessageRecord| {
            for l in rec.legs.iter_mut() {
                f(l);
                l.refresh_state();
            }
            Ok(())
        };
        let ((), rec) = self.rewrite(id, edit, false).await?;
        self.notify_due();
        Ok(rec)
    }

    /// Read-modify-write of one record and its due entries in one transaction (`edit` may run
    /// more than once), then a group-committed flush. With `finish`, a record whose recipients
    /// are all delivered is removed instead (with its inline body; its spool file after the flush).
    async fn rewrite<T>(
        &self,
        id: &str,
        edit: impl Fn(&mut MessageRecord) -> Result<T, QueueError>,
        finish: bool,
    ) -> Result<(T, MessageRecord), QueueError> {
        let (messages, due, bodies) = (
            self.tree(TREE_MESSAGES)?,
            self.tree(TREE_DUE)?,
            self.tree(TREE_BODIES)?,
        );
        let (out, rec, removed) = (&messages, &due, &bodies)
            .transaction(|(m, d, b)| {
                let Some(raw) = m.get(id.as_bytes())? else {
                    return Err(abort(QueueError::NotFound(id.to_string())));
                };
                let mut rec = MessageRecord::decode(&raw)
                    .map_err(|e| abort(QueueError::Storage(format!("record {id}: {e}"))))?;
                for k in due_keys(&rec) {
                    d.remove(k)?;
                }
                let out = edit(&mut rec).map_err(abort)?;
                let delivered = rec.legs.iter().all(|l| {
                    l.recipients
                        .iter()
                        .all(|r| matches!(r.state, RcptState::Delivered { .. }))
                });
                if finish && delivered {
                    m.remove(id.as_bytes())?;
                    b.remove(id.as_bytes())?;
                    return Ok((out, rec, true));
                }
                for k in due_keys(&rec) {
                    d.insert(k, &[][..])?;
                }
                let enc = rec
                    .encode()
                    .map_err(|e| abort(QueueError::Storage(format!("encoding record: {e}"))))?;
                m.insert(id.as_bytes(), enc)?;
                Ok((out, rec, false))
            })
            .map_err(tx_err)?;
        self.durable().await?;
        if removed && let BodyLocation::Spool { file } = &rec.body {
            // The record is gone durably; a crash before this leaves an orphan recovery removes.
            let _ = std::fs::remove_file(self.inner.spool_dir.join(file));
        }
        Ok((out, rec))
    }

    /// Remove a message for good (record, inline body, due entries, spool file), durably; a
    /// message that is already gone is not an error.
    pub async fn remove_message(&self, id: &str) -> Result<(), QueueError> {
        match self.remove(id).await {
            Err(QueueError::NotFound(_)) => Ok(()),
            r => r,
        }
    }

    /// Ids of messages whose legs are all final (left behind by a crash between the last leg
    /// update and the removal). Scans every record: call at start only.
    pub fn finished_messages(&self) -> Result<Vec<String>, QueueError> {
        let mut out = Vec::new();
        for rec in self.inner.store.records() {
            let rec = rec?;
            if rec.legs.iter().all(|l| l.state.is_final()) {
                out.push(rec.id.0);
            }
        }
        Ok(out)
    }

    /// Wait for a group-committed flush covering every write made so far.
    async fn durable(&self) -> Result<(), QueueError> {
        let ticket = self.inner.group.ticket();
        let store = &self.inner.store;
        self.inner
            .group
            .wait_durable(ticket, || store.flush_async())
            .await
    }
}
