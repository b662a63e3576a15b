//! `POST /v1/rollback` — signed (any trusted key); changes the host; body buffered up to
//! `rollback::BODY_LIMIT`. 202 with the rollback's deployment
//! ([`crate::rollback_target`]); types in `hostctl_schemas::api::rollback`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use hostctl_schemas::api::deployments::Deployment;
use hostctl_schemas::api::rollback::RollbackRequest;

use super::auth::Authenticated;
use super::body::parse_json;
use super::error::ApiFailure;
use super::peer::{requester, Peer};
use super::state::AppState;

pub async fn rollback(
    State(app): State<AppState>,
    Extension(auth): Extension<Authenticated>,
    peer: Option<Extension<Peer>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Deployment>), ApiFailure> {
    let request: RollbackRequest = parse_json(&body)?;
    let by = requester(&auth, peer.map(|Extension(p)| p));
    let deployment = app.agent.deployer.rollback_by(request, Some(by)).await?;
    Ok((StatusCode::ACCEPTED, Json(deployment)))
}
