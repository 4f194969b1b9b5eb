//! Abuse limits of the intake, as Postfix's anvil(8) and `smtpd_*_limit` set them: how clients
//! are counted (an IPv6 client by its prefix, default /64, since one host owns a whole /64), the
//! per-client connection-rate window, the per-session counters (junk commands, errors), and the
//! intake counters `/metrics` reports. Pure bookkeeping with the time passed in; it never touches
//! a socket and never decides a reply's wording (the session and the listener do).

pub use crate::telemetry::Rejection;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The window of `max_connection_rate` (Postfix's `anvil_rate_time_unit`).
pub const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Clients remembered by the rate limiter; above it, expired windows are dropped, and if none
/// has expired new clients are not rate-limited until some do (fail open, logged by the caller).
pub const RATE_TABLE_MAX: usize = 100_000;

/// The address per-client limits count: IPv4 as it is (IPv4-mapped IPv6 counts as IPv4), IPv6
/// masked to its first `ipv6_prefix` bits.
pub fn client_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match super::policy::canonical_ip(ip) {
        IpAddr::V6(v6) => {
            let bits = u32::from(ipv6_prefix.min(128));
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
        v4 => v4,
    }
}

/// New connections per client in fixed windows of [`RATE_WINDOW`].
#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// What [`RateLimiter::hit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum RateDecision {
    Allow,
    /// Over the limit in this window.
    Refuse,
    /// The table is full of live windows; allowed without counting.
    TableFull,
}

impl RateLimiter {
    /// Count a new connection from `key` at `now`; `limit` 0 means unlimited.
    pub fn hit(&self, key: IpAddr, now: Instant, limit: u32) -> RateDecision {
        if limit == 0 {
            return RateDecision::Allow;
        }
        let mut m = match self.windows.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if !m.contains_key(&key) && m.len() >= RATE_TABLE_MAX {
            m.retain(|_, (start, _)| now.saturating_duration_since(*start) < RATE_WINDOW);
            if m.len() >= RATE_TABLE_MAX {
                return RateDecision::TableFull;
            }
        }
        let w = m.entry(key).or_insert((now, 0));
        if now.saturating_duration_since(w.0) >= RATE_WINDOW {
            *w = (now, 0);
        }
        if w.1 >= limit {
            return RateDecision::Refuse;
        }
        w.1 += 1;
        RateDecision::Allow
    }

