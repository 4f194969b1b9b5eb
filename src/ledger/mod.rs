//! The ledger: the shared record of deliveries cutover made (tree `ledger` in the gateway's sled
//! db at `<state_dir>/db`). The delivery engine calls [`Ledger::record`] once per delivered
//! (message, recipient mailbox, target); backfill reads [`Ledger::credits`] to skip messages
//! cutover already delivered to the destination mailbox. Also serves the records over the admin
//! API ([`api_router`]) and reads them from there ([`fetch_credits`]) when a running gateway
//! holds the db lock. Never decides what to copy (that is `backfill::index`).
//!
//! Key layout: `lower(mailbox) \0 fingerprint \0 queue_id \0 target` → JSON [`Record`]. A
//! delivery is written under the original recipient and, when rewritten, under the final one,
//! so backfill finds it by either address.
//!
//! Durability is explicit, not a side effect of the next queue flush: [`Ledger::sync`] (and the
//! future the delivery hook returns) resolves only once every record written before it is
//! power-safe: through the queue's group commit (sled's flush plus an `fdatasync`; one sync
//! covers concurrent writers) when the ledger was opened on the gateway's queue
//! ([`Ledger::on_queue`]), else through sled's own `flush_async`. The hook takes its
//! group-commit ticket when it writes, so the delivery engine awaits it right after the leg
//! update: the update's own sync, started later, covers the record (no extra sync per
//! delivery), and the record precedes the update in the db's log. [`Ledger::record`] alone is
//! not durable.
//!
//! Fleet mode (`[ledger] url`): each record also goes to the gateway's outbox (`outbox.rs`),
//! shipped to the shared PostgreSQL (`shared.rs`), which backfills everywhere read instead.

pub mod outbox;
pub mod shared;

use crate::fingerprint::Fingerprint;
use crate::queue::{Queue, QueueError};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The sled tree holding the ledger.
pub const TREE: &str = "ledger";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger: {0}")]
    Db(#[from] sled::Error),
    #[error("ledger: corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("ledger: {0}")]
    Sync(#[from] QueueError),
    #[error("ledger db {path} is locked by a running gateway and its admin API failed: {reason}")]
    Api { path: String, reason: String },
    #[error("shared ledger: {0}")]
    Pg(#[from] crate::pgdb::PgError),
    #[error(
        "shared ledger not complete yet: gateway outbox not drained: {0} (the mailbox waits for the next pass rather than copy what a gateway delivered)"
    )]
    NotDrained(String),
}

/// One delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub target: String,
    pub original_rcpt: String,
    pub final_rcpt: String,
    pub fingerprint: Fingerprint,
    pub queue_id: String,
    /// Seconds since the epoch.
    pub at: u64,
}

/// One successful delivery as the delivery engine reports it to its [`DeliveredHook`].
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    pub target: &'a str,
    /// The recipient as the client gave it.
    pub original_rcpt: &'a str,
    /// The address given to the target (after `rcpt_domain` rewriting).
    pub final_rcpt: &'a str,
    pub queue_id: &'a str,
    /// The message's header block and the first [`crate::fingerprint::BODY_PREFIX`] bytes of its
    /// body.
    pub head: &'a [u8],
}

