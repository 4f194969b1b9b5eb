//! A whole SMTP session (`inbound::session::Session`) fed arbitrary client bytes over an
//! in-memory stream, against a real queue on tmpfs and settings built from a configuration with
//! STARTTLS. The input is a script of steps: raw bytes, lines, SMTP commands with arbitrary
//! arguments, DATA blocks, a STARTTLS after which (when the server answers `220`) the harness
//! completes a real TLS handshake and sends the rest of the script encrypted, and a shutdown
//! signal. An optional valid prelude (EHLO, MAIL, RCPT, DATA) lets the fuzzer start deep.
//!
//! Checks: the session ends (no hang: it is given 5 s after the client closed), never panics,
//! and every reply line is well formed (`ddd` then space or `-`, printable, CRLF). Each message
//! it accepts (`250 ... queued as ID`) is removed from the queue again, so the queue stays small
//! over millions of runs.
#![no_main]

use arbitrary::Arbitrary;
use cutover::inbound::session::Session;
use cutover::inbound::{Inbound, Settings};
use cutover::queue::{Queue, QueueId};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Verb {
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    Bdat,
    Expn,
    Auth,
    StartTls,
}

#[derive(Arbitrary, Debug)]
enum Step<'a> {
    /// Bytes as they are.
    Raw(&'a [u8]),
    /// Bytes + CRLF.
    Line(&'a [u8]),
    /// `VERB arg` + CRLF.
    Cmd(Verb, &'a str),
    /// `DATA` CRLF, the bytes, CRLF `.` CRLF.
    Data(&'a [u8]),
    /// `STARTTLS` CRLF and, if the server says `220 ... Ready to start TLS`, a TLS handshake.
    StartTls,
    /// The gateway starts shutting down.
    Shutdown,
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// 0: nothing; 1: EHLO; 2: + MAIL; 3: + RCPT; 4: + DATA (then the steps are the body).
    prelude: u8,
    peer: u8,
    steps: Vec<Step<'a>>,
}

struct Env {
    rt: tokio::runtime::Runtime,
    inbound: Arc<Inbound>,
    settings: Arc<Settings>,
    connector: tokio_rustls::TlsConnector,
    queue: Queue,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = cutover_fuzz::scratch("smtp");
        let (cert, key, pem) = cutover_fuzz::write_cert(&dir);
        let text = cutover_fuzz::config_text(&dir.join("state"), Some((&cert, &key)));
        let loaded =
            cutover::loader::parse(&text, &dir.join("cutover.toml")).expect("fuzz config is valid");
        let settings = Settings::from_config(&loaded.config, loaded.router).expect("settings");
        let queue = Queue::open(&dir.join("state")).expect("queue");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let inbound = Inbound::new(settings, queue.clone());
        let settings = inbound.settings();

        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem"))
            .expect("root");
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        Env {
            rt,
            inbound,
            settings,
            connector,
            queue,
        }
    })
}

enum Stream {
    Plain(DuplexStream),
    Tls(Box<tokio_rustls::client::TlsStream<DuplexStream>>),
    Gone,
}

struct Client {
    s: Stream,
    /// A write failed (the server closed): nothing more is sent, replies are still read.
    broken: bool,
}

impl Client {
    fn io(&mut self) -> Option<&mut (dyn Rw + '_)> {
        match &mut self.s {
            Stream::Plain(s) => Some(s),
            Stream::Tls(s) => Some(s.as_mut()),
            Stream::Gone => None,
        }
    }
}

trait Rw: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Rw for T {}

const READY: &[u8] = b"220 2.0.0 Ready to start TLS\r\n";

async fn send(c: &mut Client, bytes: &[u8]) {
    if c.broken {
        return;
    }
    if let Some(io) = c.io()
        && io.write_all(bytes).await.is_err()
    {
        c.broken = true;
    }
}

/// Read replies until `READY` is at the end of what was read, the server closes, or it stays
/// silent for 3 ms (it is in DATA, or it refused STARTTLS).
async fn read_until_ready(c: &mut Client, replies: &mut Vec<u8>) -> bool {
    let Some(io) = c.io() else { return false };
    let mut buf = [0u8; 4096];
    loop {
        if replies.ends_with(READY) {
            return true;
        }
        match tokio::time::timeout(Duration::from_millis(3), io.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                c.broken = true;
                return false;
            }
            Ok(Ok(n)) => replies.extend_from_slice(&buf[..n]),
            Err(_) => return false,
        }
    }
}

fn check_replies(r: &[u8]) {
    let mut rest = r;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| panic!("reply without CRLF: {:?}", String::from_utf8_lossy(rest)));
        let line = &rest[..end];
        assert!(
            line.len() >= 4
                && line[..3].iter().all(u8::is_ascii_digit)
                && (line[3] == b' ' || line[3] == b'-'),
            "malformed reply line {:?}",
            String::from_utf8_lossy(line)
        );
        let text = String::from_utf8_lossy(line);
        assert!(
            !text.chars().any(char::is_control),
            "control character in reply {text:?}"
        );
        assert!(line.len() <= 1024, "reply line too long");
        rest = &rest[end + 2..];
    }
}

