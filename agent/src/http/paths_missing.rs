//! `POST /v1/paths/missing` — signed (any trusted key); read-only; body buffered up to
//! `paths::MISSING_BODY_LIMIT`. Which of the listed store paths this host lacks; types in
//! `hostctl_schemas::api::paths`.

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use hostctl_schemas::api::paths::{MissingRequest, MissingResponse};

use super::body::parse_json;
use super::error::ApiFailure;
use super::state::AppState;
use crate::host::invalid_paths;

pub async fn missing(State(app): State<AppState>, body: Bytes) -> Result<Json<MissingResponse>, ApiFailure> {
    let request: MissingRequest = parse_json(&body)?;
    let invalid = invalid_paths(&app.agent.nix, &request.paths).await?;
    let missing = request.paths.into_iter().filter(|p| invalid.contains(p)).collect();
    Ok(Json(MissingResponse { missing }))
}
