//! Fleet backfill simulation (a model, not product code): 10,000 mailboxes with a log-normal size
//! distribution, copied by N workers × `concurrency` mailboxes under a destination's throttling
//! (per-mailbox rate, per-account daily upload cap, tenant-wide connection cap). Compares static
//! shards (`backfill run --shard I/N`, the real `shard_of` rule) with PostgreSQL mailbox leases
//! (config order, largest first, one worker killed at 30 % of the makespan), prints the makespans
//! against the lower bound, and the PostgreSQL queries the lease protocol would cost per worker,
//! plus the gateways' batched ledger writes. Deterministic (seeded splitmix64), no IO but stdout.
//! It must never touch a network, a database or the disk: it only computes. Run:
//!
//!     cargo bench --bench fleet_sim                 # text tables
//!     cargo bench --bench fleet_sim -- --json       # JSON (or FLEET_SIM_JSON=1)
//!
//! Every constant of the model is named below; the assumptions and their sources are in
//! `bench/fleet-sim-results.md`.

use cutover::backfill::runner::shard_of;
use serde_json::{Value, json};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

// ---- Mailbox population ----------------------------------------------------------------------
const SEED: u64 = 0x5eed_f1ee_7000_0001;
const MAILBOXES: usize = 10_000;
/// Body of the distribution: log-normal bytes, median 2 GB, sigma 1.0 (p90 ≈ 7 GB, p99 ≈ 20 GB),
/// clamped to [5 MB, 50 GB] (50 GB: Exchange Online's smallest primary-mailbox quota).
const MEDIAN_BYTES: f64 = 2e9;
const SIGMA_BYTES: f64 = 1.0;
const MIN_BYTES: f64 = 5e6;
const BODY_MAX_BYTES: f64 = 50e9;
/// A few very large mailboxes (shared mailboxes, archives), uniform in [50 GB, 100 GB].
const HUGE_MAILBOXES: usize = 10;
const HUGE_BYTES: (f64, f64) = (50e9, 100e9);
/// Mean message size per mailbox: log-normal, median 80 kB, sigma 0.4.
const MEDIAN_MSG_BYTES: f64 = 80e3;
const SIGMA_MSG_BYTES: f64 = 0.4;
/// Folders per mailbox: log-normal, median 15, sigma 0.6, clamped to [5, 1000].
const MEDIAN_FOLDERS: f64 = 15.0;
const SIGMA_FOLDERS: f64 = 0.6;
const FOLDERS_RANGE: (f64, f64) = (5.0, 1000.0);

// ---- Fleet and lease protocol ----------------------------------------------------------------
const WORKERS: [usize; 6] = [1, 4, 8, 16, 32, 64];
/// Mailboxes at once per worker (cutover's profile default).
const CONCURRENCY: usize = 4;
/// A dead worker's lease is claimable this long after its death (worst case: it had just
/// heartbeaten).
const LEASE_TTL_MS: u64 = 60_000;
/// Heartbeat period: lease_ttl / 3.
const HEARTBEAT_S: f64 = 20.0;
/// The killed worker (worker 0) dies at this fraction of the largest-first makespan.
const KILL_AT: f64 = 0.3;
const DAY_MS: u64 = 86_400_000;

// ---- PostgreSQL cost model (queries) ---------------------------------------------------------
/// Per claimed mailbox pass: the claim (UPDATE … FOR UPDATE SKIP LOCKED) and the ledger credits.
const Q_CLAIM: f64 = 1.0;
const Q_LEDGER_CREDITS: f64 = 1.0;
/// Per folder per pass: one state read and one state write.
const Q_PER_FOLDER: f64 = 2.0;
/// One checkpoint write per this many messages copied.
const CHECKPOINT_MSGS: f64 = 500.0;
/// One report write when a pass of a mailbox ends.
const Q_REPORT: f64 = 1.0;
/// Gateways: one batched ledger INSERT per gateway per this many seconds while mail flows.
const LEDGER_BATCH_S: f64 = 1.0;
const RECIPIENTS_PER_MSG: f64 = 1.5;
const GATEWAYS: [usize; 3] = [1, 2, 4];
const MAIL_RATES: [f64; 4] = [1.0, 5.0, 50.0, 500.0];

