//! One SMTP session: the run loop (greeting, then commands until QUIT, a limit, a timeout or
//! shutdown) and the dispatch of each command to its phase. Replies are batched and flushed only
//! when the input is drained, which is what makes pipelining work. The parts: `conn` (framing
//! and IO: lines, DATA chunks, reply flushing, the STARTTLS swap), `ehlo` (greeting, HELO/EHLO,
//! HELP, STARTTLS), `mail`, `rcpt`, `data` (the DATA block, its pure verdict and the hand-off to
//! the queue). Policy decisions come from `policy`, headers from `stamp`. It never delivers and
//! never writes anything but through `Queue`.

mod conn;
mod data;
mod ehlo;
mod mail;
mod rcpt;

use super::limits::{Limit, Rejection, SessionCounters};
use super::reply::{Reply, bad_sequence};
use super::tls::Io;
use super::{Inbound, Settings};
use crate::routing::Route;
use conn::{Connection, Line, ReadOutcome};
use smtp_proto::{Error as ProtoError, Request};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;

pub use conn::MAX_COMMAND_LINE;

struct Transaction {
    /// Envelope sender; empty for `<>`.
    from: String,
    smtputf8: bool,
    body_8bit: bool,
    /// `SIZE=` given at MAIL (0 = none): scales the DATA time limit.
    size: u64,
    rcpts: Vec<(String, Route)>,
    rcpt_attempts: usize,
}

enum Next {
    Continue,
    Data,
    StartTls,
    /// Reply flushed, connection closed.
    Quit,
}

pub struct Session {
    conn: Connection,
    peer: SocketAddr,
    inbound: Arc<Inbound>,
    settings: Arc<Settings>,
    helo: Option<String>,
    esmtp: bool,
    trusted: bool,
    tx: Option<Transaction>,
    /// Junk commands and errors since the last accepted message (`inbound::limits`).
    counters: SessionCounters,
    accepted: u64,
    /// `max_session_time` from the start.
    session_end: Instant,
    /// When the command being read must be complete (`command_timeout` from when the session
    /// started waiting for it, not per read: a byte every few minutes does not keep it alive).
    command_deadline: Option<Instant>,
}

impl Session {
    pub fn new(
        io: Box<dyn Io>,
        peer: SocketAddr,
        inbound: Arc<Inbound>,
        settings: Arc<Settings>,
        shutdown: watch::Receiver<bool>,
    ) -> Session {
        let trusted = settings.policy.is_trusted(peer.ip());
        let session_end = Instant::now() + settings.policy.max_session_time;
        Session {
            conn: Connection::new(io, shutdown, settings.policy.command_timeout),
            peer,
            inbound,
            settings,
            helo: None,
            esmtp: false,
            trusted,
            tx: None,
            counters: SessionCounters::default(),
            accepted: 0,
            session_end,
            command_deadline: None,
        }
    }

    /// Bytes already read from the connection before the session started (after a PROXY
    /// header); they are the client's first input.
    pub fn with_buffered(mut self, bytes: Vec<u8>) -> Session {
        self.conn.set_buffered(bytes);
        self
    }

    fn reply(&mut self, r: Reply) {
        // Protocol errors (syntax, sequence) count towards the limit; policy refusals don't.
        if r.code >= 500 && r.esc.starts_with("5.5.") {
            self.counters.errors += 1;
        }
        self.conn.write_reply(&r);
    }

    /// Run to completion; never panics on client input.
    pub async fn run(mut self) {
        tracing::debug!(client = %self.peer, trusted = self.trusted, "connect");
        let greeting = ehlo::greeting(&self.settings.policy.hostname);
        self.conn.write_raw(&greeting);
        loop {
            if !self.handle_buffered().await {
                return;
            }
            if self.conn.overlong_partial() {
                self.reply(line_too_long());
            }
            if !self.conn.flush().await {
                return;
            }
            if !self.read_more().await {
                return;
            }
        }
    }

