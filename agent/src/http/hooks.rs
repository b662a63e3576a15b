//! `POST /v1/hooks/git` — NOT signed with a controller key: the forge's HMAC of the raw
//! body (read up to `hooks::BODY_LIMIT`) is checked by
//! [`crate::pull::webhook::HookAuth`]; a verified push to the tracked branch only wakes
//! the pull task. 404 unless pull mode and a webhook secret are configured. Types in
//! `hostctl_schemas::api::hooks`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use hostctl_schemas::api::hooks::{HookResponse, BODY_LIMIT, DELIVERY_HEADERS, SIGNATURE_HEADER};

use super::error::ApiFailure;
use super::state::AppState;
use crate::pull::webhook::{Delivery, HookError};

pub async fn hook(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<HookResponse>), ApiFailure> {
    let not_found = || ApiFailure::not_found("no webhook: the agent is not in pull mode with a webhook secret");
    let puller = app.agent.pull.as_ref().ok_or_else(not_found)?;
    let auth = puller.hook_auth().ok_or_else(not_found)?;
    // The HMAC covers the raw bytes, so the whole body is read (within the limit) first.
    let body = axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|_| ApiFailure::too_large(BODY_LIMIT as u64))?;
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let delivery = DELIVERY_HEADERS.iter().find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()));
    let received = auth.receive(signature, delivery, &body, &puller.config().branch).map_err(|e| match e {
        HookError::Unauthorized(why) => ApiFailure::unauthorized(why),
        HookError::NotAPush(why) => ApiFailure::bad_request(why),
    })?;
    match received {
        Delivery::Ignored(reason) => Ok((StatusCode::OK, Json(HookResponse { accepted: false, reason: Some(reason) }))),
        Delivery::Fetch => {
            tracing::info!(delivery = ?delivery, "verified push webhook: fetching");
            puller.trigger();
            Ok((StatusCode::ACCEPTED, Json(HookResponse { accepted: true, reason: None })))
        }
    }
}

#[cfg(test)]
#[path = "hooks_tests.rs"]
mod tests;