/// A destination's throttling, as the simulation applies it.
struct Profile {
    name: &'static str,
    /// One IMAP connection's copy rate: messages/s and bytes/s, whichever binds first.
    conn_msgs_per_s: f64,
    conn_bytes_per_s: f64,
    /// Connections per mailbox (folders in parallel).
    conns_per_mailbox: u32,
    /// The provider's per-mailbox ingestion cap (bytes/s).
    mailbox_bytes_per_s: f64,
    /// Upload cap per account per 24 h (cutover stops at it; the next pass continues).
    bytes_per_day: f64,
    /// Concurrent connections the tenant (or the server) takes from the whole fleet.
    tenant_connections: u32,
}

const PROFILES: [Profile; 3] = [
    Profile {
        name: "m365",
        conn_msgs_per_s: 20.0,
        conn_bytes_per_s: 4e6,
        conns_per_mailbox: 1,
        mailbox_bytes_per_s: 150e6 / 300.0,
        bytes_per_day: f64::INFINITY,
        tenant_connections: 100,
    },
    Profile {
        name: "gmail",
        conn_msgs_per_s: 20.0,
        conn_bytes_per_s: 4e6,
        conns_per_mailbox: 2,
        mailbox_bytes_per_s: f64::INFINITY,
        bytes_per_day: 500e6,
        tenant_connections: 500,
    },
    Profile {
        name: "self-hosted",
        conn_msgs_per_s: 20.0,
        conn_bytes_per_s: 4e6,
        conns_per_mailbox: 2,
        mailbox_bytes_per_s: f64::INFINITY,
        bytes_per_day: f64::INFINITY,
        tenant_connections: 256,
    },
];

impl Profile {
    /// Bytes/s one mailbox is copied at.
    fn rate(&self, m: &Mailbox) -> f64 {
        let per_conn = self
            .conn_bytes_per_s
            .min(self.conn_msgs_per_s * m.bytes / m.msgs);
        (per_conn * f64::from(self.conns_per_mailbox)).min(self.mailbox_bytes_per_s)
    }

    /// Mailboxes the tenant's connection cap lets run at once.
    fn tenant_mailboxes(&self) -> usize {
        (self.tenant_connections / self.conns_per_mailbox) as usize
    }

    /// Shortest possible copy time of one mailbox (s): the daily cap makes it wait for windows.
    fn mailbox_secs(&self, m: &Mailbox) -> f64 {
        if self.bytes_per_day.is_infinite() {
            return m.bytes / self.rate(m);
        }
        let full_days = ((m.bytes / self.bytes_per_day).ceil() - 1.0).max(0.0);
        let last = m.bytes - full_days * self.bytes_per_day;
        full_days * 86_400.0 + last / self.rate(m)
    }
}

// ---- Population ------------------------------------------------------------------------------

/// splitmix64: tiny, deterministic across platforms and crate versions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }
}

#[derive(Clone)]
struct Mailbox {
    user: String,
    bytes: f64,
    msgs: f64,
    folders: f64,
}

fn population(n: usize, huge: usize, seed: u64) -> Vec<Mailbox> {
    let mut rng = Rng(seed);
    let mut out: Vec<Mailbox> = (0..n)
        .map(|i| {
            let bytes = rng
                .log_normal(MEDIAN_BYTES, SIGMA_BYTES)
                .clamp(MIN_BYTES, BODY_MAX_BYTES);
            let msg = rng.log_normal(MEDIAN_MSG_BYTES, SIGMA_MSG_BYTES);
            let folders = rng.log_normal(MEDIAN_FOLDERS, SIGMA_FOLDERS);
            Mailbox {
                user: format!("user{i:05}@example.com"),
                bytes,
                msgs: (bytes / msg).ceil(),
                folders: folders.round().clamp(FOLDERS_RANGE.0, FOLDERS_RANGE.1),
            }
        })
        .collect();
    let mut picked = vec![false; n];
    let mut left = huge.min(n);
    while left > 0 {
        let i = (rng.next() % n as u64) as usize;
        if std::mem::replace(&mut picked[i], true) {
            continue;
        }
        left -= 1;
        let m = &mut out[i];
        let per_msg = m.bytes / m.msgs;
        m.bytes = HUGE_BYTES.0 + rng.unit() * (HUGE_BYTES.1 - HUGE_BYTES.0);
        m.msgs = (m.bytes / per_msg).ceil();
    }
    out
}

// ---- Simulation ------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Strategy {
    /// `backfill run --shard I/N`: worker w takes the mailboxes with `shard_of(user, N) == w`.
    StaticHash,
    /// Static shards by position: mailbox i → worker i mod N.
    StaticIndex,
    /// Leases, the job's list order (first pass: sizes unknown).
    LeaseConfig,
    /// Leases, largest known size first.
    LeaseLargest,
    /// LeaseLargest with worker 0 killed at KILL_AT of LeaseLargest's makespan.
    LeaseKill,
}

