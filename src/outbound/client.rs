//! One SMTP client session to one target host: connect, greeting, EHLO, STARTTLS or implicit TLS
//! per policy, AUTH (only inside TLS whose certificate was verified), then transactions with
//! per-recipient results. Commands go through mail-send; DATA is streamed here from memory or
//! from the spool file in bounded chunks, dot-stuffed on the way ([`DotStuffer`]), with an idle
//! timeout on every read and write and an overall cap that grows with the message size
//! ([`data_cap`]). Several transactions may share a session; any transaction that ends without a
//! final 2xx leaves the session clean (RSET) or marks it broken. Never decides routes or retries:
//! it reports an [`Outcome`] per recipient and the caller records it.
//!
//! TLS policy: `none` is plaintext; `implicit` and `required` fail (deferred) without TLS or with
//! a certificate that does not verify (unless `tls_verify = false`); `opportunistic` uses
//! STARTTLS when offered, and after a certificate verification failure reconnects and delivers
//! over TLS *without* verification (Postfix's `may`), never in plaintext. Plaintext only when the
//! server does not offer STARTTLS at all.

use super::reply::Outcome;
use crate::config::TlsMode;
use crate::tls_client::Connector;
use mail_send::SmtpClient;
use mail_send::smtp::message::Parameters;
use smtp_proto::{EXT_START_TLS, EhloResponse};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Bytes of body read, stuffed and written at a time: the memory a transaction holds for its
/// body (at most twice this after stuffing) whatever the message size.
pub const DATA_CHUNK: usize = 64 * 1024;

/// The slowest average transfer rate (bytes per second) that [`data_cap`] still allows.
pub const DATA_MIN_RATE: u64 = 64 * 1024;

/// How to reach and talk to one host of a target.
#[derive(Clone)]
pub struct ConnectSpec {
    /// Host name for SNI and certificate checks (or the IP literal).
    pub host: String,
    pub addr: SocketAddr,
    pub tls: TlsMode,
    /// The policy's connector (verifying unless `tls_verify = false`) and the unverified one
    /// the opportunistic fallback uses.
    pub connector: Connector,
    /// EHLO name (the gateway hostname).
    pub helo: String,
    pub connect_timeout: Duration,
    /// Idle timeout: the limit for each read and write (a stalled peer is detected after this
    /// long without progress); also the base of the DATA cap, see [`data_cap`].
    pub timeout: Duration,
    /// AUTH username and password. Sent only inside TLS whose certificate was verified.
    pub auth: Option<(String, String)>,
}

enum Stream {
    Plain(SmtpClient<TcpStream>),
    Tls(Box<SmtpClient<TlsStream<TcpStream>>>),
}

/// An open session, ready for a transaction.
pub struct Session {
    stream: Stream,
    /// `host:port` for logs and DSNs.
    pub remote: String,
    /// `TLSv1.3 TLS13_AES_256_GCM_SHA384` when encrypted, with ` (unverified)` appended when the
    /// server certificate was not verified.
    pub tls: Option<String>,
    /// TLS is up and the server certificate was verified.
    pub tls_verified: bool,
    pub smtputf8: bool,
    pub eight_bit: bool,
    /// Transactions completed on this session.
    pub transactions: usize,
    broken: bool,
    timeout: Duration,
}

