//! One SMTP client session to one target host (mail-send): connect, greeting, EHLO, STARTTLS or
//! implicit TLS per policy, AUTH, then transactions with per-recipient results. Several
//! transactions may share a session (RSET between them). Never decides routes or retries: it
//! reports an [`Outcome`] per recipient and the caller records it.

use super::reply::Outcome;
use crate::config::TlsMode;
use mail_send::SmtpClient;
use mail_send::smtp::message::Parameters;
use smtp_proto::{EXT_START_TLS, EhloResponse};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How to reach and talk to one host of a target.
#[derive(Clone)]
pub struct ConnectSpec {
    /// Host name for SNI and certificate checks (or the IP literal).
    pub host: String,
    pub addr: SocketAddr,
    pub tls: TlsMode,
    pub connector: TlsConnector,
    /// EHLO name (the gateway hostname).
    pub helo: String,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// AUTH username and password.
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
    /// `TLSv1.3 TLS13_AES_256_GCM_SHA384` when encrypted.
    pub tls: Option<String>,
    pub smtputf8: bool,
    pub eight_bit: bool,
    /// Transactions completed on this session.
    pub transactions: usize,
    broken: bool,
}

/// A transaction to run.
pub struct Transaction<'a> {
    /// Envelope sender; empty = `<>`.
    pub mail_from: &'a str,
    /// Final recipient addresses (after rcpt_domain rewrite).
    pub rcpts: &'a [String],
    /// The message exactly as queued (CRLF line ends).
    pub body: &'a [u8],
    pub smtputf8: bool,
    pub body_8bit: bool,
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

async fn greet<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    c: &mut SmtpClient<T>,
    helo: &str,
) -> Result<EhloResponse<String>, Outcome> {
    let g = c.read().await.map_err(|e| err_outcome(&e))?;
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

fn tls_desc(c: &SmtpClient<TlsStream<TcpStream>>) -> String {
    let conn = c.tls_connection();
    format!(
        "{} {}",
        conn.protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        conn.negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default()
    )
    .replace("TLSv1_3", "TLSv1.3")
    .replace("TLSv1_2", "TLSv1.2")
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
        let plain = SmtpClient::connect(spec.addr, spec.connect_timeout)
            .await
            .map_err(|e| {
                Outcome::local(&format!("connect to {remote}: {}", err_outcome(&e).reply()))
            })?;
        // Commands and the end-of-data dot are small writes that wait for a reply: without
        // TCP_NODELAY, Nagle + delayed ACK stalls each transaction by ~40 ms.
        let _ = plain.stream.set_nodelay(true);
        let mut plain = SmtpClient {
            stream: plain.stream,
            timeout: spec.timeout,
        };
        let (stream, ehlo, tls) = match spec.tls {
            TlsMode::Implicit => {
                let mut c = plain
                    .into_tls(&spec.connector, &spec.host)
                    .await
                    .map_err(|e| Outcome::local(&format!("TLS handshake with {remote}: {e}")))?;
                let ehlo = greet(&mut c, &spec.helo).await?;
                let d = tls_desc(&c);
                (Stream::Tls(Box::new(c)), ehlo, Some(d))
            }
            TlsMode::None => {
                let ehlo = greet(&mut plain, &spec.helo).await?;
                (Stream::Plain(plain), ehlo, None)
            }
            TlsMode::Opportunistic | TlsMode::Required => {
                let ehlo = greet(&mut plain, &spec.helo).await?;
                if ehlo.has_capability(EXT_START_TLS) {
                    match plain.start_tls(&spec.connector, &spec.host).await {
                        Ok(mut c) => {
                            let ehlo = c.ehlo(&spec.helo).await.map_err(|e| err_outcome(&e))?;
                            let d = tls_desc(&c);
                            (Stream::Tls(Box::new(c)), ehlo, Some(d))
                        }
                        Err(e) if spec.tls == TlsMode::Opportunistic => {
                            // Like Postfix's "may": fall back to plaintext on a fresh connection.
                            tracing::warn!(remote = %remote, error = %e, "STARTTLS failed; retrying without TLS (tls = opportunistic)");
                            let c = SmtpClient::connect(spec.addr, spec.connect_timeout)
                                .await
                                .map_err(|e| {
                                    Outcome::local(&format!("connect to {remote}: {e}"))
                                })?;
                            let _ = c.stream.set_nodelay(true);
                            let mut c = SmtpClient {
                                stream: c.stream,
                                timeout: spec.timeout,
                            };
                            let ehlo = greet(&mut c, &spec.helo).await?;
                            (Stream::Plain(c), ehlo, None)
                        }
                        Err(e) => {
                            return Err(Outcome::local(&format!(
                                "STARTTLS with {remote} failed: {e}"
                            )));
                        }
                    }
                } else if spec.tls == TlsMode::Required {
                    return Err(Outcome::local(&format!(
                        "TLS is required for this target but {remote} does not offer STARTTLS"
                    )));
                } else {
                    (Stream::Plain(plain), ehlo, None)
                }
            }
        };
        let mut s = Session {
            stream,
            remote,
            tls,
            smtputf8: ehlo.has_capability(smtp_proto::EXT_SMTP_UTF8),
            eight_bit: ehlo.has_capability(smtp_proto::EXT_8BIT_MIME),
            transactions: 0,
            broken: false,
        };
        if let Some((user, pass)) = &spec.auth {
            let creds = mail_send::Credentials::new(user.as_str(), pass.as_str());
            let r = on_stream!(&mut s.stream, c => c.authenticate(&creds, &ehlo).await.map(|_| ()));
            if let Err(e) = r {
                return Err(match e {
                    // Bad credentials are an operator problem: keep the mail, retry later.
                    mail_send::Error::AuthenticationFailed(r) => Outcome::local(&format!(
                        "authentication failed: {} {}",
                        r.code,
                        reply_text(&r)
                    )),
                    other => Outcome::local(&format!("AUTH: {other}")),
                });
            }
        }
        Ok(s)
    }

    /// Is the session still usable for another transaction?
    pub fn usable(&self) -> bool {
        !self.broken
    }

    /// Run one transaction; one outcome per recipient, in order.
    pub async fn send(&mut self, tx: &Transaction<'_>) -> Vec<Outcome> {
        let n = tx.rcpts.len();
        if tx.smtputf8 && !self.smtputf8 {
            let o = Outcome::local_permanent(
                "550 5.6.7 the message needs SMTPUTF8 and the server does not offer it",
            );
            return vec![o; n];
        }
        let mut params = Parameters::new();
        if tx.smtputf8 {
            params.add("SMTPUTF8");
        }
        if tx.body_8bit && self.eight_bit {
            params.add(("BODY", "8BITMIME"));
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
        // mail-send appends CRLF.CRLF itself: strip one trailing CRLF so the bytes arrive unchanged.
        let body = tx.body.strip_suffix(b"\r\n").unwrap_or(tx.body);
        let data = on_stream!(&mut self.stream, c => c.data(body).await);
        let o = match data {
            Ok(r) => Outcome::from_reply(r.code, &reply_text(&r)),
            Err(e) => {
                self.broken |= is_broken(&e);
                match e {
                    // A broken connection after the final dot leaves it unknown whether the server
                    // took the message: retry (at most one duplicate, never a loss).
                    mail_send::Error::UnexpectedReply(_) => err_outcome(&e),
                    _ => Outcome::local(&format!("DATA: {}", err_outcome(&e).reply())),
                }
            }
        };
        self.transactions += 1;
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| o.clone()))
            .collect()
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