impl Strategy {
    const ALL: [Strategy; 5] = [
        Strategy::StaticHash,
        Strategy::StaticIndex,
        Strategy::LeaseConfig,
        Strategy::LeaseLargest,
        Strategy::LeaseKill,
    ];
    fn label(self) -> &'static str {
        match self {
            Strategy::StaticHash => "static_hash",
            Strategy::StaticIndex => "static_i_mod_n",
            Strategy::LeaseConfig => "lease_config",
            Strategy::LeaseLargest => "lease_largest",
            Strategy::LeaseKill => "lease_kill",
        }
    }
    fn is_static(self) -> bool {
        matches!(self, Strategy::StaticHash | Strategy::StaticIndex)
    }
}

/// Pending mailboxes of one worker (static) or of the fleet (leases).
#[derive(Default)]
struct Pool {
    /// (order key, mailbox)
    ready: BinaryHeap<Reverse<(usize, usize)>>,
    /// (claimable at ms, mailbox): daily cap reached, or a dead worker's lease not yet expired.
    deferred: BinaryHeap<Reverse<(u64, usize)>>,
}

impl Pool {
    fn release(&mut self, now: u64, keys: &[usize]) {
        while let Some(&Reverse((t, m))) = self.deferred.peek() {
            if t > now {
                break;
            }
            self.deferred.pop();
            self.ready.push(Reverse((keys[m], m)));
        }
    }
}

#[derive(Clone, Copy)]
struct Job {
    mbox: usize,
    start: u64,
    end: u64,
    bytes: f64,
}

struct Slot {
    worker: usize,
    job: Option<Job>,
    alive: bool,
}

#[derive(Clone, Copy, Default)]
struct MboxState {
    remaining: f64,
    window_start: Option<u64>,
    window_used: f64,
}

/// PostgreSQL queries of the lease protocol, in 1-minute buckets per worker and fleet-wide.
struct Load {
    per_worker: Vec<HashMap<u64, f64>>,
    fleet: HashMap<u64, f64>,
    total: Vec<f64>,
}

impl Load {
    fn new(workers: usize) -> Load {
        Load {
            per_worker: vec![HashMap::new(); workers],
            fleet: HashMap::new(),
            total: vec![0.0; workers],
        }
    }
    fn point(&mut self, w: usize, t: u64, q: f64) {
        *self.per_worker[w].entry(t / 60_000).or_default() += q;
        *self.fleet.entry(t / 60_000).or_default() += q;
        self.total[w] += q;
    }
    /// `q` queries spread evenly over [s, e] ms.
    fn spread(&mut self, w: usize, s: u64, e: u64, q: f64) {
        if e <= s {
            return self.point(w, s, q);
        }
        let per_ms = q / (e - s) as f64;
        for minute in s / 60_000..=(e - 1) / 60_000 {
            let overlap = e.min((minute + 1) * 60_000) - s.max(minute * 60_000);
            let part = per_ms * overlap as f64;
            *self.per_worker[w].entry(minute).or_default() += part;
            *self.fleet.entry(minute).or_default() += part;
        }
        self.total[w] += q;
    }
    /// One pass over a mailbox, from `job.start` to `until` (the end, or the worker's death).
    fn pass(&mut self, w: usize, job: &Job, m: &Mailbox, until: u64, finished: bool) {
        let frac = (until - job.start) as f64 / (job.end - job.start).max(1) as f64;
        let msgs = job.bytes * frac * m.msgs / m.bytes;
        let heartbeats = (until - job.start) as f64 / 1000.0 / HEARTBEAT_S;
        self.point(w, job.start, Q_CLAIM + Q_LEDGER_CREDITS);
        let spread = Q_PER_FOLDER * m.folders * frac + msgs / CHECKPOINT_MSGS + heartbeats;
        self.spread(w, job.start, until, spread);
        if finished {
            self.point(w, until, Q_REPORT);
        }
    }
}

#[derive(Clone, Copy)]
struct Fleet {
    workers: usize,
    concurrency: usize,
}

struct Outcome {
    makespan_ms: u64,
    copied: f64,
    lost: f64,
    passes: usize,
    load: Option<Load>,
}