/// A message body as queued: CRLF line ends, ending with CRLF, not dot-stuffed.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// Already in memory.
    Bytes(&'a [u8]),
    /// A spool file, read in [`DATA_CHUNK`] pieces while sending.
    File(&'a Path),
    /// Header fields sent first (an ARC set sealed for this target), then the body.
    Prefixed(&'a [u8], &'a Body<'a>),
}

/// A transaction to run.
pub struct Transaction<'a> {
    /// Envelope sender; empty = `<>`.
    pub mail_from: &'a str,
    /// Final recipient addresses (after rcpt_domain rewrite).
    pub rcpts: &'a [String],
    /// The message exactly as queued.
    pub body: Body<'a>,
    /// Body size in bytes (scales the DATA cap).
    pub size: u64,
    pub smtputf8: bool,
    /// The sender declared `BODY=8BITMIME`.
    pub body_8bit: bool,
}

/// The overall limit for one DATA transfer (body, end of data and the final reply):
///
/// `cap = timeout + size / DATA_MIN_RATE` (64 KiB/s), never less than `timeout`.
///
/// A 50 MiB message with the default 5 min `timeout` gets 300 s + 800 s = 1100 s, so a slow but
/// moving link is not cut the way a fixed 300 s would cut it, while a peer that trickles slower
/// than 64 KiB/s on average cannot hold a connection forever. A stalled peer is caught sooner by
/// the idle `timeout` on each write.
pub fn data_cap(timeout: Duration, size: u64) -> Duration {
    timeout.saturating_add(Duration::from_secs_f64(size as f64 / DATA_MIN_RATE as f64))
}

/// Dot-stuffing for DATA (RFC 5321 §4.5.2), incremental: the state crosses chunk boundaries, so
/// any chunking of the body gives the same bytes on the wire. A `.` at the start of a line (the
/// start of the body or after any LF, so a bare LF cannot smuggle an end-of-data line past a
/// receiver that ends lines at LF) is doubled. [`DotStuffer::finish`] gives the end of data.
#[derive(Clone, Debug)]
pub struct DotStuffer {
    line_start: bool,
    empty: bool,
    last: [u8; 2],
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl DotStuffer {
    pub fn new() -> Self {
        DotStuffer {
            line_start: true,
            empty: true,
            last: [0, 0],
        }
    }

    /// Append `chunk`, stuffed, to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        match chunk {
            [] => return,
            [b] => self.last = [self.last[1], *b],
            [.., a, b] => self.last = [*a, *b],
        }
        self.empty = false;
        let mut rest = chunk;
        while let [first, ..] = rest {
            if self.line_start && *first == b'.' {
                out.push(b'.');
            }
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    out.extend_from_slice(&rest[..=i]);
                    self.line_start = true;
                    rest = &rest[i + 1..];
                }
                None => {
                    out.extend_from_slice(rest);
                    self.line_start = false;
                    rest = &[];
                }
            }
        }
    }

    /// The end-of-data sequence: `.` CRLF, preceded by a CRLF when the data did not end with
    /// one (so the dot always stands on a line of its own).
    pub fn finish(&self) -> &'static [u8] {
        if self.empty || self.last == *b"\r\n" {
            b".\r\n"
        } else {
            b"\r\n.\r\n"
        }
    }
}

/// Does `bytes` contain anything outside 7-bit ASCII?
pub fn has_8bit(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b >= 0x80)
}

/// Where the body bytes come from during one transaction: the prefix (if any), then the body.
struct Source<'a> {
    prefix: &'a [u8],
    body: Stored<'a>,
}

enum Stored<'a> {
    Bytes(&'a [u8]),
    File(tokio::fs::File),
}

/// Take the next piece (at most `max` bytes) off the front of an in-memory slice.
fn take<'a>(b: &mut &'a [u8], max: usize) -> &'a [u8] {
    let (head, tail) = b.split_at(b.len().min(max));
    *b = tail;
    head
}