/// Called by the delivery engine for each successful delivery. The ledger hooks in here
/// ([`Ledger::delivered_hook`]): the call writes the record, the future it returns resolves
/// once the record is durable; the engine awaits it right after the leg update.
pub type DeliveredHook =
    std::sync::Arc<dyn Fn(&Delivery<'_>) -> BoxFuture<'static, ()> + Send + Sync>;

/// Handle on the ledger tree.
#[derive(Clone)]
pub struct Ledger {
    tree: sled::Tree,
    /// The queue whose db holds the tree: its group commit makes records durable.
    queue: Option<Queue>,
    /// Fleet mode: the outbox tree, and its db (for record ids).
    outbox: Option<(sled::Tree, sled::Db)>,
}

fn key(mailbox: &str, fp: &Fingerprint, queue_id: &str, target: &str) -> Vec<u8> {
    let mut k = mailbox.to_lowercase().into_bytes();
    k.push(0);
    k.extend_from_slice(fp.0.as_bytes());
    k.push(0);
    k.extend_from_slice(queue_id.as_bytes());
    k.push(0);
    k.extend_from_slice(target.as_bytes());
    k
}

impl Ledger {
    /// The ledger in an open gateway db (readers; [`Ledger::sync`] is sled's flush).
    pub fn open(db: &sled::Db) -> Result<Ledger, LedgerError> {
        Ok(Ledger {
            tree: db.open_tree(TREE)?,
            queue: None,
            outbox: None,
        })
    }

    /// The ledger in the db of the gateway's queue; [`Ledger::sync`] waits on the queue's
    /// group commit (power-safe).
    pub fn on_queue(queue: &Queue) -> Result<Ledger, LedgerError> {
        Ok(Ledger {
            tree: queue.store().db().open_tree(TREE)?,
            queue: Some(queue.clone()),
            outbox: None,
        })
    }

    /// [`Ledger::on_queue`] that also puts every record in the outbox shipped to the shared
    /// ledger (fleet mode), in the same group commit.
    pub fn on_queue_with_outbox(queue: &Queue) -> Result<Ledger, LedgerError> {
        let db = queue.store().db().clone();
        Ok(Ledger {
            outbox: Some((db.open_tree(outbox::TREE)?, db)),
            ..Ledger::on_queue(queue)?
        })
    }

    /// Make every record written so far durable (see the module doc).
    pub async fn sync(&self) -> Result<(), LedgerError> {
        self.synced_from_now().await
    }

    /// [`Ledger::sync`] for the records written before this call, its group-commit ticket
    /// taken now (see the module doc).
    fn synced_from_now(&self) -> BoxFuture<'static, Result<(), LedgerError>> {
        match &self.queue {
            Some(q) => {
                let wait = q.durable_from_now();
                Box::pin(async move { Ok(wait.await?) })
            }
            None => {
                let tree = self.tree.clone();
                Box::pin(async move {
                    tree.flush_async().await?;
                    Ok(())
                })
            }
        }
    }

    /// Record a delivery of the message with fingerprint `fp` (queue id `queue_id`) to `target`
    /// for `original_rcpt` (after rewriting: `final_rcpt`). Idempotent. Not durable until
    /// [`Ledger::sync`] (the delivery hook does both).
    pub fn record(
        &self,
        target: &str,
        original_rcpt: &str,
        final_rcpt: &str,
        fp: &Fingerprint,
        queue_id: &str,
    ) -> Result<(), LedgerError> {
        let at = crate::time::unix_secs(std::time::SystemTime::now());
        let rec = Record {
            target: target.to_string(),
            original_rcpt: original_rcpt.to_string(),
            final_rcpt: final_rcpt.to_string(),
            fingerprint: fp.clone(),
            queue_id: queue_id.to_string(),
            at,
        };
        let v = serde_json::to_vec(&rec)?;
        self.tree
            .insert(key(original_rcpt, fp, queue_id, target), v.clone())?;
        if !final_rcpt.eq_ignore_ascii_case(original_rcpt) {
            self.tree.insert(key(final_rcpt, fp, queue_id, target), v)?;
        }
        if let Some((tree, db)) = &self.outbox {
            outbox::push(tree, db, &rec)?;
        }
        Ok(())
    }

    /// Every record for `mailbox` (either address it was recorded under).
    pub fn records(&self, mailbox: &str) -> Result<Vec<Record>, LedgerError> {
        let mut prefix = mailbox.to_lowercase().into_bytes();
        prefix.push(0);
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(prefix) {
            let (_, v) = kv?;
            out.push(serde_json::from_slice(&v)?);
        }
        Ok(out)
    }

    /// The multiset of fingerprints delivered to `mailbox`: per fingerprint, the number of
    /// distinct messages (queue ids) delivered, restricted to `target` when given.
    pub fn credits(&self, mailbox: &str) -> Result<HashMap<Fingerprint, usize>, LedgerError> {
        self.credits_for(mailbox, None)
    }

    /// [`Ledger::credits`] restricted to deliveries to `target` (when `Some`).
    pub fn credits_for(
        &self,
        mailbox: &str,
        target: Option<&str>,
    ) -> Result<HashMap<Fingerprint, usize>, LedgerError> {
        Ok(count(self.records(mailbox)?.iter(), target))
    }

    /// The delivery engine's hook ([`DeliveredHook`]): fingerprints the delivered message and
    /// records it; the returned future makes it durable. Errors are logged, never propagated
    /// (a missing ledger record only means backfill may copy that message once more).
    pub fn delivered_hook(&self) -> DeliveredHook {
        let ledger = self.clone();
        std::sync::Arc::new(move |d: &Delivery<'_>| {
            let fp = crate::fingerprint::fingerprint(d.head);
            let queue_id = d.queue_id.to_string();
            let written = ledger.record(d.target, d.original_rcpt, d.final_rcpt, &fp, d.queue_id);
            let synced = ledger.synced_from_now();
            Box::pin(async move {
                let r = match written {
                    Ok(()) => synced.await,
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    tracing::warn!(queue_id = %queue_id, error = %e, "ledger: cannot record a delivery");
                }
            })
        })
    }
}