struct Sim<'a> {
    profile: &'a Profile,
    mboxes: &'a [Mailbox],
    rates: Vec<f64>,
    keys: Vec<usize>,
    pools: Vec<Pool>,
    shared_pool: bool,
    slots: Vec<Slot>,
    ends: BinaryHeap<Reverse<(u64, usize)>>,
    state: Vec<MboxState>,
    active_conns: u32,
    done: usize,
    now: u64,
    rotate: usize,
    out: Outcome,
}

/// Order keys: list position, or rank by size (largest first).
fn order_keys(mboxes: &[Mailbox], largest_first: bool) -> Vec<usize> {
    if !largest_first {
        return (0..mboxes.len()).collect();
    }
    let mut idx: Vec<usize> = (0..mboxes.len()).collect();
    idx.sort_by(|&a, &b| mboxes[b].bytes.total_cmp(&mboxes[a].bytes).then(a.cmp(&b)));
    let mut keys = vec![0; mboxes.len()];
    for (rank, &m) in idx.iter().enumerate() {
        keys[m] = rank;
    }
    keys
}

impl<'a> Sim<'a> {
    fn new(profile: &'a Profile, mboxes: &'a [Mailbox], fleet: Fleet, s: Strategy) -> Sim<'a> {
        let keys = order_keys(
            mboxes,
            matches!(s, Strategy::LeaseLargest | Strategy::LeaseKill),
        );
        let n = fleet.workers;
        let mut pools: Vec<Pool> = (0..if s.is_static() { n } else { 1 })
            .map(|_| Pool::default())
            .collect();
        for (i, m) in mboxes.iter().enumerate() {
            let p = match s {
                Strategy::StaticHash => shard_of(&m.user, n as u32) as usize,
                Strategy::StaticIndex => i % n,
                _ => 0,
            };
            pools[p].ready.push(Reverse((keys[i], i)));
        }
        let slots = (0..n * fleet.concurrency)
            .map(|k| Slot {
                worker: k / fleet.concurrency,
                job: None,
                alive: true,
            })
            .collect();
        let state = mboxes
            .iter()
            .map(|m| MboxState {
                remaining: m.bytes,
                ..MboxState::default()
            })
            .collect();
        Sim {
            profile,
            mboxes,
            rates: mboxes.iter().map(|m| profile.rate(m)).collect(),
            keys,
            pools,
            shared_pool: !s.is_static(),
            slots,
            ends: BinaryHeap::new(),
            state,
            active_conns: 0,
            done: 0,
            now: 0,
            rotate: 0,
            out: Outcome {
                makespan_ms: 0,
                copied: 0.0,
                lost: 0.0,
                passes: 0,
                load: (!s.is_static()).then(|| Load::new(n)),
            },
        }
    }

    fn pool_of(&self, worker: usize) -> usize {
        if self.shared_pool { 0 } else { worker }
    }

    fn run(mut self, kill_at: Option<u64>) -> Outcome {
        let mut kill = kill_at;
        loop {
            self.dispatch();
            if self.done == self.mboxes.len() {
                break;
            }
            let next = self.next_event(kill);
            assert!(next >= self.now, "time runs forward");
            self.now = next;
            if kill == Some(next) {
                self.kill_worker(0);
                kill = None;
            }
            self.complete_due();
        }
        self.out.makespan_ms = self.now;
        self.out
    }

    fn next_event(&self, kill: Option<u64>) -> u64 {
        let ends = self.ends.peek().map(|r| r.0.0);
        let deferred = self
            .pools
            .iter()
            .filter_map(|p| p.deferred.peek().map(|r| r.0.0));
        ends.into_iter()
            .chain(deferred)
            .chain(kill)
            .min()
            .expect("pending mailboxes but nothing scheduled: the simulation is stuck")
    }

    /// Every idle live slot takes a mailbox while the tenant's connection cap allows.
    fn dispatch(&mut self) {
        for p in &mut self.pools {
            p.release(self.now, &self.keys);
        }
        let n = self.slots.len();
        let first = self.rotate;
        self.rotate = (self.rotate + 1) % n;
        for k in 0..n {
            if self.active_conns + self.profile.conns_per_mailbox > self.profile.tenant_connections
                || (self.shared_pool && self.pools[0].ready.is_empty())
            {
                return;
            }
            let s = (first + k) % n;
            if self.slots[s].alive && self.slots[s].job.is_none() {
                self.start_on(s);
            }
        }
    }

    /// The slot claims its pool's next mailbox and copies as much as the daily cap allows.
    fn start_on(&mut self, s: usize) {
        let pool = self.pool_of(self.slots[s].worker);
        while let Some(Reverse((_, m))) = self.pools[pool].ready.pop() {
            let now = self.now;
            let st = &mut self.state[m];
            if st.window_start.is_none_or(|w| now >= w + DAY_MS) {
                st.window_start = Some(now);
                st.window_used = 0.0;
            }
            let allowance = self.profile.bytes_per_day - st.window_used;
            if allowance <= 0.0 {
                let reopen = st.window_start.unwrap_or(now) + DAY_MS;
                self.pools[pool].deferred.push(Reverse((reopen, m)));
                continue;
            }
            let bytes = st.remaining.min(allowance);
            let ms = (bytes / self.rates[m] * 1000.0).ceil().max(1.0) as u64;
            let job = Job {
                mbox: m,
                start: now,
                end: now + ms,
                bytes,
            };
            self.slots[s].job = Some(job);
            self.ends.push(Reverse((job.end, s)));
            self.active_conns += self.profile.conns_per_mailbox;
            self.out.passes += 1;
            return;
        }
    }

    fn complete_due(&mut self) {
        while let Some(&Reverse((t, s))) = self.ends.peek() {
            if t > self.now {
                break;
            }
            self.ends.pop();
            let slot = &mut self.slots[s];
            let Some(job) = slot.job.filter(|j| slot.alive && j.end == t) else {
                continue;
            };
            slot.job = None;
            let worker = slot.worker;
            self.finish(worker, job);
        }
    }

    fn finish(&mut self, worker: usize, job: Job) {
        let m = job.mbox;
        let st = &mut self.state[m];
        st.remaining -= job.bytes;
        st.window_used += job.bytes;
        self.out.copied += job.bytes;
        self.active_conns -= self.profile.conns_per_mailbox;
        if let Some(load) = &mut self.out.load {
            load.pass(worker, &job, &self.mboxes[m], job.end, true);
        }
        if st.remaining <= 0.0 {
            self.done += 1;
        } else {
            let reopen = st.window_start.unwrap_or(job.end) + DAY_MS;
            let pool = self.pool_of(worker);
            self.pools[pool].deferred.push(Reverse((reopen, m)));
        }
    }

    /// The worker dies: what its mailboxes copied up to their last checkpoint is kept, the
    /// rest is lost (copied again); their leases become claimable after LEASE_TTL_MS.
    fn kill_worker(&mut self, worker: usize) {
        let now = self.now;
        for s in 0..self.slots.len() {
            if self.slots[s].worker != worker {
                continue;
            }
            self.slots[s].alive = false;
            let Some(job) = self.slots[s].job.take() else {
                continue;
            };
            let m = &self.mboxes[job.mbox];
            let sent = job.bytes * (now - job.start) as f64 / (job.end - job.start) as f64;
            let step =
                CHECKPOINT_MSGS * m.bytes / m.msgs * f64::from(self.profile.conns_per_mailbox);
            let kept = (sent / step).floor() * step;
            let st = &mut self.state[job.mbox];
            st.remaining -= kept;
            st.window_used += sent;
            self.out.copied += kept;
            self.out.lost += sent - kept;
            self.active_conns -= self.profile.conns_per_mailbox;
            if let Some(load) = &mut self.out.load {
                load.pass(worker, &job, m, now, false);
            }
            let pool = self.pool_of(worker);
            self.pools[pool]
                .deferred
                .push(Reverse((now + LEASE_TTL_MS, job.mbox)));
        }
    }
}