impl<'a> Source<'a> {
    async fn open(body: Body<'a>) -> std::io::Result<Source<'a>> {
        let (prefix, body) = match body {
            Body::Prefixed(p, inner) => (p, *inner),
            b => (&[][..], b),
        };
        let body = match body {
            Body::Bytes(b) => Stored::Bytes(b),
            Body::File(p) => Stored::File(tokio::fs::File::open(p).await?),
            // One level of prefix only; a nested one carries no bytes of its own here.
            Body::Prefixed(_, _) => Stored::Bytes(&[]),
        };
        Ok(Source { prefix, body })
    }

    /// The next piece (at most `buf.len()` bytes, or a slice of the in-memory body); empty at
    /// the end.
    async fn next<'b>(&'b mut self, buf: &'b mut [u8]) -> std::io::Result<&'b [u8]> {
        if !self.prefix.is_empty() {
            return Ok(take(&mut self.prefix, buf.len()));
        }
        match &mut self.body {
            Stored::Bytes(b) => Ok(take(b, buf.len())),
            Stored::File(f) => {
                let n = f.read(buf).await?;
                Ok(&buf[..n])
            }
        }
    }

    /// Scan for 8-bit bytes (streaming, bounded memory), then rewind.
    async fn scan_8bit(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        if has_8bit(self.prefix) {
            return Ok(true);
        }
        match &mut self.body {
            Stored::Bytes(b) => Ok(has_8bit(b)),
            Stored::File(f) => {
                let mut found = false;
                loop {
                    let n = f.read(buf).await?;
                    if n == 0 {
                        break;
                    }
                    if has_8bit(&buf[..n]) {
                        found = true;
                        break;
                    }
                }
                f.rewind().await?;
                Ok(found)
            }
        }
    }
}

/// Why a DATA transfer did not get a final reply. All of them leave the connection in an
/// unknown state (the session is dropped).
#[derive(Debug, thiserror::Error)]
enum DataError {
    #[error("local error reading the queued body: {0}")]
    Body(std::io::Error),
    #[error("timeout: no progress sending the message for {0:?}")]
    Idle(Duration),
    #[error("timeout: message transfer not finished within {0:?} (cap for {1} bytes)")]
    Cap(Duration, u64),
    #[error("timeout: no reply after the end of data within {0:?}")]
    Reply(Duration),
    #[error("connection error sending the message: {0}")]
    Io(#[from] std::io::Error),
    #[error("after the end of data: {0}")]
    Smtp(mail_send::Error),
}

fn err_outcome(e: &mail_send::Error) -> Outcome {
    match e {
        mail_send::Error::UnexpectedReply(r) | mail_send::Error::AuthenticationFailed(r) => {
            Outcome::from_reply(r.code, &reply_text(r))
        }
        mail_send::Error::Timeout => Outcome::local("timeout talking to the server"),
        other => Outcome::local(&other.to_string()),
    }
}

fn reply_text(r: &smtp_proto::Response<String>) -> String {
    if r.esc[0] != 0 && !r.message.starts_with(|c: char| c.is_ascii_digit()) {
        format!("{}.{}.{} {}", r.esc[0], r.esc[1], r.esc[2], r.message)
    } else {
        r.message.clone()
    }
}

fn is_broken(e: &mail_send::Error) -> bool {
    !matches!(e, mail_send::Error::UnexpectedReply(_))
}

macro_rules! on_stream {
    ($s:expr, $c:ident => $body:expr) => {
        match $s {
            Stream::Plain($c) => $body,
            Stream::Tls($c) => $body,
        }
    };
}

async fn connect(spec: &ConnectSpec, remote: &str) -> Result<SmtpClient<TcpStream>, Outcome> {
    let c = SmtpClient::connect(spec.addr, spec.connect_timeout)
        .await
        .map_err(|e| {
            Outcome::local(&format!("connect to {remote}: {}", err_outcome(&e).reply()))
        })?;
    // Commands and the end-of-data dot are small writes that wait for a reply: without
    // TCP_NODELAY, Nagle + delayed ACK stalls each transaction by ~40 ms.
    let _ = c.stream.set_nodelay(true);
    Ok(SmtpClient {
        stream: c.stream,
        timeout: spec.timeout,
    })
}

async fn greet<T: AsyncRead + AsyncWrite + Unpin>(
    c: &mut SmtpClient<T>,
    helo: &str,
) -> Result<EhloResponse<String>, Outcome> {
    let g = tokio::time::timeout(c.timeout, c.read())
        .await
        .map_err(|_| Outcome::local("timeout waiting for the greeting"))?
        .map_err(|e| err_outcome(&e))?;
    if g.code != 220 {
        return Err(Outcome::from_reply(g.code, &reply_text(&g)).into_deferred_if_greeting());
    }
    c.ehlo(helo).await.map_err(|e| err_outcome(&e))
}

impl Outcome {
    /// A 5xx greeting means "this host won't talk to us", not "this recipient is invalid":
    /// RFC 5321 lets the client try the next MX, so treat it as temporary for the host.
    fn into_deferred_if_greeting(self) -> Outcome {
        match self {
            Outcome::Failed { reply } => Outcome::Deferred { reply },
            o => o,
        }
    }
}

/// A TLS attempt that did not work out.
enum TlsFailure {
    /// The handshake failed; `cert` when it looks like a certificate verification failure
    /// (the opportunistic fallback applies).
    Handshake { why: String, cert: bool },
    /// Anything else (STARTTLS refused, connection lost, EHLO failed).
    Other(Outcome),
}

impl TlsFailure {
    fn outcome(self) -> Outcome {
        match self {
            TlsFailure::Handshake { why, .. } => Outcome::local(&why),
            TlsFailure::Other(o) => o,
        }
    }
}

/// rustls errors that mean "the certificate did not verify" (the platform verifier reports some,
/// e.g. an empty system trust store, as `General`/`Other`).
fn is_cert_failure(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(_) | rustls::Error::General(_) | rustls::Error::Other(_)
    )
}

async fn handshake(
    c: SmtpClient<TcpStream>,
    connector: &TlsConnector,
    host: &str,
    remote: &str,
) -> Result<SmtpClient<TlsStream<TcpStream>>, TlsFailure> {
    c.into_tls(connector, host)
        .await
        .map_err(|e| TlsFailure::Handshake {
            cert: matches!(&e, mail_send::Error::Tls(t) if is_cert_failure(t)),
            why: format!("TLS handshake with {remote} failed: {e}"),
        })
}

async fn starttls(
    mut c: SmtpClient<TcpStream>,
    connector: &TlsConnector,
    spec: &ConnectSpec,
    remote: &str,
) -> Result<(SmtpClient<TlsStream<TcpStream>>, EhloResponse<String>), TlsFailure> {
    let r = c.cmd(b"STARTTLS\r\n").await.map_err(|e| {
        TlsFailure::Other(Outcome::local(&format!(
            "STARTTLS with {remote} failed: {}",
            err_outcome(&e).reply()
        )))
    })?;
    if r.code != 220 {
        return Err(TlsFailure::Other(Outcome::local(&format!(
            "STARTTLS with {remote} refused: {} {}",
            r.code,
            reply_text(&r)
        ))));
    }
    let mut c = handshake(c, connector, &spec.host, remote).await?;
    let ehlo = c
        .ehlo(&spec.helo)
        .await
        .map_err(|e| TlsFailure::Other(err_outcome(&e)))?;
    Ok((c, ehlo))
}

fn tls_desc(c: &SmtpClient<TlsStream<TcpStream>>, verified: bool) -> String {
    let conn = c.tls_connection();
    let d = format!(
        "{} {}",
        conn.protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        conn.negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default()
    )
    .replace("TLSv1_3", "TLSv1.3")
    .replace("TLSv1_2", "TLSv1.2");
    if verified {
        d
    } else {
        format!("{d} (unverified)")
    }
}

/// Write all of `buf`, each write getting `idle` to make progress.
async fn write_idle<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut buf: &[u8],
    idle: Duration,
) -> Result<(), DataError> {
    while !buf.is_empty() {
        let n = tokio::time::timeout(idle, w.write(buf))
            .await
            .map_err(|_| DataError::Idle(idle))??;
        if n == 0 {
            return Err(DataError::Io(std::io::ErrorKind::WriteZero.into()));
        }
        buf = &buf[n..];
    }
    Ok(())
}

