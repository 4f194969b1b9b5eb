//! The sled store behind the queue: one db at `<state_dir>/db` with the trees `messages`
//! (id → JSON [`MessageRecord`]), `bodies` (id → small body bytes) and `due` (big-endian due ms
//! ++ id ++ leg id → empty: the scheduler's index). Every change is one transaction across
//! the three trees ([`Store::insert`] for new messages, [`Store::rewrite`], the one
//! read-modify-write, for everything else); durability comes from [`Store::sync`]: sled's
//! flush plus an `fdatasync` of its log file (power-safe; sled alone is not), called by group
//! commit. This is the only queue module whose code names sled (the rest of the queue sees
//! [`Store`] and the [`Bytes`] of an inline body), so the store could be swapped; it never
//! touches spool files or the network. Outside the queue, the ledger (`crate::ledger`, its
//! tree in this db through [`Store::db`], and its admin route) and the backfill's own state db
//! (`backfill::state`) use sled directly; nothing else does.
//!
//! Record encoding: JSON (serde_json). `benches/queue_commit.rs` measures encode+decode of a
//! typical record (two legs, three recipients) at a few µs, small against the transaction and
//! the flush, so a compact encoding is not worth its opacity yet.

use super::id::ID_LEN;
use super::model::{BodyLocation, LegId, MessageRecord};
use super::{QueueError, QueueId};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::path::Path;

pub const TREE_MESSAGES: &str = "messages";
pub const TREE_BODIES: &str = "bodies";
pub const TREE_DUE: &str = "due";
/// The bytes of an inline body as the store hands them out (cheap to clone).
pub type Bytes = sled::IVec;

/// The health probe's tree (one key).
pub const TREE_HEALTH: &str = "health";

/// Handle on the db and the queue's trees (cheap to clone).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    files: std::sync::Arc<DbFiles>,
    messages: sled::Tree,
    bodies: sled::Tree,
    due: sled::Tree,
}

/// One entry of the `due` index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueEntry {
    pub due_ms: u64,
    pub id: QueueId,
    pub leg: LegId,
}

/// `due` key: 8 bytes big-endian ms ++ 14 id bytes ++ 2 bytes big-endian [`LegId`] (records
/// stored before legs had ids have leg ids equal to their positions, so their keys still match).
pub fn due_key(due_ms: u64, id: &QueueId, leg: LegId) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + id.0.len() + 2);
    k.extend_from_slice(&due_ms.to_be_bytes());
    k.extend_from_slice(id.0.as_bytes());
    k.extend_from_slice(&leg.0.to_be_bytes());
    k
}

/// The `due` index entries of a record: one per non-final, non-held leg.
pub fn due_keys(rec: &MessageRecord) -> Vec<Vec<u8>> {
    rec.legs
        .iter()
        .filter(|l| !l.held)
        .filter_map(|l| {
            l.next_attempt
                .map(|t| due_key(crate::time::unix_ms(t), &rec.id, l.id))
        })
        .collect()
}