/// (total work / usable slots, longest single mailbox), in seconds; the mailbox's time waits for
/// its daily windows when `windows`.
fn work(profile: &Profile, mboxes: &[Mailbox], fleet: Fleet, windows: bool) -> (f64, f64) {
    let slots = (fleet.workers * fleet.concurrency).min(profile.tenant_mailboxes()) as f64;
    let total: f64 = mboxes.iter().map(|m| m.bytes / profile.rate(m)).sum();
    let longest = mboxes
        .iter()
        .map(|m| {
            if windows {
                profile.mailbox_secs(m)
            } else {
                m.bytes / profile.rate(m)
            }
        })
        .fold(0.0, f64::max);
    (total / slots, longest)
}

/// max(longest single mailbox, total work / usable slots), in seconds.
fn lower_bound(profile: &Profile, mboxes: &[Mailbox], fleet: Fleet) -> f64 {
    let (spread, longest) = work(profile, mboxes, fleet, true);
    spread.max(longest)
}

/// Graham's bound for greedy list scheduling without daily windows: total/slots + longest.
fn list_bound(profile: &Profile, mboxes: &[Mailbox], fleet: Fleet) -> f64 {
    let (spread, longest) = work(profile, mboxes, fleet, false);
    spread + longest
}

fn simulate(profile: &Profile, mboxes: &[Mailbox], fleet: Fleet, s: Strategy) -> Outcome {
    let kill_at = (s == Strategy::LeaseKill).then(|| {
        let base = simulate(profile, mboxes, fleet, Strategy::LeaseLargest);
        (base.makespan_ms as f64 * KILL_AT) as u64
    });
    let out = Sim::new(profile, mboxes, fleet, s).run(kill_at);
    check(profile, mboxes, fleet, s, &out);
    out
}