/// After `354`: stream the body stuffed, end it, and read the final reply. Idle timeout per
/// write, everything within `cap` (the final reply gets at least `idle`).
async fn transfer<T: AsyncRead + AsyncWrite + Unpin>(
    c: &mut SmtpClient<T>,
    src: &mut Source<'_>,
    idle: Duration,
    size: u64,
) -> Result<smtp_proto::Response<String>, DataError> {
    let cap = data_cap(idle, size);
    let deadline = Instant::now() + cap;
    let mut buf = vec![0u8; DATA_CHUNK];
    let mut out = Vec::with_capacity(DATA_CHUNK + DATA_CHUNK / 16);
    let stream = &mut c.stream;
    let send = async {
        let mut stuffer = DotStuffer::new();
        loop {
            let chunk = src.next(&mut buf).await.map_err(DataError::Body)?;
            if chunk.is_empty() {
                break;
            }
            out.clear();
            stuffer.push(chunk, &mut out);
            write_idle(stream, &out, idle).await?;
        }
        write_idle(stream, stuffer.finish(), idle).await?;
        tokio::time::timeout(idle, stream.flush())
            .await
            .map_err(|_| DataError::Idle(idle))??;
        Ok::<(), DataError>(())
    };
    tokio::time::timeout_at(deadline, send)
        .await
        .map_err(|_| DataError::Cap(cap, size))??;
    // Whatever is still in the socket buffers drains within the cap; the server may then take
    // its time to accept (RFC 5321 §4.5.3.2.6), at least one idle timeout.
    let wait = deadline.saturating_duration_since(Instant::now()).max(idle);
    tokio::time::timeout(wait, c.read())
        .await
        .map_err(|_| DataError::Reply(wait))?
        .map_err(DataError::Smtp)
}