    /// Handle every complete command line already buffered. False when the session is over
    /// (the connection is closed then).
    async fn handle_buffered(&mut self) -> bool {
        while let Some(line) = self.conn.next_line() {
            self.command_deadline = None;
            let Line::Complete(line) = line else {
                self.reply(line_too_long());
                continue;
            };
            let next = self.command(&line).await;
            if self.over_limit() {
                self.conn.close().await;
                return false;
            }
            match next {
                Next::Continue => {}
                Next::Quit => {
                    self.conn.close().await;
                    return false;
                }
                Next::Data => {
                    if !self.data().await {
                        self.conn.close().await;
                        return false;
                    }
                }
                Next::StartTls => {
                    if !self.starttls().await {
                        self.conn.shutdown().await;
                        return false;
                    }
                }
            }
        }
        true
    }

    /// The junk or error limit was reached: `421` queued.
    fn over_limit(&mut self) -> bool {
        let p = &self.settings.policy;
        let Some(limit) = self.counters.over(p.junk_command_limit, p.hard_error_limit) else {
            return false;
        };
        self.inbound.stats.limit_hit(limit);
        tracing::info!(client = %self.peer, limit = limit.as_str(), "session closed: limit reached");
        self.reply(Reply::new(
            421,
            "4.7.0",
            if limit == Limit::Errors {
                "Too many errors, closing connection"
            } else {
                "Too many NOOP/RSET/VRFY/HELP commands, closing connection"
            },
        ));
        true
    }

    /// Wait for more command input (within `command_timeout` and the session time). False when
    /// the session is over (the connection is closed then, if it is still there).
    async fn read_more(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.session_end {
            self.session_time_over().await;
            return false;
        }
        let command_timeout = self.settings.policy.command_timeout;
        let deadline = *self.command_deadline.get_or_insert(now + command_timeout);
        match self.conn.fill_command(deadline.min(self.session_end)).await {
            ReadOutcome::Data => return true,
            ReadOutcome::Eof => {
                tracing::debug!(client = %self.peer, "client closed the connection");
                return false;
            }
            ReadOutcome::Io(e) => {
                tracing::debug!(client = %self.peer, error = %e, "read error");
                return false;
            }
            ReadOutcome::Timeout if Instant::now() >= self.session_end => {
                self.session_time_over().await;
                return false;
            }
            ReadOutcome::Timeout => {
                self.inbound.stats.limit_hit(Limit::CommandTimeout);
                tracing::info!(client = %self.peer, "command timeout");
                self.reply(Reply::new(421, "4.4.2", "Timeout, closing connection"));
            }
            ReadOutcome::Shutdown => {
                self.reply(Reply::new(
                    421,
                    "4.3.2",
                    "Service shutting down, try again later",
                ));
            }
        }
        self.conn.close().await;
        false
    }

    async fn session_time_over(&mut self) {
        self.inbound.stats.limit_hit(Limit::SessionTime);
        tracing::info!(client = %self.peer, accepted = self.accepted, "session time limit reached");
        self.reply(Reply::new(
            421,
            "4.4.2",
            "Session time limit reached, closing connection",
        ));
        self.conn.close().await;
    }

