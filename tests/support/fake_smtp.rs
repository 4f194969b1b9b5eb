//! In-process fake SMTP server for faults a real server can't produce on demand: a given reply
//! to the Nth RCPT or DATA, a connection cut or a pause mid-DATA, a slow reader, a rejecting
//! greeting, STARTTLS with a given (e.g. self-signed) certificate. Strict about transaction state
//! like a real server (nested MAIL, RCPT without MAIL, RSET). Captures what it received,
//! including every command line.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;

#[derive(Clone, Default)]
pub struct Script {
    /// Greeting line (default `220 fake ESMTP`).
    pub greeting: Option<String>,
    /// Reply for RCPT number i (1-based, per transaction) when listed.
    pub rcpt_replies: Vec<(usize, String)>,
    /// Reply to the DATA command number i (1-based, per connection) instead of 354; the
    /// transaction stays open (only RSET or a completed DATA closes it).
    pub data_cmd_replies: Vec<(usize, String)>,
    /// Close the connection after this many body bytes of DATA.
    pub cut_data_after: Option<usize>,
    /// Stop reading for this long once, after this many body bytes of DATA.
    pub pause_data_after: Option<(usize, Duration)>,
    /// Read DATA slowly: sleep this long after every this many body bytes.
    pub trickle: Option<(usize, Duration)>,
    /// SO_RCVBUF of the listening socket (inherited by connections): small values make the
    /// client's writes block as soon as the fake stops reading.
    pub recv_buffer: Option<u32>,
    /// Reply after the final dot (default `250 2.0.0 Ok`).
    pub data_reply: Option<String>,
    /// EHLO keywords (default PIPELINING, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES). STARTTLS is
    /// added by `starttls`.
    pub ehlo: Option<Vec<String>>,
    /// Offer STARTTLS with this server configuration (see [`self_signed`]).
    pub starttls: Option<Arc<rustls::ServerConfig>>,
    /// Apply the faults above only on the first connection; later ones behave normally.
    pub first_connection_only: bool,
}

/// One received transaction.
#[derive(Clone, Debug, Default)]
pub struct Received {
    pub mail_from: String,
    pub rcpts: Vec<String>,
    /// The body after dot-unstuffing, CRLF kept, without the terminating dot line.
    pub body: Vec<u8>,
    /// The body arrived inside TLS.
    pub tls: bool,
}

pub struct FakeSmtp {
    pub addr: std::net::SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub connections: Arc<Mutex<usize>>,
    /// Every command line received (without CRLF, DATA content excluded), all connections.
    pub commands: Arc<Mutex<Vec<String>>>,
}

/// A self-signed certificate for `name`: the server configuration and the certificate PEM (to
/// trust it as a private CA).
pub fn self_signed(name: &str) -> (Arc<rustls::ServerConfig>, String) {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let cert_pem = ck.cert.pem();
    let cfg = server_config(&cert_pem, &ck.signing_key.serialize_pem());
    (cfg, cert_pem)
}

/// A certificate for `name` issued by a fresh test CA: the server configuration and the CA's
/// PEM (for a client's trust store, e.g. `SSL_CERT_FILE`).
pub fn ca_signed(name: &str) -> (Arc<rustls::ServerConfig>, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (server_config(&cert.pem(), &key.serialize_pem()), ca_pem)
}

/// A TLS server configuration presenting `cert_pem` with `key_pem`.
fn server_config(cert_pem: &str, key_pem: &str) -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    Arc::new(cfg)
}

impl FakeSmtp {
    pub async fn start(script: Script) -> FakeSmtp {
        Self::start_on("127.0.0.1:0", script).await
    }

