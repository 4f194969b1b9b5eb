//! The delivery scheduler's IO shell: picks due legs from the queue's due index (never a full
//! scan), runs each attempt under its target's connection limit over pooled SMTP sessions
//! ([`pool`]), and records the per-recipient outcomes durably together with the DSNs they cause.
//! What an outcome means (recipient state, next attempt, delay warning, DSNs) is decided by the
//! pure core, [`decide`] and [`dsn`]; per-target connection settings come resolved once per
//! loaded configuration ([`crate::outbound::settings`]). One leg's failure never re-sends
//! another. Never decides routes: legs come routed.

pub mod decide;
pub mod dsn;
mod pool;

use super::client::{Body, Session, Transaction};
use super::dial::Dial;
use super::reply::Outcome;
use super::resolve::Resolver;
use super::settings::TargetSettings;
use super::stats::Stats;
use crate::bounce;
use crate::config::{Config, Target};
use crate::fingerprint;
use crate::ledger::{DeliveredHook, Delivery};
use crate::queue::model::{Leg, LegId, MX_TARGET, MessageRecord};
use crate::queue::store::Rewritten;
use crate::queue::{Queue, QueueError, QueueId, QueuedBody};
use crate::telemetry::{self, Telemetry};
use decide::{Attempt, Report, RetryPolicy};
use pool::{Pool, Pools};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

pub use pool::MX_CONNECTIONS;

/// The ledger's wait for the durability of one delivery record ([`DeliveredHook`]).
type LedgerWrite = futures_util::future::BoxFuture<'static, ()>;

/// Attempts past their target's connection limit that may run at once, all targets together
/// (each holds at most an inline body, up to the queue's inline threshold; spooled bodies are
/// streamed).
pub const MAX_ATTEMPTS_IN_FLIGHT: usize = 64;
/// Leg attempts the scheduler keeps started (waiting for a connection slot or running) at
/// once; further due legs wait in the index, not in memory.
pub const MAX_STARTED: usize = 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn inc(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The configuration in force with what is derived from it once per load: the retry policy
/// and every target's connection settings.
struct Loaded {
    cfg: Arc<Config>,
    policy: RetryPolicy,
    targets: TargetSettings,
}

impl Loaded {
    fn new(cfg: Arc<Config>) -> Loaded {
        Loaded {
            policy: RetryPolicy::from_config(&cfg.queue),
            targets: TargetSettings::load(&cfg),
            cfg,
        }
    }
}

/// One leg attempt: the configuration it runs under, the message record and the leg as read.
#[derive(Clone, Copy)]
struct Job<'a> {
    loaded: &'a Loaded,
    rec: &'a MessageRecord,
    leg: &'a Leg,
}

/// The delivery engine.
pub struct Scheduler {
    queue: Queue,
    config: watch::Receiver<Arc<Config>>,
    /// Derived from the configuration in `config`; rebuilt when it changes (reload).
    loaded: Mutex<Arc<Loaded>>,
    resolver: Resolver,
    pools: Pools,
    in_flight: Mutex<HashSet<(QueueId, LegId)>>,
    /// Global cap on attempts past admission ([`MAX_ATTEMPTS_IN_FLIGHT`]).
    attempts: Arc<Semaphore>,
    pub stats: Arc<Stats>,
    /// Per-target counters, histograms and the minute ring (shared with the intake by `serve`).
    pub telemetry: Arc<Telemetry>,
    on_delivered: Option<DeliveredHook>,
    /// Idle pooled sessions are closed after this long.
    idle_timeout: Duration,
}