impl Session {
    /// Connect and get ready for MAIL FROM. Errors are per-host outcomes (deferred unless the
    /// policy makes delivery impossible).
    pub async fn open(spec: &ConnectSpec) -> Result<Session, Outcome> {
        let remote = if spec.addr.is_ipv6() {
            format!("[{}]:{}", spec.addr.ip(), spec.addr.port())
        } else {
            spec.addr.to_string()
        };
        let verifies = spec.connector.verifies;
        let (stream, ehlo, verified) = match spec.tls {
            TlsMode::Implicit => {
                let plain = connect(spec, &remote).await?;
                let mut c = handshake(plain, &spec.connector.primary, &spec.host, &remote)
                    .await
                    .map_err(TlsFailure::outcome)?;
                let ehlo = greet(&mut c, &spec.helo).await?;
                (Stream::Tls(Box::new(c)), ehlo, verifies)
            }
            TlsMode::None => {
                let mut plain = connect(spec, &remote).await?;
                let ehlo = greet(&mut plain, &spec.helo).await?;
                (Stream::Plain(plain), ehlo, false)
            }
            TlsMode::Opportunistic | TlsMode::Required => {
                let mut plain = connect(spec, &remote).await?;
                let ehlo = greet(&mut plain, &spec.helo).await?;
                if !ehlo.has_capability(EXT_START_TLS) {
                    if spec.tls == TlsMode::Required {
                        return Err(Outcome::local(&format!(
                            "TLS is required for this target but {remote} does not offer STARTTLS"
                        )));
                    }
                    (Stream::Plain(plain), ehlo, false)
                } else {
                    match starttls(plain, &spec.connector.primary, spec, &remote).await {
                        Ok((c, ehlo)) => (Stream::Tls(Box::new(c)), ehlo, verifies),
                        // Like Postfix's "may", but encrypted: a certificate that does not verify
                        // still gets TLS, on a fresh connection, never plaintext. Not when
                        // credentials are to be sent: those need a verified certificate.
                        Err(TlsFailure::Handshake { why, cert: true })
                            if spec.tls == TlsMode::Opportunistic
                                && verifies
                                && spec.auth.is_none() =>
                        {
                            tracing::warn!(remote = %remote, error = %why, "certificate not verified; retrying with unverified TLS (tls = opportunistic)");
                            let mut plain = connect(spec, &remote).await?;
                            let ehlo = greet(&mut plain, &spec.helo).await?;
                            if !ehlo.has_capability(EXT_START_TLS) {
                                return Err(Outcome::local(&format!(
                                    "{why}; on reconnecting {remote} no longer offers STARTTLS (not falling back to plaintext)"
                                )));
                            }
                            let (c, ehlo) =
                                starttls(plain, &spec.connector.unverified, spec, &remote)
                                    .await
                                    .map_err(TlsFailure::outcome)?;
                            (Stream::Tls(Box::new(c)), ehlo, false)
                        }
                        Err(f) => return Err(f.outcome()),
                    }
                }
            }
        };
        let tls = match &stream {
            Stream::Plain(_) => None,
            Stream::Tls(c) => Some(tls_desc(c, verified)),
        };
        let s = Session {
            stream,
            remote,
            tls,
            tls_verified: verified,
            smtputf8: ehlo.has_capability(smtp_proto::EXT_SMTP_UTF8),
            eight_bit: ehlo.has_capability(smtp_proto::EXT_8BIT_MIME),
            transactions: 0,
            broken: false,
            timeout: spec.timeout,
        };
        match &spec.auth {
            Some((user, pass)) => s.authenticated(user, pass, &ehlo).await,
            None => Ok(s),
        }
    }

