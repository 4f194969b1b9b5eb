//! `cutover backfill worker JOB`: one worker of a fleet backfill. Joins (or starts) the job's
//! shared pass, then claims mailboxes ([`super::lease`]) and runs each like `backfill run`
//! does (the runner's mailbox task, state in PostgreSQL), `concurrency` at a time, until no
//! mailbox is left and none is held by a live lease; it then closes the pass. Each lease is
//! renewed by a heartbeat every third of `lease_ttl`; a worker that loses its lease (or
//! cannot renew it for two thirds of the ttl) abandons that mailbox at once, so two workers
//! never copy into one mailbox together. Owns the loop; never speaks IMAP itself.

use super::lease::{self, Lease};
use super::progress::Progress;
use super::report::{JobReport, MailboxReport, now_rfc3339};
use super::runner::{self, Ctx, MailboxPair, RunOptions};
use super::state::{State, job_dir, safe_name};
use super::{BackfillError, Result};
use crate::config::Config;
use crate::pgdb::{PgDb, PgError};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// What one worker did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WorkerReport {
    pub job: String,
    pub worker: String,
    pub pass: i32,
    /// The mailboxes this worker finished (their reports).
    pub mailboxes: Vec<MailboxReport>,
    /// Mailboxes taken over from a worker whose lease expired.
    pub taken_over: u32,
    /// Mailboxes abandoned because the lease was lost.
    pub lost: u32,
    /// The whole pass (every worker's mailboxes), when this worker closed it.
    pub pass_report: Option<JobReport>,
    pub started: String,
    pub duration_ms: u64,
}

fn pg(e: PgError) -> BackfillError {
    BackfillError::Ledger(e.into())
}

/// Run a worker of `job_name` until the pass has no mailbox left.
pub async fn run_worker(config: &Config, job_name: &str, opts: RunOptions) -> Result<WorkerReport> {
    let job = runner::find_job(config, job_name)?.clone();
    let base = config.path.parent().unwrap_or(Path::new("."));
    let db = PgDb::new(&config.ledger, base).map_err(pg)?;
    let worker = config.ledger.instance_name();
    let ttl = config.ledger.lease_ttl.0;
    let pairs = runner::selected_mailboxes(&job, base, &opts)?;
    let pass = lease::start_or_join(&db, job_name, &pairs)
        .await
        .map_err(pg)?;
    // Local caches only (fingerprints, Maildir UIDs): one directory per worker instance.
    let mut local = job_dir(&config.gateway.state_dir, job_name, None).into_os_string();
    local.push(".fleet");
    let local = std::path::PathBuf::from(local).join(safe_name(&worker));
    std::fs::create_dir_all(&local)
        .map_err(|e| BackfillError::Config(format!("{}: {e}", local.display())))?;
    let state = State::shared(&local, db.clone(), job_name);
    let progress = Arc::new(Progress::new(opts.quiet));
    let ctx = Ctx::new(config, &job, state, progress, &opts)?;
    tracing::info!(job = job_name, pass, %worker, database = %db.url(), "backfill worker started");

    let started = Instant::now();
    let mut report = WorkerReport {
        job: job_name.to_string(),
        worker: worker.clone(),
        pass,
        started: now_rfc3339(),
        ..Default::default()
    };
    let slots = job.concurrency().max(1);
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < slots {
            let Some(l) = lease::claim(&db, job_name, pass, &worker, ttl)
                .await
                .map_err(pg)?
            else {
                break;
            };
            if l.attempts > 1 {
                report.taken_over += 1;
                tracing::warn!(mailbox = %l.pair.source, previous = ?l.previous, attempt = l.attempts,
                    "taking over a mailbox whose lease expired; resuming from the shared state");
            }
            running.spawn(work_on(ctx.clone(), db.clone(), l, ttl));
        }
        if running.is_empty() {
            // Nothing free: wait while others hold leases (one may expire and need us).
            let (free, held) = lease::outstanding(&db, job_name, pass).await.map_err(pg)?;
            if free == 0 && held == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1).min(ttl / 3)).await;
            continue;
        }
        tokio::select! {
            done = running.join_next() => match done {
                Some(Ok(Some(reports))) => report.mailboxes.extend(reports),
                Some(Ok(None)) => report.lost += 1,
                Some(Err(e)) => tracing::error!(error = %e, "mailbox task failed"),
                None => {}
            },
            // Poll for free mailboxes now and then (an expired lease elsewhere).
            _ = tokio::time::sleep(ttl / 3) => {}
        }
    }
    if lease::finish_pass(&db, job_name, pass).await.map_err(pg)? {
        tracing::info!(job = job_name, pass, "backfill pass finished");
    }
    report.pass_report = lease::job_report(&db, job_name).await.map_err(pg)?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Run one leased mailbox with its heartbeat. `None`: the lease was lost and the work
/// abandoned (another worker resumes it).
async fn work_on(ctx: Arc<Ctx>, db: PgDb, l: Lease, ttl: Duration) -> Option<Vec<MailboxReport>> {
    let span =
        tracing::info_span!("mailbox", source = %l.pair.source, destination = %l.pair.destination);
    let pair: MailboxPair = l.pair.clone();
    let task = async { runner::run_mailbox(&ctx, &pair).await };
    let reports = tokio::select! {
        r = task.instrument(span.clone()) => r,
        () = heartbeat(&db, &l, ttl) => {
            span.in_scope(|| tracing::error!("lease lost: mailbox abandoned to another worker"));
            return None;
        }
    };
    match lease::finish(&db, &l, &reports).await {
        Ok(true) => Some(reports),
        Ok(false) => {
            span.in_scope(|| tracing::warn!("lease lost before the report was stored"));
            None
        }
        Err(e) => {
            // The lease expires and another worker redoes the (now cheap) pass.
            span.in_scope(|| tracing::error!(error = %e, "cannot store the mailbox's report"));
            None
        }
    }
}

/// Renew `l` every third of `ttl`; returns when it is lost: taken by another worker, or not
/// renewed for two thirds of `ttl` (the database unreachable: stop before anyone may take it).
async fn heartbeat(db: &PgDb, l: &Lease, ttl: Duration) {
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(ttl / 3).await;
        let attempt = tokio::time::timeout(ttl / 3, lease::renew(db, l, ttl)).await;
        match attempt {
            Ok(Ok(true)) => renewed = Instant::now(),
            Ok(Ok(false)) => return,
            Ok(Err(e)) => tracing::warn!(error = %e, "lease renewal failed"),
            Err(_) => tracing::warn!("lease renewal timed out"),
        }
        if renewed.elapsed() >= ttl * 2 / 3 {
            return;
        }
    }
}
