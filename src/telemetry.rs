//! Delivery telemetry the hot path bumps and `/metrics` and the status page read: per target,
//! recipient outcome counters (attempts, delivered, deferred, failed, expired), histograms of
//! delivery latency (one attempt: connect and SMTP transaction) and queue residence (acceptance
//! to a leg's final state), and a ring of the last 60 minutes of accepted / delivered /
//! deferred / bounced recipients; the accepted message size histogram; the build info.
//! A leaf: it depends on nothing else in the crate (inbound, outbound and admin depend on it).
//! Everything takes its time as an argument; the minute ring and the histograms are pure data.
//! It never renders, logs or decides anything.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// Minutes kept by [`MinuteRing`] and reported by [`Telemetry::last_hour`].
pub const MINUTES: usize = 60;

/// Upper bounds of `cutover_delivery_latency_seconds` (one attempt).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Upper bounds of `cutover_queue_residence_seconds` (1 s to 5 days, `max_age`'s default).
pub const RESIDENCE_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0,
    86400.0, 172800.0, 432000.0,
];
/// Upper bounds of `cutover_message_size_bytes` (1 KiB to 64 MiB).
pub const SIZE_BUCKETS: &[f64] = &[
    1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
];

/// The version `cutover_build_info` reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A histogram with fixed upper bounds; `counts` has one more entry than `bounds` (`+Inf`) and
/// is per bucket, not cumulative.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Histogram {
    pub bounds: &'static [f64],
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// `(upper bound, count in that bucket)` pairs ending with `+Inf`, as encoders want them.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().copied())
            .collect()
    }
}

/// One minute's recipient counts of one target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteCounts {
    /// Recipients accepted at intake for this target (summed over its legs).
    pub accepted: u64,
    pub delivered: u64,
    /// Deferrals (a recipient deferred twice counts twice).
    pub deferred: u64,
    /// Recipients failed permanently (5xx or expired).
    pub bounced: u64,
}

/// What happened to recipients, for the minute ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Accepted,
    Delivered,
    Deferred,
    Bounced,
}

impl MinuteCounts {
    fn add(&mut self, e: Event, n: u64) {
        let c = match e {
            Event::Accepted => &mut self.accepted,
            Event::Delivered => &mut self.delivered,
            Event::Deferred => &mut self.deferred,
            Event::Bounced => &mut self.bounced,
        };
        *c += n;
    }
}

/// The minute (since the Unix epoch) `t` falls in; 0 before the epoch.
pub fn minute_of(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() / 60)
        .unwrap_or(0)
}

/// The first of the [`MINUTES`] minutes of the window that ends with minute `now`.
fn window_start(now: u64) -> u64 {
    now.saturating_sub(MINUTES as u64 - 1)
}

/// Counts per minute for the last [`MINUTES`] minutes: slot `m % 60` holds minute `m`. A slot
/// is reused when a later minute comes; an event for a minute older than its slot's is dropped
/// (the clock went back an hour), so idle minutes read as zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinuteRing {
    slots: Vec<Option<(u64, MinuteCounts)>>,
}

impl Default for MinuteRing {
    fn default() -> Self {
        MinuteRing {
            slots: vec![None; MINUTES],
        }
    }
}

impl MinuteRing {
    /// Count `n` events of kind `e` in `minute`.
    pub fn add(&mut self, minute: u64, e: Event, n: u64) {
        let slot = &mut self.slots[(minute % MINUTES as u64) as usize];
        match slot {
            Some((m, c)) if *m == minute => c.add(e, n),
            Some((m, _)) if *m > minute => {}
            _ => {
                let mut c = MinuteCounts::default();
                c.add(e, n);
                *slot = Some((minute, c));
            }
        }
    }

    /// The counts of the [`MINUTES`] minutes ending with minute `now`, oldest first.
    pub fn window(&self, now: u64) -> Vec<MinuteCounts> {
        (window_start(now)..window_start(now) + MINUTES as u64)
            .map(|m| match self.slots[(m % MINUTES as u64) as usize] {
                Some((at, c)) if at == m => c,
                _ => MinuteCounts::default(),
            })
            .collect()
    }
}