    pub async fn start_on(addr: &str, script: Script) -> FakeSmtp {
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .unwrap();
        sock.set_reuseaddr(true).unwrap();
        if let Some(n) = script.recv_buffer {
            sock.set_recv_buffer_size(n).unwrap();
        }
        sock.bind(addr).unwrap();
        let l = sock.listen(128).unwrap();
        let addr = l.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let commands = Arc::new(Mutex::new(Vec::new()));
        let (rx, cx, cmds) = (received.clone(), connections.clone(), commands.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = l.accept().await {
                let n = {
                    let mut c = cx.lock().unwrap();
                    *c += 1;
                    *c
                };
                let script = if script.first_connection_only && n > 1 {
                    Script {
                        ehlo: script.ehlo.clone(),
                        starttls: script.starttls.clone(),
                        ..Default::default()
                    }
                } else {
                    script.clone()
                };
                let (rx, cmds) = (rx.clone(), cmds.clone());
                tokio::spawn(async move {
                    let _ = session(sock, script, rx, cmds).await;
                });
            }
        });
        FakeSmtp {
            addr,
            received,
            connections,
            commands,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(PartialEq)]
enum Tx {
    Idle,
    /// After MAIL (and maybe RCPTs).
    Open,
}

async fn session(
    sock: tokio::net::TcpStream,
    s: Script,
    out: Arc<Mutex<Vec<Received>>>,
    cmds: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut r: BufReader<Box<dyn Io>> = BufReader::new(Box::new(sock));
    let greeting = s
        .greeting
        .clone()
        .unwrap_or_else(|| "220 fake ESMTP".into());
    r.get_mut()
        .write_all(format!("{greeting}\r\n").as_bytes())
        .await?;
    if !greeting.starts_with("220") {
        return Ok(());
    }
    let mut tls = false;
    let mut tx = Tx::Idle;
    let mut cur = Received::default();
    let mut nrcpt = 0;
    let mut ndata = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        cmds.lock().unwrap().push(cmd.clone());
        let up = cmd.to_ascii_uppercase();
        let w = r.get_mut();
        if up.starts_with("EHLO") {
            tx = Tx::Idle;
            let mut kws = s.ehlo.clone().unwrap_or_else(|| {
                vec![
                    "PIPELINING".into(),
                    "8BITMIME".into(),
                    "SMTPUTF8".into(),
                    "ENHANCEDSTATUSCODES".into(),
                ]
            });
            if s.starttls.is_some() && !tls {
                kws.push("STARTTLS".into());
            }
            let mut resp = String::from("250-fake\r\n");
            for (i, k) in kws.iter().enumerate() {
                resp.push_str(&format!(
                    "250{}{k}\r\n",
                    if i + 1 == kws.len() { ' ' } else { '-' }
                ));
            }
            if kws.is_empty() {
                resp = "250 fake\r\n".into();
            }
            w.write_all(resp.as_bytes()).await?;
        } else if up == "STARTTLS" {
            match &s.starttls {
                Some(cfg) if !tls => {
                    w.write_all(b"220 2.0.0 Ready to start TLS\r\n").await?;
                    // Anything pipelined after STARTTLS in plaintext is discarded.
                    let inner = r.into_inner();
                    let t = tokio_rustls::TlsAcceptor::from(cfg.clone())
                        .accept(inner)
                        .await?;
                    r = BufReader::new(Box::new(t));
                    tls = true;
                    tx = Tx::Idle;
                }
                _ => w.write_all(b"503 5.5.1 STARTTLS not available\r\n").await?,
            }
        } else if up.starts_with("AUTH ") {
            w.write_all(b"235 2.7.0 Authentication successful\r\n")
                .await?;
        } else if up.starts_with("MAIL FROM:") {
            if tx != Tx::Idle {
                w.write_all(b"503 5.5.1 nested MAIL\r\n").await?;
                continue;
            }
            tx = Tx::Open;
            cur = Received::default();
            nrcpt = 0;
            cur.mail_from = cmd[10..]
                .split('>')
                .next()
                .unwrap_or("")
                .trim_start_matches('<')
                .to_string();
            w.write_all(b"250 2.1.0 Ok\r\n").await?;
        } else if up.starts_with("RCPT TO:") {
            if tx != Tx::Open {
                w.write_all(b"503 5.5.1 need MAIL\r\n").await?;
                continue;
            }
            nrcpt += 1;
            let addr = cmd[8..]
                .split('>')
                .next()
                .unwrap_or("")
                .trim_start_matches('<')
                .to_string();
            match s.rcpt_replies.iter().find(|(n, _)| *n == nrcpt) {
                Some((_, reply)) => w.write_all(format!("{reply}\r\n").as_bytes()).await?,
                None => {
                    cur.rcpts.push(addr);
                    w.write_all(b"250 2.1.5 Ok\r\n").await?
                }
            }
        } else if up == "DATA" {
            ndata += 1;
            if let Some((_, reply)) = s.data_cmd_replies.iter().find(|(n, _)| *n == ndata) {
                w.write_all(format!("{reply}\r\n").as_bytes()).await?;
                continue;
            }
            if tx != Tx::Open {
                w.write_all(b"503 5.5.1 need MAIL\r\n").await?;
                continue;
            }
            if cur.rcpts.is_empty() {
                w.write_all(b"554 5.5.1 no valid recipients\r\n").await?;
                continue;
            }
            w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut body = Vec::new();
            let mut paused = false;
            let mut next_trickle = s.trickle.map(|(n, _)| n);
            loop {
                let mut l = Vec::new();
                if r.read_until(b'\n', &mut l).await? == 0 {
                    return Ok(());
                }
                if l == b".\r\n" {
                    break;
                }
                let l = if l.starts_with(b"..") {
                    l[1..].to_vec()
                } else {
                    l
                };
                body.extend_from_slice(&l);
                if let Some(n) = s.cut_data_after
                    && body.len() >= n
                {
                    return Ok(()); // drop the connection mid-DATA
                }
                if let Some((n, d)) = s.pause_data_after
                    && !paused
                    && body.len() >= n
                {
                    paused = true;
                    tokio::time::sleep(d).await;
                }
                if let (Some((n, d)), Some(mark)) = (s.trickle, next_trickle.as_mut())
                    && body.len() >= *mark
                {
                    *mark = body.len() + n;
                    tokio::time::sleep(d).await;
                }
            }
            tx = Tx::Idle;
            cur.body = body;
            cur.tls = tls;
            out.lock().unwrap().push(std::mem::take(&mut cur));
            let reply = s
                .data_reply
                .clone()
                .unwrap_or_else(|| "250 2.0.0 Ok: queued".into());
            r.get_mut()
                .write_all(format!("{reply}\r\n").as_bytes())
                .await?;
        } else if up == "RSET" || up == "NOOP" {
            if up == "RSET" {
                tx = Tx::Idle;
                cur = Received::default();
                nrcpt = 0;
            }
            w.write_all(b"250 2.0.0 Ok\r\n").await?;
        } else if up == "QUIT" {
            w.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            w.write_all(b"502 5.5.2 unknown\r\n").await?;
        }
    }
}
