//! In-process SMTP sink that keeps no bodies: per message it records the `Message-ID` header and
//! the number of body bytes (after dot-unstuffing), so gigabytes can pass through it in constant
//! memory. Speaks enough ESMTP for cutover's client (EHLO with PIPELINING, 8BITMIME, SMTPUTF8,
//! ENHANCEDSTATUSCODES, SIZE; MAIL, RCPT, DATA, RSET, NOOP, QUIT). For fault injection use
//! fake_smtp.rs; for a real server, Postfix's smtp-sink.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the sink received.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Message-ID (without brackets) → body byte counts of each copy received.
    pub by_id: HashMap<String, Vec<u64>>,
    /// Messages without a Message-ID header.
    pub without_id: usize,
    pub messages: usize,
    pub bytes: u64,
    pub connections: usize,
}

impl Tally {
    /// Message-IDs received more than once.
    pub fn duplicates(&self) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = self
            .by_id
            .iter()
            .filter(|(_, c)| c.len() > 1)
            .map(|(k, c)| (k.clone(), c.len()))
            .collect();
        v.sort();
        v
    }
}

pub struct CountingSink {
    pub addr: std::net::SocketAddr,
    pub tally: Arc<Mutex<Tally>>,
}

impl CountingSink {
    /// Listen on `addr` (e.g. `127.0.0.1:PORT`) on the current tokio runtime.
    pub async fn start_on(addr: &str) -> std::io::Result<CountingSink> {
        let l = TcpListener::bind(addr).await?;
        let addr = l.local_addr()?;
        let tally = Arc::new(Mutex::new(Tally::default()));
        let t = tally.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = l.accept().await {
                t.lock().unwrap().connections += 1;
                let t = t.clone();
                tokio::spawn(async move {
                    let _ = session(sock, t).await;
                });
            }
        });
        Ok(CountingSink { addr, tally })
    }

    pub fn tally(&self) -> Tally {
        self.tally.lock().unwrap().clone()
    }

    /// Distinct Message-IDs received so far.
    pub fn distinct(&self) -> usize {
        self.tally.lock().unwrap().by_id.len()
    }
}

async fn session(sock: tokio::net::TcpStream, tally: Arc<Mutex<Tally>>) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::with_capacity(256 * 1024, r);
    w.write_all(b"220 sink ESMTP\r\n").await?;
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let up = String::from_utf8_lossy(&line)
            .trim_end()
            .to_ascii_uppercase();
        let reply: &[u8] = if up.starts_with("EHLO") {
            b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-SIZE 0\r\n250 ENHANCEDSTATUSCODES\r\n"
        } else if up.starts_with("HELO") {
            b"250 sink\r\n"
        } else if up.starts_with("MAIL FROM:") {
            b"250 2.1.0 Ok\r\n"
        } else if up.starts_with("RCPT TO:") {
            b"250 2.1.5 Ok\r\n"
        } else if up == "DATA" {
            w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut headers = true;
            let mut id = None;
            let mut bytes: u64 = 0;
            loop {
                line.clear();
                if r.read_until(b'\n', &mut line).await? == 0 {
                    return Ok(()); // cut mid-DATA: not counted
                }
                if line == b".\r\n" || line == b".\n" {
                    break;
                }
                let unstuffed = if line.starts_with(b"..") {
                    &line[1..]
                } else {
                    &line[..]
                };
                bytes += unstuffed.len() as u64;
                if headers {
                    if unstuffed == b"\r\n" || unstuffed == b"\n" {
                        headers = false;
                    } else if unstuffed.len() > 11
                        && unstuffed[..11].eq_ignore_ascii_case(b"message-id:")
                    {
                        let v = String::from_utf8_lossy(&unstuffed[11..]);
                        id = Some(
                            v.trim()
                                .trim_start_matches('<')
                                .trim_end_matches('>')
                                .to_string(),
                        );
                    }
                }
            }
            {
                let mut t = tally.lock().unwrap();
                t.messages += 1;
                t.bytes += bytes;
                match id {
                    Some(id) => t.by_id.entry(id).or_default().push(bytes),
                    None => t.without_id += 1,
                }
            }
            b"250 2.0.0 Ok: counted\r\n"
        } else if up == "RSET" || up == "NOOP" {
            b"250 2.0.0 Ok\r\n"
        } else if up == "QUIT" {
            w.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            b"502 5.5.2 unknown command\r\n"
        };
        w.write_all(reply).await?;
    }
}