/// Why the intake refused a recipient (at RCPT) or a message (at MAIL or DATA); the `reason`
/// label of `cutover_intake_rejections_total`. Each refusal is counted once, where its reply is
/// made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// A domain not in `accept_domains` from an untrusted client, a trusted client's relay
    /// without a rule naming the domain, source routes and `%`/`!` hacks (`550 5.7.1`).
    RelayDenied,
    /// A domain of ours that no rule routes (`550 5.1.1`, or `450 4.1.1` without
    /// `reject_unrouted`).
    Unrouted,
    /// Recipient verification found the user unknown (a list or the target's 5xx).
    UnknownRecipient,
    /// Recipient verification could not tell (the target's 4xx or no answer).
    VerifyTempfail,
    /// Our loop header, or too many `Received:` headers (`554 5.4.6`).
    Loop,
    /// `SIZE=` or the message over `max_message_size`, or its header section too large.
    Size,
    /// TLS required but not in use, too many recipients, bare CR/LF or NUL in the content.
    Policy,
    /// Malformed sender or recipient address, unadvertised parameters.
    Syntax,
    /// Disk space below the reserve, or the queue could not store the message (`4.3.x`).
    Storage,
    /// A DMARC `p=reject` failure under `auth.dmarc = "reject"` (`550 5.7.1`).
    Dmarc,
    /// Our own domain used by a sender passing neither SPF nor DKIM, under
    /// `auth.spoof_protection` (`550 5.7.1`, `451 4.7.5` when a check could not finish).
    Spoof,
}

impl Rejection {
    pub const ALL: [Rejection; 11] = [
        Rejection::RelayDenied,
        Rejection::Unrouted,
        Rejection::UnknownRecipient,
        Rejection::VerifyTempfail,
        Rejection::Loop,
        Rejection::Size,
        Rejection::Policy,
        Rejection::Syntax,
        Rejection::Storage,
        Rejection::Dmarc,
        Rejection::Spoof,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::RelayDenied => "relay_denied",
            Rejection::Unrouted => "unrouted",
            Rejection::UnknownRecipient => "unknown_recipient",
            Rejection::VerifyTempfail => "verify_tempfail",
            Rejection::Loop => "loop",
            Rejection::Size => "size",
            Rejection::Policy => "policy",
            Rejection::Syntax => "syntax",
            Rejection::Storage => "storage",
            Rejection::Dmarc => "dmarc",
            Rejection::Spoof => "spoof",
        }
    }
}

/// A recipient's outcome in one attempt, for the delivery counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Deferred,
    /// Failed permanently (5xx, or expired: then also counted as `expired`).
    Failed,
}

/// What is kept per target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetCounters {
    /// Attempts that ran or tried to connect (not postponements or expiry).
    pub attempts: u64,
    pub delivered: u64,
    pub deferred: u64,
    pub failed: u64,
    /// Recipients failed after `max_age` (included in `failed`).
    pub expired: u64,
    /// Seconds of one attempt: connect (or a pooled session) and the SMTP transaction.
    pub latency: Histogram,
    /// Seconds from acceptance to a leg's final state (delivered, failed, partial).
    pub residence: Histogram,
    #[serde(skip)]
    ring: MinuteRing,
}

impl Default for TargetCounters {
    fn default() -> Self {
        TargetCounters {
            attempts: 0,
            delivered: 0,
            deferred: 0,
            failed: 0,
            expired: 0,
            latency: Histogram::new(LATENCY_BUCKETS),
            residence: Histogram::new(RESIDENCE_BUCKETS),
            ring: MinuteRing::default(),
        }
    }
}

/// A copy of every counter and histogram, for `/metrics`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Snapshot {
    pub targets: BTreeMap<String, TargetCounters>,
    /// Sizes of the messages accepted at intake, in bytes.
    pub message_size: Histogram,
}

/// The last hour, per target, minute by minute (`GET /api/...` and the status page charts).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastHour {
    /// Start of each bucket, Unix seconds, oldest first ([`MINUTES`] entries; the last is the
    /// current, partial minute).
    pub bucket_starts: Vec<u64>,
    /// Every target seen since the start (or registered), by name.
    pub targets: Vec<TargetHour>,
}

