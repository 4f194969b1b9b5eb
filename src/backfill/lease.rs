//! Mailbox leases of a fleet backfill (`cutover backfill worker JOB`, `[ledger] url`): the
//! shared pass of a job, its mailboxes as lease rows in PostgreSQL, and the statements that
//! claim, renew and finish them. A worker claims the next free mailbox (`FOR UPDATE SKIP
//! LOCKED`: no two workers get the same row), renews it with a heartbeat, and stores the
//! mailbox's report when done; a lease that was not renewed in time is free again, and the
//! next claim resumes that mailbox from the shared folder state. Also the pure order in which
//! mailboxes are offered ([`lease_order`]). Never touches IMAP (that is the runner's).

use super::report::{FleetView, JobReport, LeaseView, MailboxReport};
use super::runner::MailboxPair;
use crate::pgdb::{PgDb, PgError};
use crate::time::rfc3339;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// A mailbox held by this worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub job: String,
    pub pass: i32,
    pub pair: MailboxPair,
    /// Fencing token: renewals and the final write only count while it is still ours.
    pub token: i64,
    /// How many claims this mailbox has had in this pass (2 and up: a takeover).
    pub attempts: i32,
    /// The worker that held it before (a takeover), if any.
    pub previous: Option<String>,
}

/// The order in which a pass offers its mailboxes (each with its weight): mailboxes not seen
/// in an earlier pass first, in list order (their size is unknown); then the known ones
/// largest first (`weights`: bytes at the source last time, by lowercased source user), so
/// that the biggest mailboxes start early and the small ones fill the gaps at the end.
pub fn lease_order<'a>(
    pairs: &'a [MailboxPair],
    weights: &HashMap<String, i64>,
) -> Vec<(&'a MailboxPair, i64)> {
    let mut v: Vec<(usize, &MailboxPair, Option<i64>)> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| (i, p, weights.get(&p.source.to_lowercase()).copied()))
        .collect();
    v.sort_by(|a, b| match (a.2, b.2) {
        (None, None) => a.0.cmp(&b.0),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(&x).then(a.0.cmp(&b.0)),
    });
    v.into_iter().map(|(_, p, w)| (p, w.unwrap_or(0))).collect()
}