fn count<'a>(
    records: impl Iterator<Item = &'a Record>,
    target: Option<&str>,
) -> HashMap<Fingerprint, usize> {
    let mut seen: HashSet<(&Fingerprint, &str)> = HashSet::new();
    let mut out: HashMap<Fingerprint, usize> = HashMap::new();
    for r in records {
        if target.is_some_and(|t| t != r.target) {
            continue;
        }
        if seen.insert((&r.fingerprint, r.queue_id.as_str())) {
            *out.entry(r.fingerprint.clone()).or_default() += 1;
        }
    }
    out
}

/// JSON body of `GET /api/ledger/{mailbox}[?target=T]`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreditsResponse {
    pub mailbox: String,
    pub credits: BTreeMap<String, usize>,
}

#[derive(Deserialize)]
struct TargetQuery {
    target: Option<String>,
}

/// `GET /api/ledger/{mailbox}?target=T` for the admin server to mount.
pub fn api_router(db: sled::Db) -> axum::Router {
    use axum::extract::{Path as AxPath, Query, State};
    use axum::http::StatusCode;
    use axum::routing::get;
    async fn handler(
        State(db): State<sled::Db>,
        AxPath(mailbox): AxPath<String>,
        Query(q): Query<TargetQuery>,
    ) -> Result<axum::Json<CreditsResponse>, (StatusCode, String)> {
        let ledger =
            Ledger::open(&db).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let credits = ledger
            .credits_for(&mailbox, q.target.as_deref())
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        Ok(axum::Json(CreditsResponse {
            mailbox,
            credits: credits.into_iter().map(|(k, v)| (k.0, v)).collect(),
        }))
    }
    axum::Router::new()
        .route("/api/ledger/{mailbox}", get(handler))
        .with_state(db)
}