    pub fn len(&self) -> usize {
        self.windows.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why the intake turned a client away or closed its session; the label in `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `max_connections` (421 4.3.2 at connect).
    Connections,
    /// `max_connections_per_ip` (421 4.7.0 at connect).
    ClientConnections,
    /// `max_connection_rate` (421 4.7.0 at connect).
    ConnectionRate,
    /// A missing or malformed PROXY header from a `proxy_from` address (closed without a reply).
    ProxyHeader,
    /// `command_timeout`: one command line took longer (421 4.4.2).
    CommandTimeout,
    /// `max_session_time` (421 4.4.2).
    SessionTime,
    /// `data_idle_timeout`, or DATA slower than `min_data_rate` (421 4.4.2).
    DataRate,
    /// `junk_command_limit` (421 4.7.0).
    JunkCommands,
    /// `hard_error_limit` (421 4.7.0).
    Errors,
}

impl Limit {
    pub const ALL: [Limit; 9] = [
        Limit::Connections,
        Limit::ClientConnections,
        Limit::ConnectionRate,
        Limit::ProxyHeader,
        Limit::CommandTimeout,
        Limit::SessionTime,
        Limit::DataRate,
        Limit::JunkCommands,
        Limit::Errors,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::ClientConnections => "client_connections",
            Limit::ConnectionRate => "connection_rate",
            Limit::ProxyHeader => "proxy_header",
            Limit::CommandTimeout => "command_timeout",
            Limit::SessionTime => "session_time",
            Limit::DataRate => "data_rate",
            Limit::JunkCommands => "junk_commands",
            Limit::Errors => "errors",
        }
    }
}

/// Counters of the intake since start, for `/metrics`.
#[derive(Default)]
pub struct IntakeStats {
    pub connections: AtomicU64,
    limits: [AtomicU64; Limit::ALL.len()],
    rejections: [AtomicU64; Rejection::ALL.len()],
    pub messages_accepted: AtomicU64,
    pub messages_refused: AtomicU64,
    pub rcpts_accepted: AtomicU64,
    pub rcpts_refused: AtomicU64,
}

impl IntakeStats {
    pub fn limit_hit(&self, l: Limit) {
        self.limits[l as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn limit_count(&self, l: Limit) -> u64 {
        self.limits[l as usize].load(Ordering::Relaxed)
    }

    /// Count one refusal for `why`.
    pub fn rejected(&self, why: Rejection) {
        self.rejections[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejection_count(&self, why: Rejection) -> u64 {
        self.rejections[why as usize].load(Ordering::Relaxed)
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Per-session counters of [`Limit::JunkCommands`] and [`Limit::Errors`]; both start again
/// after each accepted message (Postfix: "without delivering mail").
#[derive(Debug, Default)]
pub struct SessionCounters {
    pub junk: u32,
    pub errors: u32,
}

impl SessionCounters {
    /// Which limit, if any, the session is now over.
    pub fn over(&self, junk_limit: u32, error_limit: u32) -> Option<Limit> {
        if self.errors >= error_limit {
            Some(Limit::Errors)
        } else if self.junk > junk_limit {
            Some(Limit::JunkCommands)
        } else {
            None
        }
    }

    pub fn message_accepted(&mut self) {
        *self = SessionCounters::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a, 64), client_key(b, 64));
        assert_ne!(client_key(a, 64), client_key(c, 64));
        assert_eq!(
            client_key(a, 64),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_ne!(client_key(a, 128), client_key(b, 128));
        assert_eq!(client_key(a, 48), client_key(c, 48));
        // IPv4 and IPv4-mapped IPv6 are the same client.
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped, 64), v4);
        assert_eq!(client_key(v4, 64), v4);
    }

    #[test]
    fn rate_limit_is_per_client_and_window() {
        let r = RateLimiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(r.hit(a, t0, 3), RateDecision::Allow);
        }
        assert_eq!(
            r.hit(a, t0 + Duration::from_secs(59), 3),
            RateDecision::Refuse
        );
        assert_eq!(r.hit(b, t0, 3), RateDecision::Allow);
        assert_eq!(r.hit(a, t0 + RATE_WINDOW, 3), RateDecision::Allow);
        // 0 = unlimited, nothing remembered.
        let u = RateLimiter::default();
        for _ in 0..1000 {
            assert_eq!(u.hit(a, t0, 0), RateDecision::Allow);
        }
        assert!(u.is_empty());
    }

    #[test]
    fn rate_table_is_bounded() {
        let r = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..RATE_TABLE_MAX as u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i));
            assert_eq!(r.hit(ip, t0, 5), RateDecision::Allow);
        }
        let new = IpAddr::from(std::net::Ipv4Addr::from(u32::MAX));
        assert_eq!(r.hit(new, t0, 5), RateDecision::TableFull);
        assert_eq!(r.len(), RATE_TABLE_MAX);
        // Once the windows expire, they make room.
        assert_eq!(r.hit(new, t0 + RATE_WINDOW, 5), RateDecision::Allow);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn session_counters_trip_and_reset() {
        let mut c = SessionCounters {
            junk: 100,
            errors: 0,
        };
        assert_eq!(c.over(100, 20), None);
        c.junk = 101;
        assert_eq!(c.over(100, 20), Some(Limit::JunkCommands));
        c.errors = 20;
        assert_eq!(c.over(100, 20), Some(Limit::Errors));
        c.message_accepted();
        assert_eq!(c.over(100, 20), None);
    }
}