/// The weight of a finished mailbox for the next pass's order: bytes held at the source
/// (estimated from its folders' message counts when no bytes were copied).
pub fn weight_of(reports: &[MailboxReport]) -> i64 {
    let msgs: u64 = reports
        .iter()
        .flat_map(|r| &r.folders)
        .map(|f| f.source_count)
        .sum();
    let bytes: u64 = reports.iter().map(|r| r.bytes).sum();
    i64::try_from(bytes.max(msgs.saturating_mul(50_000))).unwrap_or(i64::MAX)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Join the job's unfinished pass, or start the next one with `pairs` as its mailboxes (in
/// [`lease_order`] by the previous pass's weights). One transaction under a per-job advisory
/// lock, so workers starting together agree on one pass. Returns the pass number.
pub async fn start_or_join(db: &PgDb, job: &str, pairs: &[MailboxPair]) -> Result<i32, PgError> {
    // A connection of its own: the shared one is used by other tasks between statements.
    let mut own = db.own_connection().await?;
    let tx = own.transaction().await?;
    let pass = start_or_join_in_tx(&tx, job, pairs).await?;
    tx.commit().await?;
    Ok(pass)
}

async fn start_or_join_in_tx(
    client: &tokio_postgres::Transaction<'_>,
    job: &str,
    pairs: &[MailboxPair],
) -> Result<i32, PgError> {
    client
        .query("SELECT pg_advisory_xact_lock(hashtext($1))", &[&job])
        .await?;
    let latest = client
        .query_opt(
            "SELECT pass, finished_at IS NULL FROM backfill_pass WHERE job = $1
             ORDER BY pass DESC LIMIT 1",
            &[&job],
        )
        .await?;
    let prev = match latest {
        Some(r) if r.get::<_, bool>(1) => return Ok(r.get(0)),
        Some(r) => r.get::<_, i32>(0),
        None => 0,
    };
    let weights: HashMap<String, i64> = client
        .query(
            "SELECT lower(source), weight FROM backfill_lease WHERE job = $1 AND pass = $2",
            &[&job, &prev],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let pass = prev + 1;
    client
        .execute(
            "INSERT INTO backfill_pass (job, pass) VALUES ($1, $2)",
            &[&job, &pass],
        )
        .await?;
    let order = lease_order(pairs, &weights);
    let seq: Vec<i32> = (0..order.len() as i32).collect();
    let src: Vec<&str> = order.iter().map(|(p, _)| p.source.as_str()).collect();
    let dst: Vec<&str> = order.iter().map(|(p, _)| p.destination.as_str()).collect();
    let w: Vec<i64> = order.iter().map(|(_, w)| *w).collect();
    client
        .execute(
            "INSERT INTO backfill_lease (job, pass, seq, source, destination, weight)
             SELECT $1, $2, * FROM unnest($3::int[], $4::text[], $5::text[], $6::bigint[])
             ON CONFLICT DO NOTHING",
            &[&job, &pass, &seq, &src, &dst, &w],
        )
        .await?;
    tracing::info!(job, pass, mailboxes = order.len(), "backfill pass started");
    Ok(pass)
}

/// Claim the next free mailbox of the pass for `worker`, for `ttl`.
pub async fn claim(
    db: &PgDb,
    job: &str,
    pass: i32,
    worker: &str,
    ttl: Duration,
) -> Result<Option<Lease>, PgError> {
    let client = db.client().await?;
    let row = client
        .query_opt(
            "WITH c AS (
                SELECT job, pass, source, destination, worker AS prev FROM backfill_lease
                WHERE job = $1 AND pass = $2
                  AND (status = 'pending' OR (status = 'running' AND expires_at < now()))
                ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
             UPDATE backfill_lease l SET status = 'running', worker = $3,
                 token = nextval('backfill_lease_token'),
                 expires_at = now() + $4 * interval '1 millisecond',
                 attempts = l.attempts + 1, started_at = coalesce(l.started_at, now())
             FROM c
             WHERE l.job = c.job AND l.pass = c.pass AND l.source = c.source
               AND l.destination = c.destination
             RETURNING l.source, l.destination, l.token, l.attempts, c.prev",
            &[&job, &pass, &worker, &(ms(ttl) as f64)],
        )
        .await?;
    Ok(row.map(|r| Lease {
        job: job.to_string(),
        pass,
        pair: MailboxPair {
            source: r.get(0),
            destination: r.get(1),
        },
        token: r.get(2),
        attempts: r.get(3),
        previous: r.get(4),
    }))
}

/// `UPDATE backfill_lease SET <set> WHERE <the lease is still ours>`, with `extra` as the
/// parameters from `$6` on; the number of rows changed (1: it was ours).
async fn update_ours(
    db: &PgDb,
    lease: &Lease,
    set: &str,
    extra: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, PgError> {
    let client = db.client().await?;
    let sql = format!(
        "UPDATE backfill_lease SET {set}
         WHERE job = $1 AND pass = $2 AND source = $3 AND destination = $4
           AND token = $5 AND status = 'running'"
    );
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        &lease.job,
        &lease.pass,
        &lease.pair.source,
        &lease.pair.destination,
        &lease.token,
    ];
    params.extend_from_slice(extra);
    Ok(client.execute(&sql, &params).await?)
}

/// Extend the lease by `ttl`. `false`: it is no longer ours (it expired and was taken).
pub async fn renew(db: &PgDb, lease: &Lease, ttl: Duration) -> Result<bool, PgError> {
    let set = "expires_at = now() + $6 * interval '1 millisecond'";
    Ok(update_ours(db, lease, set, &[&(ms(ttl) as f64)]).await? == 1)
}

/// Mark the mailbox done with its reports. `false`: the lease was lost before (another
/// worker has it now; its report will count).
pub async fn finish(db: &PgDb, lease: &Lease, reports: &[MailboxReport]) -> Result<bool, PgError> {
    let json = serde_json::to_string(reports).map_err(|e| PgError::Corrupt(e.to_string()))?;
    let set = "status = 'done', finished_at = now(), expires_at = NULL,
               report = $6::text::jsonb, weight = $7";
    Ok(update_ours(db, lease, set, &[&json, &weight_of(reports)]).await? == 1)
}

/// (free, held): mailboxes a claim could take now, and mailboxes held by live leases.
pub async fn outstanding(db: &PgDb, job: &str, pass: i32) -> Result<(i64, i64), PgError> {
    let client = db.client().await?;
    let r = client
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'pending'
                                        OR (status = 'running' AND expires_at < now())),
                    count(*) FILTER (WHERE status = 'running' AND expires_at >= now())
             FROM backfill_lease WHERE job = $1 AND pass = $2",
            &[&job, &pass],
        )
        .await?;
    Ok((r.get(0), r.get(1)))
}

/// Close the pass once every mailbox is done (any worker may; the first one does).
pub async fn finish_pass(db: &PgDb, job: &str, pass: i32) -> Result<bool, PgError> {
    let client = db.client().await?;
    let n = client
        .execute(
            "UPDATE backfill_pass SET finished_at = now()
             WHERE job = $1 AND pass = $2 AND finished_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM backfill_lease
                               WHERE job = $1 AND pass = $2 AND status <> 'done')",
            &[&job, &pass],
        )
        .await?;
    Ok(n == 1)
}

