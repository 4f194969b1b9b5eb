//! The durable queue: messages, their legs and the due-time index in sled, large bodies as spool
//! files. Owns group commit (one flush answers every session that wrote before it), recovery on
//! start, and the operations the CLI and admin API use. Never does network IO.
//!
//! INTERFACE CONTRACT (shared by inbound/, outbound/, admin/, cli): keep these names and
//! signatures; add to them freely.
//!
//! Write order of a message (why nothing half-written survives a crash): a large body is
//! streamed to `spool/<random>.tmp`, fsynced, renamed to `spool/<id>`, the directory fsynced;
//! then one sled transaction writes the record, the inline body (small bodies) and the due
//! entries; then group commit syncs (sled flush + `fdatasync` of the db file, shared by every
//! session that wrote before it); only then does `commit` return the id (→ `250`). Every later
//! change (leg updates, removal, a DSN with the final leg update that causes it) goes through
//! [`Queue::rewrite`]: one transaction, then the same durable wait.
//! Recovery removes temp files and index entries without a record, and moves spool files
//! without a record to `spool/orphans/` (never deletes what it cannot explain). A commit future
//! dropped half-way (session gone) leaves at worst an unacknowledged message (queued, like any
//! MTA whose 250 was lost) or a spool file without a record (quarantined by the next
//! recovery); never an acknowledged message missing.

pub mod body;
pub mod commit;
mod delivery;
pub mod disk;
pub mod health;
pub mod id;
pub mod model;
pub mod ops;
pub mod recovery;
pub mod spool;
pub mod store;

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tracing::Instrument;

pub use body::{BodyReader, BodyWriter};
pub use delivery::stage_message;
pub use id::QueueIdError;
use model::{BodyLocation, HEADER_LINES, Message, MessageRecord, MessageSummary};
pub use recovery::RecoveryReport;

/// Short, unique, time-sortable message id: 14 characters of Crockford base32, upper case
/// (e.g. `0V5KQ2H8M3A7C0`; see [`id`]). The queue generates them; an id typed by an operator
/// becomes one through [`QueueId::parse`] (its canonical form) at the boundary (CLI arguments,
/// admin API paths), so every API that takes a `&QueueId` looks it up as is.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct QueueId(pub String);

impl std::fmt::Display for QueueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the SMTP session learnt about a message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Envelope {
    /// Envelope sender without brackets; empty for the null sender `<>`.
    pub mail_from: String,
    /// HELO/EHLO name given by the client.
    pub helo: String,
    pub client_addr: SocketAddr,
    pub received_at: SystemTime,
    /// `SMTPUTF8` was given at MAIL.
    pub smtputf8: bool,
    /// `BODY=8BITMIME` was given at MAIL.
    pub body_8bit: bool,
}

impl Envelope {
    /// The envelope of a message cutover generates itself (DSNs, alert mails): from the null
    /// sender `<>`, "received" from this host at `now`.
    pub fn generated(hostname: &str, now: SystemTime) -> Envelope {
        Envelope {
            mail_from: String::new(),
            helo: hostname.to_string(),
            client_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            received_at: now,
            smtputf8: false,
            body_8bit: false,
        }
    }
}

/// A leg to create at acceptance: one target, its recipients (as the client gave them).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NewLeg {
    pub target: String,
    /// The routing rule (or `default`) each recipient matched, parallel to `recipients`.
    pub rules: Vec<String>,
    pub recipients: Vec<String>,
}

/// The longest a durable wait may take before it counts as a storage error.
pub const SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A queued body as delivery sees it.
#[derive(Clone, Debug)]
pub enum QueuedBody {
    /// Stored inline (up to the inline threshold).
    Inline(store::Bytes),
    /// A spool file, streamed by the client.
    Spool(PathBuf),
}

/// The most [`Queue::read_head`] reads.
pub const HEAD_LIMIT: usize = 1 << 20;

/// Errors of the queue. Any of them at acceptance means `451 4.3.0`.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue storage: {0}")]
    Storage(String),
    #[error("queue io: {0}")]
    Io(#[from] std::io::Error),
    #[error("no such message: {0}")]
    NotFound(String),
    /// An operator action refused because a delivery of the message may be in flight.
    #[error("busy: {0}")]
    Busy(String),
    #[error("queue is locked by another process (is `cutover serve` running?): {0}")]
    Locked(String),
}

