//! The listening sockets and the accept loop of each: binding (IPv6 sockets are IPv6-only, so
//! `0.0.0.0:25` and `[::]:25` can be listed together), connection limits (total → `421 4.3.2`,
//! per client IP → `421 4.7.0`), one tokio task per admitted connection, and the stop on shutdown.
//! It never parses SMTP; sessions do.

use super::Inbound;
use super::session::Session;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tracing::Instrument;

/// Counts open sessions, in total and per client IP.
#[derive(Default)]
pub struct ConnTracker {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    idle: Notify,
}

/// Held by a session; releases its slot when dropped.
pub struct ConnGuard {
    inbound: Arc<Inbound>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let t = &self.inbound.conns;
        if let Ok(mut m) = t.per_ip.lock()
            && let Some(n) = m.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
        if t.total.fetch_sub(1, Ordering::SeqCst) == 1 {
            t.idle.notify_waiters();
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Total,
    PerIp,
}

impl ConnTracker {
    pub fn open(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Wait until no session is open, or `limit` elapsed; returns whether they all ended.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.idle.notified();
            if self.open() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.open() == 0;
            }
        }
    }
}

fn admit(
    inbound: &Arc<Inbound>,
    ip: IpAddr,
    max_total: usize,
    max_per_ip: usize,
) -> Result<ConnGuard, Refusal> {
    let t = &inbound.conns;
    let mut m = match t.per_ip.lock() {
        Ok(m) => m,
        Err(p) => p.into_inner(),
    };
    if t.total.load(Ordering::SeqCst) >= max_total {
        return Err(Refusal::Total);
    }
    let n = m.entry(ip).or_insert(0);
    if *n >= max_per_ip {
        if *n == 0 {
            m.remove(&ip);
        }
        return Err(Refusal::PerIp);
    }
    *n += 1;
    t.total.fetch_add(1, Ordering::SeqCst);
    Ok(ConnGuard {
        inbound: inbound.clone(),
        ip,
    })
}

async fn refuse(mut s: TcpStream, why: Refusal, hostname: String) {
    let line = match why {
        Refusal::Total => format!("421 4.3.2 {hostname} Too many connections, try again later\r\n"),
        Refusal::PerIp => {
            format!("421 4.7.0 {hostname} Too many connections from your address\r\n")
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = s.write_all(line.as_bytes()).await;
        let _ = s.shutdown().await;
    })
    .await;
}

/// Bind one `gateway.listen` address. An IPv6 socket gets `IPV6_V6ONLY`: a dual-stack `[::]:25`
/// would also claim IPv4 port 25 and collide with a listed `0.0.0.0:25` (`EADDRINUSE`) on a stock
/// Linux host (`net.ipv6.bindv6only = 0`); IPv4 clients need an IPv4 address in the list.
/// `SO_REUSEADDR` and the backlog are as `tokio::net::TcpListener::bind` sets them.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}

/// Accept connections on `listener` until `shutdown` turns true.
pub async fn serve_listener(
    listener: TcpListener,
    inbound: Arc<Inbound>,
    shutdown: watch::Receiver<bool>,
) {
    let local = listener.local_addr().ok();
    let mut stop = shutdown.clone();
    loop {
        if *stop.borrow() {
            break;
        }
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => continue,
        };
        let (sock, peer): (TcpStream, SocketAddr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let settings = inbound.settings();
        let ip = super::policy::canonical_ip(peer.ip());
        match admit(
            &inbound,
            ip,
            settings.policy.max_connections,
            settings.policy.max_connections_per_ip,
        ) {
            Ok(guard) => {
                let inbound = inbound.clone();
                let shutdown = shutdown.clone();
                let span = tracing::info_span!("smtp", client = %peer);
                tokio::spawn(
                    async move {
                        let session =
                            Session::new(Box::new(sock), peer, inbound, settings, shutdown);
                        session.run().await;
                        drop(guard);
                    }
                    .instrument(span),
                );
            }
            Err(why) => {
                tracing::info!(client = %peer, reason = ?why, "connection refused: limit reached");
                tokio::spawn(refuse(sock, why, settings.policy.hostname.clone()));
            }
        }
    }
    tracing::info!(listen = ?local, "listener stopped");
}