/// One target's last hour: `buckets[i]` is the minute starting at `bucket_starts[i]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHour {
    pub target: String,
    pub buckets: Vec<MinuteCounts>,
}

#[derive(Debug)]
struct Inner {
    targets: BTreeMap<String, TargetCounters>,
    message_size: Histogram,
}

/// The shared telemetry of one gateway: `Arc<Telemetry>` held by the intake, the scheduler and
/// the admin API. Every method takes one short lock.
#[derive(Debug)]
pub struct Telemetry {
    inner: Mutex<Inner>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            inner: Mutex::new(Inner {
                targets: BTreeMap::new(),
                message_size: Histogram::new(SIZE_BUCKETS),
            }),
        }
    }
}

impl Inner {
    /// Apply `f` to `name`'s counters, created on first use (the name is copied only then).
    fn target(&mut self, name: &str, f: impl FnOnce(&mut TargetCounters)) {
        match self.targets.get_mut(name) {
            Some(t) => f(t),
            None => {
                let mut t = TargetCounters::default();
                f(&mut t);
                self.targets.insert(name.to_string(), t);
            }
        }
    }
}

impl Telemetry {
    /// Make these targets known (zero series in `/metrics`, empty rows in [`Telemetry::last_hour`])
    /// before any traffic: the configured targets.
    pub fn register_targets<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut g = lock(&self.inner);
        for n in names {
            g.target(n, |_| {});
        }
    }

    /// A message of `size` bytes was accepted with `legs`: (target, recipients) pairs.
    pub fn accepted<'a>(
        &self,
        size: u64,
        legs: impl IntoIterator<Item = (&'a str, usize)>,
        now: SystemTime,
    ) {
        let minute = minute_of(now);
        let mut g = lock(&self.inner);
        g.message_size.observe(size as f64);
        for (target, n) in legs {
            g.target(target, |t| t.ring.add(minute, Event::Accepted, n as u64));
        }
    }

    /// One delivery attempt to `target` (it ran a transaction or tried to connect).
    pub fn attempt(&self, target: &str) {
        lock(&self.inner).target(target, |t| t.attempts += 1);
    }

    /// An attempt to `target` that reached it took `d` (connect or pooled session, and the
    /// SMTP transaction).
    pub fn latency(&self, target: &str, d: Duration) {
        lock(&self.inner).target(target, |t| t.latency.observe(d.as_secs_f64()));
    }

    /// `n` recipients of a leg to `target` had outcome `o` (`expired`: failed after `max_age`).
    pub fn outcome(&self, target: &str, o: Outcome, n: u64, expired: bool, now: SystemTime) {
        let minute = minute_of(now);
        lock(&self.inner).target(target, |t| {
            let (counter, event) = match o {
                Outcome::Delivered => (&mut t.delivered, Event::Delivered),
                Outcome::Deferred => (&mut t.deferred, Event::Deferred),
                Outcome::Failed => (&mut t.failed, Event::Bounced),
            };
            *counter += n;
            if expired && o == Outcome::Failed {
                t.expired += n;
            }
            t.ring.add(minute, event, n);
        });
    }

    /// A leg to `target` reached its final state `residence` after its message was accepted.
    pub fn leg_final(&self, target: &str, residence: Duration) {
        lock(&self.inner).target(target, |t| t.residence.observe(residence.as_secs_f64()));
    }

    /// A copy of the counters and histograms.
    pub fn snapshot(&self) -> Snapshot {
        let g = lock(&self.inner);
        Snapshot {
            targets: g.targets.clone(),
            message_size: g.message_size.clone(),
        }
    }

    /// The [`MINUTES`] minutes ending with the one `now` falls in, per target.
    pub fn last_hour(&self, now: SystemTime) -> LastHour {
        let minute = minute_of(now);
        let start = window_start(minute);
        let g = lock(&self.inner);
        LastHour {
            bucket_starts: (start..start + MINUTES as u64).map(|m| m * 60).collect(),
            targets: g
                .targets
                .iter()
                .map(|(name, t)| TargetHour {
                    target: name.clone(),
                    buckets: t.ring.window(minute),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(minute: u64, second: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(minute * 60 + second)
    }

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let mut h = Histogram::new(&[1.0, 10.0]);
        for v in [0.5, 1.0, 1.5, 10.0, 11.0] {
            h.observe(v);
        }
        assert_eq!(h.counts, vec![2, 2, 1]);
        assert_eq!(h.count, 5);
        assert_eq!(h.sum, 24.0);
        assert_eq!(h.buckets(), vec![(1.0, 2), (10.0, 2), (f64::INFINITY, 1)]);
    }

    #[test]
    fn ring_rotates_by_minute_and_leaves_gaps() {
        let mut r = MinuteRing::default();
        r.add(1000, Event::Accepted, 2);
        r.add(1000, Event::Delivered, 1);
        r.add(1002, Event::Deferred, 1);
        let w = r.window(1002);
        assert_eq!(w.len(), MINUTES);
        assert_eq!(w[57].accepted, 2);
        assert_eq!(w[57].delivered, 1);
        assert_eq!(w[58], MinuteCounts::default(), "an idle minute is a gap");
        assert_eq!(w[59].deferred, 1);
        // An hour later minute 1000's slot is reused for 1060; 1000 is out of the window.
        r.add(1060, Event::Bounced, 3);
        let w = r.window(1060);
        assert_eq!(w[59].bounced, 3);
        assert_eq!(w[59].accepted, 0, "the old minute's counts are gone");
        assert_eq!(w[1].deferred, 1, "minute 1002 is still in the window");
        // Late events for a minute older than its slot's are dropped.
        r.add(1000, Event::Accepted, 5);
        assert_eq!(r.window(1060)[59].accepted, 0);
        // Far in the future everything reads as zero.
        assert!(r.window(5000).iter().all(|c| *c == MinuteCounts::default()));
    }

    #[test]
    fn last_hour_lists_targets_with_bucket_starts() {
        let t = Telemetry::default();
        t.register_targets(["new"]);
        t.accepted(2000, [("old", 2), ("new", 1)], at(500, 10));
        t.outcome("old", Outcome::Delivered, 2, false, at(500, 40));
        t.outcome("new", Outcome::Deferred, 1, false, at(501, 0));
        t.outcome("new", Outcome::Failed, 1, true, at(502, 59));
        let h = t.last_hour(at(502, 59));
        assert_eq!(h.bucket_starts.len(), MINUTES);
        assert_eq!(h.bucket_starts[0], (502 - 59) * 60);
        assert_eq!(h.bucket_starts[59], 502 * 60);
        let names: Vec<&str> = h.targets.iter().map(|t| t.target.as_str()).collect();
        assert_eq!(names, vec!["new", "old"]);
        let (new, old) = (&h.targets[0].buckets, &h.targets[1].buckets);
        assert_eq!(old[57].accepted, 2);
        assert_eq!(old[57].delivered, 2);
        assert_eq!(new[57].accepted, 1);
        assert_eq!(new[58].deferred, 1);
        assert_eq!(new[59].bounced, 1);
        let s = t.snapshot();
        assert_eq!(s.targets["new"].failed, 1);
        assert_eq!(s.targets["new"].expired, 1);
        assert_eq!(s.message_size.count, 1);
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["targets"][1]["buckets"][57]["delivered"], 2);
    }

    proptest! {
        /// With events arriving in time order, the window at any later time holds exactly the
        /// events of its 60 minutes, each in its own minute.
        #[test]
        fn ring_matches_a_plain_count(
            mut events in proptest::collection::vec((0u64..400, 0usize..4, 1u64..5), 0..200),
            after in 0u64..100,
        ) {
            events.sort_by_key(|e| e.0);
            let kinds = [Event::Accepted, Event::Delivered, Event::Deferred, Event::Bounced];
            let mut r = MinuteRing::default();
            for &(m, k, n) in &events {
                r.add(m, kinds[k], n);
            }
            let now = events.last().map(|e| e.0).unwrap_or(0) + after;
            let w = r.window(now);
            prop_assert_eq!(w.len(), MINUTES);
            let start = window_start(now);
            for (i, c) in w.iter().enumerate() {
                let mut want = MinuteCounts::default();
                for &(m, k, n) in &events {
                    if m == start + i as u64 {
                        want.add(kinds[k], n);
                    }
                }
                prop_assert_eq!(*c, want, "minute {}", start + i as u64);
            }
        }
    }
}
