//! The fleet's PostgreSQL (`[ledger] url`): one shared connection per process (tokio-postgres,
//! TLS through rustls when the server offers or the URL's `sslmode` asks for it), reconnected
//! when it breaks, and the versioned schema, migrated at start-up under an advisory lock so
//! that gateways and workers starting together apply each step once. Owns the schema (every
//! table the ledger and the fleet backfill use); never decides what to write (that is
//! `ledger::shared` and `backfill::lease`).

use crate::config::LedgerSection;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Client;

/// Time allowed to connect (TCP, TLS, authentication) and to migrate.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Arbitrary key of the advisory lock serialising migrations ("cutover").
const MIGRATION_LOCK: i64 = 0x0063_7574_6f76_6572;

/// The schema, one step per version, applied in order. Never edit a released step: add one.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE ledger (
        mailbox text NOT NULL,
        fingerprint text NOT NULL,
        gateway text NOT NULL,
        queue_id text NOT NULL,
        target text NOT NULL,
        original_rcpt text NOT NULL,
        final_rcpt text NOT NULL,
        at timestamptz NOT NULL,
        PRIMARY KEY (mailbox, fingerprint, gateway, queue_id, target)
    );
    CREATE TABLE gateways (
        instance text PRIMARY KEY,
        pending bigint NOT NULL,
        drained_at timestamptz,
        heartbeat_at timestamptz NOT NULL,
        stopped boolean NOT NULL DEFAULT false
    );
    CREATE TABLE backfill_pass (
        job text NOT NULL,
        pass integer NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz,
        PRIMARY KEY (job, pass)
    );
    CREATE TABLE backfill_lease (
        job text NOT NULL,
        pass integer NOT NULL,
        seq integer NOT NULL,
        source text NOT NULL,
        destination text NOT NULL,
        status text NOT NULL DEFAULT 'pending',
        worker text,
        token bigint,
        expires_at timestamptz,
        attempts integer NOT NULL DEFAULT 0,
        started_at timestamptz,
        finished_at timestamptz,
        weight bigint NOT NULL DEFAULT 0,
        report jsonb,
        PRIMARY KEY (job, pass, source, destination)
    );
    CREATE INDEX backfill_lease_claim ON backfill_lease (job, pass, status, seq);
    CREATE SEQUENCE backfill_lease_token;
    CREATE TABLE backfill_folder (
        job text NOT NULL,
        direction text NOT NULL,
        mailbox text NOT NULL,
        folder text NOT NULL,
        state jsonb NOT NULL,
        PRIMARY KEY (job, direction, mailbox, folder)
    );
    CREATE TABLE backfill_bytes (
        job text NOT NULL,
        account text NOT NULL,
        day text NOT NULL,
        bytes bigint NOT NULL,
        PRIMARY KEY (job, account, day)
    );
    CREATE TABLE backfill_gmail (
        job text NOT NULL,
        account text NOT NULL,
        msgid bigint NOT NULL,
        PRIMARY KEY (job, account, msgid)
    );",
)];

/// The newest schema version this build knows.
pub fn schema_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("[ledger] url is not set")]
    NotConfigured,
    #[error("PostgreSQL {url}: {why}")]
    Connect { url: String, why: String },
    #[error("PostgreSQL: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error(
        "PostgreSQL {url}: schema version {found} is newer than this cutover's {known}: upgrade cutover"
    )]
    TooNew { url: String, found: i32, known: i32 },
    #[error("PostgreSQL: corrupt value: {0}")]
    Corrupt(String),
}

/// A process's handle on the fleet database: cheap to clone, connects on first use.
#[derive(Clone)]
pub struct PgDb {
    inner: Arc<Inner>,
}

struct Inner {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// For messages: the URL without its password.
    redacted: String,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl PgDb {
    /// The database of `[ledger]` (`base_dir`: the config file's directory, for `ca_file`).
    pub fn new(section: &LedgerSection, base_dir: &Path) -> Result<PgDb, PgError> {
        let url = section.url.as_ref().ok_or(PgError::NotConfigured)?;
        let redacted = url.redacted();
        let mut config: tokio_postgres::Config =
            url.secret().parse().map_err(|e| PgError::Connect {
                url: redacted.clone(),
                why: format!("bad URL: {e}"),
            })?;
        if config.get_options().is_none() {
            // The schema check's "already exists, skipping" notices are not worth a log line.
            config.options("-c client_min_messages=warning");
        }
        let ca = section
            .ca_file
            .as_ref()
            .map(|f| crate::config::resolve_path(base_dir, f));
        let tls = crate::tls_client::client_config(true, ca.as_deref()).map_err(|e| {
            PgError::Connect {
                url: redacted.clone(),
                why: e.to_string(),
            }
        })?;
        Ok(PgDb {
            inner: Arc::new(Inner {
                config,
                tls: tokio_postgres_rustls::MakeRustlsConnect::new(tls),
                redacted,
                client: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// The URL without its password.
    pub fn url(&self) -> &str {
        &self.inner.redacted
    }

    /// The connection, opened (and the schema migrated) when there is none or it broke.
    pub async fn client(&self) -> Result<Arc<Client>, PgError> {
        let mut slot = self.inner.client.lock().await;
        if let Some(c) = slot.as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        *slot = None;
        let c = Arc::new(self.own_connection().await?);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// A new connection of the caller's own (for a transaction: the shared one serves other
    /// tasks between statements), the schema checked.
    pub async fn own_connection(&self) -> Result<Client, PgError> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
            .await
            .map_err(|_| PgError::Connect {
                url: self.inner.redacted.clone(),
                why: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
            })?
    }

    async fn connect(&self) -> Result<Client, PgError> {
        let (mut client, conn) = self
            .inner
            .config
            .connect(self.inner.tls.clone())
            .await
            .map_err(|e| PgError::Connect {
                url: self.inner.redacted.clone(),
                why: e.to_string(),
            })?;
        let url = self.inner.redacted.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(database = %url, error = %e, "PostgreSQL connection closed");
            }
        });
        migrate(&mut client, &self.inner.redacted).await?;
        Ok(client)
    }
}

/// Apply the missing steps of [`MIGRATIONS`] in one transaction, under the advisory lock.
async fn migrate(client: &mut Client, url: &str) -> Result<(), PgError> {
    let tx = client.transaction().await?;
    tx.query("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS cutover_schema (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM cutover_schema", &[])
        .await?
        .get(0);
    let known = schema_version();
    if found > known {
        return Err(PgError::TooNew {
            url: url.to_string(),
            found,
            known,
        });
    }
    for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO cutover_schema (version) VALUES ($1)", &[v])
            .await?;
        tracing::info!(database = %url, version = v, "schema migrated");
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order() {
        let mut last = 0;
        for (v, sql) in MIGRATIONS {
            assert_eq!(*v, last + 1);
            assert!(!sql.trim().is_empty());
            last = *v;
        }
        assert_eq!(schema_version(), last);
    }
}