/// Fetch the credits of `mailbox` from a running gateway's admin API (plain HTTP on loopback),
/// sending `token` (`admin.token_file`) as `Authorization: Bearer` when there is one.
pub async fn fetch_credits(
    admin: SocketAddr,
    token: Option<&crate::config::AdminToken>,
    mailbox: &str,
    target: Option<&str>,
) -> Result<HashMap<Fingerprint, usize>, String> {
    use crate::http_client::{HttpClient, Request, Url};
    let mut url = Url::parse(&format!("http://{admin}/")).map_err(|e| e.to_string())?;
    url.path_segments_mut()
        .map_err(|()| "admin address cannot be a base URL".to_string())?
        .extend(["api", "ledger", mailbox]);
    if let Some(t) = target {
        url.query_pairs_mut().append_pair("target", t);
    }
    let client = HttpClient::new(Duration::from_secs(30)).map_err(|e| e.to_string())?;
    let secret = token.map(|t| t.secret());
    let resp = client
        .send(
            "GET",
            &url,
            Request {
                bearer: secret,
                limit: 256 << 20,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    if resp.status != 200 {
        return Err(format!("admin API: HTTP {}", resp.status));
    }
    let r: CreditsResponse = serde_json::from_slice(&resp.body).map_err(|e| e.to_string())?;
    Ok(r.credits
        .into_iter()
        .map(|(k, v)| (Fingerprint(k), v))
        .collect())
}

/// Credits for backfill: open `<state_dir>/db` directly; when a gateway holds its lock, ask the
/// gateway's admin API at `admin` (with `token`, `admin.token_file`). No db at all means no credits.
pub async fn credits_for_backfill(
    db_path: &Path,
    admin: SocketAddr,
    token: Option<&crate::config::AdminToken>,
    mailbox: &str,
    target: Option<&str>,
) -> Result<HashMap<Fingerprint, usize>, LedgerError> {
    if !db_path.exists() {
        return Ok(HashMap::new());
    }
    let opened = sled::Config::new()
        .path(db_path)
        .cache_capacity(16 << 20)
        .open();
    match opened {
        Ok(db) => Ledger::open(&db)?.credits_for(mailbox, target),
        Err(sled::Error::Io(e)) => {
            tracing::debug!(error = %e, "ledger db busy, asking the admin API");
            fetch_credits(admin, token, mailbox, target)
                .await
                .map_err(|reason| LedgerError::Api {
                    path: db_path.display().to_string(),
                    reason,
                })
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_and_credits() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let l = Ledger::open(&db).unwrap();
        let a = Fingerprint("m:a@x".into());
        l.record("new", "Alice@example.com", "alice@tenant", &a, "Q1")
            .unwrap();
        l.record("old", "alice@example.com", "alice@example.com", &a, "Q1")
            .unwrap();
        l.record("new", "alice@example.com", "alice@tenant", &a, "Q2")
            .unwrap();
        // idempotent
        l.record("new", "alice@example.com", "alice@tenant", &a, "Q2")
            .unwrap();
        let c = l.credits("alice@example.com").unwrap();
        assert_eq!(c[&a], 2);
        assert_eq!(
            l.credits_for("alice@example.com", Some("new")).unwrap()[&a],
            2
        );
        assert_eq!(l.credits_for("ALICE@tenant", None).unwrap()[&a], 2);
        assert!(l.credits("bob@example.com").unwrap().is_empty());
    }

    #[tokio::test]
    async fn hook_records_fingerprints() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let l = Ledger::open(&db).unwrap();
        let hook = l.delivered_hook();
        let msg = b"Message-ID: <h@x>\r\n\r\nbody\r\n";
        hook(&Delivery {
            target: "new",
            original_rcpt: "carol@example.com",
            final_rcpt: "carol@tenant",
            queue_id: "Q7",
            head: msg,
        })
        .await;
        let c = l.credits_for("carol@tenant", Some("new")).unwrap();
        assert_eq!(c[&crate::fingerprint::fingerprint(msg)], 1);
    }

    /// Set in the child process of [`a_durable_record_survives_a_crash`]: its state dir.
    const CRASH_CHILD: &str = "CUTOVER_LEDGER_CRASH_CHILD";

    /// The child: record through the delivery hook on a queue's db, then die at once (no
    /// destructor, no queue flush, no sled flush on drop).
    #[tokio::test]
    async fn crash_child_records_then_dies() {
        let Some(dir) = std::env::var_os(CRASH_CHILD) else {
            return;
        };
        let q = Queue::open(std::path::Path::new(&dir)).unwrap();
        let hook = Ledger::on_queue(&q).unwrap().delivered_hook();
        hook(&Delivery {
            target: "new",
            original_rcpt: "dave@example.com",
            final_rcpt: "dave@example.com",
            queue_id: "Q8",
            head: b"Message-ID: <crash@x>\r\n\r\n",
        })
        .await;
        std::process::exit(3);
    }

    #[test]
    fn a_durable_record_survives_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "ledger::tests::crash_child_records_then_dies"])
            .args(["--nocapture", "--test-threads=1"])
            .env(CRASH_CHILD, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the child must die");
        let q = Queue::open(dir.path()).unwrap();
        let l = Ledger::on_queue(&q).unwrap();
        let c = l.credits("dave@example.com").unwrap();
        let fp = crate::fingerprint::fingerprint(b"Message-ID: <crash@x>\r\n\r\n");
        assert_eq!(c.get(&fp), Some(&1));
    }

    #[tokio::test]
    async fn api_roundtrip() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let l = Ledger::open(&db).unwrap();
        let a = Fingerprint("h:00ff".into());
        l.record("new", "bob@example.com", "bob@example.com", &a, "Q9")
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, api_router(db)).await;
        });
        let c = fetch_credits(addr, None, "bob@example.com", Some("new"))
            .await
            .unwrap();
        assert_eq!(c[&a], 1);
        let c = fetch_credits(addr, None, "bob@example.com", Some("old"))
            .await
            .unwrap();
        assert!(c.is_empty());
    }
}
