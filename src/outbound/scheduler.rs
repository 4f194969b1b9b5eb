//! The delivery scheduler: picks due legs from the queue's due index (never a full scan), runs
//! each attempt under its target's connection limit over pooled SMTP sessions, records the
//! per-recipient outcomes durably, and hands permanent failures and delays to the DSN builder.
//! One leg's failure never re-sends another. Never decides routes: legs come routed.

use super::client::{Body, Session, Transaction};
use super::dial::Dial;
use super::reply::Outcome;
use super::resolve::Resolver;
use super::retry::{delay_warning_due, expired, next_delay};
use crate::bounce::{self, DsnKind, DsnRecipient};
use crate::config::{Config, Target};
use crate::fingerprint;
use crate::queue::model::{BOUNCE_RULE, Leg, MessageRecord, RcptFate, RcptState};
use crate::queue::{Queue, QueueError, QueueId, QueuedBody};
use crate::routing;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

use crate::queue::model::MX_TARGET;

/// Connection slots of each per-domain MX pool.
pub const MX_CONNECTIONS: usize = 4;

/// Pool key for a leg: its target name, or `@mx:<domain>` for MX-routed legs ([`MX_TARGET`],
/// DSNs): a pool per recipient domain, so one slow domain holds only its own slots and backs off
/// alone.
fn mx_pool_key(target: &str, rcpts: &[String]) -> String {
    if target != MX_TARGET {
        return target.to_string();
    }
    let domain = rcpts
        .first()
        .and_then(|r| r.rsplit_once('@'))
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_default();
    format!("{MX_TARGET}:{domain}")
}

/// Attempts past their target's connection limit that may run at once, all targets together
/// (each holds at most an inline body, up to the queue's inline threshold; spooled bodies are
/// streamed).
pub const MAX_ATTEMPTS_IN_FLIGHT: usize = 64;
/// Leg attempts the scheduler keeps started (waiting for a connection slot or running) at
/// once; further due legs wait in the index, not in memory.
pub const MAX_STARTED: usize = 1024;

/// Counters exported on /metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub attempts: AtomicU64,
    pub delivered: AtomicU64,
    pub deferred: AtomicU64,
    pub failed: AtomicU64,
    pub expired: AtomicU64,
    pub dsn_failure: AtomicU64,
    pub dsn_delay: AtomicU64,
    /// Dual-delivery legs that failed while another leg delivered (operator problem, no DSN).
    pub dual_leg_failures: AtomicU64,
    pub target_backoffs: AtomicU64,
    pub connections_opened: AtomicU64,
}

/// Called for each successful delivery: (target, original recipient, final recipient, queue id,
/// the message's header block and the first [`fingerprint::BODY_PREFIX`] bytes of its body).
/// The ledger hooks in here; its record is made durable by the leg update that follows.
pub type DeliveredHook = Arc<dyn Fn(&str, &str, &str, &str, &[u8]) + Send + Sync>;

struct Pool {
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<(Session, Instant)>>,
    /// Whole-target back-off after connection failures.
    down_until: Mutex<Option<(SystemTime, String)>>,
    failures: AtomicU64,
}

impl Pool {
    fn new(connections: usize) -> Self {
        Pool {
            permits: Arc::new(Semaphore::new(connections.max(1))),
            idle: Mutex::new(Vec::new()),
            down_until: Mutex::new(None),
            failures: AtomicU64::new(0),
        }
    }
}