    /// The session after AUTH with `user`/`pass`, only inside verified TLS (defence in depth:
    /// config check rejects such targets); closed when it refuses locally.
    async fn authenticated(
        mut self,
        user: &str,
        pass: &str,
        ehlo: &EhloResponse<String>,
    ) -> Result<Session, Outcome> {
        // Credentials never travel in cleartext or to a server whose certificate was not
        // verified.
        if !self.tls_verified {
            let how = if self.tls.is_none() {
                "the connection is not encrypted"
            } else {
                "the server certificate was not verified"
            };
            self.quit().await;
            return Err(Outcome::local(&format!(
                "AUTH refused locally: {how}; credentials are only sent inside verified TLS (tls = \"required\" or \"implicit\", tls_verify = true)"
            )));
        }
        let creds = mail_send::Credentials::new(user, pass);
        let r = on_stream!(&mut self.stream, c => c.authenticate(&creds, ehlo).await.map(|_| ()));
        r.map(|()| self).map_err(|e| match e {
            // Bad credentials are an operator problem: keep the mail, retry later.
            mail_send::Error::AuthenticationFailed(r) => Outcome::local(&format!(
                "authentication failed: {} {}",
                r.code,
                reply_text(&r)
            )),
            other => Outcome::local(&format!("AUTH: {other}")),
        })
    }

    /// Is the session still usable for another transaction?
    pub fn usable(&self) -> bool {
        !self.broken
    }

