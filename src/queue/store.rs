//! The sled store behind the queue: one db at `<state_dir>/db` with the trees `messages`
//! (id → JSON [`MessageRecord`]), `bodies` (id → small body bytes) and `due` (big-endian due ms
//! ++ id ++ leg index → empty: the scheduler's index). Every message is written in one
//! transaction across the three trees; durability comes from [`Store::flush_async`] (group
//! commit decides when). This is the only module that names sled, so the store could be
//! swapped; it never touches spool files or the network.
//!
//! Record encoding: JSON (serde_json). `benches/queue_commit.rs` measures encode+decode of a
//! typical record (two legs, three recipients) at a few µs, small against the transaction and
//! the flush, so a compact encoding is not worth its opacity yet.

use super::QueueError;
use super::id::ID_LEN;
use super::model::{BodyLocation, MessageRecord};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::path::Path;
use std::time::UNIX_EPOCH;

pub const TREE_MESSAGES: &str = "messages";
pub const TREE_BODIES: &str = "bodies";
pub const TREE_DUE: &str = "due";

/// Handle on the db and the queue's trees (cheap to clone).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    messages: sled::Tree,
    bodies: sled::Tree,
    due: sled::Tree,
}

/// One entry of the `due` index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueEntry {
    pub due_ms: u64,
    pub id: String,
    pub leg: u16,
}

/// `due` key: 8 bytes big-endian ms ++ 14 id bytes ++ 2 bytes big-endian leg index.
pub fn due_key(due_ms: u64, id: &str, leg: u16) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + id.len() + 2);
    k.extend_from_slice(&due_ms.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k.extend_from_slice(&leg.to_be_bytes());
    k
}

/// The `due` index entries of a record: one per non-final, non-held leg.
pub fn due_keys(rec: &MessageRecord) -> Vec<Vec<u8>> {
    rec.legs
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.held)
        .filter_map(|(i, l)| {
            l.next_attempt.map(|t| {
                due_key(
                    t.duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                    &rec.id.0,
                    i as u16,
                )
            })
        })
        .collect()
}

/// Inverse of [`due_key`]; `None` for a malformed key.
pub fn parse_due_key(k: &[u8]) -> Option<DueEntry> {
    if k.len() != 8 + ID_LEN + 2 {
        return None;
    }
    let due_ms = u64::from_be_bytes(k[..8].try_into().ok()?);
    let id = std::str::from_utf8(&k[8..8 + ID_LEN]).ok()?.to_string();
    let leg = u16::from_be_bytes(k[8 + ID_LEN..].try_into().ok()?);
    Some(DueEntry { due_ms, id, leg })
}

fn storage(e: sled::Error) -> QueueError {
    QueueError::Storage(e.to_string())
}

fn tx_err(e: TransactionError<QueueError>) -> QueueError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => storage(e),
    }
}