    async fn command(&mut self, line: &[u8]) -> Next {
        let text = String::from_utf8_lossy(line);
        let parsed = Request::parse(&mut line.iter());
        match parsed {
            Ok(Request::Ehlo { host }) => self.ehlo(host.to_string()),
            Ok(Request::Helo { host }) => self.helo(host.to_string()),
            Ok(Request::Mail { from }) => {
                let r = self.mail(&text, from.flags, from.size as u64);
                self.reply(r);
            }
            Ok(Request::Rcpt { .. }) | Err(ProtoError::InvalidRecipientAddress)
                if text.len() >= 4 && text[..4].eq_ignore_ascii_case("RCPT") =>
            {
                let r = self.rcpt(&text).await;
                self.count_rcpt(&r);
                self.reply(r);
            }
            Err(ProtoError::InvalidSenderAddress) => {
                let r = if self.helo.is_none() {
                    bad_sequence("Send HELO/EHLO first")
                } else {
                    self.inbound.stats.rejected(Rejection::Syntax);
                    Reply::new(501, "5.1.7", "Bad sender address syntax")
                };
                self.reply(r);
            }
            Ok(Request::Data) => return self.data_command(),
            Ok(Request::Rset) => {
                if !self.junk() {
                    self.tx = None;
                    self.reply(Reply::new(250, "2.0.0", "Ok"));
                }
            }
            Ok(Request::Noop { .. }) => self.junk_reply(Reply::new(250, "2.0.0", "Ok")),
            Ok(Request::Quit) => {
                self.reply(Reply::new(221, "2.0.0", "Bye"));
                return Next::Quit;
            }
            Ok(Request::Vrfy { .. }) => self.junk_reply(Reply::new(
                252,
                "2.5.2",
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Ok(Request::Help { .. }) => {
                if !self.junk() {
                    self.conn.write_raw(&ehlo::help_reply())
                }
            }
            Ok(Request::StartTls) => return self.starttls_command(),
            Ok(Request::Bdat { .. }) => {
                // CHUNKING is not offered; the chunk that follows must not be read as commands.
                self.reply(Reply::new(502, "5.5.1", "BDAT not supported, closing"));
                return Next::Quit;
            }
            Ok(Request::Expn { .. }) => {
                self.junk_reply(Reply::new(502, "5.5.1", "EXPN not available"))
            }
            Ok(Request::Auth { .. }) => self.reply(Reply::new(502, "5.5.1", "AUTH not available")),
            Ok(r) => {
                let name = r.name();
                self.reply(Reply::new(502, "5.5.1", format!("{name} not implemented")))
            }
            Err(e) => self.reply(parse_error_reply(e)),
        }
        Next::Continue
    }

    /// Count a NOOP/RSET/VRFY/HELP/EXPN; true when it is one too many (no reply: the session
    /// answers `421` and closes).
    fn junk(&mut self) -> bool {
        self.counters.junk += 1;
        self.counters.junk > self.settings.policy.junk_command_limit
    }

    /// Count a junk command and, unless it is one too many, answer it with `r`.
    fn junk_reply(&mut self, r: Reply) {
        if !self.junk() {
            self.reply(r)
        }
    }
}

/// `500 5.5.2` for a command line over [`MAX_COMMAND_LINE`].
fn line_too_long() -> Reply {
    Reply::new(500, "5.5.2", "Line too long")
}

/// The reply to a command line smtp-proto could not parse (the errors the phases don't answer
/// themselves: a bad sender, or a bad recipient on a `RCPT` line).
fn parse_error_reply(e: ProtoError) -> Reply {
    match e {
        ProtoError::UnknownCommand => Reply::new(500, "5.5.1", "Unknown command"),
        ProtoError::InvalidRecipientAddress => {
            Reply::new(501, "5.1.3", "Bad recipient address syntax")
        }
        ProtoError::SyntaxError { syntax } => Reply::new(501, "5.5.4", format!("Syntax: {syntax}")),
        ProtoError::InvalidParameter { param } => {
            Reply::new(501, "5.5.4", format!("Invalid parameter {param}"))
        }
        ProtoError::UnsupportedParameter { param } => {
            let p: String = param.chars().filter(|c| !c.is_control()).take(64).collect();
            Reply::new(555, "5.5.4", format!("Unsupported parameter {p}"))
        }
        ProtoError::ResponseTooLong => line_too_long(),
        _ => Reply::new(500, "5.5.2", "Syntax error"),
    }
}

/// `555 5.5.4` for a MAIL/RCPT parameter that cutover does not advertise.
fn unsupported_param(param: String) -> Reply {
    Reply::new(555, "5.5.4", format!("Unsupported parameter {param}"))
}

/// `552 5.3.4`: the message is (or is announced) over `max_message_size`.
fn size_exceeded() -> Reply {
    Reply::new(
        552,
        "5.3.4",
        "Message size exceeds fixed maximum message size",
    )
}
