//! The listening sockets and the accept loop of each: binding (IPv6 sockets are IPv6-only, so
//! `0.0.0.0:25` and `[::]:25` can be listed together), connection limits (total → `421 4.3.2`;
//! per client and per client per minute → `421 4.7.0`), the PROXY header from listed load
//! balancers, one tokio task per admitted connection, and the stop on shutdown.
//! It never parses SMTP; sessions do.

use super::limits::{self, IntakeStats, Limit, RateDecision};
use super::session::Session;
use super::tls::Io;
use super::{Inbound, Settings, proxy};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tracing::Instrument;

/// Counts open sessions, in total and per client (see [`limits::client_key`]).
#[derive(Default)]
pub struct ConnTracker {
    total: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    idle: Notify,
}

/// Held by a connection from accept to close; releases its slots when dropped.
pub struct ConnGuard {
    inbound: Arc<Inbound>,
    /// The client slot, once taken.
    client: Option<IpAddr>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let t = &self.inbound.conns;
        if let Some(key) = self.client
            && let Ok(mut m) = t.per_client.lock()
            && let Some(n) = m.get_mut(&key)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&key);
            }
        }
        if t.total.fetch_sub(1, Ordering::SeqCst) == 1 {
            t.idle.notify_waiters();
        }
    }
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

/// Take a slot of `max_connections` (at accept, before a PROXY header is read).
fn admit_total(inbound: &Arc<Inbound>, max_total: usize) -> Result<ConnGuard, Limit> {
    let t = &inbound.conns;
    if t.total.fetch_add(1, Ordering::SeqCst) >= max_total {
        if t.total.fetch_sub(1, Ordering::SeqCst) == 1 {
            t.idle.notify_waiters();
        }
        return Err(Limit::Connections);
    }
    Ok(ConnGuard {
        inbound: inbound.clone(),
        client: None,
    })
}

/// Take a slot of `max_connections_per_ip` for `key`.
fn admit_client(guard: &mut ConnGuard, key: IpAddr, max_per_client: usize) -> Result<(), Limit> {
    let mut m = match guard.inbound.conns.per_client.lock() {
        Ok(m) => m,
        Err(p) => p.into_inner(),
    };
    let n = m.entry(key).or_insert(0);
    if *n >= max_per_client {
        if *n == 0 {
            m.remove(&key);
        }
        return Err(Limit::ClientConnections);
    }
    *n += 1;
    guard.client = Some(key);
    Ok(())
}

async fn refuse(mut s: TcpStream, why: Limit, hostname: &str) {
    let line = match why {
        Limit::Connections => {
            format!("421 4.3.2 {hostname} Too many connections, try again later\r\n")
        }
        Limit::ConnectionRate => {
            format!(
                "421 4.7.0 {hostname} Too many connections from your address per minute, slow down\r\n"
            )
        }
        _ => format!("421 4.7.0 {hostname} Too many connections from your address\r\n"),
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

/// One admitted connection: the PROXY header when its peer is a listed balancer, the per-client
/// limits on the real client (`trusted_networks` are exempt, as from Postfix's
/// `smtpd_client_event_limit_exceptions`), then the session.
async fn connection(
    mut sock: TcpStream,
    peer: SocketAddr,
    mut guard: ConnGuard,
    inbound: Arc<Inbound>,
    settings: Arc<Settings>,
    shutdown: watch::Receiver<bool>,
) {
    let p = &settings.policy;
    let (client, buffered) = if proxy::expects_header(p.proxy_protocol, &p.proxy_from, peer.ip()) {
        match proxy::read_header(&mut sock, proxy::HEADER_TIMEOUT).await {
            Ok(h) => (h.client.unwrap_or(peer), h.rest),
            Err(proxy::ProxyError::Closed) => {
                tracing::debug!(proxy = %peer, "load balancer closed without a header (health check)");
                return;
            }
            Err(e) => {
                inbound.stats.limit_hit(Limit::ProxyHeader);
                tracing::warn!(proxy = %peer, error = %e, "connection from a load balancer dropped");
                return;
            }
        }
    } else {
        (peer, Vec::new())
    };
    tracing::Span::current().record("client", tracing::field::display(client));
    if client != peer {
        tracing::debug!(proxy = %peer, "client address from the PROXY header");
    }
    if !p.is_trusted(client.ip()) {
        let key = limits::client_key(client.ip(), p.ipv6_prefix);
        let admitted = match inbound.rates.hit(key, std::time::Instant::now(), p.max_connection_rate) {
            RateDecision::Refuse => Err(Limit::ConnectionRate),
            RateDecision::TableFull => {
                tracing::warn!(client = %client, "connection-rate table full; not counting this client");
                Ok(())
            }
            RateDecision::Allow => Ok(()),
        }
        .and_then(|()| admit_client(&mut guard, key, p.max_connections_per_ip));
        if let Err(why) = admitted {
            inbound.stats.limit_hit(why);
            tracing::info!(client = %client, limit = why.as_str(), "connection refused");
            // The slot is free before the refusal is written (as if never admitted).
            drop(guard);
            refuse(sock, why, &p.hostname).await;
            return;
        }
    }
    IntakeStats::inc(&inbound.stats.connections);
    let io: Box<dyn Io> = Box::new(sock);
    Session::new(io, client, inbound, settings.clone(), shutdown)
        .with_buffered(buffered)
        .run()
        .await;
    drop(guard);
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
        let guard = match admit_total(&inbound, settings.policy.max_connections) {
            Ok(g) => g,
            Err(why) => {
                inbound.stats.limit_hit(why);
                tracing::info!(client = %peer, limit = why.as_str(), "connection refused");
                tokio::spawn(async move { refuse(sock, why, &settings.policy.hostname).await });
                continue;
            }
        };
        let inbound = inbound.clone();
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("smtp", client = tracing::field::Empty);
        tokio::spawn(connection(sock, peer, guard, inbound, settings, shutdown).instrument(span));
    }
    tracing::info!(listen = ?local, "listener stopped");
}
