//! Deployments — all signed (any trusted key); handled by [`crate::deploy`]; types in
//! `hostctl_schemas::api::deployments`:
//! - `POST /v1/deployments` — changes the host; body buffered up to
//!   `deployments::BODY_LIMIT`; 202 with the deployment as accepted;
//! - `GET /v1/deployments/{id}` — read-only; the deployment now;
//! - `POST /v1/deployments/{id}/confirm` — ends the confirmation window; the body, if
//!   any, is ignored.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use hostctl_schemas::api::deployments::{valid_id, Deployment, DeploymentRequest};

use super::auth::Authenticated;
use super::body::parse_json;
use super::error::ApiFailure;
use super::peer::{requester, Peer};
use super::state::AppState;

/// A deployment id from the URL, checked like the one in a request body.
pub(super) fn deployment_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiFailure> {
    let Path(id) = id.map_err(|e| ApiFailure::bad_request(e.body_text()))?;
    if valid_id(&id) {
        Ok(id)
    } else {
        Err(ApiFailure::bad_request(format!("`{id}` is not a deployment id ([A-Za-z0-9._-], 1 to 128 characters)")))
    }
}

/// `POST /v1/deployments`; who asked (key, address) is journaled with it, and an
/// `--allow-unsigned` override is recorded with the name of the key that signed it.
pub async fn create(
    State(app): State<AppState>,
    Extension(auth): Extension<Authenticated>,
    peer: Option<Extension<Peer>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Deployment>), ApiFailure> {
    let request: DeploymentRequest = parse_json(&body)?;
    let by = requester(&auth, peer.map(|Extension(p)| p));
    let deployment = app.agent.deployer.create_by(request, Some(by)).await?;
    Ok((StatusCode::ACCEPTED, Json(deployment)))
}

/// `GET /v1/deployments/{id}`.
pub async fn get(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Deployment>, ApiFailure> {
    let id = deployment_id(id)?;
    app.agent.deployer.get(&id).map(Json).ok_or_else(|| ApiFailure::not_found(format!("no deployment `{id}`")))
}

/// `POST /v1/deployments/{id}/confirm`.
pub async fn confirm(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Deployment>, ApiFailure> {
    let id = deployment_id(id)?;
    app.agent.deployer.confirm(&id).map(Json).map_err(ApiFailure::from)
}
