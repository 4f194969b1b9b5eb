//! Admin HTTP API (axum) on `admin.listen`: health, queue inspection and queue operations as
//! JSON, and `/metrics`, so the CLI can work on a running gateway (sled allows one process per
//! db). Owns routes, their status codes and the JSON shapes; changes the queue only through the
//! queue's operations (`queue::ops`), never directly. Every request first passes
//! [`guard`]: `Host` must name this listener (DNS rebinding), cross-site browser requests are
//! refused, and changes, the ledger (and, off loopback, everything but `/healthz`) need the
//! `admin.token_file` token as `Authorization: Bearer <token>`.

pub mod alerts;
pub mod chart;
pub mod guard;
pub mod html;
pub mod metrics;
pub mod ops;
pub mod status;
pub mod waves;

use crate::config::Config;
use crate::inbound::verify::VerifyStats;
use crate::outbound::stats::Stats;
use crate::queue::health::Health;
use crate::queue::{Queue, QueueError, QueueId};
use crate::routing::Router as Routes;
use axum::Json;
use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;

/// JSON error body: `{"error": "..."}`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// What the admin API works on: the queue, the current config (routing for reroute, the bounce
/// target and hostname for `delete?bounce=true`; replaced on reload), the delivery engine's
/// counters when one runs in this process, and the storage health `/healthz` reports.
#[derive(Clone)]
pub struct AdminState {
    pub queue: Queue,
    pub config: watch::Receiver<Arc<Config>>,
    /// The routing table compiled with that configuration (`crate::loader::Loaded::router`).
    pub routes: watch::Receiver<Arc<Routes>>,
    pub stats: Option<Arc<Stats>>,
    /// The SMTP listener's counters when it runs in this process.
    pub intake: Option<Arc<crate::inbound::limits::IntakeStats>>,
    /// Cached storage probe (shared with the gateway's watchdog when one runs).
    pub health: Arc<Health>,
    /// The SMTP intake's recipient verification counters, when it runs in this process.
    pub verify: Option<Arc<VerifyStats>>,
    /// Per-target delivery counters, histograms and the last hour by minute
    /// ([`crate::telemetry::Telemetry::last_hour`]), when the gateway runs in this process.
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    /// The alerts task's recent events, when it runs in this process.
    pub alerts: Option<Arc<crate::alerts::Alerts>>,
    /// Edge authentication's counters, when the intake runs in this process.
    pub auth: Option<Arc<crate::auth::AuthStats>>,
}

impl AdminState {
    pub fn new(
        queue: Queue,
        config: watch::Receiver<Arc<Config>>,
        routes: watch::Receiver<Arc<Routes>>,
        stats: Option<Arc<Stats>>,
    ) -> Self {
        AdminState {
            health: Health::new(queue.clone()),
            queue,
            config,
            routes,
            stats,
            intake: None,
            verify: None,
            telemetry: None,
            alerts: None,
            auth: None,
        }
    }

    /// Report these per-target counters and histograms in `/metrics`.
    pub fn with_telemetry(mut self, telemetry: Arc<crate::telemetry::Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// Serve these alerts' recent events on `/api/alerts`.
    pub fn with_alerts(mut self, alerts: Arc<crate::alerts::Alerts>) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// Report the SMTP listener's counters.
    pub fn with_intake(mut self, intake: Arc<crate::inbound::limits::IntakeStats>) -> Self {
        self.intake = Some(intake);
        self
    }

    /// Report edge authentication's counters.
    pub fn with_auth_stats(mut self, auth: Arc<crate::auth::AuthStats>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Report these recipient verification counters in `/metrics`.
    pub fn with_verify_stats(mut self, verify: Arc<VerifyStats>) -> Self {
        self.verify = Some(verify);
        self
    }

    /// Report this health (the gateway shares its watchdog's, so both see the same probes).
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = health;
        self
    }

    fn cfg(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    fn routes(&self) -> Arc<Routes> {
        self.routes.borrow().clone()
    }
}

/// How long `DELETE ?bounce=true` waits for a delivery attempt in flight to end before 409.
const DELETE_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn error(status: StatusCode, msg: String) -> Response {
    (status, Json(ApiError { error: msg })).into_response()
}

fn queue_error(e: QueueError) -> Response {
    match e {
        QueueError::NotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        QueueError::Busy(_) => error(StatusCode::CONFLICT, e.to_string()),
        e => {
            tracing::error!(error = %e, "admin API: queue error");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// The `{id}` of a queue route, parsed once here ([`QueueId::parse`]): a malformed id is
/// `400` with `{"error": "invalid queue id ..."}`, never "not found".
struct PathId(QueueId);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        QueueId::parse(&id)
            .map(PathId)
            .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))
    }
}

fn json<T: serde::Serialize>(r: Result<T, QueueError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => queue_error(e),
    }
}