/// The delivery engine.
pub struct Scheduler {
    queue: Queue,
    config: watch::Receiver<Arc<Config>>,
    resolver: Resolver,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    in_flight: Mutex<HashSet<(String, u16)>>,
    /// Global cap on attempts past admission ([`MAX_ATTEMPTS_IN_FLIGHT`]).
    attempts: Arc<Semaphore>,
    pub stats: Arc<Stats>,
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
        let resolver = Resolver::new(&config.borrow().dns)?;
        Ok(Arc::new(Scheduler {
            queue,
            config,
            resolver,
            pools: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
            attempts: Arc::new(Semaphore::new(MAX_ATTEMPTS_IN_FLIGHT)),
            stats: Arc::new(Stats::default()),
            on_delivered,
            idle_timeout: Duration::from_secs(10),
        }))
    }

    fn cfg(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    fn pool(&self, target: &str, connections: usize) -> Arc<Pool> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools
            .entry(target.to_string())
            .or_insert_with(|| Arc::new(Pool::new(connections)))
            .clone()
    }

    /// Run until `stop` turns true; in-flight attempts are awaited (bounded by their timeouts).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
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
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            if *stop.borrow() {
                break;
            }
            let now = SystemTime::now();
            let mut next_wake = Duration::from_secs(30);
            let started = self
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .len();
            // Look past the legs already started so they never hide the rest of the index.
            match self
                .queue
                .due(now, started + MAX_STARTED.saturating_sub(started).min(512))
            {
                Ok(due) => {
                    for e in due {
                        if self
                            .in_flight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .len()
                            >= MAX_STARTED
                        {
                            break;
                        }
                        let key = (e.id.clone(), e.leg);
                        let fresh = self
                            .in_flight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(key.clone());
                        if !fresh {
                            continue;
                        }
                        let me = self.clone();
                        tasks.spawn(async move {
                            let span =
                                tracing::info_span!("delivery", queue_id = %key.0, leg = key.1);
                            me.attempt(&key.0, key.1).instrument(span).await;
                            me.in_flight
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&key);
                            me.queue.notify_due();
                        });
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading the due index");
                    next_wake = Duration::from_secs(1);
                }
            }
            // Next due entry that is not already being worked on.
            let in_flight = self
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .len();
            let far = now + Duration::from_secs(365 * 86_400);
            if let Ok(upcoming) = self.queue.due(far, in_flight + 1) {
                let inflight = self
                    .in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                if let Some(e) = upcoming
                    .iter()
                    .find(|e| !inflight.contains(&(e.id.clone(), e.leg)))
                {
                    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(e.due_ms);
                    next_wake = next_wake.min(
                        at.duration_since(SystemTime::now())
                            .unwrap_or(Duration::ZERO),
                    );
                }
            }
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
            }
        }
        while tasks.join_next().await.is_some() {}
        let pools: Vec<Arc<Pool>> = self
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for p in pools {
            let idle: Vec<(Session, Instant)> =
                std::mem::take(&mut *p.idle.lock().unwrap_or_else(|p| p.into_inner()));
            for (s, _) in idle {
                s.quit().await;
            }
        }
    }

    fn reap_idle(&self) {
        let mut map = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        // Per-domain MX pools nobody uses and that are not backing off are forgotten.
        let now = SystemTime::now();
        map.retain(|k, p| {
            !k.starts_with(MX_TARGET)
                || Arc::strong_count(p) > 1
                || p.down_until
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .is_some_and(|(until, _)| *until > now)
        });
        let pools: Vec<Arc<Pool>> = map.values().cloned().collect();
        drop(map);
        for p in pools {
            let mut idle = p.idle.lock().unwrap_or_else(|p| p.into_inner());
            let (keep, old): (Vec<_>, Vec<_>) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|(_, t)| t.elapsed() < self.idle_timeout);
            *idle = keep;
            drop(idle);
            for (s, _) in old {
                tokio::spawn(s.quit());
            }
        }
    }

    /// One attempt of one leg.
    async fn attempt(&self, id: &str, leg_idx: u16) {
        let cfg = self.cfg();
        let rec = match self.queue.record(id) {
            Ok(r) => r,
            Err(QueueError::NotFound(_)) => return,
            Err(e) => {
                tracing::error!(error = %e, "reading queue record");
                return;
            }
        };
        let Some(leg) = rec.legs.get(leg_idx as usize).cloned() else {
            return;
        };
        if leg.held || leg.state.is_final() {
            return;
        }
        let now = SystemTime::now();
        let pending: Vec<usize> = (0..leg.recipients.len())
            .filter(|&i| leg.recipients[i].state.is_pending())
            .collect();
        if pending.is_empty() {
            return;
        }

        // Expired legs fail what is left, without another attempt.
        if expired(leg.created, now, cfg.queue.max_age.0) {
            let outcomes: Vec<(usize, Outcome)> = pending
                .iter()
                .map(|&i| {
                    let last = leg.recipients[i]
                        .state
                        .last_reply()
                        .unwrap_or("never attempted")
                        .to_string();
                    (
                        i,
                        Outcome::Failed {
                            reply: format!(
                                "message expired after {} in the queue; last reply: {last}",
                                cfg.queue.max_age
                            ),
                        },
                    )
                })
                .collect();
            self.stats
                .expired
                .fetch_add(outcomes.len() as u64, Ordering::Relaxed);
            self.record(&cfg, &rec, leg_idx, &leg, outcomes, None, "expired", false)
                .await;
            return;
        }

        let target_cfg = cfg.targets.get(&leg.target).cloned();
        if target_cfg.is_none() && leg.target != MX_TARGET {
            let o = Outcome::local(&format!(
                "target {:?} is not configured (config changed?)",
                leg.target
            ));
            let outcomes = pending.iter().map(|&i| (i, o.clone())).collect();
            self.record(&cfg, &rec, leg_idx, &leg, outcomes, None, "deferred", true)
                .await;
            return;
        }
        let connections = target_cfg
            .as_ref()
            .map(|t| t.connections)
            .unwrap_or(MX_CONNECTIONS);
        let pending_rcpts: Vec<String> = pending
            .iter()
            .map(|&i| leg.recipients[i].address.clone())
            .collect();
        let pool_key = mx_pool_key(&leg.target, &pending_rcpts);
        let pool = self.pool(&pool_key, connections);

        // A target known to be down: postpone the leg to the end of the back-off, no attempt.
        let down = pool
            .down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some((until, why)) = down
            && until > now
        {
            let o = Outcome::local(&format!("target {pool_key} is down: {why}"));
            let outcomes = pending.iter().map(|&i| (i, o.clone())).collect();
            self.record(
                &cfg,
                &rec,
                leg_idx,
                &leg,
                outcomes,
                Some(until),
                "deferred",
                false,
            )
            .await;
            return;
        }

        // Admission before the body is touched: the target's connection slot, then the global
        // cap on attempts in flight. A released backlog therefore holds at most
        // `MAX_ATTEMPTS_IN_FLIGHT` bodies (inline ones; spooled ones are streamed), whatever
        // its size.
        let Ok(_permit) = pool.permits.clone().acquire_owned().await else {
            return;
        };
        let Ok(_attempt) = self.attempts.clone().acquire_owned().await else {
            return;
        };
        let body = match self.queue.body_source(&rec).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the message body");
                let o = Outcome::local(&format!("local error reading the queued body: {e}"));
                let outcomes = pending.iter().map(|&i| (i, o.clone())).collect();
                drop(_permit);
                self.record(&cfg, &rec, leg_idx, &leg, outcomes, None, "deferred", true)
                    .await;
                return;
            }
        };
        let started = Instant::now();
        let rcpts: Vec<String> = pending
            .iter()
            .map(|&i| {
                let r = &leg.recipients[i];
                final_rcpt(&cfg, &leg.target, &r.address, &r.rule)
            })
            .collect();
        let idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let session = match idle {
            Some((s, _)) => Ok(s),
            None => self.open(&cfg, &leg, target_cfg.as_ref(), &rcpts).await,
        };
        let mut session = match session {
            Ok(s) => {
                pool.failures.store(0, Ordering::Relaxed);
                s
            }
            Err(o) => {
                let until = if matches!(o, Outcome::Deferred { .. }) {
                    let n = pool.failures.fetch_add(1, Ordering::Relaxed) + 1;
                    // 5 s, 10 s, 20 s ... at most 5 min, and never longer than the first retry step.
                    let first_step = cfg
                        .queue
                        .retry_schedule
                        .first()
                        .map(|d| d.0)
                        .unwrap_or(Duration::from_secs(60));
                    let backoff = Duration::from_secs(5u64.saturating_mul(1 << (n - 1).min(6)))
                        .min(Duration::from_secs(300))
                        .min(first_step);
                    let until = SystemTime::now() + backoff;
                    *pool.down_until.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((until, o.reply().to_string()));
                    self.stats.target_backoffs.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target = %pool_key, backoff = ?backoff, reply = %o.reply(), "target unreachable: backing off the whole target");
                    Some(until)
                } else {
                    None
                };
                let outcomes = pending.iter().map(|&i| (i, o.clone())).collect();
                let word = if matches!(o, Outcome::Failed { .. }) {
                    "bounced"
                } else {
                    "deferred"
                };
                self.record(&cfg, &rec, leg_idx, &leg, outcomes, until, word, true)
                    .await;
                return;
            }
        };
        *pool.down_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let results = session
            .send(&Transaction {
                mail_from: &rec.envelope.mail_from,
                rcpts: &rcpts,
                body: match &body {
                    QueuedBody::Inline(v) => Body::Bytes(v),
                    QueuedBody::Spool(p) => Body::File(p),
                },
                size: rec.size,
                smtputf8: rec.envelope.smtputf8,
                body_8bit: rec.envelope.body_8bit,
            })
            .await;
        let remote = session.remote.clone();
        let max_tx = target_cfg
            .as_ref()
            .map(|t| t.messages_per_connection)
            .unwrap_or(1);
        if session.usable() && session.transactions < max_tx && leg.target != MX_TARGET {
            pool.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((session, Instant::now()));
        } else {
            tokio::spawn(session.quit());
        }
        drop(_permit);
        drop(_attempt);

        let delay = started.elapsed();
        let since_arrival = now
            .duration_since(rec.envelope.received_at)
            .unwrap_or_default();
        let mut outcomes = Vec::with_capacity(pending.len());
        let mut head: Option<Vec<u8>> = None;
        for (k, (&i, o)) in pending.iter().zip(results).enumerate() {
            tracing::info!(
                to = %rcpts[k],
                orig_to = %leg.recipients[i].address,
                target = %leg.target,
                relay = %remote,
                delay = format!("{:.2}", since_arrival.as_secs_f64()),
                attempt_ms = delay.as_millis() as u64,
                dsn = %bounce::status_of(o.reply(), match o { Outcome::Delivered { .. } => "2.0.0", Outcome::Deferred { .. } => "4.0.0", Outcome::Failed { .. } => "5.0.0" }),
                status = o.status_word(),
                reply = %o.reply(),
                "delivery"
            );
            if matches!(o, Outcome::Delivered { .. })
                && let Some(hook) = &self.on_delivered
            {
                if head.is_none() {
                    head = Some(self.head(id).await);
                }
                hook(
                    &leg.target,
                    &leg.recipients[i].address,
                    &rcpts[k],
                    id,
                    head.as_deref().unwrap_or_default(),
                );
            }
            outcomes.push((i, o));
        }
        self.record(&cfg, &rec, leg_idx, &leg, outcomes, None, "", true)
            .await;
    }

    /// The header block and the start of the body of `id`, for the ledger's fingerprint
    /// (bounded: the whole body is never read for it).
    async fn head(&self, id: &str) -> Vec<u8> {
        let q = self.queue.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || q.read_head(&id, fingerprint::BODY_PREFIX))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// Connect to the first host of the target that answers.
    async fn open(
        &self,
        cfg: &Config,
        leg: &Leg,
        target: Option<&Target>,
        rcpts: &[String],
    ) -> Result<Session, Outcome> {
        let helo = &cfg.gateway.hostname;
        let dial = match target {
            Some(t) => {
                let base = cfg.path.parent().unwrap_or(std::path::Path::new("."));
                Dial::target(&self.resolver, t, base, helo, cfg.dns.allow_private_mx).await?
            }
            None => {
                let domain = rcpts
                    .first()
                    .and_then(|r| r.rsplit_once('@'))
                    .map(|(_, d)| d)
                    .unwrap_or("");
                Dial::domain(&self.resolver, domain, helo, cfg.dns.allow_private_mx).await?
            }
        };
        let s = dial.open(&leg.target).await?;
        self.stats
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        Ok(s)
    }

    /// Apply outcomes to the leg durably; then DSNs and clean-up. `postpone` forces the next
    /// attempt time (target back-off); `counts` says whether this was a real attempt.
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        cfg: &Config,
        rec: &MessageRecord,
        leg_idx: u16,
        leg: &Leg,
        outcomes: Vec<(usize, Outcome)>,
        postpone: Option<SystemTime>,
        why: &str,
        counts: bool,
    ) {
        let now = SystemTime::now();
        let attempts = if counts {
            leg.attempts + 1
        } else {
            leg.attempts
        };
        let schedule: Vec<Duration> = cfg.queue.retry_schedule.iter().map(|d| d.0).collect();
        let next = postpone
            .unwrap_or_else(|| now + next_delay(&schedule, attempts.max(1), fastrand::f64()));
        for (_, o) in &outcomes {
            match o {
                Outcome::Delivered { .. } => self.stats.delivered.fetch_add(1, Ordering::Relaxed),
                Outcome::Deferred { .. } => self.stats.deferred.fetch_add(1, Ordering::Relaxed),
                Outcome::Failed { .. } => self.stats.failed.fetch_add(1, Ordering::Relaxed),
            };
        }
        if counts {
            self.stats.attempts.fetch_add(1, Ordering::Relaxed);
        }
        if !why.is_empty() {
            for (i, o) in &outcomes {
                tracing::info!(to = %leg.recipients[*i].address, target = %leg.target, status = why, reply = %o.reply(), "delivery");
            }
        }
        let warn_delay = delay_warning_due(
            leg.created,
            now,
            cfg.queue.delay_warning.0,
            leg.delay_warned,
        ) && outcomes
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Deferred { .. }));
        let apply = |l: &mut Leg| {
            if l.target != leg.target {
                return; // the leg was rewritten (reroute/delete) while we were delivering
            }
            for (i, o) in &outcomes {
                let Some(r) = l.recipients.get_mut(*i) else {
                    continue;
                };
                // Only the recipient we attempted, and only while it is still pending.
                let same = leg
                    .recipients
                    .get(*i)
                    .is_some_and(|snap| snap.address == r.address);
                if !same || !r.state.is_pending() {
                    continue;
                }
                let prev_attempts = match &r.state {
                    RcptState::Deferred { attempts, .. } => *attempts,
                    _ => 0,
                };
                r.state = match o {
                    Outcome::Delivered { reply } => RcptState::Delivered {
                        reply: reply.clone(),
                    },
                    Outcome::Failed { reply } => RcptState::Failed {
                        reply: reply.clone(),
                    },
                    Outcome::Deferred { reply } => RcptState::Deferred {
                        next,
                        attempts: prev_attempts + u32::from(counts),
                        last_reply: reply.clone(),
                    },
                };
            }
            l.attempts = attempts;
            l.next_attempt = Some(next);
            if warn_delay {
                l.delay_warned = true;
            }
        };
        // DSNs go into the same transaction as the update that causes them: a crash can never
        // keep a recipient failed and lose its bounce. The original's header block is read
        // first, only when a DSN is possible.
        let may_dsn = !rec.envelope.mail_from.is_empty()
            && (warn_delay
                || outcomes
                    .iter()
                    .any(|(_, o)| matches!(o, Outcome::Failed { .. })));
        let headers = if may_dsn {
            bounce::original_headers(&self.queue, &rec.id.0).await
        } else {
            Vec::new()
        };
        let (failure_id, delay_id) = (self.queue.next_id(), self.queue.next_id());
        let now_dsn = SystemTime::now();
        let stage = |before: &Leg, after: &MessageRecord| {
            if !may_dsn {
                return Vec::new();
            }
            let plan = dsn_plan(leg_idx, before, after, warn_delay);
            let mut add = Vec::new();
            let mut push = |id: &QueueId, kind, idx: &[usize]| {
                let recipients = dsn_recipients(cfg, after, leg_idx, idx, kind, now_dsn);
                add.extend(bounce::stage(
                    id.clone(),
                    cfg,
                    after,
                    kind,
                    &recipients,
                    &headers,
                    now_dsn,
                ));
            };
            push(&failure_id, DsnKind::Failure, &plan.bounced);
            let until = after
                .legs
                .get(leg_idx as usize)
                .map(|l| l.created + cfg.queue.max_age.0)
                .unwrap_or(now_dsn);
            push(
                &delay_id,
                DsnKind::Delay {
                    will_retry_until: until,
                },
                &plan.delayed,
            );
            add
        };
        let (before, out) = match self
            .queue
            .update_leg_staged(&rec.id.0, leg_idx, apply, stage)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "recording the delivery result failed; the leg will be retried");
                return;
            }
        };
        crate::fault::fault_point("after-leg-update");
        let plan = dsn_plan(leg_idx, &before, &out.record, warn_delay);
        for &i in &plan.mixed {
            self.stats.dual_leg_failures.fetch_add(1, Ordering::Relaxed);
            if let Some(r) = before.recipients.get(i) {
                tracing::warn!(to = %r.address, "a leg failed but another leg delivered: no DSN (operator attention)");
            }
        }
        let target = bounce::dsn_target(cfg);
        for id in &out.added {
            if *id == failure_id {
                self.stats.dsn_failure.fetch_add(1, Ordering::Relaxed);
                tracing::info!(dsn_id = %id, to = %rec.envelope.mail_from, via = %target, recipients = plan.bounced.len(), "sender non-delivery notification");
            } else {
                self.stats.dsn_delay.fetch_add(1, Ordering::Relaxed);
                tracing::info!(dsn_id = %id, to = %rec.envelope.mail_from, via = %target, "sender delay notification");
            }
        }
    }
}