/// Why the scheduler could not start.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Resolver(#[from] super::resolve::ResolverError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl Scheduler {
    pub fn new(
        queue: Queue,
        config: watch::Receiver<Arc<Config>>,
        on_delivered: Option<DeliveredHook>,
    ) -> Result<Arc<Scheduler>, SchedulerError> {
        Self::with_telemetry(queue, config, on_delivered, Arc::default())
    }

    /// [`Scheduler::new`], counting into `telemetry` (the intake's, so both feed one series).
    pub fn with_telemetry(
        queue: Queue,
        config: watch::Receiver<Arc<Config>>,
        on_delivered: Option<DeliveredHook>,
        telemetry: Arc<Telemetry>,
    ) -> Result<Arc<Scheduler>, SchedulerError> {
        let cfg = config.borrow().clone();
        let resolver = Resolver::new(&cfg.dns)?;
        Ok(Arc::new(Scheduler {
            queue,
            config,
            loaded: Mutex::new(Arc::new(Loaded::new(cfg))),
            resolver,
            pools: Pools::default(),
            in_flight: Mutex::new(HashSet::new()),
            attempts: Arc::new(Semaphore::new(MAX_ATTEMPTS_IN_FLIGHT)),
            stats: Arc::new(Stats::default()),
            telemetry,
            on_delivered,
            idle_timeout: Duration::from_secs(10),
        }))
    }

    /// The configured targets the engine cannot connect to (read-only, for the alerts): by
    /// name, since when (the first connection failure after a session last opened; cleared by
    /// the next session that opens) and the last failure. A target without pending mail is
    /// not tried, so it stays as last seen.
    pub fn unreachable_targets(&self) -> std::collections::BTreeMap<String, (SystemTime, String)> {
        self.pools.unreachable()
    }

    /// The configuration in force and what derives from it, re-resolved once when the
    /// configuration has changed.
    fn loaded(&self) -> Arc<Loaded> {
        let cfg = self.config.borrow().clone();
        let mut loaded = lock(&self.loaded);
        if !Arc::ptr_eq(&loaded.cfg, &cfg) {
            *loaded = Arc::new(Loaded::new(cfg));
        }
        loaded.clone()
    }

    fn in_flight(&self) -> MutexGuard<'_, HashSet<(QueueId, LegId)>> {
        lock(&self.in_flight)
    }

    /// Run until `stop` turns true; in-flight attempts are awaited (bounded by their timeouts).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        self.remove_finished().await;
        let mut tasks = JoinSet::new();
        let mut config = self.config.clone();
        let mut config_open = true;
        loop {
            if *stop.borrow() {
                break;
            }
            // A reloaded configuration gets its target settings resolved now, not at the next
            // attempt.
            self.loaded();
            let next_wake = self.start_due(&mut tasks);
            while let Some(r) = tasks.try_join_next() {
                if let Err(e) = r {
                    tracing::error!(error = %e, "delivery task failed");
                }
            }
            self.reap_idle();
            tokio::select! {
                _ = self.queue.due_changed() => {}
                _ = tokio::time::sleep(next_wake.max(Duration::from_millis(5))) => {}
                _ = stop.changed() => {}
                r = config.changed(), if config_open => config_open = r.is_ok(),
            }
        }
        while tasks.join_next().await.is_some() {}
        for s in self.pools.drain() {
            s.quit().await;
        }
    }

    /// Finished messages left behind by an older version are removed at start.
    async fn remove_finished(&self) {
        match self.queue.finished_messages() {
            Ok(ids) => {
                for id in ids {
                    if let Err(e) = self.queue.remove_message(&id).await {
                        tracing::error!(queue_id = %id, error = %e, "removing finished message");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "scanning for finished messages"),
        }
    }

    /// Start an attempt for each due leg not already started (up to [`MAX_STARTED`]); returns
    /// how long to sleep at most before looking again.
    fn start_due(self: &Arc<Self>, tasks: &mut JoinSet<()>) -> Duration {
        let now = SystemTime::now();
        let started = self.in_flight().len();
        // Look past the legs already started so they never hide the rest of the index.
        let due = match self
            .queue
            .due(now, started + MAX_STARTED.saturating_sub(started).min(512))
        {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "reading the due index");
                return self.next_wake(now, Duration::from_secs(1));
            }
        };
        for e in due {
            if self.in_flight().len() >= MAX_STARTED {
                break;
            }
            let key = (e.id.clone(), e.leg);
            if !self.in_flight().insert(key.clone()) {
                continue;
            }
            let me = self.clone();
            tasks.spawn(async move {
                let span = tracing::info_span!("delivery", queue_id = %key.0, leg = key.1.0);
                me.attempt(&key.0, key.1).instrument(span).await;
                me.in_flight().remove(&key);
                me.queue.notify_due();
            });
        }
        self.next_wake(now, Duration::from_secs(30))
    }

    /// `limit`, or less when the next due entry not already being worked on comes sooner.
    fn next_wake(&self, now: SystemTime, limit: Duration) -> Duration {
        let in_flight = self.in_flight().len();
        let far = now + Duration::from_secs(365 * 86_400);
        let Ok(upcoming) = self.queue.due(far, in_flight + 1) else {
            return limit;
        };
        let inflight = self.in_flight().clone();
        match upcoming
            .iter()
            .find(|e| !inflight.contains(&(e.id.clone(), e.leg)))
        {
            Some(e) => {
                let at = SystemTime::UNIX_EPOCH + Duration::from_millis(e.due_ms);
                limit.min(
                    at.duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO),
                )
            }
            None => limit,
        }
    }

    /// Close idle sessions past the idle timeout; forget unused MX pools.
    fn reap_idle(&self) {
        for s in self.pools.reap(SystemTime::now(), self.idle_timeout) {
            tokio::spawn(s.quit());
        }
    }

    /// One attempt of one leg.
    async fn attempt(&self, id: &QueueId, leg_id: LegId) {
        let loaded = self.loaded();
        let rec = match self.queue.record(id) {
            Ok(r) => r,
            Err(QueueError::NotFound(_)) => return,
            Err(e) => {
                tracing::error!(error = %e, "reading queue record");
                return;
            }
        };
        let Some(leg) = rec.leg(leg_id) else {
            return;
        };
        let pending = decide::pending(leg);
        if pending.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let job = Job {
            loaded: &loaded,
            rec: &rec,
            leg,
        };
        // Expired legs fail what is left, without another attempt.
        let mut ledger = Vec::new();
        let report = match decide::expiry(leg, &pending, now, &loaded.policy) {
            Some(report) => report,
            None => match self.deliver(job, &pending, now, &mut ledger).await {
                Some(report) => report,
                None => return,
            },
        };
        self.record(job, report).await;
        // The ledger records of this attempt were written before the leg update, so its sync
        // covered them; this wait is explicit, not extra (see `crate::ledger`).
        futures_util::future::join_all(ledger).await;
    }

    /// Try to deliver the `pending` recipients of the job's leg; `None` when the engine is
    /// shutting down (nothing to record). The ledger's durable waits for the deliveries go to
    /// `ledger`.
    async fn deliver(
        &self,
        job: Job<'_>,
        pending: &[usize],
        now: SystemTime,
        ledger: &mut Vec<LedgerWrite>,
    ) -> Option<Report> {
        let Job {
            loaded, rec, leg, ..
        } = job;
        let target_cfg = loaded.cfg.targets.get(&leg.target);
        if target_cfg.is_none() && leg.target != MX_TARGET {
            let o = Outcome::local(&format!(
                "target {:?} is not configured (config changed?)",
                leg.target
            ));
            return Some(Report::all(Attempt::NotSent { backoff: None }, pending, &o));
        }
        let connections = target_cfg.map(|t| t.connections).unwrap_or(MX_CONNECTIONS);
        let pending_rcpts: Vec<String> = pending
            .iter()
            .map(|&i| leg.recipients[i].address.clone())
            .collect();
        let pool_key = pool::pool_key(&leg.target, &pending_rcpts);
        let pool = self.pools.get(&pool_key, connections);

        // A target known to be down: postpone the leg to the end of the back-off, no attempt.
        if let Some((until, why)) = pool.down_at(now) {
            let o = Outcome::local(&format!("target {pool_key} is down: {why}"));
            return Some(Report::all(Attempt::Postponed { until }, pending, &o));
        }

        // Admission before the body is touched: the target's connection slot, then the global
        // cap on attempts in flight. A released backlog therefore holds at most
        // `MAX_ATTEMPTS_IN_FLIGHT` bodies (inline ones; spooled ones are streamed), whatever
        // its size.
        let _permit = pool.permits.clone().acquire_owned().await.ok()?;
        let _attempt = self.attempts.clone().acquire_owned().await.ok()?;
        let body = match self.queue.body_source(rec).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the message body");
                let o = Outcome::local(&format!("local error reading the queued body: {e}"));
                return Some(Report::all(Attempt::NotSent { backoff: None }, pending, &o));
            }
        };
        let started = Instant::now();
        let rcpts: Vec<String> = pending
            .iter()
            .map(|&i| {
                let r = &leg.recipients[i];
                decide::final_rcpt(&loaded.cfg, &leg.target, &r.address, &r.rule)
            })
            .collect();
        let session = match pool.take_idle() {
            Some(s) => Ok(s),
            None => self.open(loaded, leg, target_cfg, &rcpts).await,
        };
        let session = match session {
            Ok(s) => {
                pool.connected();
                s
            }
            Err(o) => return Some(self.unreachable(&pool, &pool_key, loaded, pending, o)),
        };
        pool.up();
        let (results, remote) = self
            .transact(session, &pool, target_cfg, job, &rcpts, &body)
            .await;
        drop(_permit);
        drop(_attempt);
        self.telemetry.latency(&leg.target, started.elapsed());
        let sent = Sent {
            pending,
            rcpts: &rcpts,
            remote: &remote,
            attempt_ms: started.elapsed().as_millis() as u64,
            now,
        };
        Some(self.sent(job, &sent, results, ledger).await)
    }

    /// No session to the target: defer (or fail) the pending recipients; a temporary failure
    /// backs the whole target off.
    fn unreachable(
        &self,
        pool: &Pool,
        pool_key: &str,
        loaded: &Loaded,
        pending: &[usize],
        o: Outcome,
    ) -> Report {
        let backoff = matches!(o, Outcome::Deferred { .. }).then(|| {
            let backoff = decide::target_backoff(pool.failed(), loaded.policy.first_step());
            let until = SystemTime::now() + backoff;
            pool.back_off(until, o.reply());
            inc(&self.stats.target_backoffs, 1);
            tracing::warn!(target = %pool_key, backoff = ?backoff, reply = %o.reply(), "target unreachable: backing off the whole target");
            until
        });
        Report::all(Attempt::NotSent { backoff }, pending, &o)
    }

    /// Run the transaction on `session`, then keep the session for reuse or close it. Returns
    /// the per-recipient outcomes and the remote host.
    async fn transact(
        &self,
        mut session: Session,
        pool: &Pool,
        target_cfg: Option<&Target>,
        job: Job<'_>,
        rcpts: &[String],
        body: &QueuedBody,
    ) -> (Vec<Outcome>, String) {
        let rec = job.rec;
        let converted = match target_cfg.and_then(Target::tnef) {
            Some(o) => super::tnef::convert_for_delivery(rec, body, o).await,
            None => None,
        };
        let stored = match (&converted, body) {
            (Some(c), _) => Body::Bytes(c),
            (None, QueuedBody::Inline(v)) => Body::Bytes(v),
            (None, QueuedBody::Spool(p)) => Body::File(p),
        };
        let size = converted.as_ref().map_or(rec.size, |c| c.len() as u64);
        let seal = rec.seals.get(&job.leg.target).map(String::as_bytes);
        let results = session
            .send(&Transaction {
                mail_from: &rec.envelope.mail_from,
                rcpts,
                body: match seal {
                    Some(s) => Body::Prefixed(s, &stored),
                    None => stored,
                },
                size: size + seal.map_or(0, |s| s.len() as u64),
                smtputf8: rec.envelope.smtputf8,
                body_8bit: rec.envelope.body_8bit,
            })
            .await;
        let remote = session.remote.clone();
        let max_tx = target_cfg.map(|t| t.messages_per_connection).unwrap_or(1);
        if session.usable() && session.transactions < max_tx && job.leg.target != MX_TARGET {
            pool.put_idle(session);
        } else {
            tokio::spawn(session.quit());
        }
        (results, remote)
    }

    /// Log each recipient's outcome of a transaction and tell the ledger about deliveries (the
    /// waits for their durability go to `ledger`).
    async fn sent(
        &self,
        job: Job<'_>,
        sent: &Sent<'_>,
        results: Vec<Outcome>,
        ledger: &mut Vec<LedgerWrite>,
    ) -> Report {
        let Job { rec, leg, .. } = job;
        let since_arrival = sent
            .now
            .duration_since(rec.envelope.received_at)
            .unwrap_or_default();
        let mut outcomes = Vec::with_capacity(sent.pending.len());
        let mut head: Option<Vec<u8>> = None;
        for (k, (&i, o)) in sent.pending.iter().zip(results).enumerate() {
            let default_status = match o {
                Outcome::Delivered { .. } => "2.0.0",
                Outcome::Deferred { .. } => "4.0.0",
                Outcome::Failed { .. } => "5.0.0",
            };
            tracing::info!(
                to = %sent.rcpts[k],
                orig_to = %leg.recipients[i].address,
                target = %leg.target,
                relay = %sent.remote,
                delay = format!("{:.2}", since_arrival.as_secs_f64()),
                attempt_ms = sent.attempt_ms,
                dsn = %bounce::status_of(o.reply(), default_status),
                status = o.status_word(),
                reply = %o.reply(),
                "delivery"
            );
            if matches!(o, Outcome::Delivered { .. })
                && let Some(hook) = &self.on_delivered
            {
                if head.is_none() {
                    head = Some(self.head(&rec.id).await);
                }
                ledger.push(hook(&Delivery {
                    target: &leg.target,
                    original_rcpt: &leg.recipients[i].address,
                    final_rcpt: &sent.rcpts[k],
                    queue_id: &rec.id.0,
                    head: head.as_deref().unwrap_or_default(),
                }));
            }
            outcomes.push((i, o));
        }
        Report {
            attempt: Attempt::Sent,
            outcomes,
        }
    }

    /// The header block and the start of the body of `id`, for the ledger's fingerprint
    /// (bounded: the whole body is never read for it).
    async fn head(&self, id: &QueueId) -> Vec<u8> {
        let q = self.queue.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || q.read_head(&id, fingerprint::BODY_PREFIX))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// Connect to the first host of the target that answers, with the target's connection
    /// settings as resolved at load.
    async fn open(
        &self,
        loaded: &Loaded,
        leg: &Leg,
        target: Option<&Target>,
        rcpts: &[String],
    ) -> Result<Session, Outcome> {
        let allow_private = loaded.cfg.dns.allow_private_mx;
        let dial = match target {
            Some(t) => {
                let missing = Err(Outcome::local(&format!(
                    "target {:?} is not configured (config changed?)",
                    leg.target
                )));
                let spec = loaded.targets.target(&leg.target).unwrap_or(&missing);
                Dial::prepared(&self.resolver, t, spec, allow_private).await?
            }
            None => {
                let domain = rcpts
                    .first()
                    .and_then(|r| r.rsplit_once('@'))
                    .map(|(_, d)| d)
                    .unwrap_or("");
                let spec = loaded.targets.mx();
                Dial::domain_prepared(&self.resolver, domain, spec, allow_private).await?
            }
        };
        let s = dial.open(&leg.target).await?;
        inc(&self.stats.connections_opened, 1);
        Ok(s)
    }

    /// Count a report's outcomes (and the attempt) by target in [`Telemetry`] and log those
    /// the sender did not log.
    fn count(&self, leg: &Leg, report: &Report) {
        let expired = matches!(report.attempt, Attempt::Expired);
        let now = SystemTime::now();
        for (i, o) in &report.outcomes {
            let kind = match o {
                Outcome::Delivered { .. } => telemetry::Outcome::Delivered,
                Outcome::Deferred { .. } => telemetry::Outcome::Deferred,
                Outcome::Failed { .. } => telemetry::Outcome::Failed,
            };
            self.telemetry.outcome(&leg.target, kind, 1, expired, now);
            if let Some(word) = report.attempt.log_word(o)
                && let Some(r) = leg.recipients.get(*i)
            {
                tracing::info!(to = %r.address, target = %leg.target, status = word, reply = %o.reply(), "delivery");
            }
        }
        if report.attempt.counts() {
            self.telemetry.attempt(&leg.target);
        }
    }

    /// Apply `report` to the leg durably, in one transaction with the DSNs it causes; then
    /// count and log what was sent.
    async fn record(&self, job: Job<'_>, report: Report) {
        let Job { loaded, rec, leg } = job;
        let d = decide::decide(
            &loaded.policy,
            leg,
            &report,
            SystemTime::now(),
            fastrand::f64(),
        );
        self.count(leg, &report);
        // DSNs go into the same transaction as the update that causes them: a crash can never
        // keep a recipient failed and lose its bounce. The original's header block is read
        // first, only when a DSN is possible.
        let may_dsn = dsn::possible(&rec.envelope.mail_from, report.any_failed(), d.warn_delay);
        let headers = if may_dsn {
            bounce::original_headers(&self.queue, &rec.id).await
        } else {
            Vec::new()
        };
        let (failure_id, delay_id) = (self.queue.next_id(), self.queue.next_id());
        let input = dsn::StageInput {
            cfg: &loaded.cfg,
            leg: leg.id,
            warn_delay: d.warn_delay,
            headers: &headers,
            failure_id: &failure_id,
            delay_id: &delay_id,
            now: SystemTime::now(),
        };
        let apply = |l: &mut Leg| decide::apply(leg, &report, &d, l);
        let stage = |before: &Leg, after: &MessageRecord| match may_dsn {
            true => dsn::stage(&input, before, after),
            false => Vec::new(),
        };
        let (before, out) = match self
            .queue
            .update_leg_staged(&rec.id, leg.id, apply, stage)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "recording the delivery result failed; the leg will be retried");
                return;
            }
        };
        crate::fault::fault_point("after-leg-update");
        self.recorded(&input, &before, &out, &rec.envelope.mail_from);
    }

    /// Count and log the dual-delivery failures and the DSNs of a recorded update.
    fn recorded(
        &self,
        input: &dsn::StageInput<'_>,
        before: &Leg,
        out: &Rewritten<()>,
        sender: &str,
    ) {
        if let Some(after) = out.record.leg(before.id)
            && after.state.is_final()
            && !before.state.is_final()
        {
            let since = input.now.duration_since(out.record.envelope.received_at);
            self.telemetry
                .leg_final(&before.target, since.unwrap_or_default());
        }
        let plan = dsn::plan(before, &out.record, input.warn_delay);
        for &i in &plan.mixed {
            inc(&self.stats.dual_leg_failures, 1);
            if let Some(r) = before.recipients.get(i) {
                tracing::warn!(to = %r.address, "a leg failed but another leg delivered: no DSN (operator attention)");
            }
        }
        let via = bounce::dsn_target(input.cfg);
        for id in &out.added {
            if id == input.failure_id {
                inc(&self.stats.dsn_failure, 1);
                tracing::info!(dsn_id = %id, to = %sender, via = %via, recipients = plan.bounced.len(), "sender non-delivery notification");
            } else {
                inc(&self.stats.dsn_delay, 1);
                tracing::info!(dsn_id = %id, to = %sender, via = %via, "sender delay notification");
            }
        }
    }
}

/// What a transaction was for, for its log lines.
struct Sent<'a> {
    /// The recipients attempted (indexes into the leg) ...
    pending: &'a [usize],
    /// ... and the addresses given to the target for them.
    rcpts: &'a [String],
    remote: &'a str,
    attempt_ms: u64,
    /// When the attempt started.
    now: SystemTime,
}