/// Run blocking store reads off the async workers.
async fn blocking<T, F>(f: F) -> Result<T, Response>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, QueueError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(queue_error),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

async fn status_page(State(s): State<AdminState>) -> Response {
    let cfg = s.cfg();
    let q = s.queue.clone();
    let cfg2 = cfg.clone();
    let routes = s.routes();
    let now = SystemTime::now();
    let read = blocking(move || {
        let msgs = q.list()?;
        let waves = crate::waves::load::statuses(&cfg2, &routes, &msgs, now);
        Ok((msgs, waves, job_reports(&cfg2)))
    });
    let (msgs, waves, backfill) = match read.await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let alerts = s.alerts.as_ref().map(|a| a.recent()).unwrap_or_default();
    let last_hour = s.telemetry.as_ref().map(|t| t.last_hour(now));
    let page = status::render(&status::Dashboard {
        hostname: &cfg.gateway.hostname,
        now,
        msgs: &msgs,
        last_hour: last_hour.as_ref(),
        waves: &waves,
        backfill: &backfill,
        alerts: &alerts,
    });
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

/// `200 ok` when a storage probe (a durable write read back, cached for about a second) passes;
/// otherwise `503` with the probe's status as JSON (`ok`, `reason`, `store_failed`,
/// `consecutive_failures`, ...).
async fn healthz(State(s): State<AdminState>) -> Response {
    let status = s.health.check().await;
    if status.ok {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(status)).into_response()
    }
}

