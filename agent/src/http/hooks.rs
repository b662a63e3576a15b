//! `POST /v1/hooks/git` — NOT signed with a controller key: the forge's proof of the
//! webhook secret (an HMAC of the raw body, read up to `hooks::BODY_LIMIT`, or GitLab's
//! token) is checked by [`crate::pull::webhook::HookAuth`]; a verified push to the tracked
//! branch only wakes the pull task. 404 unless pull mode and a webhook secret are
//! configured; 413 at once for a declared length over the limit. Types in
//! `hostctl_schemas::api::hooks`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use hostctl_schemas::api::hooks::{HookResponse, BODY_LIMIT, DELIVERY_HEADERS, SIGNATURE_HEADER};

use super::body::{check_declared_length, read_limited};
use super::error::ApiFailure;
use super::state::AppState;
use crate::pull::webhook::{Delivery, HookError, Proof};

/// Gitea's and Forgejo's hex HMAC of the body (no `sha256=` prefix).
const HEX_SIGNATURE_HEADERS: [&str; 2] = ["x-gitea-signature", "x-forgejo-signature"];
/// GitLab's secret token.
const GITLAB_TOKEN_HEADER: &str = "x-gitlab-token";
/// The event's name, by forge.
const EVENT_HEADERS: [&str; 4] = ["x-github-event", "x-gitea-event", "x-forgejo-event", "x-gitlab-event"];

pub async fn hook(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<HookResponse>), ApiFailure> {
    let not_found = || ApiFailure::not_found("no webhook: the agent is not in pull mode with a webhook secret");
    let puller = app.agent.pull.as_ref().ok_or_else(not_found)?;
    let auth = puller.hook_auth().ok_or_else(not_found)?;
    // Before a byte is read: a stranger declaring 2 GiB gets its answer at once.
    check_declared_length(&headers, BODY_LIMIT as u64)?;
    // The HMAC covers the raw bytes, so the whole body is read (within the limit) first.
    let (body, _) = read_limited(body, BODY_LIMIT as u64).await?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let delivery = DELIVERY_HEADERS.iter().find_map(|h| header(h));
    let event = EVENT_HEADERS.iter().find_map(|h| header(h));
    let received =
        auth.receive(proof(&headers), event, delivery, &body, &puller.config().branch).map_err(|e| match e {
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

/// The delivery's proof of the secret, in the first of the forges' headers it carries.
fn proof(headers: &HeaderMap) -> Option<Proof<'_>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(signature) = header(SIGNATURE_HEADER) {
        return Some(Proof::HubSignature(signature));
    }
    if let Some(signature) = HEX_SIGNATURE_HEADERS.iter().find_map(|h| header(h)) {
        return Some(Proof::HexSignature(signature));
    }
    header(GITLAB_TOKEN_HEADER).map(Proof::Token)
}

#[cfg(test)]
#[path = "hooks_tests.rs"]
mod tests;
