//! Stand-in mail servers for `cutover demo` and for tests: an embedded SMTP server
//! (mailin-embedded) that files every message it receives into a Maildir per recipient,
//! `<root>/<local part>/new/<unique>`. Not for production: mailin rejects `MAIL FROM:<>` and
//! runs one thread per connection.

use mailin_embedded::{Handler, Response, Server, response};
use std::io;
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Files messages into Maildirs under `root`.
#[derive(Clone)]
pub struct MaildirSink {
    root: PathBuf,
    rcpts: Vec<String>,
    buf: Vec<u8>,
    counter: Arc<AtomicU64>,
    name: String,
}

impl MaildirSink {
    pub fn new(name: &str, root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            rcpts: Vec::new(),
            buf: Vec::new(),
            counter: Arc::new(AtomicU64::new(0)),
            name: name.to_string(),
        }
    }

    fn deliver(&self) -> io::Result<()> {
        for r in &self.rcpts {
            let local = r.rsplit_once('@').map(|(l, _)| l).unwrap_or(r);
            let safe: String = local
                .chars()
                .map(|c| {
                    if c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '+') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let dir = self.root.join(if safe.is_empty() {
                "_".to_string()
            } else {
                safe
            });
            for sub in ["new", "cur", "tmp"] {
                std::fs::create_dir_all(dir.join(sub))?;
            }
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros())
                .unwrap_or(0);
            let name = format!("{now}.{}_{n}.{}", std::process::id(), self.name);
            let tmp = dir.join("tmp").join(&name);
            std::fs::write(&tmp, &self.buf)?;
            std::fs::rename(&tmp, dir.join("new").join(&name))?;
        }
        Ok(())
    }
}

impl Handler for MaildirSink {
    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.rcpts = to.to_vec();
        self.buf.clear();
        response::OK
    }

    fn rcpt(&mut self, _to: &str) -> Response {
        response::OK
    }

    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        // Never fail here (mailin would abort the session); limits are checked in data_end.
        self.buf.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        match self.deliver() {
            Ok(()) => response::OK,
            Err(_) => response::INTERNAL_ERROR,
        }
    }
}

/// Start a stand-in server on an already bound listener, in its own thread.
pub fn start(
    name: &str,
    listener: TcpListener,
    root: &Path,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::fs::create_dir_all(root)?;
    let sink = MaildirSink::new(name, root);
    let mut server = Server::new(sink);
    server
        .with_name(format!("{name}.demo.invalid"))
        .with_num_threads(8)
        .with_tcp_listener(listener);
    let name = name.to_string();
    std::thread::Builder::new()
        .name(format!("standin-{name}"))
        .spawn(move || {
            if let Err(e) = server.serve() {
                tracing::error!(server = %name, error = ?e, "stand-in server stopped");
            }
        })
}

/// Messages in `<root>/<user>/new`, as (user, file name) pairs, sorted.
pub fn maildir_messages(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    if let Ok(users) = std::fs::read_dir(root) {
        for u in users.flatten() {
            let user = u.file_name().to_string_lossy().into_owned();
            if let Ok(files) = std::fs::read_dir(u.path().join("new")) {
                for f in files.flatten() {
                    out.push((user.clone(), f.path()));
                }
            }
        }
    }
    out.sort();
    out
}
