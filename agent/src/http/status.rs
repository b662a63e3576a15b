//! `GET /v1/status` — signed (any trusted key); read-only. The agent's status snapshot
//! ([`crate::status`]); types in `hostctl_schemas::api::status`.

use axum::extract::State;
use axum::Json;
use hostctl_schemas::api::status::StatusResponse;

use super::error::ApiFailure;
use super::state::AppState;

pub async fn status(State(app): State<AppState>) -> Result<Json<StatusResponse>, ApiFailure> {
    crate::status::snapshot(&app.agent).map(Json).map_err(ApiFailure::internal)
}