impl Store {
    /// Open (or create) the db at `path` with an explicit cache size.
    pub fn open(path: &Path, cache_capacity: u64) -> Result<Store, QueueError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .open()
            .map_err(|e| {
                let text = e.to_string();
                if text.contains("could not acquire lock") {
                    QueueError::Locked(path.display().to_string())
                } else {
                    QueueError::Storage(format!("opening {}: {text}", path.display()))
                }
            })?;
        let messages = db.open_tree(TREE_MESSAGES).map_err(storage)?;
        let bodies = db.open_tree(TREE_BODIES).map_err(storage)?;
        let due = db.open_tree(TREE_DUE).map_err(storage)?;
        Ok(Store {
            db,
            messages,
            bodies,
            due,
        })
    }

    /// The underlying db, for modules that add their own trees (ledger, delivery state).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Write a new message (record, optional inline body, due entries) in one transaction.
    /// Not durable until the next flush.
    pub fn insert(
        &self,
        rec: &MessageRecord,
        inline_body: Option<&[u8]>,
        due: &[Vec<u8>],
    ) -> Result<(), QueueError> {
        let encoded = rec
            .encode()
            .map_err(|e| QueueError::Storage(format!("encoding record: {e}")))?;
        let id = rec.id.0.as_bytes();
        (&self.messages, &self.bodies, &self.due)
            .transaction(|(m, b, d)| {
                m.insert(id, encoded.as_slice())?;
                if let Some(body) = inline_body {
                    b.insert(id, body)?;
                }
                for k in due {
                    d.insert(k.as_slice(), &[][..])?;
                }
                Ok::<(), ConflictableTransactionError<QueueError>>(())
            })
            .map_err(tx_err)
    }

    /// Remove a message (record, inline body, the given due entries) in one transaction.
    pub fn remove(&self, id: &str, due: &[Vec<u8>]) -> Result<(), QueueError> {
        (&self.messages, &self.bodies, &self.due)
            .transaction(|(m, b, d)| {
                m.remove(id.as_bytes())?;
                b.remove(id.as_bytes())?;
                for k in due {
                    d.remove(k.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<QueueError>>(())
            })
            .map_err(tx_err)
    }

    /// Replace the record of an existing message, moving its `due` entries (old ones removed,
    /// new ones from `rec` inserted) in one transaction. `NotFound` if it is not queued.
    /// Not durable until the next flush.
    pub fn replace(&self, rec: &MessageRecord) -> Result<(), QueueError> {
        let encoded = rec
            .encode()
            .map_err(|e| QueueError::Storage(format!("encoding record: {e}")))?;
        let id = rec.id.0.as_str();
        let new_due = due_keys(rec);
        (&self.messages, &self.due)
            .transaction(|(m, d)| {
                let old = match m.get(id.as_bytes())? {
                    Some(v) => MessageRecord::decode(&v).map_err(|e| {
                        ConflictableTransactionError::Abort(QueueError::Storage(format!(
                            "record {id}: {e}"
                        )))
                    })?,
                    None => {
                        return Err(ConflictableTransactionError::Abort(QueueError::NotFound(
                            id.to_string(),
                        )));
                    }
                };
                for k in due_keys(&old) {
                    d.remove(k)?;
                }
                m.insert(id.as_bytes(), encoded.as_slice())?;
                for k in &new_due {
                    d.insert(k.as_slice(), &[][..])?;
                }
                Ok(())
            })
            .map_err(tx_err)
    }

    /// Remove a message (record, inline body, its `due` entries) in one transaction and return
    /// the removed record. `NotFound` if it is not queued. Not durable until the next flush.
    pub fn take(&self, id: &str) -> Result<MessageRecord, QueueError> {
        (&self.messages, &self.bodies, &self.due)
            .transaction(|(m, b, d)| {
                let old = match m.remove(id.as_bytes())? {
                    Some(v) => MessageRecord::decode(&v).map_err(|e| {
                        ConflictableTransactionError::Abort(QueueError::Storage(format!(
                            "record {id}: {e}"
                        )))
                    })?,
                    None => {
                        return Err(ConflictableTransactionError::Abort(QueueError::NotFound(
                            id.to_string(),
                        )));
                    }
                };
                b.remove(id.as_bytes())?;
                for k in due_keys(&old) {
                    d.remove(k)?;
                }
                Ok(old)
            })
            .map_err(tx_err)
    }

    /// Replace a record (same id) without touching the index. Not durable until the next flush.
    pub fn update(&self, rec: &MessageRecord) -> Result<(), QueueError> {
        let encoded = rec
            .encode()
            .map_err(|e| QueueError::Storage(format!("encoding record: {e}")))?;
        self.messages
            .insert(rec.id.0.as_bytes(), encoded)
            .map_err(storage)?;
        Ok(())
    }

    /// Make every write that completed before this call durable.
    pub async fn flush_async(&self) -> Result<(), QueueError> {
        self.db.flush_async().await.map_err(storage).map(|_| ())
    }

    /// Blocking flush.
    pub fn flush(&self) -> Result<(), QueueError> {
        self.db.flush().map_err(storage).map(|_| ())
    }

    pub fn get(&self, id: &str) -> Result<Option<MessageRecord>, QueueError> {
        match self.messages.get(id.as_bytes()).map_err(storage)? {
            None => Ok(None),
            Some(v) => MessageRecord::decode(&v)
                .map(Some)
                .map_err(|e| QueueError::Storage(format!("record {id}: {e}"))),
        }
    }

    pub fn contains(&self, id: &str) -> Result<bool, QueueError> {
        self.messages.contains_key(id.as_bytes()).map_err(storage)
    }

    /// Inline body bytes of `id`, if stored inline.
    pub fn body(&self, id: &str) -> Result<Option<sled::IVec>, QueueError> {
        self.bodies.get(id.as_bytes()).map_err(storage)
    }

    /// Every record in id (= arrival) order.
    pub fn records(&self) -> impl Iterator<Item = Result<MessageRecord, QueueError>> + '_ {
        self.messages.iter().map(|kv| {
            let (k, v) = kv.map_err(storage)?;
            MessageRecord::decode(&v).map_err(|e| {
                QueueError::Storage(format!("record {}: {e}", String::from_utf8_lossy(&k)))
            })
        })
    }

    pub fn message_count(&self) -> usize {
        self.messages.len()
    }

    /// The newest message id (ids sort by time).
    pub fn last_id(&self) -> Result<Option<String>, QueueError> {
        Ok(self
            .messages
            .last()
            .map_err(storage)?
            .map(|(k, _)| String::from_utf8_lossy(&k).into_owned()))
    }

    /// Due entries with a due time at or before `until_ms`, oldest first (at most `limit`).
    pub fn due_until(&self, until_ms: u64, limit: usize) -> Result<Vec<DueEntry>, QueueError> {
        let end = (until_ms.saturating_add(1)).to_be_bytes();
        let mut out = Vec::new();
        for kv in self.due.range(..&end[..]) {
            let (k, _) = kv.map_err(storage)?;
            if let Some(e) = parse_due_key(&k) {
                out.push(e);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Recovery: drop `bodies` and `due` entries whose message record does not exist.
    /// Returns how many entries were removed.
    pub fn remove_dangling(&self) -> Result<usize, QueueError> {
        let mut removed = 0;
        for kv in self.bodies.iter() {
            let (k, _) = kv.map_err(storage)?;
            if !self.messages.contains_key(&k).map_err(storage)? {
                self.bodies.remove(&k).map_err(storage)?;
                removed += 1;
            }
        }
        for kv in self.due.iter() {
            let (k, _) = kv.map_err(storage)?;
            let keep = match parse_due_key(&k) {
                Some(e) => self
                    .messages
                    .contains_key(e.id.as_bytes())
                    .map_err(storage)?,
                None => false,
            };
            if !keep {
                self.due.remove(&k).map_err(storage)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Does the body of `rec` exist in the `bodies` tree (inline records only)?
    pub fn has_inline_body(&self, rec: &MessageRecord) -> Result<bool, QueueError> {
        match rec.body {
            BodyLocation::Inline => self
                .bodies
                .contains_key(rec.id.0.as_bytes())
                .map_err(storage),
            BodyLocation::Spool { .. } => Ok(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_keys_sort_by_time_then_id_then_leg() {
        let a = due_key(5, "00000000000001", 1);
        let b = due_key(5, "00000000000002", 0);
        let c = due_key(256, "00000000000000", 0);
        assert!(a < b && b < c);
        assert_eq!(
            parse_due_key(&c),
            Some(DueEntry {
                due_ms: 256,
                id: "00000000000000".into(),
                leg: 0
            })
        );
        assert_eq!(parse_due_key(b"short"), None);
    }
}