/// Bodies up to this size are stored inline in sled; larger ones go to a spool file.
/// Chosen from `benches/queue_commit.rs`: inline wins up to 100 KiB, spool from 256 KiB at 10+
/// committers; figures in `bench/queue-commit.md`.
pub const DEFAULT_INLINE_THRESHOLD: usize = 128 * 1024;
/// sled page cache size (sled's default is 1 GiB).
pub const DEFAULT_CACHE_CAPACITY: u64 = 64 << 20;

/// Tunables of [`Queue::open_with`].
#[derive(Clone, Debug)]
pub struct QueueOptions {
    /// Bodies larger than this are spooled to files.
    pub inline_threshold: usize,
    pub cache_capacity: u64,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            inline_threshold: DEFAULT_INLINE_THRESHOLD,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
        }
    }
}

struct Inner {
    state_dir: PathBuf,
    spool_dir: PathBuf,
    store: store::Store,
    ids: id::IdGen,
    group: commit::GroupCommit,
    opts: QueueOptions,
    recovery: RecoveryReport,
    /// Signalled when due entries may have been added (new message, operator action).
    due_notify: tokio::sync::Notify,
}

/// Open handle to the queue (cheap to clone).
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

impl Queue {
    /// Open (creating if needed) the queue under `state_dir`, running recovery.
    pub fn open(state_dir: &Path) -> Result<Queue, QueueError> {
        Self::open_with(state_dir, QueueOptions::default())
    }

    /// [`Queue::open`] with explicit tunables.
    pub fn open_with(state_dir: &Path, opts: QueueOptions) -> Result<Queue, QueueError> {
        let spool_dir = state_dir.join("spool");
        if !spool_dir.is_dir() {
            std::fs::create_dir_all(&spool_dir)?;
            spool::sync_dir(state_dir)?;
        }
        let store = store::Store::open(&state_dir.join("db"), opts.cache_capacity)?;
        let ids = id::IdGen::new();
        let recovery = recovery::recover(&store, &spool_dir, &ids)?;
        tracing::info!(
            state_dir = %state_dir.display(),
            messages = recovery.messages,
            legs = recovery.legs,
            removed_tmp = recovery.removed_tmp,
            quarantined_orphans = recovery.quarantined_orphans,
            removed_entries = recovery.removed_entries,
            missing_bodies = recovery.missing_bodies,
            "queue opened"
        );
        Ok(Queue {
            inner: Arc::new(Inner {
                state_dir: state_dir.to_path_buf(),
                spool_dir,
                store,
                ids,
                group: commit::GroupCommit::new(),
                opts,
                recovery,
                due_notify: tokio::sync::Notify::new(),
            }),
        })
    }

    /// Start a body.
    pub fn body_writer(&self) -> Result<BodyWriter, QueueError> {
        Ok(BodyWriter {
            mem: Vec::new(),
            file: None,
            len: 0,
            threshold: self.inner.opts.inline_threshold,
            spool_dir: self.inner.spool_dir.clone(),
            broken: false,
        })
    }

    /// Make the message durable (group-committed). Returns only when it is on disk.
    pub async fn commit(
        &self,
        body: BodyWriter,
        env: Envelope,
        legs: Vec<NewLeg>,
    ) -> Result<QueueId, QueueError> {
        self.commit_sealed(body, env, legs, BTreeMap::new()).await
    }

    /// [`Queue::commit`] with header fields to put on top of the copies delivered to some
    /// targets (`seals`: target name → CRLF-terminated fields, the ARC set sealed for it).
    pub async fn commit_sealed(
        &self,
        body: BodyWriter,
        env: Envelope,
        legs: Vec<NewLeg>,
        seals: BTreeMap<String, String>,
    ) -> Result<QueueId, QueueError> {
        let BodyWriter {
            mem,
            file,
            len,
            broken,
            ..
        } = body;
        if broken {
            return Err(QueueError::Storage(
                "an earlier body write failed; message discarded".into(),
            ));
        }
        let id = self.next_id();
        let span = tracing::debug_span!("commit", queue_id = %id);
        self.commit_inner(id, mem, file, len, env, (legs, seals))
            .instrument(span)
            .await
    }

