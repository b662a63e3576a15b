//! `GET /v1/generations` — signed (any trusted key); read-only. The profile's generations
//! joined with the journal ([`crate::generations`]); types in
//! `hostctl_schemas::api::generations`.

use axum::extract::State;
use axum::Json;
use hostctl_schemas::api::generations::GenerationsResponse;

use super::error::ApiFailure;
use super::state::AppState;

pub async fn generations(State(app): State<AppState>) -> Result<Json<GenerationsResponse>, ApiFailure> {
    let response = crate::generations::list(&app.agent.nix, &app.agent.deployer).await;
    response.map(Json).map_err(|e| ApiFailure::internal(e.to_string()))
}