/// The job's latest shared pass as a report (what `backfill status`, the status page, the
/// metrics and the waves read in fleet mode); `None` before the first pass.
pub async fn job_report(db: &PgDb, job: &str) -> Result<Option<JobReport>, PgError> {
    let client = db.client().await?;
    let Some(p) = client
        .query_opt(
            "SELECT pass, started_at, finished_at FROM backfill_pass WHERE job = $1
             ORDER BY pass DESC LIMIT 1",
            &[&job],
        )
        .await?
    else {
        return Ok(None);
    };
    let pass: i32 = p.get(0);
    let started: SystemTime = p.get(1);
    let finished: Option<SystemTime> = p.get(2);
    let rows = client
        .query(
            "SELECT source, destination, status, worker, attempts, expires_at, report::text,
                    expires_at < now()
             FROM backfill_lease WHERE job = $1 AND pass = $2 ORDER BY seq",
            &[&job, &pass],
        )
        .await?;
    let mut view = FleetView {
        pass,
        ..Default::default()
    };
    let mut mailboxes = Vec::new();
    for r in &rows {
        let status: String = r.get(2);
        let expired: Option<bool> = r.get(7);
        match status.as_str() {
            "done" => {
                view.done += 1;
                let text: Option<String> = r.get(6);
                let reports: Vec<MailboxReport> = text
                    .as_deref()
                    .map(serde_json::from_str)
                    .transpose()
                    .map_err(|e| PgError::Corrupt(e.to_string()))?
                    .unwrap_or_default();
                mailboxes.extend(reports);
            }
            "running" if expired != Some(true) => view.running.push(LeaseView {
                source_user: r.get(0),
                destination_user: r.get(1),
                worker: r.get::<_, Option<String>>(3).unwrap_or_default(),
                attempts: r.get(4),
                expires: r
                    .get::<_, Option<SystemTime>>(5)
                    .map(rfc3339)
                    .unwrap_or_default(),
            }),
            _ => view.pending += 1,
        }
    }
    let end = finished.unwrap_or_else(SystemTime::now);
    let mut report = JobReport {
        job: job.to_string(),
        started: rfc3339(started),
        finished: finished.map(rfc3339),
        running: finished.is_none(),
        mailboxes,
        duration_ms: end
            .duration_since(started)
            .map_or(0, |d| d.as_millis() as u64),
        ..Default::default()
    };
    report.total();
    report.converged &= view.pending == 0 && view.running.is_empty();
    report.fleet = Some(view);
    Ok(Some(report))
}

/// Gateway side of fleet mode: every `every`, copy each job's shared pass report to
/// `<state_dir>/backfill/<job>/report.json`, where the status page, the metrics, the alerts
/// and the waves read it (so they show the same state as `backfill status`). Ends with `stop`.
pub async fn mirror_reports(
    db: PgDb,
    jobs: Vec<String>,
    state_dir: std::path::PathBuf,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        for job in &jobs {
            match job_report(&db, job).await {
                Ok(Some(r)) => {
                    let path = super::state::job_dir(&state_dir, job, None).join("report.json");
                    if let Err(e) = r.write(&path) {
                        tracing::warn!(job = %job, error = %e, "cannot write the shared pass report");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(job = %job, error = %e, "shared pass report unavailable"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(s: &str) -> MailboxPair {
        MailboxPair {
            source: s.into(),
            destination: s.into(),
        }
    }

    #[test]
    fn unknown_first_in_list_order_then_largest_first() {
        let pairs = vec![pair("a"), pair("B"), pair("c"), pair("d"), pair("e")];
        let w: HashMap<String, i64> = [("b".into(), 10), ("d".into(), 500), ("e".into(), 10)]
            .into_iter()
            .collect();
        let order: Vec<&str> = lease_order(&pairs, &w)
            .iter()
            .map(|(p, _)| p.source.as_str())
            .collect();
        assert_eq!(order, ["a", "c", "d", "B", "e"]);
    }

    proptest::proptest! {
        #[test]
        fn every_mailbox_offered_once(
            names in proptest::collection::btree_set("[a-z]{1,6}", 0..40),
            known in proptest::collection::vec(0i64..1000, 0..40),
        ) {
            let pairs: Vec<MailboxPair> = names.iter().map(|n| pair(n)).collect();
            let w: HashMap<String, i64> =
                names.iter().zip(&known).map(|(n, k)| (n.clone(), *k)).collect();
            let order = lease_order(&pairs, &w);
            let mut got: Vec<&str> = order.iter().map(|(p, _)| p.source.as_str()).collect();
            got.sort_unstable();
            let want: Vec<&str> = names.iter().map(String::as_str).collect();
            proptest::prop_assert_eq!(got, want);
            // Known weights never increase along the order.
            let ws: Vec<i64> = order.iter().filter(|(p, _)| w.contains_key(&p.source)).map(|(_, w)| *w).collect();
            proptest::prop_assert!(ws.windows(2).all(|x| x[0] >= x[1]));
        }
    }

    #[test]
    fn weight_counts_bytes_or_messages() {
        let mut r = MailboxReport {
            bytes: 7,
            ..Default::default()
        };
        assert_eq!(weight_of(std::slice::from_ref(&r)), 7);
        r.folders.push(super::super::report::FolderReport {
            source_count: 3,
            ..Default::default()
        });
        assert_eq!(weight_of(&[r]), 150_000);
    }
}
