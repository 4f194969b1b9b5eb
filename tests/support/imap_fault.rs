//! Test fixture: an in-process IMAP fault-injection proxy (tokio) in front of a real server (e.g. the Dovecot
//! fixture), for the faults a real server will not produce on demand: `NO [THROTTLED]`, `NO [UNAVAILABLE]`,
//! Office 365's `Suggested Backoff Time: N milliseconds`, `* BYE` in the middle of a FETCH response, a
//! connection closed mid-literal, a TCP reset, a slow reply.
//!
//! Owns: the listener on 127.0.0.1:0, per-connection relaying that understands IMAP framing (command lines,
//! synchronizing `{n}` and non-synchronizing `{n+}` literals in both directions, so injected lines never land
//! inside a server response), global per-command counters (`UID FETCH` counts as `FETCH`), the fault rules and
//! the log of what was injected. After STARTTLS the connection is relayed as opaque bytes (faults apply to plain
//! IMAP; point jobs at the proxy with `tls = "none"`).
//! Must never: touch anything but loopback, alter bytes of commands/responses it does not fault, or depend on
//! another support file.
//!
//! A faulted command is not forwarded: the proxy answers it itself (for a synchronizing literal it sends its own
//! `+` continuation, swallows the literal, then answers `NO`), so the server never sees it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// What to do with a matching command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Answer `<tag> NO <text>` without forwarding.
    No(String),
    /// Send `* BYE <text>` and close, without forwarding.
    Bye(String),
    /// Forward the command; relay `after_messages` untagged FETCH responses, then send `* BYE` and close
    /// (before the tagged reply if fewer FETCH responses come).
    ByeMidFetch { after_messages: usize },
    /// Forward the command; relay the first response line carrying a literal only up to half of its literal,
    /// then close the connection (a truncated response).
    CloseMidLiteral,
    /// Reset the TCP connection (RST, SO_LINGER 0) instead of forwarding.
    Reset,
    /// Forward the command after this delay (a slow server).
    Delay(Duration),
}

impl Action {
    /// `NO [THROTTLED] ...` (RFC 5530-style throttling as Dovecot/other servers send it).
    pub fn throttled() -> Action {
        Action::No("[THROTTLED] Too many commands, slow down".into())
    }
    /// `NO [UNAVAILABLE] ...` (RFC 5530: temporary failure).
    pub fn unavailable() -> Action {
        Action::No("[UNAVAILABLE] Temporary server failure, try again later".into())
    }
    /// Office 365's throttling reply.
    pub fn o365_backoff(ms: u64) -> Action {
        Action::No(format!(
            "Request is throttled. Suggested Backoff Time: {ms} milliseconds"
        ))
    }
    pub fn bye() -> Action {
        Action::Bye("Server overloaded, closing connection".into())
    }
    pub fn bye_mid_fetch() -> Action {
        Action::ByeMidFetch { after_messages: 1 }
    }
    /// Short label for logs and counters.
    pub fn label(&self) -> String {
        match self {
            Action::No(t) if t.contains("[THROTTLED]") => "throttled".into(),
            Action::No(t) if t.contains("[UNAVAILABLE]") => "unavailable".into(),
            Action::No(t) if t.contains("Suggested Backoff Time") => "o365-backoff".into(),
            Action::No(_) => "no".into(),
            Action::Bye(_) => "bye".into(),
            Action::ByeMidFetch { .. } => "bye-mid-fetch".into(),
            Action::CloseMidLiteral => "close-mid-literal".into(),
            Action::Reset => "reset".into(),
            Action::Delay(_) => "delay".into(),
        }
    }
}

/// A rule: the `nth` .. `nth + times - 1` commands (1-based, counted over all connections since the proxy
/// started) named `command` get `action`.
#[derive(Clone, Debug)]
pub struct Rule {
    pub command: String,
    pub nth: usize,
    pub times: usize,
    pub action: Action,
}

/// One injected fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injected {
    pub command: String,
    /// Which occurrence of `command` (1-based).
    pub nth: usize,
    pub label: String,
    pub connection: usize,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    seen: HashMap<String, usize>,
    injected: Vec<Injected>,
    connections: usize,
}

