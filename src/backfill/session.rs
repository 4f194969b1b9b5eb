//! IMAP sessions: TCP connect, TLS (`implicit`, `starttls`, `none`; verification on unless
//! `tls_verify = false`), and authentication as one user: LOGIN, SASL PLAIN with an admin's
//! authorization identity, Dovecot's `user*admin` master login, and XOAUTH2 (tokens from
//! `oauth`). Every network step has a timeout. Never copies mail.

use super::oauth::Tokens;
use super::{BackfillError, Result};
use crate::config::{AdminLogin, ImapAuth, ImapEndpoint, ImapTls};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::CMD_TIMEOUT;

/// Plain TCP or TLS; or any other byte stream (an in-memory pipe to a scripted server in
/// tests and fuzzing).
pub enum ImapStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Other(Box<dyn crate::inbound::tls::Io>),
}

impl std::fmt::Debug for ImapStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImapStream::Plain(s) => f.debug_tuple("Plain").field(s).finish(),
            ImapStream::Tls(s) => f.debug_tuple("Tls").field(s).finish(),
            ImapStream::Other(_) => f.write_str("Other(..)"),
        }
    }
}

impl AsyncRead for ImapStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            ImapStream::Other(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ImapStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            ImapStream::Other(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ImapStream::Other(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ImapStream::Other(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

pub type ImapSession = async_imap::Session<ImapStream>;

/// Capabilities that change how we talk.
#[derive(Clone, Debug, Default)]
pub struct Caps {
    pub literal_plus: bool,
    pub multiappend: bool,
    pub uidplus: bool,
    pub special_use: bool,
    pub condstore: bool,
    pub namespace: bool,
    pub list_extended: bool,
    /// RFC 3516: `literal8` (`~{n}`) in APPEND, for messages holding NUL bytes.
    pub binary: bool,
    /// Gmail's `X-GM-EXT-1` (labels, X-GM-MSGID).
    pub gmail: bool,
}

/// A logged-in session for one user.
pub struct Conn {
    pub session: ImapSession,
    pub caps: Caps,
    pub user: String,
}

/// One side of a job (source or destination): endpoint, credentials, TLS, token cache.
pub struct Side {
    pub label: &'static str,
    pub ep: ImapEndpoint,
    tls: Option<Arc<rustls::ClientConfig>>,
    admin_password: Option<String>,
    user_passwords: HashMap<String, String>,
    tokens: Option<Tokens>,
}

/// Run `fut` with a timeout, mapping the elapsed case to [`BackfillError::Timeout`].
pub async fn timed<T>(
    what: &str,
    d: Duration,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(d, fut).await {
        Ok(r) => r,
        Err(_) => Err(BackfillError::Timeout(format!("{what} after {d:?}"))),
    }
}

fn read_secret(path: &Path) -> Result<String> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| BackfillError::Config(format!("{}: {e}", path.display())))?;
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

fn read_passwords(path: &Path) -> Result<HashMap<String, String>> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| BackfillError::Config(format!("{}: {e}", path.display())))?;
    let mut out = HashMap::new();
    for line in s.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if let Some((u, p)) = line.split_once(',') {
            out.insert(u.trim().to_string(), p.to_string());
        }
    }
    Ok(out)
}

impl Side {
    /// Prepare a side: read secrets, build the TLS config. `base` resolves relative paths.
    pub fn new(label: &'static str, ep: &ImapEndpoint, base: &Path) -> Result<Side> {
        let abs = |p: &PathBuf| crate::config::resolve_path(base, p);
        let tls = match ep.tls {
            ImapTls::None => None,
            _ => Some(Arc::new(
                crate::tls_client::client_config(
                    ep.tls_verify,
                    ep.tls_ca.as_ref().map(abs).as_deref(),
                )
                .map_err(|e| BackfillError::Config(e.to_string()))?,
            )),
        };
        let admin_password = match &ep.password_file {
            Some(p) => Some(read_secret(&abs(p))?),
            None => None,
        };
        let user_passwords = match &ep.passwords_file {
            Some(p) => read_passwords(&abs(p))?,
            None => HashMap::new(),
        };
        let tokens = match ep.auth {
            ImapAuth::Xoauth2 => Some(Tokens::new(ep, base)?),
            ImapAuth::Plain => None,
        };
        Ok(Side {
            label,
            ep: ep.clone(),
            tls,
            admin_password,
            user_passwords,
            tokens,
        })
    }