/// Invariants of every run: work conserved, never faster than the lower bound, greedy leases
/// within Graham's bound when there is no daily window.
fn check(profile: &Profile, mboxes: &[Mailbox], fleet: Fleet, s: Strategy, out: &Outcome) {
    let total: f64 = mboxes.iter().map(|m| m.bytes).sum();
    let what = format!("{} {:?} N={}", profile.name, s, fleet.workers);
    assert!(
        (out.copied - total).abs() <= total * 1e-9,
        "{what}: copied {} of {total} bytes",
        out.copied
    );
    assert!(out.lost >= 0.0 && (s == Strategy::LeaseKill || out.lost == 0.0));
    let secs = out.makespan_ms as f64 / 1000.0;
    let lb = lower_bound(profile, mboxes, fleet);
    assert!(
        secs + 1.0 >= lb,
        "{what}: makespan {secs} s below bound {lb} s"
    );
    let greedy = matches!(s, Strategy::LeaseConfig | Strategy::LeaseLargest);
    if greedy && profile.bytes_per_day.is_infinite() {
        let bound = list_bound(profile, mboxes, fleet) + 60.0;
        assert!(
            secs <= bound,
            "{what}: makespan {secs} s over list bound {bound} s"
        );
    }
}

/// Hand-computable cases, run before the benchmark.
fn sanity() {
    let p = &PROFILES[2];
    let mb = |bytes: f64, user: &str| Mailbox {
        user: user.into(),
        bytes,
        msgs: bytes / 100e3,
        folders: 10.0,
    };
    let one = Fleet {
        workers: 1,
        concurrency: 4,
    };
    let four: Vec<Mailbox> = (0..4).map(|i| mb(4e9, &format!("u{i}"))).collect();
    let t1 = p.mailbox_secs(&four[0]);
    let r = simulate(p, &four, one, Strategy::LeaseConfig);
    assert!(
        (r.makespan_ms as f64 / 1000.0 - t1).abs() < 1.0,
        "4 mailboxes, 4 slots"
    );
    let eight: Vec<Mailbox> = (0..8).map(|i| mb(4e9, &format!("u{i}"))).collect();
    let r = simulate(p, &eight, one, Strategy::StaticIndex);
    assert!(
        (r.makespan_ms as f64 / 1000.0 - 2.0 * t1).abs() < 1.0,
        "8 mailboxes, 4 slots"
    );
    // Gmail: 1.2 GB at 500 MB/day = two full windows and the rest on day 3.
    let g = &PROFILES[1];
    let big = [mb(1.2e9, "big")];
    let r = simulate(g, &big, one, Strategy::LeaseLargest);
    let want = 2.0 * 86_400.0 + 0.2e9 / g.rate(&big[0]);
    assert!(
        (r.makespan_ms as f64 / 1000.0 - want).abs() < 1.0,
        "daily cap"
    );
    assert_eq!(r.passes, 3);
    // Killing one of two workers costs time but loses no mailbox.
    let two = Fleet {
        workers: 2,
        concurrency: 1,
    };
    let pair: Vec<Mailbox> = (0..6).map(|i| mb(2.05e9, &format!("u{i}"))).collect();
    let base = simulate(p, &pair, two, Strategy::LeaseLargest);
    let killed = simulate(p, &pair, two, Strategy::LeaseKill);
    assert!(killed.makespan_ms > base.makespan_ms && killed.lost > 0.0);
}