    async fn commit_inner(
        &self,
        id: QueueId,
        mem: Vec<u8>,
        file: Option<spool::SpoolTmp>,
        len: u64,
        env: Envelope,
        (legs, seals): (Vec<NewLeg>, BTreeMap<String, String>),
    ) -> Result<QueueId, QueueError> {
        let (location, inline, spool_path) = match file {
            Some(tmp) => {
                let path = tmp.finish(&self.inner.spool_dir, &id.0).await?;
                (BodyLocation::Spool { file: id.0.clone() }, None, Some(path))
            }
            None => (BodyLocation::Inline, Some(mem), None),
        };
        let now = SystemTime::now();
        let mut rec = MessageRecord::planned(id.clone(), env, len, location, legs, now);
        rec.seals = seals;
        let due = store::due_keys(&rec);
        let store = &self.inner.store;
        let staged = store::Staged {
            rec,
            inline_body: inline,
        };
        if let Err(e) = store.insert(std::slice::from_ref(&staged)) {
            if let Some(p) = &spool_path {
                let _ = std::fs::remove_file(p);
            }
            tracing::error!(error = %e, "queue transaction failed");
            return Err(e);
        }
        if let Err(e) = self.durable().await {
            // Not acknowledged: take it back out so a later flush cannot make it reappear.
            tracing::error!(error = %e, "queue sync failed");
            let _ = store.remove(&id, &due);
            if let Some(p) = &spool_path {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        tracing::debug!(size = len, "queued");
        self.inner.due_notify.notify_one();
        Ok(id)
    }

    /// Wait until every write made before this call is durable (power-safe): the one durable
    /// wait of the queue. Concurrent callers share one [`store::Store::sync`] (group commit).
    /// Bounded by [`SYNC_TIMEOUT`]: a sync that hangs (a failing disk) answers a storage error
    /// (`451 4.3.0` at intake) instead of holding the session; the health watchdog decides
    /// about a restart.
    pub(crate) async fn durable(&self) -> Result<(), QueueError> {
        self.durable_from_now().await
    }

    /// [`Queue::durable`] for writes made to the db (any tree) before this call, with the
    /// group-commit ticket taken now: any flush that starts later (another writer's included)
    /// covers them, so awaiting it after a later write's own durable wait costs nothing.
    pub fn durable_from_now(
        &self,
    ) -> impl std::future::Future<Output = Result<(), QueueError>> + Send + 'static {
        let ticket = self.inner.group.ticket();
        let q = self.clone();
        async move {
            let store = &q.inner.store;
            match tokio::time::timeout(
                SYNC_TIMEOUT,
                q.inner.group.wait_durable(ticket, || store.sync()),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(QueueError::Storage(format!(
                    "the store did not complete a sync within {SYNC_TIMEOUT:?}"
                ))),
            }
        }
    }

    /// The one write path for existing messages: [`store::Store::rewrite`] (record, due
    /// entries, removal, staged new messages in one transaction), then the durable wait,
    /// then the spool file of a removed message. Wakes the scheduler when messages were added.
    pub(crate) async fn rewrite<T>(
        &self,
        id: &QueueId,
        edit: impl Fn(&mut MessageRecord) -> Result<store::Change<T>, QueueError>,
    ) -> Result<store::Rewritten<T>, QueueError> {
        let out = self.inner.store.rewrite(id, edit)?;
        self.durable().await?;
        if out.removed
            && let BodyLocation::Spool { file } = &out.record.body
        {
            // The record is gone durably; a crash before this leaves an orphan that recovery
            // quarantines.
            match std::fs::remove_file(self.inner.spool_dir.join(file)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(queue_id = %out.record.id, error = %e, "removing a spool file")
                }
            }
        }
        if !out.added.is_empty() {
            self.notify_due();
        }
        Ok(out)
    }

    /// A new message id (for messages staged in a [`Queue::rewrite`], e.g. a DSN).
    pub fn next_id(&self) -> QueueId {
        QueueId(self.inner.ids.next_id())
    }

    /// Flushes performed by group commit since open.
    pub fn flush_count(&self) -> u64 {
        self.inner.group.flush_count()
    }

    /// What recovery did at open.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// The store (for the delivery engine / ledger, which add trees to the same db).
    pub fn store(&self) -> &store::Store {
        &self.inner.store
    }

    /// Free bytes on the filesystem of the state directory (for the `452 4.3.1` reserve).
    pub fn free_space(&self) -> io::Result<u64> {
        disk::free_space(&self.inner.state_dir)
    }

    /// At least `reserve` bytes free under the state directory (`false` → `452 4.3.1`).
    pub fn has_reserve(&self, reserve: u64) -> io::Result<bool> {
        disk::has_reserve(&self.inner.state_dir, reserve)
    }

    /// Every message, oldest first.
    pub fn list(&self) -> Result<Vec<MessageSummary>, QueueError> {
        self.inner
            .store
            .records()
            .map(|r| r.map(|r| r.summary()))
            .collect()
    }

    /// The stored record of `id`.
    pub fn record(&self, id: &QueueId) -> Result<MessageRecord, QueueError> {
        self.inner
            .store
            .get(id)?
            .ok_or_else(|| QueueError::NotFound(id.to_string()))
    }

