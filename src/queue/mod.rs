//! The durable queue: messages, their legs and the due-time index in sled, large bodies as spool
//! files. Owns group commit (one flush answers every session that wrote before it), recovery on
//! start, and the operations the CLI and admin API use. Never does network IO.
//!
//! INTERFACE CONTRACT (shared by inbound/, outbound/, admin/, cli): keep these names and
//! signatures; add to them freely.

use std::net::SocketAddr;
use std::path::Path;
use std::time::SystemTime;

/// Short, unique, time-sortable message id (printable, e.g. `0V5KQ2H8M3A7C`).
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct QueueId(pub String);

impl std::fmt::Display for QueueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the SMTP session learnt about a message.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
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

/// A leg to create at acceptance: one target, its recipients (as the client gave them).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NewLeg {
    pub target: String,
    /// The routing rule (or `default`) each recipient matched, parallel to `recipients`.
    pub rules: Vec<String>,
    pub recipients: Vec<String>,
}

/// Errors of the queue. Any of them at acceptance means `451 4.3.0`.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue storage: {0}")]
    Storage(String),
    #[error("queue io: {0}")]
    Io(#[from] std::io::Error),
    #[error("no such message: {0}")]
    NotFound(String),
    #[error("queue is locked by another process (is `cutover serve` running?): {0}")]
    Locked(String),
}

/// Open handle to the queue (cheap to clone).
#[derive(Clone)]
pub struct Queue {
    _private: (),
}

/// Receives a message body while DATA streams in; small bodies stay in memory, large ones are
/// spilled to a spool temp file. Dropping it without commit discards it (no trace on disk).
pub struct BodyWriter {
    _private: (),
}

impl Queue {
    /// Open (creating if needed) the queue under `state_dir`, running recovery.
    pub fn open(_state_dir: &Path) -> Result<Queue, QueueError> {
        Err(QueueError::Storage("not implemented yet".into()))
    }

    /// Start a body.
    pub fn body_writer(&self) -> Result<BodyWriter, QueueError> {
        Err(QueueError::Storage("not implemented yet".into()))
    }

    /// Make the message durable (group-committed). Returns only when it is on disk.
    pub async fn commit(
        &self,
        _body: BodyWriter,
        _env: Envelope,
        _legs: Vec<NewLeg>,
    ) -> Result<QueueId, QueueError> {
        Err(QueueError::Storage("not implemented yet".into()))
    }
}

impl BodyWriter {
    /// Append bytes (already dot-unstuffed, CRLF line ends as received).
    pub async fn write(&mut self, _chunk: &[u8]) -> Result<(), QueueError> {
        Err(QueueError::Storage("not implemented yet".into()))
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