// ---- Reporting -------------------------------------------------------------------------------

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn distribution(mboxes: &[Mailbox]) -> Value {
    let summary = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        json!({
            "p50": percentile(&v, 0.5), "p90": percentile(&v, 0.9), "p99": percentile(&v, 0.99),
            "max": v[v.len() - 1], "mean": v.iter().sum::<f64>() / v.len() as f64,
            "total": v.iter().sum::<f64>(),
        })
    };
    json!({
        "mailboxes": mboxes.len(),
        "gb": summary(mboxes.iter().map(|m| m.bytes / 1e9).collect()),
        "messages": summary(mboxes.iter().map(|m| m.msgs).collect()),
        "folders": summary(mboxes.iter().map(|m| m.folders).collect()),
    })
}

fn print_distribution(d: &Value) {
    println!(
        "Mailbox population ({} mailboxes, seed {SEED:#x})",
        d["mailboxes"]
    );
    println!(
        "{:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "", "p50", "p90", "p99", "max", "mean", "total"
    );
    for (k, unit) in [("gb", "GB"), ("messages", "msgs"), ("folders", "folders")] {
        let r = &d[k];
        let f = |x: &str| f(&r[x]);
        println!(
            "{:>10} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>12.0}",
            unit,
            f("p50"),
            f("p90"),
            f("p99"),
            f("max"),
            f("mean"),
            f("total")
        );
    }
    let tb = d["gb"]["total"].as_f64().unwrap_or(0.0) / 1000.0;
    println!("total: {tb:.1} TB\n");
}

fn load_summary(load: &Load, makespan_ms: u64) -> Value {
    let secs = (makespan_ms as f64 / 1000.0).max(1.0);
    let total: f64 = load.total.iter().sum();
    let mean_worker = total / load.total.len() as f64 / secs;
    let peak_worker = load
        .per_worker
        .iter()
        .flat_map(|b| b.values())
        .fold(0.0, |a: f64, &q| a.max(q / 60.0));
    let peak_fleet = load.fleet.values().fold(0.0, |a: f64, &q| a.max(q / 60.0));
    json!({
        "queries_total": total, "worker_mean_qps": mean_worker, "worker_peak_qps_1min": peak_worker,
        "fleet_mean_qps": total / secs, "fleet_peak_qps_1min": peak_fleet,
    })
}

/// All strategies for one profile and fleet size.
fn row(profile: &Profile, mboxes: &[Mailbox], workers: usize) -> Value {
    let fleet = Fleet {
        workers,
        concurrency: CONCURRENCY,
    };
    let mut days = serde_json::Map::new();
    let mut load = Value::Null;
    for s in Strategy::ALL {
        if s == Strategy::LeaseKill && workers < 2 {
            // Killing the only worker stops the job: nothing to compare.
            days.insert(s.label().into(), Value::Null);
            continue;
        }
        let out = simulate(profile, mboxes, fleet, s);
        days.insert(
            s.label().into(),
            json!(out.makespan_ms as f64 / DAY_MS as f64),
        );
        if s == Strategy::LeaseKill {
            days.insert("lease_kill_lost_gb".into(), json!(out.lost / 1e9));
        }
        if let (Strategy::LeaseLargest, Some(l)) = (s, &out.load) {
            load = load_summary(l, out.makespan_ms);
        }
    }
    let lb = lower_bound(profile, mboxes, fleet) / 86_400.0;
    json!({ "workers": workers, "slots": workers * CONCURRENCY, "lower_bound_days": lb,
            "makespan_days": days, "postgres_lease_largest": load })
}

fn profile_json(p: &Profile) -> Value {
    json!({
        "name": p.name, "conn_msgs_per_s": p.conn_msgs_per_s, "conn_bytes_per_s": p.conn_bytes_per_s,
        "conns_per_mailbox": p.conns_per_mailbox,
        "mailbox_bytes_per_s": p.mailbox_bytes_per_s.is_finite().then_some(p.mailbox_bytes_per_s),
        "bytes_per_day": p.bytes_per_day.is_finite().then_some(p.bytes_per_day),
        "tenant_connections": p.tenant_connections,
    })
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// A number with `prec` decimals, or "-" for null.
fn opt(v: &Value, prec: usize) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.prec$}"))
}