/// Inverse of [`due_key`]; `None` for a malformed key.
pub fn parse_due_key(k: &[u8]) -> Option<DueEntry> {
    if k.len() != 8 + ID_LEN + 2 {
        return None;
    }
    let due_ms = u64::from_be_bytes(k[..8].try_into().ok()?);
    let id = QueueId(std::str::from_utf8(&k[8..8 + ID_LEN]).ok()?.to_string());
    let leg = LegId(u16::from_be_bytes(k[8 + ID_LEN..].try_into().ok()?));
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

fn abort(e: QueueError) -> ConflictableTransactionError<QueueError> {
    ConflictableTransactionError::Abort(e)
}

/// A new message ready to be inserted: its record and, when stored inline, its body.
#[derive(Clone, Debug)]
pub struct Staged {
    pub rec: MessageRecord,
    pub inline_body: Option<Vec<u8>>,
}

impl Staged {
    fn encode(&self) -> Result<(Vec<u8>, Vec<Vec<u8>>), QueueError> {
        let enc = self
            .rec
            .encode()
            .map_err(|e| QueueError::Storage(format!("encoding record: {e}")))?;
        Ok((enc, due_keys(&self.rec)))
    }
}

/// What an edit in [`Store::rewrite`] decided: its result, whether the message goes, and the
/// new messages to insert in the same transaction.
#[derive(Debug)]
pub struct Change<T> {
    pub value: T,
    pub remove: bool,
    pub add: Vec<Staged>,
}

impl<T> Change<T> {
    /// Keep the (edited) record, add nothing.
    pub fn keep(value: T) -> Self {
        Change {
            value,
            remove: false,
            add: Vec::new(),
        }
    }
}

/// The result of [`Store::rewrite`]: the edit's value, the record after the edit (its final
/// state when removed), whether it was removed, and the ids of the messages added.
#[derive(Debug)]
pub struct Rewritten<T> {
    pub value: T,
    pub record: MessageRecord,
    pub removed: bool,
    pub added: Vec<super::QueueId>,
}

type TxTree = sled::transaction::TransactionalTree;

fn put_staged(
    m: &TxTree,
    b: &TxTree,
    d: &TxTree,
    s: &Staged,
    enc: &[u8],
    due: &[Vec<u8>],
) -> Result<(), ConflictableTransactionError<QueueError>> {
    let id = s.rec.id.0.as_bytes();
    m.insert(id, enc)?;
    if let Some(body) = &s.inline_body {
        b.insert(id, body.as_slice())?;
    }
    for k in due {
        d.insert(k.as_slice(), &[][..])?;
    }
    Ok(())
}

/// The files under the db directory that sled leaves unsynced: the log file `db` (fdatasync)
/// and the blob files (fsync once each, and their directory).
struct DbFiles {
    /// `<path>/db`, opened read-only: fsync works on any descriptor of the inode.
    log: std::fs::File,
    blobs_dir: std::path::PathBuf,
    /// Blob files already synced (pruned to those still present).
    synced_blobs: std::sync::Mutex<std::collections::HashSet<std::ffi::OsString>>,
}

impl DbFiles {
    fn open(path: &Path) -> Result<DbFiles, QueueError> {
        let log_path = path.join("db");
        let log = std::fs::File::open(&log_path).map_err(|e| {
            QueueError::Storage(format!("opening {} for sync: {e}", log_path.display()))
        })?;
        // The db directory's entries (db, conf, blobs/, snapshots) were created by sled
        // without a directory fsync: make them durable once.
        super::spool::sync_dir(path)?;
        if let Some(parent) = path.parent() {
            super::spool::sync_dir(parent)?;
        }
        Ok(DbFiles {
            log,
            blobs_dir: path.join("blobs"),
            synced_blobs: Default::default(),
        })
    }

    fn sync(&self) -> Result<(), QueueError> {
        self.sync_blobs()?;
        self.log.sync_data()?;
        Ok(())
    }

    fn sync_blobs(&self) -> Result<(), QueueError> {
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = std::collections::HashSet::new();
        let mut new = false;
        for e in entries {
            let e = e?;
            let name = e.file_name();
            if !synced.contains(&name) {
                match std::fs::File::open(e.path()) {
                    Ok(f) => f.sync_all()?,
                    // Garbage-collected by sled meanwhile.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(err.into()),
                }
                new = true;
            }
            present.insert(name);
        }
        if new {
            super::spool::sync_dir(&self.blobs_dir)?;
        }
        *synced = present;
        Ok(())
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
        db.flush().map_err(storage)?;
        let files = std::sync::Arc::new(DbFiles::open(path)?);
        Ok(Store {
            db,
            files,
            messages,
            bodies,
            due,
        })
    }

    /// The underlying db, for modules that add their own trees (ledger, delivery state).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Write new messages (record, optional inline body, due entries) in one transaction.
    /// Not durable until [`Store::sync`].
    pub fn insert(&self, staged: &[Staged]) -> Result<(), QueueError> {
        let encoded = staged
            .iter()
            .map(|s| s.encode())
            .collect::<Result<Vec<_>, _>>()?;
        (&self.messages, &self.bodies, &self.due)
            .transaction(|(m, b, d)| {
                for (s, (rec, due)) in staged.iter().zip(&encoded) {
                    put_staged(m, b, d, s, rec, due)?;
                }
                Ok::<(), ConflictableTransactionError<QueueError>>(())
            })
            .map_err(tx_err)
    }

    /// Remove a message (record, inline body, the given due entries) in one transaction
    /// (undo of an insert whose sync failed).
    pub fn remove(&self, id: &QueueId, due: &[Vec<u8>]) -> Result<(), QueueError> {
        (&self.messages, &self.bodies, &self.due)
            .transaction(|(m, b, d)| {
                m.remove(id.0.as_bytes())?;
                b.remove(id.0.as_bytes())?;
                for k in due {
                    d.remove(k.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<QueueError>>(())
            })
            .map_err(tx_err)
    }

    /// The one read-modify-write of the queue: read the record of `id`, let `edit` change it,
    /// and in the same transaction move its `due` entries to match, or remove it (record,
    /// inline body, due entries) when the edit says so, and insert the messages the edit
    /// staged (a DSN: the final leg update and its DSN are one transaction). `edit` may run
    /// more than once (transaction retries): it must be a pure function of the record.
    /// `NotFound` when `id` is not queued. Not durable until [`Store::sync`]; a removed
    /// message's spool file is the caller's to delete after that.
    pub fn rewrite<T>(
        &self,
        id: &QueueId,
        edit: impl Fn(&mut MessageRecord) -> Result<Change<T>, QueueError>,
    ) -> Result<Rewritten<T>, QueueError> {
        (&self.messages, &self.bodies, &self.due)
            .transaction(|(m, b, d)| {
                let Some(raw) = m.get(id.0.as_bytes())? else {
                    return Err(abort(QueueError::NotFound(id.to_string())));
                };
                let mut rec = MessageRecord::decode(&raw)
                    .map_err(|e| abort(QueueError::Storage(format!("record {id}: {e}"))))?;
                for k in due_keys(&rec) {
                    d.remove(k)?;
                }
                let change = edit(&mut rec).map_err(abort)?;
                if change.remove {
                    m.remove(id.0.as_bytes())?;
                    b.remove(id.0.as_bytes())?;
                } else {
                    for k in due_keys(&rec) {
                        d.insert(k, &[][..])?;
                    }
                    let enc = rec
                        .encode()
                        .map_err(|e| abort(QueueError::Storage(format!("encoding record: {e}"))))?;
                    m.insert(id.0.as_bytes(), enc)?;
                }
                let mut added = Vec::with_capacity(change.add.len());
                for s in &change.add {
                    let (enc, due) = s.encode().map_err(abort)?;
                    put_staged(m, b, d, s, &enc, &due)?;
                    added.push(s.rec.id.clone());
                }
                Ok(Rewritten {
                    value: change.value,
                    removed: change.remove,
                    record: rec,
                    added,
                })
            })
            .map_err(tx_err)
    }

    /// Replace a record (same id) without touching the index (recovery's `body_missing`
    /// flag). Not durable until [`Store::sync`].
    pub fn update(&self, rec: &MessageRecord) -> Result<(), QueueError> {
        let encoded = rec
            .encode()
            .map_err(|e| QueueError::Storage(format!("encoding record: {e}")))?;
        self.messages
            .insert(rec.id.0.as_bytes(), encoded)
            .map_err(storage)?;
        Ok(())
    }

    /// Make every write that completed before this call durable, power-safe: sled's flush
    /// (its log write ends in `sync_file_range`, which neither flushes the disk cache nor
    /// covers file metadata), then `fdatasync` on the db file, after an `fsync` of any blob
    /// file sled wrote meanwhile (sled writes values larger than a quarter segment to
    /// `blobs/` and never syncs them). One call covers every writer before it: group commit
    /// decides when to call it.
    pub async fn sync(&self) -> Result<(), QueueError> {
        self.db.flush_async().await.map_err(storage)?;
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || files.sync())
            .await
            .map_err(|e| QueueError::Storage(format!("sync task: {e}")))?
    }

    /// Blocking [`Store::sync`] (start-up, recovery, shutdown).
    pub fn sync_blocking(&self) -> Result<(), QueueError> {
        self.db.flush().map_err(storage)?;
        self.files.sync()
    }

    pub fn get(&self, id: &QueueId) -> Result<Option<MessageRecord>, QueueError> {
        match self.messages.get(id.0.as_bytes()).map_err(storage)? {
            None => Ok(None),
            Some(v) => MessageRecord::decode(&v)
                .map(Some)
                .map_err(|e| QueueError::Storage(format!("record {id}: {e}"))),
        }
    }

    pub fn contains(&self, id: &QueueId) -> Result<bool, QueueError> {
        self.messages.contains_key(id.0.as_bytes()).map_err(storage)
    }

    /// Inline body bytes of `id`, if stored inline.
    pub fn body(&self, id: &QueueId) -> Result<Option<Bytes>, QueueError> {
        self.bodies.get(id.0.as_bytes()).map_err(storage)
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
                    .contains_key(e.id.0.as_bytes())
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

    /// The health probe's write: `key` → `value` in the `health` tree (not durable until
    /// [`Store::sync`]).
    pub fn put_health(&self, key: &[u8], value: &[u8]) -> Result<(), QueueError> {
        self.db
            .open_tree(TREE_HEALTH)
            .and_then(|t| t.insert(key, value))
            .map_err(storage)
            .map(|_| ())
    }

    /// The health probe's read-back.
    pub fn get_health(&self, key: &[u8]) -> Result<Option<Vec<u8>>, QueueError> {
        self.db
            .open_tree(TREE_HEALTH)
            .and_then(|t| t.get(key))
            .map_err(storage)
            .map(|v| v.map(|v| v.to_vec()))
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
        let id = |s: &str| QueueId(s.into());
        let a = due_key(5, &id("00000000000001"), LegId(1));
        let b = due_key(5, &id("00000000000002"), LegId(0));
        let c = due_key(256, &id("00000000000000"), LegId(0));
        assert!(a < b && b < c);
        assert_eq!(
            parse_due_key(&c),
            Some(DueEntry {
                due_ms: 256,
                id: id("00000000000000"),
                leg: LegId(0)
            })
        );
        assert_eq!(parse_due_key(b"short"), None);
    }
}
