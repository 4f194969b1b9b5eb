//! The body of a message on its way in ([`BodyWriter`]: memory up to the inline threshold, then
//! a spool temp file) and on its way out ([`BodyReader`]: inline bytes or the spool file). Owns
//! the spill decision; never touches sled or decides ids.

use super::{QueueError, spool};
use std::io::{self, Read};
use std::path::PathBuf;

/// Receives a message body while DATA streams in; small bodies stay in memory, large ones are
/// spilled to a spool temp file. Dropping it without commit discards it (no trace on disk).
pub struct BodyWriter {
    pub(super) mem: Vec<u8>,
    pub(super) file: Option<spool::SpoolTmp>,
    pub(super) len: u64,
    pub(super) threshold: usize,
    pub(super) spool_dir: PathBuf,
    /// A write failed: commit must fail too.
    pub(super) broken: bool,
}

impl BodyWriter {
    /// Append bytes (already dot-unstuffed, CRLF line ends as received).
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), QueueError> {
        if self.broken {
            return Err(QueueError::Storage("body writer failed earlier".into()));
        }
        let r = self.write_inner(chunk).await;
        if r.is_err() {
            self.broken = true;
            self.file = None; // removes the temp file
        }
        r
    }

    async fn write_inner(&mut self, chunk: &[u8]) -> Result<(), QueueError> {
        self.len += chunk.len() as u64;
        if let Some(f) = self.file.as_mut() {
            f.write_all(chunk).await?;
            return Ok(());
        }
        if self.mem.len() + chunk.len() <= self.threshold {
            self.mem.extend_from_slice(chunk);
            return Ok(());
        }
        let mut f = spool::SpoolTmp::create(&self.spool_dir).await?;
        f.write_all(&self.mem).await?;
        f.write_all(chunk).await?;
        self.mem = Vec::new();
        self.file = Some(f);
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body went to a spool file (it outgrew the inline threshold).
    pub fn is_spooled(&self) -> bool {
        self.file.is_some()
    }
}

/// Streaming reader over a stored body.
pub enum BodyReader {
    Inline(io::Cursor<super::store::Bytes>),
    File(std::fs::File),
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BodyReader::Inline(c) => c.read(buf),
            BodyReader::File(f) => f.read(buf),
        }
    }
}
