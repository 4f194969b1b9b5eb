//! The shared ledger in PostgreSQL (`[ledger] url`): batched inserts of delivery records (from
//! a gateway's outbox), the credits a backfill reads, and the gateways' outbox reports that
//! tell a backfill when it may trust the ledger. Queries only; never decides what to copy and
//! never holds records itself (the outbox does, `outbox.rs`).
//!
//! **When the backfill trusts the ledger.** Each gateway reports, after every shipping round,
//! `pending` (records still in its outbox) and `drained_at`: a database time taken *before* it
//! found its outbox empty, so every record it wrote before `drained_at` is in the table. A
//! backfill round takes the database time `T` before it reads the destination, and applies
//! credits only once every gateway has `drained_at >= T` or has stopped cleanly with an empty
//! outbox. A gateway that is down with records in its outbox holds the mailbox back (reported,
//! the pass is not converged) rather than let a message it delivered be copied again.

use super::{LedgerError, Record};
use crate::fingerprint::Fingerprint;
use crate::pgdb::{PgDb, PgError};
use crate::time::rfc3339;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// Insert `recs` (each under its original and, when different, its final recipient) as
/// written by gateway `gateway`, in one statement; records already there are left alone.
pub async fn insert(
    client: &tokio_postgres::Client,
    gateway: &str,
    recs: &[Record],
) -> Result<u64, PgError> {
    let mut cols: [Vec<String>; 7] = Default::default();
    let mut at: Vec<SystemTime> = Vec::new();
    for r in recs {
        let mut boxes = vec![r.original_rcpt.to_lowercase()];
        if !r.final_rcpt.eq_ignore_ascii_case(&r.original_rcpt) {
            boxes.push(r.final_rcpt.to_lowercase());
        }
        for m in boxes {
            let row = [
                m,
                r.fingerprint.0.clone(),
                gateway.to_string(),
                r.queue_id.clone(),
                r.target.clone(),
                r.original_rcpt.clone(),
                r.final_rcpt.clone(),
            ];
            for (c, v) in cols.iter_mut().zip(row) {
                c.push(v);
            }
            at.push(SystemTime::UNIX_EPOCH + Duration::from_secs(r.at));
        }
    }
    let [m, fp, gw, q, t, o, f] = &cols;
    Ok(client
        .execute(
            "INSERT INTO ledger (mailbox, fingerprint, gateway, queue_id, target, original_rcpt,
                                 final_rcpt, at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::text[], $8::timestamptz[])
             ON CONFLICT DO NOTHING",
            &[m, fp, gw, q, t, o, f, &at],
        )
        .await?)
}

/// Per fingerprint, the number of distinct messages delivered to `mailbox` (by any gateway),
/// restricted to `target` when given.
pub async fn credits(
    db: &PgDb,
    mailbox: &str,
    target: Option<&str>,
) -> Result<HashMap<Fingerprint, usize>, PgError> {
    let client = db.client().await?;
    let rows = client
        .query(
            "SELECT fingerprint, count(DISTINCT (gateway, queue_id)) FROM ledger
             WHERE mailbox = $1 AND ($2::text IS NULL OR target = $2)
             GROUP BY fingerprint",
            &[&mailbox.to_lowercase(), &target],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let n: i64 = r.get(1);
            (Fingerprint(r.get(0)), usize::try_from(n).unwrap_or(0))
        })
        .collect())
}

/// The database's clock (the one time every gateway and worker agrees on).
pub async fn now(db: &PgDb) -> Result<SystemTime, PgError> {
    let client = db.client().await?;
    Ok(client.query_one("SELECT now()", &[]).await?.get(0))
}

/// A gateway's last outbox report (the `gateways` table).
#[derive(Clone, Debug, serde::Serialize)]
pub struct GatewayOutbox {
    pub instance: String,
    pub pending: i64,
    /// RFC 3339; every record written before it has been shipped.
    pub drained_at: Option<String>,
    pub heartbeat_at: String,
    pub stopped: bool,
}

/// Every gateway's report.
pub async fn gateways(db: &PgDb) -> Result<Vec<GatewayOutbox>, PgError> {
    gateway_rows(db, None).await
}

async fn gateway_rows(
    db: &PgDb,
    lagging: Option<SystemTime>,
) -> Result<Vec<GatewayOutbox>, PgError> {
    let client = db.client().await?;
    let rows = client
        .query(
            "SELECT instance, pending, drained_at, heartbeat_at, stopped FROM gateways
             WHERE $1::timestamptz IS NULL
                OR NOT ((stopped AND pending = 0) OR drained_at >= $1)
             ORDER BY instance",
            &[&lagging],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| GatewayOutbox {
            instance: r.get(0),
            pending: r.get(1),
            drained_at: r.get::<_, Option<SystemTime>>(2).map(rfc3339),
            heartbeat_at: rfc3339(r.get(3)),
            stopped: r.get(4),
        })
        .collect())
}

/// Wait (polling every second, at most `wait`) until every gateway's records written before
/// `mark` are in the table; else say which gateways hold records back.
pub async fn wait_drained(db: &PgDb, mark: SystemTime, wait: Duration) -> Result<(), LedgerError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let lagging = gateway_rows(db, Some(mark)).await?;
        if lagging.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let who: Vec<String> = lagging
                .iter()
                .map(|g| {
                    format!(
                        "{} ({} record(s) in its outbox, last report {})",
                        g.instance, g.pending, g.heartbeat_at
                    )
                })
                .collect();
            return Err(LedgerError::NotDrained(who.join(", ")));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Record gateway `instance`'s outbox report: `pending` records left; `drained_at`, when it
/// found the outbox empty (the database time taken before it looked); `stopped` at a clean
/// shutdown.
pub async fn report_outbox(
    client: &tokio_postgres::Client,
    instance: &str,
    pending: i64,
    drained_at: Option<SystemTime>,
    stopped: bool,
) -> Result<(), PgError> {
    client
        .execute(
            "INSERT INTO gateways (instance, pending, drained_at, heartbeat_at, stopped)
             VALUES ($1, $2, $3, now(), $4)
             ON CONFLICT (instance) DO UPDATE SET pending = $2,
                 drained_at = coalesce($3, gateways.drained_at), heartbeat_at = now(),
                 stopped = $4",
            &[&instance, &pending, &drained_at, &stopped],
        )
        .await?;
    Ok(())
}
