//! In-process fake SMTP server for faults a real server can't produce on demand: a given reply
//! to the Nth RCPT, a connection cut mid-DATA, a rejecting greeting. Captures what it received.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Clone, Default)]
pub struct Script {
    /// Greeting line (default `220 fake ESMTP`).
    pub greeting: Option<String>,
    /// Reply for RCPT number i (1-based) when listed.
    pub rcpt_replies: Vec<(usize, String)>,
    /// Close the connection after this many body bytes of DATA.
    pub cut_data_after: Option<usize>,
    /// Reply after the final dot (default `250 2.0.0 Ok`).
    pub data_reply: Option<String>,
    /// EHLO keywords (default PIPELINING, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES).
    pub ehlo: Option<Vec<String>>,
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
}

pub struct FakeSmtp {
    pub addr: std::net::SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub connections: Arc<Mutex<usize>>,
}

impl FakeSmtp {
    pub async fn start(script: Script) -> FakeSmtp {
        Self::start_on("127.0.0.1:0", script).await
    }

    pub async fn start_on(addr: &str, script: Script) -> FakeSmtp {
        let l = TcpListener::bind(addr).await.unwrap();
        let addr = l.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (rx, cx) = (received.clone(), connections.clone());
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
                        ..Default::default()
                    }
                } else {
                    script.clone()
                };
                let rx = rx.clone();
                tokio::spawn(async move {
                    let _ = session(sock, script, rx).await;
                });
            }
        });
        FakeSmtp {
            addr,
            received,
            connections,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn session(
    sock: tokio::net::TcpStream,
    s: Script,
    out: Arc<Mutex<Vec<Received>>>,
) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    let greeting = s
        .greeting
        .clone()
        .unwrap_or_else(|| "220 fake ESMTP".into());
    w.write_all(format!("{greeting}\r\n").as_bytes()).await?;
    if !greeting.starts_with("220") {
        return Ok(());
    }
    let mut cur = Received::default();
    let mut nrcpt = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let up = cmd.to_ascii_uppercase();
        if up.starts_with("EHLO") {
            let kws = s.ehlo.clone().unwrap_or_else(|| {
                vec![
                    "PIPELINING".into(),
                    "8BITMIME".into(),
                    "SMTPUTF8".into(),
                    "ENHANCEDSTATUSCODES".into(),
                ]
            });
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
        } else if up.starts_with("MAIL FROM:") {
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
            w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut body = Vec::new();
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
            }
            cur.body = body;
            out.lock().unwrap().push(std::mem::take(&mut cur));
            let reply = s
                .data_reply
                .clone()
                .unwrap_or_else(|| "250 2.0.0 Ok: queued".into());
            w.write_all(format!("{reply}\r\n").as_bytes()).await?;
        } else if up == "RSET" || up == "NOOP" {
            cur = Received::default();
            nrcpt = 0;
            w.write_all(b"250 2.0.0 Ok\r\n").await?;
        } else if up == "QUIT" {
            w.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            w.write_all(b"502 5.5.2 unknown\r\n").await?;
        }
    }
}
