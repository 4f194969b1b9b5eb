//! The session's connection: the byte stream (plain or TLS), the read buffer, command-line
//! framing (with the line-length limit and the resynchronisation after an over-long line), DATA
//! chunks through the dot-unstuffing decoder, the batched reply buffer and its flush, and the
//! STARTTLS stream swap. After mini-redis's `Connection`. It knows no SMTP semantics: it never
//! parses a command, never chooses a reply and never decides when a session ends.

use crate::inbound::data::DataDecoder;
use crate::inbound::reply::Reply;
use crate::inbound::tls::{Io, Stream};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

/// Longest command line, CRLF included (RFC 5321 allows 512; smtp-proto's cap is 4096).
pub const MAX_COMMAND_LINE: usize = 4096;
/// Read granularity in DATA, and between commands (kept small: idle sessions hold this buffer).
pub(super) const READ_CHUNK: usize = 64 * 1024;
const COMMAND_CHUNK: usize = 4 * 1024;

/// What a read brought.
pub(super) enum ReadOutcome {
    Data,
    Eof,
    Timeout,
    Shutdown,
    Io(std::io::Error),
}

/// A buffered command line.
pub(super) enum Line {
    /// The line, CRLF (or LF) included.
    Complete(Vec<u8>),
    /// Longer than [`MAX_COMMAND_LINE`]: dropped.
    TooLong,
}

/// How a STARTTLS upgrade ended.
pub(super) enum Upgrade {
    Done,
    /// The client is gone (the `220` could not be sent) or the stream was not plain.
    Gone,
    Failed(std::io::Error),
    TimedOut,
}

pub(super) struct Connection {
    stream: Stream,
    shutdown: watch::Receiver<bool>,
    rbuf: Vec<u8>,
    pos: usize,
    out: Vec<u8>,
    /// Skipping the rest of an over-long line.
    discarding: bool,
    /// How long a flush may take.
    write_timeout: Duration,
}

impl Connection {
    pub(super) fn new(
        io: Box<dyn Io>,
        shutdown: watch::Receiver<bool>,
        write_timeout: Duration,
    ) -> Connection {
        Connection {
            stream: Stream::Plain(io),
            shutdown,
            rbuf: Vec::with_capacity(4096),
            pos: 0,
            out: Vec::with_capacity(1024),
            discarding: false,
            write_timeout,
        }
    }

    /// Bytes read before the session started become the first input.
    pub(super) fn set_buffered(&mut self, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            self.rbuf = bytes;
            self.pos = 0;
        }
    }

    pub(super) fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    pub(super) fn tls_info(&self) -> Option<(String, String)> {
        self.stream.tls_info()
    }

    /// Queue a reply (sent at the next [`Connection::flush`]).
    pub(super) fn write_reply(&mut self, r: &Reply) {
        r.write_to(&mut self.out);
    }

    /// Queue text already in wire form.
    pub(super) fn write_raw(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }

    /// The next complete command line already buffered, if any.
    pub(super) fn next_line(&mut self) -> Option<Line> {
        if self.discarding {
            match memchr(b'\n', &self.rbuf[self.pos..]) {
                Some(i) => {
                    self.pos += i + 1;
                    self.discarding = false;
                }
                None => {
                    self.pos = self.rbuf.len();
                    return None;
                }
            }
        }
        let i = memchr(b'\n', &self.rbuf[self.pos..])?;
        let end = self.pos + i + 1;
        let line = self.rbuf[self.pos..end].to_vec();
        self.pos = end;
        if line.len() > MAX_COMMAND_LINE {
            return Some(Line::TooLong);
        }
        Some(Line::Complete(line))
    }

    /// Drop the consumed input; true when what is left is an incomplete line already over
    /// [`MAX_COMMAND_LINE`] (it is dropped, and the rest of it up to its LF will be).
    pub(super) fn overlong_partial(&mut self) -> bool {
        self.compact();
        if self.rbuf.len() > MAX_COMMAND_LINE {
            self.rbuf.clear();
            self.discarding = true;
            return true;
        }
        false
    }

    /// Decode buffered DATA input into `out` (cleared first). False when nothing is buffered.
    pub(super) fn decode_data(&mut self, dec: &mut DataDecoder, out: &mut Vec<u8>) -> bool {
        if self.pos >= self.rbuf.len() {
            return false;
        }
        out.clear();
        let used = dec.feed(&self.rbuf[self.pos..], out);
        self.pos += used;
        true
    }

    /// Back to command mode: don't keep the DATA-sized buffer on an idle session.
    pub(super) fn end_data(&mut self) {
        self.compact();
        self.rbuf.shrink_to(2 * COMMAND_CHUNK);
    }

    /// Read more command input by `deadline`; a shutdown signal interrupts the wait.
    pub(super) async fn fill_command(&mut self, deadline: Instant) -> ReadOutcome {
        self.fill(deadline, true, COMMAND_CHUNK).await
    }

    /// Read more DATA input by `deadline` (not interrupted by shutdown: a message in progress
    /// is let finish).
    pub(super) async fn fill_data(&mut self, deadline: Instant) -> ReadOutcome {
        self.compact();
        self.fill(deadline, false, READ_CHUNK).await
    }

    /// Write out pending replies. False when the client is gone.
    pub(super) async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let out = std::mem::take(&mut self.out);
        let ok = matches!(
            tokio::time::timeout(self.write_timeout, self.stream.write_all(&out)).await,
            Ok(Ok(()))
        );
        self.out = out;
        self.out.clear();
        ok
    }

    /// Flush, then close the stream.
    pub(super) async fn close(&mut self) {
        self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.stream.shutdown()).await;
    }

    /// Close the stream without flushing.
    pub(super) async fn shutdown(&mut self) {
        self.stream.shutdown().await;
    }

    /// Send the pending replies (the `220`), drop any plaintext input pipelined after it (no
    /// command injection) and run the TLS handshake within `limit`.
    pub(super) async fn upgrade(&mut self, acceptor: &TlsAcceptor, limit: Duration) -> Upgrade {
        if !self.flush().await {
            return Upgrade::Gone;
        }
        self.rbuf.clear();
        self.pos = 0;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Upgrade::Gone;
        };
        match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                self.stream = Stream::Tls(Box::new(tls));
                Upgrade::Done
            }
            Ok(Err(e)) => Upgrade::Failed(e),
            Err(_) => Upgrade::TimedOut,
        }
    }

    fn compact(&mut self) {
        if self.pos > 0 {
            self.rbuf.drain(..self.pos);
            self.pos = 0;
        }
    }

    async fn fill(&mut self, deadline: Instant, interruptible: bool, chunk: usize) -> ReadOutcome {
        if interruptible && *self.shutdown.borrow() {
            return ReadOutcome::Shutdown;
        }
        self.rbuf.reserve(chunk);
        let stream = &mut self.stream;
        let rbuf = &mut self.rbuf;
        let stop = &mut self.shutdown;
        tokio::select! {
            r = tokio::time::timeout_at(deadline, stream.read_buf(rbuf)) => match r {
                Err(_) => ReadOutcome::Timeout,
                Ok(Ok(0)) => ReadOutcome::Eof,
                Ok(Ok(_)) => ReadOutcome::Data,
                Ok(Err(e)) => ReadOutcome::Io(e),
            },
            _ = stop.changed(), if interruptible => ReadOutcome::Shutdown,
        }
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}