/// The running proxy; dropping it stops the listener and every relayed connection.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listen on 127.0.0.1:0 and relay every connection to `upstream`. Must be called inside a tokio runtime.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(Mutex::new(State::default()));
        let tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (st, tk) = (state.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = {
                    let mut s = st.lock().unwrap();
                    s.connections += 1;
                    s.connections
                };
                let h = tokio::spawn(handle_connection(client, upstream, st.clone(), id));
                let mut t = tk.lock().unwrap();
                t.retain(|a| !a.is_finished());
                t.push(h.abort_handle());
            }
        });
        FaultProxy {
            addr,
            upstream,
            state,
            tasks,
            accept,
        }
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }
    /// Fault the `nth` command named `command` (e.g. "APPEND", "FETCH", "SELECT"; case-insensitive).
    pub fn inject(&self, command: &str, nth: usize, action: Action) {
        self.inject_times(command, nth, 1, action);
    }
    /// Fault `times` consecutive commands named `command`, starting with the `nth`.
    pub fn inject_times(&self, command: &str, nth: usize, times: usize, action: Action) {
        self.state.lock().unwrap().rules.push(Rule {
            command: command.to_ascii_uppercase(),
            nth: nth.max(1),
            times,
            action,
        });
    }
    /// Fault the `after`-th command named `command` from now on (1 = the next one).
    pub fn inject_next(&self, command: &str, after: usize, action: Action) {
        let seen = self.seen(command);
        self.inject(command, seen + after.max(1), action);
    }
    /// Remove every rule (counters and the injection log stay).
    pub fn clear(&self) {
        self.state.lock().unwrap().rules.clear();
    }
    /// How many commands named `command` the proxy has seen (faulted ones included).
    pub fn seen(&self, command: &str) -> usize {
        let s = self.state.lock().unwrap();
        s.seen
            .get(&command.to_ascii_uppercase())
            .copied()
            .unwrap_or(0)
    }
    pub fn injected(&self) -> Vec<Injected> {
        self.state.lock().unwrap().injected.clone()
    }
    pub fn injected_count(&self) -> usize {
        self.state.lock().unwrap().injected.len()
    }
    /// Injections with this label ("throttled", "o365-backoff", "bye-mid-fetch", "reset", ...).
    pub fn injected_with(&self, label: &str) -> usize {
        let s = self.state.lock().unwrap();
        s.injected.iter().filter(|i| i.label == label).count()
    }
    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

// ------------------------------------------------------------------------------------------------ relaying

const MAX_LINE: usize = 1 << 20;

type ClientWriter = Arc<tokio::sync::Mutex<Option<OwnedWriteHalf>>>;

#[derive(Default)]
struct Conn {
    /// (tag, FETCH responses still to relay before the BYE)
    bye_mid_fetch: Option<(String, usize)>,
    /// tag whose first literal-carrying response is cut in half
    close_mid_literal: Option<String>,
    /// STARTTLS tag: after its tagged reply, relay opaque bytes
    starttls: Option<String>,
    /// set by the server->client task when the connection must end
    closed: bool,
}

async fn handle_connection(
    client: TcpStream,
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
    id: usize,
) {
    let Ok(Ok(server)) =
        tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(upstream)).await
    else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (c_read, c_write) = client.into_split();
    let (s_read, s_write) = server.into_split();
    let writer: ClientWriter = Arc::new(tokio::sync::Mutex::new(Some(c_write)));
    let conn = Arc::new(Mutex::new(Conn::default()));
    let mut up = tokio::spawn(client_to_server(
        c_read,
        s_write,
        writer.clone(),
        state,
        conn.clone(),
        id,
    ));
    let mut down = tokio::spawn(server_to_client(s_read, writer.clone(), conn));
    tokio::select! {
        _ = &mut up => down.abort(),
        _ = &mut down => up.abort(),
    }
}

/// Read one line (through LF) into `buf`; Ok(false) at EOF.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let start = buf.len();
    let n = (&mut *r)
        .take(MAX_LINE as u64)
        .read_until(b'\n', buf)
        .await?;
    Ok(n > 0 && buf[start..].ends_with(b"\n"))
}

/// Literal announced at the end of a line: (`{n}` / `{n+}` / `~{n}`) -> (n, synchronizing).
fn trailing_literal(line: &[u8]) -> Option<(usize, bool)> {
    let l = line.strip_suffix(b"\r\n").or(line.strip_suffix(b"\n"))?;
    let l = l.strip_suffix(b"}")?;
    let open = l.iter().rposition(|&b| b == b'{')?;
    let inner = &l[open + 1..];
    let (digits, sync) = match inner.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (inner, true),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits)
        .ok()?
        .parse()
        .ok()
        .map(|n| (n, sync))
}

