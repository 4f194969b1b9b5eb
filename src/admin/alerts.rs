//! `GET /api/alerts`: the recent alert events (newest first) as JSON, for the status page and
//! scripts. Read-only; an empty list when no alerts task runs in this process.

use super::AdminState;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

/// `{"alerts": [AlertEvent, ...]}`, newest first.
pub async fn recent(State(s): State<AdminState>) -> Response {
    let alerts = s.alerts.as_ref().map(|a| a.recent()).unwrap_or_default();
    Json(serde_json::json!({ "alerts": alerts })).into_response()
}