    /// Connect and log in as `user`.
    pub async fn connect(&self, user: &str) -> Result<Conn> {
        let what = format!(
            "{} {}:{} for {user}",
            self.label, self.ep.host, self.ep.port
        );
        let session = match self.ep.auth {
            ImapAuth::Plain => {
                let client = self.open(&what).await?;
                self.login_plain(client, user).await?
            }
            ImapAuth::Xoauth2 => {
                let tokens = self
                    .tokens
                    .as_ref()
                    .ok_or_else(|| BackfillError::Config("xoauth2 without token source".into()))?;
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let token = tokens.get(user).await?;
                    let client = self.open(&what).await?;
                    let payload = format!("user={user}\x01auth=Bearer {token}\x01\x01");
                    match timed(&what, CMD_TIMEOUT, async {
                        Ok(client
                            .authenticate("XOAUTH2", OneShot::new(payload.into_bytes()))
                            .await)
                    })
                    .await?
                    {
                        Ok(s) => break s,
                        Err((e, _)) => {
                            // AUTHENTICATIONFAILED: the cached token may have expired early.
                            tokens.invalidate(user).await;
                            if attempt >= 2 {
                                return Err(BackfillError::Auth {
                                    user: user.to_string(),
                                    reply: e.to_string(),
                                });
                            }
                        }
                    }
                }
            }
        };
        let mut session = session;
        let caps = timed(&what, CMD_TIMEOUT, async {
            let c = session
                .capabilities()
                .await
                .map_err(|e| BackfillError::from_imap("CAPABILITY", e))?;
            Ok(Caps {
                literal_plus: c.has_str("LITERAL+"),
                multiappend: c.has_str("MULTIAPPEND"),
                uidplus: c.has_str("UIDPLUS"),
                special_use: c.has_str("SPECIAL-USE"),
                condstore: c.has_str("CONDSTORE"),
                namespace: c.has_str("NAMESPACE"),
                list_extended: c.has_str("LIST-EXTENDED"),
                binary: c.has_str("BINARY"),
                gmail: c.has_str("X-GM-EXT-1"),
            })
        })
        .await?;
        Ok(Conn {
            session,
            caps,
            user: user.to_string(),
        })
    }

    async fn login_plain(
        &self,
        client: async_imap::Client<ImapStream>,
        user: &str,
    ) -> Result<ImapSession> {
        let fail = |e: async_imap::error::Error| BackfillError::Auth {
            user: user.to_string(),
            reply: e.to_string(),
        };
        let what = format!("{} login {user}", self.label);
        match &self.ep.admin_user {
            Some(admin) => {
                let pw = self.admin_password.clone().ok_or_else(|| {
                    BackfillError::Config("admin_user needs password_file".into())
                })?;
                match self.ep.admin_login {
                    AdminLogin::Authzid => {
                        let payload = format!("{user}\0{admin}\0{pw}").into_bytes();
                        timed(&what, CMD_TIMEOUT, async {
                            client
                                .authenticate("PLAIN", OneShot::new(payload))
                                .await
                                .map_err(|(e, _)| fail(e))
                        })
                        .await
                    }
                    AdminLogin::Separator => {
                        let login = format!("{user}{}{admin}", self.ep.admin_separator);
                        timed(&what, CMD_TIMEOUT, async {
                            client.login(login, pw).await.map_err(|(e, _)| fail(e))
                        })
                        .await
                    }
                }
            }
            None => {
                let pw = self
                    .user_passwords
                    .get(user)
                    .cloned()
                    .or_else(|| self.admin_password.clone())
                    .ok_or_else(|| {
                        BackfillError::Config(format!(
                            "no password for {user} (passwords_file / password_file)"
                        ))
                    })?;
                timed(&what, CMD_TIMEOUT, async {
                    client.login(user, pw).await.map_err(|(e, _)| fail(e))
                })
                .await
            }
        }
    }

    /// TCP (+TLS) connect and greeting.
    async fn open(&self, what: &str) -> Result<async_imap::Client<ImapStream>> {
        timed(what, CMD_TIMEOUT, async {
            let tcp = TcpStream::connect((self.ep.host.as_str(), self.ep.port))
                .await
                .map_err(|e| BackfillError::Connection(format!("{what}: connect: {e}")))?;
            let _ = tcp.set_nodelay(true);
            match self.ep.tls {
                ImapTls::None => {
                    let mut c = async_imap::Client::new(ImapStream::Plain(tcp));
                    greeting(&mut c, what).await?;
                    Ok(c)
                }
                ImapTls::Implicit => {
                    let tls = self.wrap(tcp, what).await?;
                    let mut c = async_imap::Client::new(tls);
                    greeting(&mut c, what).await?;
                    Ok(c)
                }
                ImapTls::Starttls => {
                    let mut tcp = tcp;
                    let g = read_line(&mut tcp).await?;
                    if !g.starts_with("* OK") {
                        return Err(BackfillError::Connection(format!("{what}: greeting: {g}")));
                    }
                    tcp.write_all(b"S0 STARTTLS\r\n")
                        .await
                        .map_err(|e| BackfillError::Connection(format!("{what}: {e}")))?;
                    loop {
                        let l = read_line(&mut tcp).await?;
                        if l.starts_with("S0 OK") {
                            break;
                        }
                        if l.starts_with("S0 ") {
                            return Err(BackfillError::Refused(format!("{what}: STARTTLS: {l}")));
                        }
                    }
                    let tls = self.wrap(tcp, what).await?;
                    Ok(async_imap::Client::new(tls))
                }
            }
        })
        .await
    }

    async fn wrap(&self, tcp: TcpStream, what: &str) -> Result<ImapStream> {
        let cfg = self
            .tls
            .clone()
            .ok_or_else(|| BackfillError::Config("TLS config missing".into()))?;
        let name = rustls_pki_types::ServerName::try_from(self.ep.host.clone())
            .map_err(|e| BackfillError::Config(format!("{}: {e}", self.ep.host)))?;
        let s = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|e| {
                // A certificate problem will not fix itself: do not retry it.
                let cert = e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<rustls::Error>())
                    .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
                if cert {
                    BackfillError::Refused(format!("{what}: TLS: {e}"))
                } else {
                    BackfillError::Connection(format!("{what}: TLS: {e}"))
                }
            })?;
        Ok(ImapStream::Tls(Box::new(s)))
    }
}

