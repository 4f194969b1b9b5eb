//! Helpers for the queue-operation tests: an in-process admin API (as `serve` runs it) over a
//! queue and a config file, stopped on drop of the returned handle.
#![allow(dead_code)]

use cutover::admin::{self, AdminState};
use cutover::outbound::stats::Stats;
use cutover::queue::Queue;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

pub struct Admin {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Keeps the config channel open.
    pub config: tokio::sync::watch::Sender<Arc<cutover::config::Config>>,
    /// The routing table compiled with it (sent together on a reload).
    pub routes: tokio::sync::watch::Sender<Arc<cutover::routing::Router>>,
}

impl Admin {
    /// Stop the server and wait for it.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

/// Serve the admin API for `queue` on 127.0.0.1:0 with the config at `config_path`.
pub async fn start_admin(queue: Queue, config_path: &Path, stats: Option<Arc<Stats>>) -> Admin {
    let loaded = cutover::loader::load(config_path).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(loaded.config));
    let (routes_tx, routes_rx) = tokio::sync::watch::channel(loaded.router);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(admin::serve(
        listener,
        AdminState::new(queue, rx, routes_rx, stats),
        async {
            let _ = stop_rx.await;
        },
    ));
    Admin {
        addr,
        stop: Some(stop_tx),
        task: Some(task),
        config: tx,
        routes: routes_tx,
    }
}

/// One HTTP/1.0 request as the CLI sends it (`Host: addr`, no token); returns the whole response
/// (status line, headers, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> String {
    http_with(addr, method, path, &format!("Host: {addr}\r\n")).await
}

/// One HTTP/1.0 request with exactly these extra header lines (each ending in CRLF).
pub async fn http_with(addr: SocketAddr, method: &str, path: &str, headers: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("{method} {path} HTTP/1.0\r\n{headers}Content-Length: 0\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        buf
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), fut)
        .await
        .expect("admin API answered in time")
}

/// The body of an HTTP response.
pub fn body_of(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

/// Minimal Prometheus/OpenMetrics text check: every sample line is `name{labels} value` with a
/// declared family (counters, gauges, histograms), and the exposition ends with `# EOF`. Returns
/// samples by `name{labels}`.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let name_re = regex::Regex::new(
        r#"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*",?)*\})? (\S+)$"#,
    )
    .unwrap();
    let mut families = BTreeMap::new();
    let mut samples = BTreeMap::new();
    assert!(text.ends_with("# EOF\n"), "{text}");
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            families.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        let c = name_re
            .captures(line)
            .unwrap_or_else(|| panic!("bad sample line: {line:?}"));
        let name = &c[1];
        let family = families
            .keys()
            .find(|f| {
                let base = ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s));
                name == f.as_str() || base == Some(f.as_str())
            })
            .unwrap_or_else(|| panic!("sample without a TYPE: {line}"));
        if families[family] == "counter" {
            assert!(name.ends_with("_total"), "{line}");
        }
        let value: f64 = c[4].parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let (key, _) = line.rsplit_once(' ').unwrap();
        samples.insert(key.to_string(), value);
    }
    samples
}