    /// The record of `id` plus the first header lines of its body.
    pub fn get(&self, id: &QueueId) -> Result<Message, QueueError> {
        let record = self.record(id)?;
        let mut head = Vec::new();
        if !record.body_missing {
            self.open_record_body(&record)?
                .take(64 * 1024)
                .read_to_end(&mut head)?;
        }
        Ok(Message {
            headers: model::header_lines(&head, HEADER_LINES),
            record,
        })
    }

    /// A reader over the body of `id` (inline bytes or the spool file).
    pub fn open_body(&self, id: &QueueId) -> Result<BodyReader, QueueError> {
        let record = self.record(id)?;
        self.open_record_body(&record)
    }

    /// The whole body of `id`.
    pub fn read_body(&self, id: &QueueId) -> Result<Vec<u8>, QueueError> {
        let mut out = Vec::new();
        self.open_body(id)?.read_to_end(&mut out)?;
        Ok(out)
    }

    /// Where the body of `rec` is, for delivery: the inline bytes (small, shared with sled's
    /// cache) or the path of its spool file, which the client streams from disk.
    pub async fn body_source(&self, rec: &MessageRecord) -> Result<QueuedBody, QueueError> {
        if rec.body_missing {
            return Err(QueueError::Storage(format!(
                "body of {} is missing",
                rec.id
            )));
        }
        match &rec.body {
            BodyLocation::Inline => match self.inner.store.body(&rec.id)? {
                Some(v) => Ok(QueuedBody::Inline(v)),
                None => Err(QueueError::Storage(format!(
                    "body of {} is missing",
                    rec.id
                ))),
            },
            BodyLocation::Spool { file } => {
                let path = self.inner.spool_dir.join(file);
                tokio::fs::metadata(&path).await?;
                Ok(QueuedBody::Spool(path))
            }
        }
    }

    /// The header block of `id` and up to `body_prefix` bytes of its body (what a fingerprint
    /// reads), reading at most [`HEAD_LIMIT`] bytes.
    pub fn read_head(&self, id: &QueueId, body_prefix: usize) -> Result<Vec<u8>, QueueError> {
        let mut r = self.open_body(id)?;
        let mut out = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = r.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
            let end = crate::header::split(&out).map(|(_, body)| body);
            if end.is_some_and(|e| out.len() >= e + body_prefix) || out.len() >= HEAD_LIMIT {
                if let Some(e) = end {
                    out.truncate((e + body_prefix).min(out.len()));
                }
                out.truncate(HEAD_LIMIT);
                break;
            }
        }
        Ok(out)
    }

    fn open_record_body(&self, rec: &MessageRecord) -> Result<BodyReader, QueueError> {
        match &rec.body {
            BodyLocation::Inline => match self.inner.store.body(&rec.id)? {
                Some(v) => Ok(BodyReader::Inline(io::Cursor::new(v))),
                None => Err(QueueError::Storage(format!(
                    "body of {} is missing",
                    rec.id
                ))),
            },
            BodyLocation::Spool { file } => Ok(BodyReader::File(std::fs::File::open(
                self.inner.spool_dir.join(file),
            )?)),
        }
    }

    /// Due legs (`due` index) with a due time at or before `until`, oldest first.
    pub fn due(&self, until: SystemTime, limit: usize) -> Result<Vec<store::DueEntry>, QueueError> {
        self.inner
            .store
            .due_until(crate::time::unix_ms(until), limit)
    }

    /// Replace the record of an existing message (its legs, held flags, due times), moving
    /// its `due` entries to match; returns once durable.
    pub async fn update(&self, rec: &MessageRecord) -> Result<(), QueueError> {
        self.rewrite(&rec.id, |r| {
            *r = rec.clone();
            Ok(store::Change::keep(()))
        })
        .await
        .map(|_| ())
    }

    /// Remove a message: record, inline body and `due` entries in one transaction, durable on
    /// return; then its spool file (a crash in between leaves an orphan that recovery
    /// quarantines).
    pub async fn remove(&self, id: &QueueId) -> Result<(), QueueError> {
        self.rewrite(id, |_| {
            Ok(store::Change {
                value: (),
                remove: true,
                add: Vec::new(),
            })
        })
        .await
        .map(|_| ())
    }

    /// Make everything written so far durable (power-safe).
    pub async fn flush(&self) -> Result<(), QueueError> {
        self.durable().await
    }

    /// Flush and drop this handle (the db closes when the last clone is gone).
    pub fn close(self) -> Result<(), QueueError> {
        self.inner.store.sync_blocking()
    }
}

#[cfg(test)]
mod tests;