async fn list(State(s): State<AdminState>) -> Response {
    let q = s.queue;
    match blocking(move || q.list()).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn show(State(s): State<AdminState>, PathId(id): PathId) -> Response {
    let q = s.queue;
    match blocking(move || q.get(&id)).await {
        Ok(m) => Json(m).into_response(),
        Err(r) => r,
    }
}

async fn retry(State(s): State<AdminState>, PathId(id): PathId) -> Response {
    json(s.queue.retry(&id, SystemTime::now()).await)
}

async fn retry_all(State(s): State<AdminState>) -> Response {
    json(s.queue.retry_all(SystemTime::now()).await)
}

async fn hold(State(s): State<AdminState>, PathId(id): PathId) -> Response {
    json(s.queue.hold(&id).await)
}

async fn release(State(s): State<AdminState>, PathId(id): PathId) -> Response {
    json(s.queue.release(&id, SystemTime::now()).await)
}

/// A live reroute: legs that may be in flight are left alone (reported as `busy`).
async fn reroute(State(s): State<AdminState>, PathId(id): PathId) -> Response {
    let routes = s.routes();
    json(ops::reroute(&s.queue, &id, &routes, SystemTime::now(), true).await)
}

async fn reroute_all(State(s): State<AdminState>) -> Response {
    let routes = s.routes();
    json(ops::reroute_all(&s.queue, &routes, SystemTime::now(), true).await)
}

#[derive(Debug, serde::Deserialize)]
struct DeleteParams {
    #[serde(default)]
    bounce: bool,
}

async fn delete(
    State(s): State<AdminState>,
    PathId(id): PathId,
    Query(p): Query<DeleteParams>,
) -> Response {
    let cfg = s.cfg();
    // With a delivery engine in this process, a bounce waits for an attempt in flight to end
    // (its outcome decides who is still undelivered); bounded, then 409.
    let live = s.stats.is_some();
    let deadline = tokio::time::Instant::now() + DELETE_BUSY_WAIT;
    loop {
        let r = ops::delete(
            &s.queue,
            &id,
            p.bounce.then_some(&*cfg),
            SystemTime::now(),
            live,
        )
        .await;
        match r {
            Err(QueueError::Busy(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            r => return json(r),
        }
    }
}

/// The figures of every configured backfill job whose report (`<job dir>/report.json`, kept
/// by `cutover backfill run`) can be read; the others are left out.
/// Each configured backfill job with its last report (`None`: never run, or unreadable).
fn job_reports(cfg: &Config) -> Vec<(String, Option<crate::backfill::report::JobReport>)> {
    cfg.backfill
        .jobs
        .iter()
        .map(|j| {
            let dir = crate::backfill::runner::state_dir_of(cfg, &j.name, None);
            let r = crate::backfill::report::JobReport::read(&dir.join("report.json")).ok();
            (j.name.clone(), r)
        })
        .collect()
}

fn backfill_reports(cfg: &Config) -> Vec<metrics::BackfillGauges> {
    job_reports(cfg)
        .iter()
        .filter_map(|(_, r)| r.as_ref())
        .map(metrics::BackfillGauges::from_report)
        .collect()
}

async fn metrics_text(State(s): State<AdminState>) -> Response {
    let q = s.queue.clone();
    let cfg = s.cfg();
    let read = blocking(move || {
        let gauges = q.list().map(|l| metrics::QueueGauges {
            orphans_quarantined: q.recovery().quarantined_orphans as u64,
            ..metrics::QueueGauges::from_list(&l, SystemTime::now())
        })?;
        let outbox = if cfg.ledger.shared() {
            let tree = q.store().db().open_tree(crate::ledger::outbox::TREE);
            tree.ok().map(|t| t.len() as u64)
        } else {
            None
        };
        Ok((gauges, backfill_reports(&cfg), outbox))
    });
    let (gauges, backfill, ledger_outbox) = match read.await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let snapshot = s.telemetry.as_ref().map(|t| t.snapshot());
    let storage_healthy = Some(s.health.check().await.ok);
    let scrape = metrics::Scrape {
        queue: &gauges,
        stats: s.stats.as_deref(),
        intake: s.intake.as_deref(),
        auth: s.auth.as_deref(),
        verify: s.verify.as_deref(),
        telemetry: snapshot.as_ref(),
        backfill: &backfill,
        storage_healthy,
        ledger_outbox,
    };
    match metrics::render(&scrape) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The admin routes:
/// `GET /healthz` (storage probe: `200 ok` or `503` with a JSON reason), `GET /metrics`, `GET /api/queue`, `GET /api/queue/{id}`,
/// `POST /api/queue/{id}/retry|hold|release|reroute`, `POST /api/queue/retry|reroute` (every
/// message), `DELETE /api/queue/{id}?bounce=true|false`, `GET /api/ledger/{mailbox}`,
/// `GET /api/alerts` (recent alert events), `GET /api/waves[/{name}][?at=RFC3339]` (see
/// [`waves`]). Malformed
/// ids ([`QueueId::parse`]): 400 with `{"error"}`; unknown ids: 404 with `{"error"}`. All behind
/// [`guard::guard`] for a listener bound to `local`.
pub fn router(state: AdminState, local: std::net::SocketAddr) -> Router {
    // The backfill engine reads delivery credits here while the gateway holds the db lock.
    let ledger = crate::ledger::api_router(state.queue.store().db().clone());
    let guard = guard::Guard {
        local,
        config: state.config.clone(),
    };
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/api/alerts", get(alerts::recent))
        .route("/api/queue", get(list))
        .route("/api/queue/retry", post(retry_all))
        .route("/api/queue/reroute", post(reroute_all))
        .route("/api/queue/{id}", get(show).delete(delete))
        .route("/api/queue/{id}/retry", post(retry))
        .route("/api/queue/{id}/hold", post(hold))
        .route("/api/queue/{id}/release", post(release))
        .route("/api/queue/{id}/reroute", post(reroute))
        .route("/api/waves", get(waves::list))
        .route("/api/waves/{name}", get(waves::show))
        .with_state(state)
        .merge(ledger)
        .layer(axum::middleware::from_fn_with_state(guard, guard::guard))
}

/// Serve the admin API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "admin API listening");
    axum::serve(listener, router(state, local))
        .with_graceful_shutdown(shutdown)
        .await
}
