//! `GET /api/waves` (every wave's window and status figures: `cutover wave list --json`) and
//! `GET /api/waves/{name}` (one wave's status: `cutover wave status NAME --json`), both with an
//! optional `?at=RFC3339`. The figures come from `crate::waves` over this gateway's loaded
//! config and routing, its queue and the backfill reports on disk, read off the async workers.
//! Read-only.

use super::{AdminState, blocking, error};
use crate::config::values::Timestamp;
use crate::waves;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::time::SystemTime;

/// `?at=2026-12-01T18:00:00Z`: evaluate at that instant instead of now.
#[derive(Debug, serde::Deserialize)]
pub struct At {
    at: Option<String>,
}

/// The instant asked for; a malformed one is the message of a `400`.
fn instant(p: &At) -> Result<SystemTime, String> {
    match &p.at {
        None => Ok(SystemTime::now()),
        Some(s) => Timestamp::parse(s)
            .map(|t| t.0)
            .map_err(|e| format!("at: {e}")),
    }
}

pub async fn list(State(s): State<AdminState>, Query(p): Query<At>) -> Response {
    let now = match instant(&p) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let (cfg, routes, q) = (s.cfg(), s.routes(), s.queue.clone());
    match blocking(move || Ok(waves::load::overview(&cfg, &routes, &q.list()?, now))).await {
        Ok(o) => Json(o).into_response(),
        Err(r) => r,
    }
}

pub async fn show(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    Query(p): Query<At>,
) -> Response {
    let now = match instant(&p) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let (cfg, routes, q) = (s.cfg(), s.routes(), s.queue.clone());
    if !routes.rules().iter().any(|r| r.name == name) {
        let msg = format!(
            "no wave named {name:?} (waves are [[routing.rule]] names: {})",
            waves::load::names(&routes)
        );
        return error(StatusCode::NOT_FOUND, msg);
    }
    let r = blocking(move || Ok(waves::load::status(&cfg, &routes, &q.list()?, &name, now))).await;
    match r {
        Ok(Some(w)) => Json(w).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such wave".into()),
        Err(r) => r,
    }
}