async fn greeting(c: &mut async_imap::Client<ImapStream>, what: &str) -> Result<()> {
    use async_imap::imap_proto::{Response, Status};
    match c.read_response().await {
        Ok(Some(r)) => {
            if let Response::Data {
                status: Status::Bye,
                ..
            } = r.parsed()
            {
                return Err(BackfillError::Connection(format!(
                    "{what}: server said BYE"
                )));
            }
            Ok(())
        }
        Ok(None) => Err(BackfillError::Connection(format!(
            "{what}: closed before greeting"
        ))),
        Err(e) => Err(BackfillError::Connection(format!("{what}: greeting: {e}"))),
    }
}

/// Read one CRLF line byte by byte (pre-TLS only: must not read past the line).
async fn read_line(s: &mut TcpStream) -> Result<String> {
    let mut buf = Vec::new();
    loop {
        let mut b = [0u8; 1];
        let n = s
            .read(&mut b)
            .await
            .map_err(|e| BackfillError::Connection(e.to_string()))?;
        if n == 0 {
            return Err(BackfillError::Connection("connection closed".into()));
        }
        buf.push(b[0]);
        if buf.ends_with(b"\r\n") || buf.len() > 8192 {
            return Ok(String::from_utf8_lossy(&buf).trim_end().to_string());
        }
    }
}

/// A SASL mechanism with one initial response; any further challenge gets an empty response
/// (XOAUTH2 sends an error challenge before its NO).
struct OneShot {
    payload: Option<Vec<u8>>,
}
impl OneShot {
    fn new(p: Vec<u8>) -> Self {
        OneShot { payload: Some(p) }
    }
}
impl async_imap::Authenticator for OneShot {
    type Response = Vec<u8>;
    fn process(&mut self, _challenge: &[u8]) -> Vec<u8> {
        self.payload.take().unwrap_or_default()
    }
}