fn print_makespans(p: &Value) {
    println!(
        "\n[{}] makespan in days (concurrency {CONCURRENCY}; tenant cap {} connections, {} per mailbox)",
        p["profile"]["name"].as_str().unwrap_or(""),
        p["profile"]["tenant_connections"],
        p["profile"]["conns_per_mailbox"]
    );
    println!(
        "{:>4} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "N",
        "slots",
        "bound",
        "st-hash",
        "st-imod",
        "l-conf",
        "l-large",
        "l-kill",
        "lost GB",
        "st/l-lg",
        "st/l-cf"
    );
    for r in p["rows"].as_array().into_iter().flatten() {
        let d = &r["makespan_days"];
        let st = f(&d["static_hash"]);
        println!(
            "{:>4} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>8} {:>8.2} {:>8.2}",
            r["workers"].as_u64().unwrap_or(0),
            r["slots"].as_u64().unwrap_or(0),
            f(&r["lower_bound_days"]),
            st,
            f(&d["static_i_mod_n"]),
            f(&d["lease_config"]),
            f(&d["lease_largest"]),
            opt(&d["lease_kill"], 2),
            opt(&d["lease_kill_lost_gb"], 1),
            st / f(&d["lease_largest"]),
            st / f(&d["lease_config"])
        );
    }
}

fn print_load(p: &Value) {
    println!(
        "[{}] PostgreSQL, leases largest-first: queries/s per worker (mean over the makespan, peak 1-min) and fleet",
        p["profile"]["name"].as_str().unwrap_or("")
    );
    println!(
        "{:>4} {:>12} {:>10} {:>10} {:>10} {:>10}",
        "N", "queries", "w mean", "w peak", "fl mean", "fl peak"
    );
    for r in p["rows"].as_array().into_iter().flatten() {
        let l = &r["postgres_lease_largest"];
        println!(
            "{:>4} {:>12.0} {:>10.3} {:>10.2} {:>10.3} {:>10.2}",
            r["workers"].as_u64().unwrap_or(0),
            f(&l["queries_total"]),
            f(&l["worker_mean_qps"]),
            f(&l["worker_peak_qps_1min"]),
            f(&l["fleet_mean_qps"]),
            f(&l["fleet_peak_qps_1min"])
        );
    }
}

/// Gateways' batched ledger writes: one INSERT per gateway per batch period while mail flows
/// (Poisson arrivals: a period is empty with probability e^-λ).
fn ledger_table() -> Value {
    let mut rows = Vec::new();
    for g in GATEWAYS {
        for rate in MAIL_RATES {
            let per_period = rate / g as f64 * LEDGER_BATCH_S;
            let inserts = g as f64 * (1.0 - (-per_period).exp()) / LEDGER_BATCH_S;
            let rows_per_s = rate * RECIPIENTS_PER_MSG;
            rows.push(json!({
                "gateways": g, "msgs_per_s": rate, "inserts_per_s": inserts,
                "rows_per_s": rows_per_s, "rows_per_insert": rows_per_s / inserts.max(1e-9),
            }));
        }
    }
    Value::Array(rows)
}

fn print_ledger(rows: &Value) {
    println!(
        "\nGateway ledger writes (1 INSERT per gateway per {LEDGER_BATCH_S} s while mail flows, {RECIPIENTS_PER_MSG} recipients/message)"
    );
    println!(
        "{:>8} {:>8} {:>10} {:>10} {:>10}",
        "gateways", "msg/s", "INSERT/s", "rows/s", "rows/INS"
    );
    for r in rows.as_array().into_iter().flatten() {
        println!(
            "{:>8} {:>8} {:>10.2} {:>10.1} {:>10.1}",
            r["gateways"].as_u64().unwrap_or(0),
            f(&r["msgs_per_s"]),
            f(&r["inserts_per_s"]),
            f(&r["rows_per_s"]),
            f(&r["rows_per_insert"])
        );
    }
}

fn main() {
    let json_out = std::env::args().any(|a| a == "--json")
        || std::env::var("FLEET_SIM_JSON").is_ok_and(|v| v == "1");
    let started = std::time::Instant::now();
    sanity();
    let mboxes = population(MAILBOXES, HUGE_MAILBOXES, SEED);
    let dist = distribution(&mboxes);
    if !json_out {
        print_distribution(&dist);
    }
    let mut profiles = Vec::new();
    for p in &PROFILES {
        let rows: Vec<Value> = WORKERS.iter().map(|&n| row(p, &mboxes, n)).collect();
        let v = json!({ "profile": profile_json(p), "rows": rows });
        if !json_out {
            print_makespans(&v);
            print_load(&v);
        }
        profiles.push(v);
    }
    let ledger = ledger_table();
    if json_out {
        let all = json!({ "distribution": dist, "profiles": profiles, "ledger": ledger });
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
    } else {
        print_ledger(&ledger);
        println!("\nsimulated in {:.1} s", started.elapsed().as_secs_f64());
    }
}