    /// Run one transaction; one outcome per recipient, in order.
    pub async fn send(&mut self, tx: &Transaction<'_>) -> Vec<Outcome> {
        let n = tx.rcpts.len();
        if self.broken {
            return vec![Outcome::local("connection lost (session not usable)"); n];
        }
        if tx.smtputf8 && !self.smtputf8 {
            let o = Outcome::local_permanent(
                "550 5.6.7 the message needs SMTPUTF8 and the server does not offer it",
            );
            return vec![o; n];
        }
        let mut src = match Source::open(tx.body).await {
            Ok(s) => s,
            Err(e) => {
                let o = Outcome::local(&format!("local error reading the queued body: {e}"));
                return vec![o; n];
            }
        };
        let mut params = Parameters::new();
        if tx.smtputf8 {
            params.add("SMTPUTF8");
        }
        if tx.body_8bit {
            if self.eight_bit {
                params.add(("BODY", "8BITMIME"));
            } else {
                // RFC 6152 §3: without 8BITMIME only 7-bit data may be sent. A body declared
                // 8BITMIME that is 7-bit clean goes as is (no BODY=); anything else would need
                // MIME downgrading, which cutover does not do (it would break DKIM).
                let mut buf = vec![0u8; DATA_CHUNK];
                match src.scan_8bit(&mut buf).await {
                    Ok(false) => {}
                    Ok(true) => {
                        let o = Outcome::local_permanent(&format!(
                            "554 5.6.3 message has 8-bit content and {} does not offer 8BITMIME",
                            self.remote
                        ));
                        return vec![o; n];
                    }
                    Err(e) => {
                        let o =
                            Outcome::local(&format!("local error reading the queued body: {e}"));
                        return vec![o; n];
                    }
                }
            }
        }
        if let Err(e) = on_stream!(&mut self.stream, c => c.mail_from(tx.mail_from, &params).await)
        {
            self.broken |= is_broken(&e);
            let o = err_outcome(&e);
            self.reset().await;
            return vec![o; n];
        }
        let none = Parameters::new();
        let mut results: Vec<Option<Outcome>> = Vec::with_capacity(n);
        for r in tx.rcpts {
            match on_stream!(&mut self.stream, c => c.rcpt_to(r, &none).await) {
                Ok(()) => results.push(None),
                Err(e) => {
                    self.broken |= is_broken(&e);
                    results.push(Some(err_outcome(&e)));
                    if self.broken {
                        break;
                    }
                }
            }
        }
        if self.broken {
            let o = Outcome::local("connection lost during RCPT");
            results.resize(n, Some(o.clone()));
            return results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| o.clone()))
                .collect();
        }
        if results.iter().all(Option::is_some) {
            self.reset().await;
            return results.into_iter().flatten().collect();
        }
        let o = self.data(&mut src, tx.size).await;
        if !matches!(o, Outcome::Delivered { .. }) {
            self.reset().await;
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| o.clone()))
            .collect()
    }

    /// Recipient verification: would the server take mail for `rcpt`? `MAIL FROM:<>` (with
    /// `SMTPUTF8` for a non-ASCII address when offered), `RCPT TO:<rcpt>`, then `RSET`; no DATA.
    /// The outcome is the RCPT's: delivered = known, failed (5xx) = refused, deferred = 4xx or
    /// the question could not be asked. A refused `MAIL FROM:<>` is deferred, never "unknown".
    pub async fn probe(&mut self, rcpt: &str) -> Outcome {
        if self.broken {
            return Outcome::local("connection lost (session not usable)");
        }
        let mut params = Parameters::new();
        if !rcpt.is_ascii() && self.smtputf8 {
            params.add("SMTPUTF8");
        }
        if let Err(e) = on_stream!(&mut self.stream, c => c.mail_from("", &params).await) {
            self.broken |= is_broken(&e);
            let o = err_outcome(&e);
            self.reset().await;
            return Outcome::local(&format!("MAIL FROM:<> not accepted: {}", o.reply()));
        }
        let none = Parameters::new();
        let o = match on_stream!(&mut self.stream, c => c.rcpt_to(rcpt, &none).await) {
            Ok(()) => Outcome::from_reply(250, "recipient accepted"),
            Err(e) => {
                self.broken |= is_broken(&e);
                err_outcome(&e)
            }
        };
        self.reset().await;
        o
    }

    /// DATA: the command, the streamed body, the final reply.
    async fn data(&mut self, src: &mut Source<'_>, size: u64) -> Outcome {
        let r = on_stream!(&mut self.stream, c => c.cmd(b"DATA\r\n").await);
        match r {
            Ok(r) if r.code == 354 => {}
            // Refused: the transaction is still open on the server; the caller's RSET closes it.
            Ok(r) if r.code >= 400 => return Outcome::from_reply(r.code, &reply_text(&r)),
            Ok(r) => {
                return Outcome::local(&format!(
                    "unexpected reply to DATA: {} {}",
                    r.code,
                    reply_text(&r)
                ));
            }
            Err(e) => {
                self.broken |= is_broken(&e);
                return err_outcome(&e);
            }
        }
        let idle = self.timeout;
        let r = on_stream!(&mut self.stream, c => transfer(c, src, idle, size).await);
        match r {
            Ok(r) => {
                self.transactions += 1;
                Outcome::from_reply(r.code, &reply_text(&r))
            }
            Err(e) => {
                // Cut mid-body, or no reply after the final dot: it is unknown whether the
                // server took the message, so retry (at most one duplicate, never a loss).
                self.broken = true;
                tracing::debug!(remote = %self.remote, error = %e, "DATA failed");
                Outcome::local(&format!("DATA: {e}"))
            }
        }
    }

    async fn reset(&mut self) {
        if !self.broken && on_stream!(&mut self.stream, c => c.rset().await).is_err() {
            self.broken = true;
        }
    }

    /// Say goodbye (best effort).
    pub async fn quit(self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            match self.stream {
                Stream::Plain(c) => c.quit().await,
                Stream::Tls(c) => (*c).quit().await,
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stuff_chunks(input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
        cuts.sort_unstable();
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([input.len()]) {
            s.push(&input[at..c], &mut out);
            at = c;
        }
        out.extend_from_slice(s.finish());
        out
    }

    /// A receiver that ends lines at LF (RFC 5321 §4.5.2): drops one leading dot per line and
    /// stops at the `.` CRLF line. The content and the bytes consumed.
    fn receive(wire: &[u8]) -> Option<(Vec<u8>, usize)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let end = wire[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(wire.len(), |i| at + i + 1);
            let line = &wire[at..end];
            at = end;
            if line == b".\r\n" {
                return Some((out, at));
            }
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        None
    }

    fn expected(input: &[u8]) -> Vec<u8> {
        let mut e = input.to_vec();
        if !e.is_empty() && !e.ends_with(b"\r\n") {
            e.extend_from_slice(b"\r\n");
        }
        e
    }

    #[test]
    fn stuffing_examples() {
        assert_eq!(stuff_chunks(b"", &[]), b".\r\n");
        assert_eq!(stuff_chunks(b"a\r\n", &[]), b"a\r\n.\r\n");
        assert_eq!(stuff_chunks(b".\r\n", &[]), b"..\r\n.\r\n");
        assert_eq!(
            stuff_chunks(b"a\r\n.b\r\n..c\r\n", &[]),
            b"a\r\n..b\r\n...c\r\n.\r\n"
        );
        // A dot right after a chunk boundary at a line start is still stuffed.
        assert_eq!(stuff_chunks(b"a\r\n.b\r\n", &[3]), b"a\r\n..b\r\n.\r\n");
        // No final CRLF: one is added before the dot; a bare LF cannot end the data.
        assert_eq!(stuff_chunks(b"a", &[]), b"a\r\n.\r\n");
        assert_eq!(stuff_chunks(b"a\n.\r\n", &[2]), b"a\n..\r\n.\r\n");
        assert_eq!(stuff_chunks(b"a\n", &[]), b"a\n\r\n.\r\n");
        assert_eq!(stuff_chunks(b"a\r", &[1]), b"a\r\r\n.\r\n");
    }

    #[test]
    fn eight_bit_scan() {
        assert!(!has_8bit(b"plain ascii\r\n\x7f"));
        assert!(has_8bit("grüße".as_bytes()));
    }

    #[test]
    fn data_cap_scales_with_size() {
        let t = Duration::from_secs(300);
        assert_eq!(data_cap(t, 0), t);
        assert_eq!(data_cap(t, 50 * 1024 * 1024), Duration::from_secs(1100));
        assert_eq!(
            data_cap(Duration::from_secs(2), 1024 * 1024),
            Duration::from_secs(18)
        );
    }

    fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                3 => Just(b'.'),
                3 => Just(b'\r'),
                3 => Just(b'\n'),
                2 => Just(b'a'),
                1 => any::<u8>(),
            ],
            0..200,
        )
    }

    proptest! {
        /// unstuff(stuff(chunks)) == input for any chunking, the end of data comes only at the
        /// end, and the wire bytes do not depend on the chunking.
        #[test]
        fn stuffing_round_trips(input in body_bytes(), cuts in prop::collection::vec(0usize..200, 0..8)) {
            let wire = stuff_chunks(&input, &cuts);
            prop_assert_eq!(&wire, &stuff_chunks(&input, &[]));
            prop_assert_eq!(receive(&wire), Some((expected(&input), wire.len())));
        }

        /// CRLF-only bodies (what the queue holds) through cutover's own CRLF-strict receiver.
        #[test]
        fn stuffing_matches_the_inbound_decoder(lines in prop::collection::vec(prop::collection::vec(prop_oneof![Just(b'.'), Just(b'\r'), Just(b'x')], 0..6), 0..12), cuts in prop::collection::vec(0usize..100, 0..8)) {
            let mut input = Vec::new();
            for l in &lines {
                input.extend_from_slice(l);
                input.extend_from_slice(b"\r\n");
            }
            let wire = stuff_chunks(&input, &cuts);
            let mut dec = crate::inbound::data::DataDecoder::new();
            let mut out = Vec::new();
            let used = dec.feed(&wire, &mut out);
            prop_assert!(dec.is_done());
            prop_assert_eq!(used, wire.len());
            prop_assert_eq!(out, input);
        }
    }
}