/// Which recipients of leg `leg_idx` an update turns into DSNs (pure; indexes into the leg).
#[derive(Debug, Default, PartialEq, Eq)]
struct DsnPlan {
    /// Final on this leg by this update and failed on every leg carrying them: failure DSN.
    bounced: Vec<usize>,
    /// Final by this update, failed here but delivered elsewhere: no DSN, counted.
    mixed: Vec<usize>,
    /// Deferred, when this update is the one that sends the leg's delay warning.
    delayed: Vec<usize>,
}

fn dsn_plan(leg_idx: u16, before: &Leg, after: &MessageRecord, warn_delay: bool) -> DsnPlan {
    let mut plan = DsnPlan::default();
    let Some(leg) = after.legs.get(leg_idx as usize) else {
        return plan;
    };
    if leg.target != before.target {
        return plan;
    }
    for (i, r) in leg.recipients.iter().enumerate() {
        let was_pending = before
            .recipients
            .get(i)
            .is_some_and(|b| b.address == r.address && b.state.is_pending());
        if !was_pending || r.state.is_pending() || r.rule == BOUNCE_RULE {
            continue;
        }
        match after.fate(&r.address) {
            RcptFate::Failed => plan.bounced.push(i),
            RcptFate::Mixed => plan.mixed.push(i),
            RcptFate::Pending | RcptFate::Delivered => {}
        }
    }
    if warn_delay && !before.delay_warned {
        plan.delayed = (0..leg.recipients.len())
            .filter(|&i| matches!(leg.recipients[i].state, RcptState::Deferred { .. }))
            .collect();
    }
    plan
}