fn verb_text(v: Verb) -> &'static str {
    match v {
        Verb::Ehlo => "EHLO",
        Verb::Helo => "HELO",
        Verb::Mail => "MAIL FROM:",
        Verb::Rcpt => "RCPT TO:",
        Verb::Data => "DATA",
        Verb::Rset => "RSET",
        Verb::Noop => "NOOP",
        Verb::Quit => "QUIT",
        Verb::Vrfy => "VRFY",
        Verb::Help => "HELP",
        Verb::Bdat => "BDAT",
        Verb::Expn => "EXPN",
        Verb::Auth => "AUTH",
        Verb::StartTls => "STARTTLS",
    }
}

async fn run(inp: &Input<'_>) -> Vec<u8> {
    let e = env();
    let (client, server) = tokio::io::duplex(8 << 20);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let peer: SocketAddr = match inp.peer % 4 {
        0 => "192.0.2.7:5555".parse(),
        1 => "[::ffff:192.0.2.8]:5555".parse(),
        2 => "[2001:db8::1]:5555".parse(),
        _ => "203.0.113.9:5555".parse(),
    }
    .expect("peer");
    let session = Session::new(
        Box::new(server),
        peer,
        e.inbound.clone(),
        e.settings.clone(),
        stop_rx,
    );
    let task = tokio::spawn(session.run());

    let mut c = Client {
        s: Stream::Plain(client),
        broken: false,
    };
    let mut replies = Vec::new();
    let prelude: &[&[u8]] = &[
        b"EHLO client.example.org\r\n",
        b"MAIL FROM:<alice@example.org>\r\n",
        b"RCPT TO:<bob@example.com>\r\n",
        b"DATA\r\n",
    ];
    for p in prelude.iter().take(inp.prelude as usize % 5) {
        send(&mut c, p).await;
    }
    for step in inp.steps.iter().take(64) {
        match step {
            Step::Raw(b) => send(&mut c, b).await,
            Step::Line(b) => {
                let mut v = b.to_vec();
                v.extend_from_slice(b"\r\n");
                send(&mut c, &v).await;
            }
            Step::Cmd(v, arg) => {
                let line = format!("{} {}\r\n", verb_text(*v), arg);
                send(&mut c, line.as_bytes()).await;
            }
            Step::Data(b) => {
                let mut v = b"DATA\r\n".to_vec();
                v.extend_from_slice(b);
                v.extend_from_slice(b"\r\n.\r\n");
                send(&mut c, &v).await;
            }
            Step::Shutdown => {
                let _ = stop_tx.send(true);
            }
            Step::StartTls => {
                send(&mut c, b"STARTTLS\r\n").await;
                if !c.broken
                    && matches!(c.s, Stream::Plain(_))
                    && read_until_ready(&mut c, &mut replies).await
                {
                    let Stream::Plain(s) = std::mem::replace(&mut c.s, Stream::Gone) else {
                        unreachable!()
                    };
                    let name = rustls_pki_types::ServerName::try_from("mx.test").expect("name");
                    match tokio::time::timeout(Duration::from_secs(5), e.connector.connect(name, s))
                        .await
                    {
                        Ok(Ok(tls)) => c.s = Stream::Tls(Box::new(tls)),
                        // Possible when a late 220 was taken for this STARTTLS's (the wait
                        // above is short): the server already gave up on that handshake.
                        Ok(Err(_)) => c.broken = true,
                        Err(_) => panic!("TLS handshake hang"),
                    }
                }
            }
        }
        if c.broken {
            break;
        }
    }
    // Close our side, read everything the server still says, and wait for the session to end.
    if let Some(io) = c.io() {
        let _ = io.shutdown().await;
        let mut rest = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut rest)).await;
        assert!(r.is_ok(), "server did not close after the client did");
        replies.extend_from_slice(&rest);
    }
    // A `220 Ready to start TLS` the harness missed (it waits only 3 ms) is followed by the
    // server's TLS alert for the plaintext that came next: not SMTP replies.
    if !matches!(c.s, Stream::Tls(_))
        && let Some(i) = replies.windows(READY.len()).position(|w| w == READY)
    {
        replies.truncate(i + READY.len());
    }
    match tokio::time::timeout(Duration::from_secs(5), task).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => std::panic::resume_unwind(err.into_panic()),
        Err(_) => panic!("session hang"),
    }
    replies
}

fuzz_target!(|inp: Input<'_>| {
    let e = env();
    let replies = e.rt.block_on(run(&inp));
    // Replies sent in plaintext and under TLS are all in `replies` (decrypted).
    check_replies(&replies);
    // Keep the queue small: remove what was accepted.
    let text = String::from_utf8_lossy(&replies);
    let ids: Vec<&str> = text
        .match_indices("queued as ")
        .filter_map(|(i, m)| text[i + m.len()..].split("\r\n").next())
        .collect();
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let sweep = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 20_000 == 19_999;
    if !ids.is_empty() || sweep {
        e.rt.block_on(async {
            for id in ids {
                let id = QueueId::parse(id).expect("a queue id in the 250 reply");
                e.queue.remove(&id).await.expect("remove accepted message");
            }
            if sweep {
                // Anything accepted whose reply was lost (e.g. the TLS stream was cut).
                for m in e.queue.list().expect("list") {
                    let _ = e.queue.remove(&m.id).await;
                }
            }
        });
    }
});
