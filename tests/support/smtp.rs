//! Test helpers for the SMTP intake: the one harness that runs a real `cutover serve` child
//! process on loopback ports (config written to a temp dir, readiness by polling the port, killed
//! by PID on drop), and a small async SMTP client that reads whole (multi-line) replies. Every
//! test that starts `cutover serve` goes through [`Gateway`]. Needs `crate::common` (include
//! tests/support/common.rs too). Never asserts on what a test is about, only on its own plumbing.
#![allow(dead_code)]

use crate::common::free_port;
use std::any::Any;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

pub const STEP: Duration = Duration::from_secs(10);

/// Knobs of the generated config.
#[derive(Clone, Debug, Default)]
pub struct Opts {
    pub extra_gateway: String,
    /// Append to the file (targets/routing are always written).
    pub extra: String,
    pub default_route: bool,
    /// Extra `cutover serve` arguments.
    pub args: Vec<String>,
    /// `host:port` of both targets (default 127.0.0.1:9, nothing listens: legs stay queued).
    pub target: Option<String>,
    /// Extra environment of the `cutover serve` process (e.g. `CUTOVER_FAULT`).
    pub env: Vec<(String, String)>,
    /// Run `serve` under this command prefix (e.g. `strace -f -o LOG`). The gateway is then the
    /// wrapper's child: [`Gateway::server_pid`] finds it, and signals/kills go to it directly.
    pub wrap: Vec<String>,
}

/// A `cutover serve` process (running once [`Gateway::spawn`] returned).
pub struct Gateway {
    /// Dropped after the process is killed and before `dir` is removed (see [`Gateway::hold`]).
    guards: Vec<Box<dyn Any>>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub smtp: SocketAddr,
    pub admin: SocketAddr,
    args: Vec<String>,
    env: Vec<(String, String)>,
    wrap: Vec<String>,
    child: Option<Child>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cutover")
}

impl Gateway {
    /// Routing used by every test: `@example.com` → old, `bob@example.com` → old+new (dual),
    /// `carol@example.com` → new, `@partner.net` → new (only reachable for trusted clients);
    /// `unrouted.example` is an accepted domain with no rule.
    pub fn start(opts: Opts) -> Gateway {
        let default = if opts.default_route {
            "default = [\"old\"]\n"
        } else {
            ""
        };
        let mut g = Self::configure(|smtp, admin, state| {
            format!(
                r#"[gateway]
hostname = "mx.test"
listen = ["{smtp}"]
state_dir = "{state}"
accept_domains = ["example.com", "unrouted.example"]
trusted_networks = ["127.0.0.2/32"]
{reserve}{extra_gateway}

[targets.old]
address = "{target}"
tls = "none"
[targets.new]
address = "{target}"
tls = "none"

[routing]
{default}
[[routing.rule]]
name = "pilot"
recipients = ["bob@example.com"]
deliver = ["old", "new"]
[[routing.rule]]
name = "wave"
recipients = ["carol@example.com", "@partner.net"]
deliver = ["new"]
[[routing.rule]]
name = "domain"
recipients = ["@example.com"]
deliver = ["old"]

[admin]
listen = "{admin}"

{extra}
"#,
                state = state.display(),
                reserve = if opts.extra_gateway.contains("min_free_space") {
                    ""
                } else {
                    "min_free_space = \"1MiB\"\n"
                },
                extra_gateway = opts.extra_gateway,
                target = opts.target.as_deref().unwrap_or("127.0.0.1:9"),
                extra = opts.extra,
            )
        });
        g.args = opts.args;
        g.env = opts.env;
        g.wrap = opts.wrap;
        g.spawn();
        g
    }

    /// A gateway on a configuration of the test's own: `text(smtp, admin, state_dir)` is the
    /// whole file (written as `cutover.toml` in the temp dir, next to any files the test adds).
    pub fn start_config(text: impl FnOnce(SocketAddr, SocketAddr, &Path) -> String) -> Gateway {
        let mut g = Self::configure(text);
        g.spawn();
        g
    }