/// The DSN entries for recipients `idx` of leg `leg_idx`: for a failure, every leg that carried
/// the recipient (target and remote reply); for a delay, this leg.
fn dsn_recipients(
    cfg: &Config,
    rec: &MessageRecord,
    leg_idx: u16,
    idx: &[usize],
    kind: DsnKind,
    now: SystemTime,
) -> Vec<DsnRecipient> {
    let entry = |l: &Leg, r: &crate::queue::model::Recipient| DsnRecipient {
        original: r.address.clone(),
        final_rcpt: final_rcpt(cfg, &l.target, &r.address, &r.rule),
        target: l.target.clone(),
        remote_mta: None,
        diagnostic: r.state.last_reply().unwrap_or("").to_string(),
        last_attempt: Some(now),
    };
    let Some(leg) = rec.legs.get(leg_idx as usize) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for r in idx.iter().filter_map(|&i| leg.recipients.get(i)) {
        match kind {
            DsnKind::Failure => {
                for l in &rec.legs {
                    for x in l.recipients.iter().filter(|x| x.address == r.address) {
                        out.push(entry(l, x));
                    }
                }
            }
            DsnKind::Delay { .. } => out.push(entry(leg, r)),
        }
    }
    out
}

/// The address target `target` receives for a recipient (see [`routing::final_rcpt`]).
fn final_rcpt(cfg: &Config, target: &str, address: &str, rule: &str) -> String {
    routing::final_rcpt(
        address,
        cfg.targets
            .get(target)
            .and_then(|t| t.rcpt_domain.as_deref()),
        &cfg.gateway.accept_domains,
        rule == BOUNCE_RULE,
    )
}
