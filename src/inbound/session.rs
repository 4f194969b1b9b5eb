//! One SMTP session: the state machine (greeting → HELO/EHLO → MAIL → RCPT… → DATA → reply, any
//! number of transactions), its buffered IO (replies are batched and flushed only when the input
//! is drained, which is what makes pipelining work), timeouts (between commands; in DATA an idle
//! timeout per read plus a time limit that grows with the message size), STARTTLS upgrade, and the hand-off
//! to the queue. Policy decisions come from `policy`, headers from `stamp`, DATA decoding from
//! `data`. It never delivers and never writes anything but through `Queue`.

use super::data::DataDecoder;
use super::ehlo;
use super::limits::{IntakeStats, Limit, SessionCounters};
use super::policy::{self, RcptDecision};
use super::reply::{Reply, bad_sequence};
use super::stamp::{self, HeaderScan, TraceInfo};
use super::tls::{Io, Stream};
use super::{Inbound, Settings};
use crate::queue::{BodyWriter, Envelope};
use crate::routing::Route;
use smtp_proto::{Error as ProtoError, MAIL_BODY_8BITMIME, MAIL_SMTPUTF8, Request};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;

/// Longest command line, CRLF included (RFC 5321 allows 512; smtp-proto's cap is 4096).
pub const MAX_COMMAND_LINE: usize = 4096;
/// Read granularity in DATA, and between commands (kept small: idle sessions hold this buffer).
const READ_CHUNK: usize = 64 * 1024;
const COMMAND_CHUNK: usize = 4 * 1024;

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

enum ReadOutcome {
    Data,
    Eof,
    Timeout,
    Shutdown,
    Io(std::io::Error),
}

