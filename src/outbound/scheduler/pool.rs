//! Per-target connection pools of the delivery engine: a pool per target name (and per
//! recipient domain for MX delivery), each with its connection slots, idle SMTP sessions and
//! whole-target back-off state. Holds sessions; never opens them and never decides retries.

use crate::outbound::client::Session;
use crate::queue::model::MX_TARGET;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Semaphore;

/// Connection slots of each per-domain MX pool.
pub const MX_CONNECTIONS: usize = 4;

/// Pool key for a leg: its target name, or `@mx:<domain>` for MX-routed legs ([`MX_TARGET`],
/// DSNs): a pool per recipient domain, so one slow domain holds only its own slots and backs off
/// alone.
pub fn pool_key(target: &str, rcpts: &[String]) -> String {
    if target != MX_TARGET {
        return target.to_string();
    }
    let domain = rcpts
        .first()
        .and_then(|r| r.rsplit_once('@'))
        .map(|(_, d)| crate::address::normalise_domain(d))
        .unwrap_or_default();
    format!("{MX_TARGET}:{domain}")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One target's (or MX domain's) pool.
pub struct Pool {
    pub permits: Arc<Semaphore>,
    idle: Mutex<Vec<(Session, Instant)>>,
    /// Whole-target back-off after connection failures: until when, and why.
    down_until: Mutex<Option<(SystemTime, String)>>,
    /// Connection failures in a row.
    failures: AtomicU64,
    /// Since when connections have been failing, and the last reason; cleared by a session
    /// that opens (read by [`Pools::unreachable`] for the alerts).
    failing: Mutex<Option<(SystemTime, String)>>,
}

impl Pool {
    fn new(connections: usize) -> Self {
        Pool {
            permits: Arc::new(Semaphore::new(connections.max(1))),
            idle: Mutex::new(Vec::new()),
            down_until: Mutex::new(None),
            failures: AtomicU64::new(0),
            failing: Mutex::new(None),
        }
    }

    /// The back-off in force at `now`, if any: until when, and why.
    pub fn down_at(&self, now: SystemTime) -> Option<(SystemTime, String)> {
        lock(&self.down_until)
            .clone()
            .filter(|(until, _)| *until > now)
    }

    /// A connection failed: count it and return the number of failures in a row.
    pub fn failed(&self) -> u64 {
        self.failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Back off the whole target until `until`.
    /// Back off the whole target until `until`; the target counts as unreachable from the
    /// first back-off after a session last opened.
    pub fn back_off(&self, until: SystemTime, why: &str) {
        *lock(&self.down_until) = Some((until, why.to_string()));
        let mut failing = lock(&self.failing);
        let since = failing.as_ref().map_or_else(SystemTime::now, |(s, _)| *s);
        *failing = Some((since, why.to_string()));
    }

    /// A session is open: the failure count restarts and the target is reachable.
    pub fn connected(&self) {
        self.failures.store(0, Ordering::Relaxed);
        *lock(&self.failing) = None;
    }

    /// Since when the target has been unreachable (connection failures with no session opened
    /// since), and the last failure's reason.
    pub fn unreachable(&self) -> Option<(SystemTime, String)> {
        lock(&self.failing).clone()
    }

    /// A transaction is starting: the target is up.
    pub fn up(&self) {
        *lock(&self.down_until) = None;
    }

    /// An idle session to reuse, if any.
    pub fn take_idle(&self) -> Option<Session> {
        lock(&self.idle).pop().map(|(s, _)| s)
    }

    /// Keep `s` for reuse.
    pub fn put_idle(&self, s: Session) {
        lock(&self.idle).push((s, Instant::now()));
    }

    /// Remove the sessions idle for `max` or longer (all with `Duration::ZERO`).
    fn expire_idle(&self, max: Duration) -> Vec<Session> {
        let mut idle = lock(&self.idle);
        let (keep, old): (Vec<_>, Vec<_>) = std::mem::take(&mut *idle)
            .into_iter()
            .partition(|(_, t)| !max.is_zero() && t.elapsed() < max);
        *idle = keep;
        old.into_iter().map(|(s, _)| s).collect()
    }
}

/// Every pool of the engine, by [`pool_key`].
#[derive(Default)]
pub struct Pools {
    map: Mutex<HashMap<String, Arc<Pool>>>,
}

impl Pools {
    /// The pool for `key`, created with `connections` slots when new.
    pub fn get(&self, key: &str, connections: usize) -> Arc<Pool> {
        lock(&self.map)
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(Pool::new(connections)))
            .clone()
    }

    /// Forget the per-domain MX pools nobody uses and that are not backing off at `now`, and
    /// return the sessions idle for `idle_timeout` or longer, to be closed.
    pub fn reap(&self, now: SystemTime, idle_timeout: Duration) -> Vec<Session> {
        let mut map = lock(&self.map);
        map.retain(|k, p| {
            !k.starts_with(MX_TARGET) || Arc::strong_count(p) > 1 || p.down_at(now).is_some()
        });
        let pools: Vec<Arc<Pool>> = map.values().cloned().collect();
        drop(map);
        pools
            .iter()
            .flat_map(|p| p.expire_idle(idle_timeout))
            .collect()
    }

    /// The configured targets (not the per-domain MX pools) that are unreachable: by name, since
    /// when and the last connection failure.
    pub fn unreachable(&self) -> std::collections::BTreeMap<String, (SystemTime, String)> {
        lock(&self.map)
            .iter()
            .filter(|(k, _)| !k.starts_with(MX_TARGET))
            .filter_map(|(k, p)| p.unreachable().map(|u| (k.clone(), u)))
            .collect()
    }

    /// Every idle session of every pool, to be closed at shutdown.
    pub fn drain(&self) -> Vec<Session> {
        let pools: Vec<Arc<Pool>> = lock(&self.map).values().cloned().collect();
        pools
            .iter()
            .flat_map(|p| p.expire_idle(Duration::ZERO))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_keys() {
        assert_eq!(pool_key("new", &["a@x.example".into()]), "new");
        assert_eq!(
            pool_key(MX_TARGET, &["a@Mail.Example.".into(), "b@other".into()]),
            "@mx:mail.example"
        );
        assert_eq!(pool_key(MX_TARGET, &[]), "@mx:");
    }

    #[test]
    fn back_off_is_in_force_until_its_end() {
        let p = Pool::new(1);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert!(p.down_at(t0).is_none());
        assert_eq!(p.failed(), 1);
        assert_eq!(p.failed(), 2);
        p.back_off(t0 + Duration::from_secs(5), "refused");
        assert_eq!(
            p.down_at(t0),
            Some((t0 + Duration::from_secs(5), "refused".into()))
        );
        assert!(p.down_at(t0 + Duration::from_secs(5)).is_none());
        assert_eq!(p.unreachable().map(|u| u.1), Some("refused".into()));
        p.connected();
        assert!(p.unreachable().is_none());
        assert_eq!(p.failed(), 1);
        p.up();
        assert!(p.down_at(t0).is_none());
    }
}