    /// Like [`Gateway::start_config`], but not started yet: the test prepares the directory
    /// (e.g. mounts a filesystem at [`Gateway::state_dir`]), then calls [`Gateway::spawn`].
    pub fn configure(text: impl FnOnce(SocketAddr, SocketAddr, &Path) -> String) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let smtp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.path().join("cutover.toml");
        std::fs::write(&config, text(smtp, admin, &dir.path().join("state"))).unwrap();
        Gateway {
            guards: Vec::new(),
            dir,
            config,
            smtp,
            admin,
            args: Vec::new(),
            env: Vec::new(),
            wrap: Vec::new(),
            child: None,
        }
    }

    /// Add `key=value` to the environment of the processes [`Gateway::spawn`] starts.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Keep `guard` (e.g. a mount) until the process has been killed; it is dropped before the
    /// temp dir is removed.
    pub fn hold(&mut self, guard: impl Any) {
        self.guards.push(Box::new(guard));
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("serve.log")
    }

    /// Start the process and wait until the SMTP port answers.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = match self.wrap.split_first() {
            None => Command::new(bin()),
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(bin());
                c
            }
        };
        let child = cmd
            .args(["serve", "-c"])
            .arg(&self.config)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect_timeout(&self.smtp, Duration::from_millis(200)).is_ok()
            {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("cutover serve exited early ({st}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// PID of the spawned child (the wrapper, if any).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The exit status if the process has exited (it is then no longer running: `spawn` may
    /// start it again); `None` while it runs or when it was never started.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        let st = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(st)
    }

    /// Is the process running?
    pub fn alive(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    /// Wait (bounded) for the process to exit by itself; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// PID of the `cutover serve` process itself (the wrapper's child when wrapped).
    pub fn server_pid(&self) -> u32 {
        let pid = self.pid();
        if self.wrap.is_empty() {
            return pid;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = child_of(pid, "cutover") {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "no cutover process under the wrapper {:?} (pid {pid})",
                self.wrap[0]
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9 and reap. When wrapped, the gateway itself is killed (a killed tracer would leave
    /// it running), then the wrapper is reaped once it exits (bounded; killed after 20 s).
    pub fn kill9(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if self.wrap.is_empty() {
            let _ = c.kill();
            let _ = c.wait();
            return;
        }
        if let Some(p) = child_of(c.id(), "cutover") {
            // SAFETY: plain kill(2) on our own grandchild's PID.
            unsafe {
                libc::kill(p as i32, libc::SIGKILL);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send a signal to the gateway (by PID).
    pub fn signal(&self, sig: i32) {
        let pid = self.server_pid() as i32;
        // SAFETY: plain kill(2) on our own child's PID.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    /// SIGTERM and wait for the exit status (bounded).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let mut c = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("serve did not exit after SIGTERM: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `cutover queue list --json` (live through the admin API, or offline).
    pub fn queue_list(&self) -> serde_json::Value {
        queue_list(&self.config)
    }
}

/// A child of `parent` whose command name is `comm` (scans /proc/*/stat).
pub fn child_of(parent: u32, comm: &str) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may contain spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && name == comm {
            return Some(pid);
        }
    }
    None
}

pub fn queue_list(config: &Path) -> serde_json::Value {
    let out = Command::new(bin())
        .args(["queue", "list", "--json", "-c"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "queue list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Number of queued messages per `cutover queue list --json`; `None` when the command fails
/// (e.g. while the gateway restarts), for polling loops.
pub fn queue_len(config: &Path) -> Option<usize> {
    let out = Command::new(bin())
        .args(["queue", "list", "--json", "-c"])
        .arg(config)
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array()
        .map(|a| a.len())
        .or_else(|| v["messages"].as_array().map(|a| a.len()))
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A reply: code and the text of all its lines joined with '\n'.
#[derive(Clone, Debug)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    /// `"250 2.1.5"`-style prefix check: the code and (if given) the enhanced code.
    pub fn is(&self, code: u16, esc: &str) -> bool {
        self.code == code && (esc.is_empty() || self.text.starts_with(esc))
    }
}

/// Any byte stream a test client can run over (TCP or TLS).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// Minimal SMTP client for tests.
pub struct Client {
    r: BufReader<tokio::io::ReadHalf<Box<dyn Io>>>,
    w: tokio::io::WriteHalf<Box<dyn Io>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Self::connect_from("127.0.0.1", addr).await
    }

    /// Connect with the client socket bound to `ip` (e.g. 127.0.0.2 for the trusted network).
    pub async fn connect_from(ip: &str, addr: SocketAddr) -> Client {
        Self::from_stream(Self::raw_from(ip, addr).await)
    }

    pub fn from_stream(s: impl Io + 'static) -> Client {
        let b: Box<dyn Io> = Box::new(s);
        let (r, w) = tokio::io::split(b);
        Client {
            r: BufReader::new(r),
            w,
        }
    }

    pub async fn raw_from(ip: &str, addr: SocketAddr) -> TcpStream {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        tokio::time::timeout(STEP, sock.connect(addr))
            .await
            .expect("connect timeout")
            .unwrap()
    }

    /// Connect and consume the greeting (asserting 220).
    pub async fn greeted(addr: SocketAddr) -> Client {
        let mut c = Self::connect(addr).await;
        let g = c.read_reply().await;
        assert_eq!(g.code, 220, "{g:?}");
        c
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.unwrap();
    }

    /// Send, ignoring errors (the server may be gone; the next read tells).
    pub async fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = tokio::time::timeout(STEP, self.w.write_all(bytes)).await;
    }

    /// Read one full reply; code 0 when the server closed the connection.
    pub async fn read_reply(&mut self) -> Reply {
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(STEP, self.r.read_line(&mut line))
                .await
                .expect("reply timeout")
                .unwrap_or(0);
            if n == 0 {
                return Reply {
                    code: 0,
                    text: text.join("\n"),
                };
            }
            let line = line.trim_end_matches(['\r', '\n']);
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            let more = line.as_bytes().get(3) == Some(&b'-');
            text.push(line.get(4..).unwrap_or("").to_string());
            if !more {
                return Reply {
                    code,
                    text: text.join("\n"),
                };
            }
        }
    }

    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send_lossy(format!("{line}\r\n").as_bytes()).await;
        self.read_reply().await
    }

    /// True when the server closed the connection (EOF within the step timeout).
    pub async fn closed(&mut self) -> bool {
        let mut line = String::new();
        matches!(
            tokio::time::timeout(STEP, self.r.read_line(&mut line)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// Dot-stuff a message body and terminate it.
pub fn stuffed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    let mut at_start = true;
    for &b in body {
        if at_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_start = b == b'\n';
    }
    if !body.ends_with(b"\r\n") && !body.is_empty() {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Full transaction on an open, EHLO'd client: MAIL, RCPTs, DATA. Returns the final reply.
pub async fn send_message(c: &mut Client, from: &str, rcpts: &[&str], body: &[u8]) -> Reply {
    let r = c.cmd(&format!("MAIL FROM:<{from}>")).await;
    if r.code != 250 {
        return r;
    }
    let mut any = false;
    for rc in rcpts {
        let r = c.cmd(&format!("RCPT TO:<{rc}>")).await;
        any |= r.code == 250;
    }
    if !any {
        c.cmd("RSET").await;
        return Reply {
            code: 554,
            text: "no recipient accepted".into(),
        };
    }
    let r = c.cmd("DATA").await;
    if r.code != 354 {
        return r;
    }
    c.send(&stuffed(body)).await;
    c.read_reply().await
}

/// Queue id from `250 2.0.0 Ok: queued as ID`.
pub fn queued_id(r: &Reply) -> Option<String> {
    r.text
        .strip_prefix("2.0.0 Ok: queued as ")
        .map(|s| s.trim().to_string())
}

/// One reply read byte by byte from a plain stream (never reads past it: what follows may be TLS).
pub async fn plain_reply(s: &mut TcpStream) -> Reply {
    use tokio::io::AsyncReadExt;
    let mut text = Vec::new();
    loop {
        let mut line = Vec::new();
        loop {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(STEP, s.read(&mut b))
                .await
                .expect("reply timeout")
                .unwrap_or(0);
            if n == 0 {
                return Reply {
                    code: 0,
                    text: text.join("\n"),
                };
            }
            if b[0] == b'\n' {
                break;
            }
            line.push(b[0]);
        }
        let line = String::from_utf8_lossy(&line).trim_end().to_string();
        let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        let more = line.as_bytes().get(3) == Some(&b'-');
        text.push(line.get(4..).unwrap_or("").to_string());
        if !more {
            return Reply {
                code,
                text: text.join("\n"),
            };
        }
    }
}

pub async fn plain_cmd(s: &mut TcpStream, line: &str) -> Reply {
    s.write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
    plain_reply(s).await
}
