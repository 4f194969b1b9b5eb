//! Admin HTTP API (axum) on `admin.listen`: health and read-only queue inspection as JSON, so
//! the CLI can inspect a running gateway (sled allows one process per db). Owns routes and
//! their status codes; never changes the queue (retry/hold/delete come with delivery).

use crate::queue::{Queue, QueueError};
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::future::Future;

/// JSON error body: `{"error": "..."}`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ApiError {
    pub error: String,
}

fn error(status: StatusCode, msg: String) -> Response {
    (status, Json(ApiError { error: msg })).into_response()
}

fn queue_error(e: QueueError) -> Response {
    match e {
        QueueError::NotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        e => {
            tracing::error!(error = %e, "admin API: queue error");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
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

async fn healthz() -> &'static str {
    "ok\n"
}

async fn list(State(q): State<Queue>) -> Response {
    match blocking(move || q.list()).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn show(State(q): State<Queue>, Path(id): Path<String>) -> Response {
    match blocking(move || q.get(&id)).await {
        Ok(m) => Json(m).into_response(),
        Err(r) => r,
    }
}

/// The admin routes: `GET /healthz`, `GET /api/queue`, `GET /api/queue/{id}` (404 if unknown).
pub fn router(queue: Queue) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/queue", get(list))
        .route("/api/queue/{id}", get(show))
        .with_state(queue)
}

/// Serve the admin API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    queue: Queue,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin API listening");
    }
    axum::serve(listener, router(queue))
        .with_graceful_shutdown(shutdown)
        .await
}