/// (tag, command name) of a command line; `UID FETCH` -> "FETCH".
fn parse_command(line: &[u8]) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_ascii_whitespace();
    let tag = words.next()?.to_string();
    let mut cmd = words.next()?.to_ascii_uppercase();
    if cmd == "UID" {
        cmd = words.next()?.to_ascii_uppercase();
    }
    Some((tag, cmd))
}

async fn write_client(writer: &ClientWriter, bytes: &[u8]) -> bool {
    let mut w = writer.lock().await;
    match w.as_mut() {
        Some(w) => w.write_all(bytes).await.is_ok() && w.flush().await.is_ok(),
        None => false,
    }
}

async fn reset_client(writer: &ClientWriter) {
    let mut w = writer.lock().await;
    if let Some(half) = w.take() {
        #[allow(deprecated)]
        let _ = half.as_ref().set_linger(Some(Duration::ZERO));
        // no FIN: the socket closes (with RST, linger 0) when the read half goes too
        half.forget();
    }
}

async fn close_client(writer: &ClientWriter) {
    let mut w = writer.lock().await;
    if let Some(mut half) = w.take() {
        let _ = half.shutdown().await;
    }
}

async fn client_to_server(
    c_read: OwnedReadHalf,
    mut s_write: OwnedWriteHalf,
    writer: ClientWriter,
    state: Arc<Mutex<State>>,
    conn: Arc<Mutex<Conn>>,
    id: usize,
) {
    let mut reader = BufReader::new(c_read);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_line(&mut reader, &mut line).await {
            Ok(true) => {}
            _ => return,
        }
        let parsed = parse_command(&line);
        let action = parsed.as_ref().and_then(|(_, cmd)| {
            let mut s = state.lock().unwrap();
            let n = {
                let c = s.seen.entry(cmd.clone()).or_insert(0);
                *c += 1;
                *c
            };
            let action = s
                .rules
                .iter()
                .find(|r| r.command == *cmd && n >= r.nth && n < r.nth + r.times)
                .map(|r| r.action.clone());
            if let Some(a) = &action {
                s.injected.push(Injected {
                    command: cmd.clone(),
                    nth: n,
                    label: a.label(),
                    connection: id,
                });
            }
            action
        });
        let tag = parsed.as_ref().map(|(t, _)| t.clone()).unwrap_or_default();
        match action {
            None | Some(Action::Delay(_)) => {
                if let Some(Action::Delay(d)) = action {
                    tokio::time::sleep(d).await;
                }
                if let Some((t, c)) = &parsed
                    && c == "STARTTLS"
                {
                    conn.lock().unwrap().starttls = Some(t.clone());
                    if s_write.write_all(&line).await.is_err() {
                        return;
                    }
                    // from here on the bytes are TLS: relay them opaquely
                    let _ = tokio::io::copy(&mut reader, &mut s_write).await;
                    return;
                }
                if forward_command(&mut reader, &mut s_write, &mut line)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Some(Action::No(text)) => {
                if swallow_command(&mut reader, &writer, &mut line)
                    .await
                    .is_err()
                {
                    return;
                }
                if !write_client(&writer, format!("{tag} NO {text}\r\n").as_bytes()).await {
                    return;
                }
            }
            Some(Action::Bye(text)) => {
                let _ = write_client(&writer, format!("* BYE {text}\r\n").as_bytes()).await;
                close_client(&writer).await;
                return;
            }
            Some(Action::Reset) => {
                reset_client(&writer).await;
                return;
            }
            Some(Action::ByeMidFetch { after_messages }) => {
                conn.lock().unwrap().bye_mid_fetch = Some((tag, after_messages));
                if forward_command(&mut reader, &mut s_write, &mut line)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Some(Action::CloseMidLiteral) => {
                conn.lock().unwrap().close_mid_literal = Some(tag);
                if forward_command(&mut reader, &mut s_write, &mut line)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        if conn.lock().unwrap().closed {
            return;
        }
    }
}

/// Forward `line` and any literals (and continuation lines) of the same command.
async fn forward_command(
    reader: &mut BufReader<OwnedReadHalf>,
    s_write: &mut OwnedWriteHalf,
    line: &mut Vec<u8>,
) -> std::io::Result<()> {
    loop {
        s_write.write_all(line).await?;
        let Some((n, _sync)) = trailing_literal(line) else {
            return s_write.flush().await;
        };
        s_write.flush().await?;
        // the server sends the `+` for a synchronizing literal; the client waits for it, we just relay
        let copied = tokio::io::copy(&mut (&mut *reader).take(n as u64), s_write).await?;
        if copied < n as u64 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        line.clear();
        if !read_line(reader, line).await? {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Consume a command that is answered by the proxy (sending `+` for synchronizing literals).
async fn swallow_command(
    reader: &mut BufReader<OwnedReadHalf>,
    writer: &ClientWriter,
    line: &mut Vec<u8>,
) -> std::io::Result<()> {
    while let Some((n, sync)) = trailing_literal(line) {
        if sync && !write_client(writer, b"+ Ready for literal data\r\n").await {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        let skipped =
            tokio::io::copy(&mut (&mut *reader).take(n as u64), &mut tokio::io::sink()).await?;
        if skipped < n as u64 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        line.clear();
        if !read_line(reader, line).await? {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

async fn server_to_client(s_read: OwnedReadHalf, writer: ClientWriter, conn: Arc<Mutex<Conn>>) {
    let mut reader = BufReader::new(s_read);
    // one logical response: a line plus its literals and continuation lines
    let mut resp = Vec::new();
    loop {
        resp.clear();
        let mut first_literal_at: Option<(usize, usize)> = None; // (offset, length)
        loop {
            match read_line(&mut reader, &mut resp).await {
                Ok(true) => {}
                _ => {
                    // server closed (or error): pass on what we have and end
                    if !resp.is_empty() {
                        let _ = write_client(&writer, &resp).await;
                    }
                    close_client(&writer).await;
                    return;
                }
            }
            let Some((n, _)) = trailing_literal(&resp) else {
                break;
            };
            let at = resp.len();
            if first_literal_at.is_none() {
                first_literal_at = Some((at, n));
            }
            let got = (&mut reader)
                .take(n as u64)
                .read_to_end(&mut resp)
                .await
                .unwrap_or(0);
            if got < n {
                let _ = write_client(&writer, &resp).await;
                close_client(&writer).await;
                return;
            }
        }
        let is_fetch = resp.starts_with(b"* ") && {
            let head = &resp[..resp.len().min(64)];
            String::from_utf8_lossy(head)
                .split_ascii_whitespace()
                .nth(2)
                .is_some_and(|w| w.eq_ignore_ascii_case("FETCH"))
        };
        let tagged =
            |tag: &str| resp.starts_with(tag.as_bytes()) && resp.get(tag.len()) == Some(&b' ');
        // faults on this connection's responses
        let (cut, bye_now, starttls_done) = {
            let mut c = conn.lock().unwrap();
            let mut cut = None;
            if let Some(tag) = &c.close_mid_literal
                && let Some((off, n)) = first_literal_at
            {
                let _ = tag;
                cut = Some(off + n / 2);
            }
            let mut bye_now = false;
            if let Some((tag, left)) = c.bye_mid_fetch.clone() {
                if tagged(&tag) || (is_fetch && left == 0) {
                    bye_now = true;
                } else if is_fetch {
                    c.bye_mid_fetch = Some((tag, left - 1));
                }
            }
            let starttls_done = c.starttls.as_deref().is_some_and(tagged);
            if cut.is_some() || bye_now {
                c.closed = true;
            }
            (cut, bye_now, starttls_done)
        };
        if let Some(cut) = cut {
            let _ = write_client(&writer, &resp[..cut]).await;
            close_client(&writer).await;
            return;
        }
        if bye_now {
            let _ = write_client(&writer, b"* BYE Server overloaded, closing connection\r\n").await;
            close_client(&writer).await;
            return;
        }
        if !write_client(&writer, &resp).await {
            return;
        }
        // after a FETCH response is fully relayed, a pending BYE with 0 left fires before the next response
        if is_fetch {
            let fire = conn
                .lock()
                .unwrap()
                .bye_mid_fetch
                .as_ref()
                .is_some_and(|(_, left)| *left == 0);
            if fire {
                conn.lock().unwrap().closed = true;
                let _ =
                    write_client(&writer, b"* BYE Server overloaded, closing connection\r\n").await;
                close_client(&writer).await;
                return;
            }
        }
        if starttls_done {
            // TLS from here on: relay raw bytes
            let mut w = writer.lock().await;
            if let Some(w) = w.as_mut() {
                let _ = tokio::io::copy(&mut reader, w).await;
            }
            return;
        }
    }
}