pub struct Session {
    stream: Stream,
    peer: SocketAddr,
    inbound: Arc<Inbound>,
    settings: Arc<Settings>,
    shutdown: watch::Receiver<bool>,
    rbuf: Vec<u8>,
    pos: usize,
    out: Vec<u8>,
    helo: Option<String>,
    esmtp: bool,
    trusted: bool,
    tx: Option<Transaction>,
    discarding: bool,
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
            stream: Stream::Plain(io),
            peer,
            inbound,
            settings,
            shutdown,
            rbuf: Vec::with_capacity(4096),
            pos: 0,
            out: Vec::with_capacity(1024),
            helo: None,
            esmtp: false,
            trusted,
            tx: None,
            discarding: false,
            counters: SessionCounters::default(),
            accepted: 0,
            session_end,
            command_deadline: None,
        }
    }

    /// Bytes already read from the connection before the session started (after a PROXY
    /// header); they are the client's first input.
    pub fn with_buffered(mut self, bytes: Vec<u8>) -> Session {
        if !bytes.is_empty() {
            self.rbuf = bytes;
            self.pos = 0;
        }
        self
    }

    fn reply(&mut self, r: Reply) {
        // Protocol errors (syntax, sequence) count towards the limit; policy refusals don't.
        if r.code >= 500 && r.esc.starts_with("5.5.") {
            self.counters.errors += 1;
        }
        r.write_to(&mut self.out);
    }

    fn raw(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }

    /// Run to completion; never panics on client input.
    pub async fn run(mut self) {
        tracing::debug!(client = %self.peer, trusted = self.trusted, "connect");
        let greeting = ehlo::greeting(&self.settings.policy.hostname);
        self.raw(&greeting);
        loop {
            // Handle every complete command line already buffered.
            loop {
                if self.discarding {
                    match memchr(b'\n', &self.rbuf[self.pos..]) {
                        Some(i) => {
                            self.pos += i + 1;
                            self.discarding = false;
                        }
                        None => {
                            self.pos = self.rbuf.len();
                            break;
                        }
                    }
                }
                let Some(i) = memchr(b'\n', &self.rbuf[self.pos..]) else {
                    break;
                };
                let end = self.pos + i + 1;
                let line = self.rbuf[self.pos..end].to_vec();
                self.pos = end;
                self.command_deadline = None;
                if line.len() > MAX_COMMAND_LINE {
                    self.reply(Reply::new(500, "5.5.2", "Line too long"));
                    continue;
                }
                let next = self.command(&line).await;
                let p = &self.settings.policy;
                if let Some(limit) = self.counters.over(p.junk_command_limit, p.hard_error_limit) {
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
                    self.close().await;
                    return;
                }
                match next {
                    Next::Continue => {}
                    Next::Quit => {
                        self.close().await;
                        return;
                    }
                    Next::Data => {
                        if !self.data().await {
                            self.close().await;
                            return;
                        }
                    }
                    Next::StartTls => {
                        if !self.starttls().await {
                            self.stream.shutdown().await;
                            return;
                        }
                    }
                }
            }
            self.compact();
            if self.rbuf.len() > MAX_COMMAND_LINE {
                self.reply(Reply::new(500, "5.5.2", "Line too long"));
                self.rbuf.clear();
                self.discarding = true;
            }
            if !self.flush().await {
                return;
            }
            let now = Instant::now();
            if now >= self.session_end {
                self.session_time_over().await;
                return;
            }
            let command_timeout = self.settings.policy.command_timeout;
            let deadline = *self.command_deadline.get_or_insert(now + command_timeout);
            match self
                .fill(deadline.min(self.session_end), true, COMMAND_CHUNK)
                .await
            {
                ReadOutcome::Data => {}
                ReadOutcome::Eof => {
                    tracing::debug!(client = %self.peer, "client closed the connection");
                    return;
                }
                ReadOutcome::Io(e) => {
                    tracing::debug!(client = %self.peer, error = %e, "read error");
                    return;
                }
                ReadOutcome::Timeout if Instant::now() >= self.session_end => {
                    self.session_time_over().await;
                    return;
                }
                ReadOutcome::Timeout => {
                    self.inbound.stats.limit_hit(Limit::CommandTimeout);
                    tracing::info!(client = %self.peer, "command timeout");
                    self.reply(Reply::new(421, "4.4.2", "Timeout, closing connection"));
                    self.close().await;
                    return;
                }
                ReadOutcome::Shutdown => {
                    self.reply(Reply::new(
                        421,
                        "4.3.2",
                        "Service shutting down, try again later",
                    ));
                    self.close().await;
                    return;
                }
            }
        }
    }

    async fn session_time_over(&mut self) {
        self.inbound.stats.limit_hit(Limit::SessionTime);
        tracing::info!(client = %self.peer, accepted = self.accepted, "session time limit reached");
        self.reply(Reply::new(
            421,
            "4.4.2",
            "Session time limit reached, closing connection",
        ));
        self.close().await;
    }

    fn compact(&mut self) {
        if self.pos > 0 {
            self.rbuf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// Write out pending replies. False when the client is gone.
    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let limit = self.settings.policy.command_timeout;
        let out = std::mem::take(&mut self.out);
        let ok = matches!(
            tokio::time::timeout(limit, self.stream.write_all(&out)).await,
            Ok(Ok(()))
        );
        self.out = out;
        self.out.clear();
        ok
    }

    async fn close(&mut self) {
        self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.stream.shutdown()).await;
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

    async fn command(&mut self, line: &[u8]) -> Next {
        let text = String::from_utf8_lossy(line);
        let parsed = Request::parse(&mut line.iter());
        match parsed {
            Ok(Request::Ehlo { host }) => {
                let host = host.to_string();
                let offer = ehlo::Offer {
                    max_size: self.settings.policy.max_message_size,
                    starttls: self.settings.tls.is_some() && !self.stream.is_tls(),
                };
                let r = ehlo::ehlo_reply(&self.settings.policy.hostname, &host, offer);
                self.raw(&r);
                self.helo = Some(host);
                self.esmtp = true;
                self.tx = None;
            }
            Ok(Request::Helo { host }) => {
                self.helo = Some(host.to_string());
                self.esmtp = false;
                self.tx = None;
                let r = ehlo::helo_reply(&self.settings.policy.hostname);
                self.raw(&r);
            }
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
                    Reply::new(501, "5.1.7", "Bad sender address syntax")
                };
                self.reply(r);
            }
            Ok(Request::Data) => return self.data_command(),
            Ok(Request::Rset) => {
                if self.junk() {
                    return Next::Continue;
                }
                self.tx = None;
                self.reply(Reply::new(250, "2.0.0", "Ok"));
            }
            Ok(Request::Noop { .. }) => {
                if !self.junk() {
                    self.reply(Reply::new(250, "2.0.0", "Ok"))
                }
            }
            Ok(Request::Quit) => {
                self.reply(Reply::new(221, "2.0.0", "Bye"));
                return Next::Quit;
            }
            Ok(Request::Vrfy { .. }) => {
                if !self.junk() {
                    self.reply(Reply::new(
                        252,
                        "2.5.2",
                        "Cannot VRFY user, but will accept message and attempt delivery",
                    ))
                }
            }
            Ok(Request::Help { .. }) => {
                if !self.junk() {
                    self.raw(&ehlo::help_reply())
                }
            }
            Ok(Request::StartTls) => {
                if self.settings.tls.is_none() {
                    self.reply(Reply::new(502, "5.5.1", "STARTTLS not available"));
                } else if self.stream.is_tls() {
                    self.reply(bad_sequence("TLS already active"));
                } else {
                    self.reply(Reply::new(220, "2.0.0", "Ready to start TLS"));
                    return Next::StartTls;
                }
            }
            Ok(Request::Bdat { .. }) => {
                // CHUNKING is not offered; the chunk that follows must not be read as commands.
                self.reply(Reply::new(502, "5.5.1", "BDAT not supported, closing"));
                return Next::Quit;
            }
            Ok(Request::Expn { .. }) => {
                if !self.junk() {
                    self.reply(Reply::new(502, "5.5.1", "EXPN not available"))
                }
            }
            Ok(Request::Auth { .. }) => self.reply(Reply::new(502, "5.5.1", "AUTH not available")),
            Ok(r) => {
                let name = r.name();
                self.reply(Reply::new(502, "5.5.1", format!("{name} not implemented")))
            }
            Err(ProtoError::UnknownCommand) => {
                self.reply(Reply::new(500, "5.5.1", "Unknown command"))
            }
            Err(ProtoError::InvalidRecipientAddress) => {
                self.reply(Reply::new(501, "5.1.3", "Bad recipient address syntax"))
            }
            Err(ProtoError::SyntaxError { syntax }) => {
                self.reply(Reply::new(501, "5.5.4", format!("Syntax: {syntax}")))
            }
            Err(ProtoError::InvalidParameter { param }) => self.reply(Reply::new(
                501,
                "5.5.4",
                format!("Invalid parameter {param}"),
            )),
            Err(ProtoError::UnsupportedParameter { param }) => {
                let p: String = param.chars().filter(|c| !c.is_control()).take(64).collect();
                self.reply(Reply::new(
                    555,
                    "5.5.4",
                    format!("Unsupported parameter {p}"),
                ))
            }
            Err(ProtoError::ResponseTooLong) => {
                self.reply(Reply::new(500, "5.5.2", "Line too long"))
            }
            Err(_) => self.reply(Reply::new(500, "5.5.2", "Syntax error")),
        }
        Next::Continue
    }

    fn mail(&mut self, line: &str, flags: u64, size: u64) -> Reply {
        let p = &self.settings.policy;
        if self.helo.is_none() {
            return bad_sequence("Send HELO/EHLO first");
        }
        if self.tx.is_some() {
            return bad_sequence("Nested MAIL command");
        }
        if let Some(param) = policy::unadvertised_mail_param(line) {
            return unsupported_param(param);
        }
        if p.require_tls && !self.stream.is_tls() {
            return Reply::new(530, "5.7.0", "Must issue a STARTTLS command first");
        }
        if size > p.max_message_size {
            return Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            );
        }
        let smtputf8 = flags & MAIL_SMTPUTF8 != 0;
        let from =
            match policy::extract_path(line).and_then(|raw| policy::parse_sender(raw, smtputf8)) {
                Ok(m) => m.map(|m| m.to_string()).unwrap_or_default(),
                Err(e) => return e.mail_reply(),
            };
        match crate::queue::disk::free_space(&self.settings.state_dir) {
            Ok(free) if free >= p.min_free_space => {}
            Ok(free) => {
                tracing::warn!(
                    free,
                    reserve = p.min_free_space,
                    "disk space below reserve, deferring mail"
                );
                return Reply::new(452, "4.3.1", "Insufficient system storage");
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.settings.state_dir.display(), "cannot check free space");
                return Reply::new(452, "4.3.1", "Insufficient system storage");
            }
        }
        self.tx = Some(Transaction {
            from,
            smtputf8,
            body_8bit: flags & MAIL_BODY_8BITMIME != 0,
            size,
            rcpts: Vec::new(),
            rcpt_attempts: 0,
        });
        Reply::new(250, "2.1.0", "Ok")
    }

    async fn rcpt(&mut self, line: &str) -> Reply {
        let settings = self.settings.clone();
        let p = &settings.policy;
        let trusted = self.trusted;
        let Some(tx) = self.tx.as_mut() else {
            return bad_sequence("Need MAIL command");
        };
        tx.rcpt_attempts += 1;
        if let Some(param) = policy::unadvertised_rcpt_param(line) {
            return unsupported_param(param);
        }
        if tx.rcpts.len() >= p.max_recipients {
            return Reply::new(452, "4.5.3", "Too many recipients");
        }
        let raw = match policy::extract_path(line) {
            Ok(r) => r,
            Err(e) => return e.rcpt_reply(),
        };
        let mailbox = if raw.eq_ignore_ascii_case("postmaster") {
            // RFC 5321 §4.5.1: the unqualified postmaster is ours.
            match p.accept_domains.iter().min() {
                Some(d) => crate::address::Address::new("postmaster", d),
                None => return Reply::new(550, "5.1.1", "No postmaster here"),
            }
        } else {
            match policy::parse_recipient(raw, tx.smtputf8) {
                Ok(m) => m,
                Err(e) => {
                    tracing::info!(client = %self.peer, rcpt = %raw.escape_debug(), reason = %e, "recipient refused");
                    return e.rcpt_reply();
                }
            }
        };
        let address = mailbox.to_string();
        let route = settings.router.route_address(&mailbox, SystemTime::now());
        match policy::decide_rcpt(p, &mailbox, trusted, route) {
            RcptDecision::Accept(route) => {
                if !tx.rcpts.iter().any(|(a, _)| a == &address) {
                    // Recipient verification (known lists, probes of the target): trusted
                    // clients too, so nothing undeliverable is queued.
                    let v = &settings.verify;
                    if v.is_enabled()
                        && let Some(r) = self.inbound.verifier.check(v, &mailbox, &route).await
                    {
                        tracing::info!(client = %self.peer, rcpt = %address, reply = %r, "recipient refused");
                        return r;
                    }
                    tx.rcpts.push((address, route));
                }
                Reply::new(250, "2.1.5", "Ok")
            }
            RcptDecision::Reject(r) => {
                tracing::info!(client = %self.peer, rcpt = %address, reply = %r, "recipient refused");
                r
            }
        }
    }

    /// Count a NOOP/RSET/VRFY/HELP/EXPN; true when it is one too many (no reply: the session
    /// answers `421` and closes).
    fn junk(&mut self) -> bool {
        self.counters.junk += 1;
        self.counters.junk > self.settings.policy.junk_command_limit
    }

    /// A refused recipient is an error towards `hard_error_limit` (directory harvesting), except
    /// `452 4.5.3` (too many recipients: the client sends the rest in another transaction).
    /// Syntax and sequence errors are counted by [`Session::reply`].
    fn count_rcpt(&mut self, r: &Reply) {
        let stats = &self.inbound.stats;
        if r.code < 400 {
            IntakeStats::inc(&stats.rcpts_accepted);
            return;
        }
        IntakeStats::inc(&stats.rcpts_refused);
        if r.esc != "4.5.3" && !(r.code >= 500 && r.esc.starts_with("5.5.")) {
            self.counters.errors += 1;
        }
    }

    fn data_command(&mut self) -> Next {
        match &self.tx {
            None => self.reply(bad_sequence("Need MAIL command")),
            Some(tx) if tx.rcpts.is_empty() && tx.rcpt_attempts > 0 => {
                self.reply(Reply::new(554, "5.5.1", "No valid recipients"))
            }
            Some(tx) if tx.rcpts.is_empty() => self.reply(bad_sequence("Need RCPT command")),
            Some(_) => {
                self.raw("354 End data with <CR><LF>.<CR><LF>\r\n");
                return Next::Data;
            }
        }
        Next::Continue
    }

    /// The DATA block: stream it into the queue's body writer, then judge and commit. False when
    /// the connection must end (client gone, timeout).
    async fn data(&mut self) -> bool {
        let Some(tx) = self.tx.take() else {
            return true;
        };
        // The 354 must reach the client before it sends the content.
        if !self.flush().await {
            return false;
        }
        let settings = self.settings.clone();
        let p = &settings.policy;
        let started = SystemTime::now();
        let mut storage_error = false;
        let mut writer: Option<BodyWriter> = match self.inbound.queue.body_writer() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, "cannot start a message body");
                storage_error = true;
                None
            }
        };
        let tls = self.stream.tls_info();
        let helo = self.helo.clone().unwrap_or_default();
        if let Some(w) = writer.as_mut() {
            let single = (tx.rcpts.len() == 1).then(|| tx.rcpts[0].0.as_str());
            let mut stamp_text = stamp::received(&TraceInfo {
                helo: &helo,
                client_ip: self.peer.ip(),
                hostname: &p.hostname,
                tls: tls.as_ref().map(|(v, c)| (v.as_str(), c.as_str())),
                esmtp: self.esmtp,
                smtputf8: tx.smtputf8,
                single_rcpt: single,
                date: started,
            });
            stamp_text.push_str(&stamp::loop_header(&p.hostname));
            if let Err(e) = w.write(stamp_text.as_bytes()).await {
                tracing::error!(error = %e, "cannot write message body");
                storage_error = true;
                writer = None;
            }
        }
        let mut dec = DataDecoder::new();
        let mut scan = HeaderScan::new(&p.hostname, p.max_header_size);
        let mut dbuf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
        // Two limits (see `Policy::data_time_limit`): no byte for `data_idle_timeout`, or the
        // whole block taking longer than `data_timeout` + its size at DATA_MIN_RATE.
        let data_started = Instant::now();
        let max = p.max_message_size;
        loop {
            if self.pos < self.rbuf.len() {
                dbuf.clear();
                let used = dec.feed(&self.rbuf[self.pos..], &mut dbuf);
                self.pos += used;
                if !scan.is_done() {
                    scan.feed(&dbuf);
                }
                if dec.size > max || scan.too_large {
                    // Refused at the end anyway: stop spooling.
                    writer = None;
                }
                if let Some(w) = writer.as_mut()
                    && !dbuf.is_empty()
                    && let Err(e) = w.write(&dbuf).await
                {
                    tracing::error!(error = %e, "cannot write message body");
                    storage_error = true;
                    writer = None;
                }
                if dec.is_done() {
                    break;
                }
            }
            self.compact();
            let limit = data_started + p.data_time_limit(tx.size, dec.size);
            let deadline = limit.min(Instant::now() + p.data_idle_timeout);
            match self.fill(deadline, false, READ_CHUNK).await {
                ReadOutcome::Data => {}
                ReadOutcome::Timeout => {
                    self.inbound.stats.limit_hit(Limit::DataRate);
                    let overall = Instant::now() >= limit;
                    tracing::info!(
                        client = %self.peer,
                        bytes = dec.size,
                        elapsed = ?data_started.elapsed(),
                        "{}",
                        if overall { "DATA time limit reached" } else { "DATA idle timeout" }
                    );
                    self.reply(Reply::new(
                        421,
                        "4.4.2",
                        if overall {
                            "Time limit for DATA reached, closing connection"
                        } else {
                            "Timeout waiting for DATA, closing connection"
                        },
                    ));
                    return false;
                }
                _ => {
                    tracing::info!(client = %self.peer, bytes = dec.size, "connection lost during DATA");
                    return false;
                }
            }
        }
        scan.finish();
        // Back to command mode: don't keep the DATA-sized buffer on an idle session.
        self.compact();
        self.rbuf.shrink_to(2 * COMMAND_CHUNK);
        let reply = if dec.size > max {
            Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            )
        } else if dec.bare_lf > 0 {
            Reply::new(
                550,
                "5.6.0",
                "Message contains bare LF; lines must end with CRLF",
            )
        } else if dec.bare_cr > 0 {
            // Refused like bare LF rather than normalised: cutover relays bytes verbatim (a
            // rewrite would break DKIM), and a CR that some receivers take for a line end is an
            // SMTP smuggling vector (`\r.\r`).
            Reply::new(
                550,
                "5.6.0",
                "Message contains bare CR; lines must end with CRLF",
            )
        } else if dec.nul > 0 {
            Reply::new(550, "5.6.0", "Message contains NUL bytes")
        } else if scan.too_large {
            Reply::new(
                552,
                "5.3.4",
                "Message header section exceeds fixed maximum size",
            )
        } else if scan.loop_seen {
            Reply::new(
                554,
                "5.4.6",
                "Mail loop detected (our X-Cutover-Loop header)",
            )
        } else if scan.received > p.max_received {
            Reply::new(
                554,
                "5.4.6",
                "Too many hops (Received: headers), mail loop?",
            )
        } else if let (false, Some(w)) = (storage_error, writer) {
            let legs = policy::plan_legs(&tx.rcpts);
            let leg_summary: Vec<String> = legs
                .iter()
                .map(|l| format!("{}:{}", l.target, l.recipients.len()))
                .collect();
            let rcpts: Vec<&str> = tx.rcpts.iter().map(|(a, _)| a.as_str()).collect();
            let env = Envelope {
                mail_from: tx.from.clone(),
                helo,
                client_addr: self.peer,
                received_at: started,
                smtputf8: tx.smtputf8,
                body_8bit: tx.body_8bit,
            };
            match self.inbound.queue.commit(w, env, legs).await {
                Ok(id) => {
                    self.accepted += 1;
                    self.counters.message_accepted();
                    IntakeStats::inc(&self.inbound.stats.messages_accepted);
                    tracing::info!(
                        queue_id = %id,
                        client = %self.peer,
                        from = %tx.from,
                        size = dec.size,
                        rcpts = ?rcpts,
                        legs = ?leg_summary,
                        tls = tls.is_some(),
                        long_lines = dec.long_lines,
                        "accepted"
                    );
                    Reply::new(250, "2.0.0", format!("Ok: queued as {id}"))
                }
                Err(e) => {
                    tracing::error!(client = %self.peer, error = %e, "queue commit failed");
                    Reply::new(
                        451,
                        "4.3.0",
                        "Error: queue storage failure, try again later",
                    )
                }
            }
        } else {
            Reply::new(
                451,
                "4.3.0",
                "Error: queue storage failure, try again later",
            )
        };
        if reply.code != 250 {
            IntakeStats::inc(&self.inbound.stats.messages_refused);
            tracing::info!(client = %self.peer, from = %tx.from, size = dec.size, reply = %reply, "message refused");
        }
        self.reply(reply);
        true
    }

    async fn starttls(&mut self) -> bool {
        if !self.flush().await {
            return false;
        }
        // Anything pipelined in plaintext after STARTTLS is discarded (no command injection).
        self.rbuf.clear();
        self.pos = 0;
        let Some(acceptor) = self.settings.tls.clone() else {
            return false;
        };
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return false;
        };
        let limit = self
            .settings
            .policy
            .command_timeout
            .min(Duration::from_secs(60));
        match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                self.stream = Stream::Tls(Box::new(tls));
                self.helo = None;
                self.esmtp = false;
                self.tx = None;
                if let Some((v, c)) = self.stream.tls_info() {
                    tracing::debug!(client = %self.peer, version = %v, cipher = %c, "TLS established");
                }
                true
            }
            Ok(Err(e)) => {
                tracing::info!(client = %self.peer, error = %e, "TLS handshake failed");
                false
            }
            Err(_) => {
                tracing::info!(client = %self.peer, "TLS handshake timeout");
                false
            }
        }
    }
}

/// `555 5.5.4` for a MAIL/RCPT parameter that cutover does not advertise.
fn unsupported_param(param: String) -> Reply {
    Reply::new(555, "5.5.4", format!("Unsupported parameter {param}"))
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}
