//! `POST /v1/hooks/git` (contract: `hostctl_schemas::api::hooks`): a forge's push
//! webhook, authenticated by HMAC-SHA256 of the raw body with the agent's webhook secret,
//! not by a controller signature. A verified push to the tracked branch only wakes the
//! pull task, which fetches by itself: the payload's revision is never trusted.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use hmac::{Hmac, Mac};
use hostctl_schemas::api::hooks::{HookResponse, BODY_LIMIT, DELIVERY_HEADERS, SIGNATURE_HEADER};
use sha2::Sha256;

use crate::error::ApiFailure;
use crate::server::AppState;

/// How many delivery ids are remembered. A replayed delivery can at most trigger one more
/// fetch (which finds nothing new), so forgetting the oldest when full is harmless,
/// unlike the controller nonce cache, which must refuse instead.
const DELIVERY_MEMORY: usize = 4096;

/// The secret and the delivery ids seen.
#[derive(Debug)]
pub struct HookAuth {
    secret: Vec<u8>,
    seen: Mutex<Deliveries>,
}

#[derive(Debug, Default)]
struct Deliveries {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl HookAuth {
    pub fn new(secret: Vec<u8>) -> Self {
        Self { secret, seen: Mutex::new(Deliveries::default()) }
    }

    /// Reads the secret file; a trailing newline (as editors and `echo` leave) is not
    /// part of the secret.
    pub fn from_file(path: &std::path::Path) -> std::io::Result<Self> {
        let text = std::fs::read(path)?;
        let end = text.iter().rposition(|b| !matches!(b, b'\n' | b'\r')).map_or(0, |i| i + 1);
        Ok(Self::new(text[..end].to_vec()))
    }

    /// Checks `X-Hub-Signature-256: sha256=<hex>` against the body, in constant time.
    pub fn verify(&self, header: Option<&str>, body: &[u8]) -> Result<(), &'static str> {
        let header = header.ok_or("missing X-Hub-Signature-256 header")?;
        let hex_sig = header.trim().strip_prefix("sha256=").ok_or("X-Hub-Signature-256 must start with `sha256=`")?;
        let signature = hex::decode(hex_sig).map_err(|_| "X-Hub-Signature-256 is not hex")?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).map_err(|_| "unusable webhook secret")?;
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&signature).map_err(|_| "bad webhook signature")
    }

    /// Remembers a delivery id; `false` if it was seen before.
    fn first_delivery(&self, id: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.set.contains(id) {
            return false;
        }
        if seen.order.len() >= DELIVERY_MEMORY {
            if let Some(oldest) = seen.order.pop_front() {
                seen.set.remove(&oldest);
            }
        }
        seen.order.push_back(id.to_owned());
        seen.set.insert(id.to_owned());
        true
    }
}

#[derive(serde::Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
}

/// What a verified payload asks for: `Ok(None)` to fetch `branch`, `Ok(Some(reason))` when
/// it pushed another ref, `Err` (a 400 message) when it is not a push payload. Public for
/// the fuzz target and its regression test.
pub fn push_for_branch(body: &[u8], branch: &str) -> Result<Option<String>, String> {
    let not_push = |e: serde_json::Error| format!("not a push payload: {e}");
    // Through `Value` first: a struct read straight from the bytes would take a JSON array
    // as its fields in order and skip unread strings unchecked (invalid UTF-8).
    let value: serde_json::Value = serde_json::from_slice(body).map_err(not_push)?;
    if !value.is_object() {
        return Err("not a push payload: expected a JSON object with `ref`".to_owned());
    }
    let payload: PushPayload = serde_json::from_value(value).map_err(not_push)?;
    if payload.git_ref != format!("refs/heads/{branch}") {
        return Ok(Some(format!("`{}` is not the tracked branch `{branch}`", payload.git_ref)));
    }
    Ok(None)
}

fn ignored(reason: String) -> (StatusCode, Json<HookResponse>) {
    (StatusCode::OK, Json(HookResponse { accepted: false, reason: Some(reason) }))
}

/// The handler. 404 unless pull mode and a webhook secret are configured.
pub async fn hook(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<HookResponse>), ApiFailure> {
    let not_found = || ApiFailure::not_found("no webhook: the agent is not in pull mode with a webhook secret");
    let puller = app.pull.as_ref().ok_or_else(not_found)?;
    let auth = puller.hook_auth().ok_or_else(not_found)?;
    // The HMAC covers the raw bytes, so the whole body is read (within the limit) first.
    let body = axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|_| ApiFailure::too_large(BODY_LIMIT as u64))?;
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    auth.verify(signature, &body).map_err(ApiFailure::unauthorized)?;
    let other_ref = push_for_branch(&body, &puller.config().branch).map_err(ApiFailure::bad_request)?;
    let delivery = DELIVERY_HEADERS.iter().find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()));
    if let Some(id) = delivery {
        if !auth.first_delivery(id) {
            return Ok(ignored(format!("delivery `{id}` was already received")));
        }
    }
    if let Some(reason) = other_ref {
        return Ok(ignored(reason));
    }
    tracing::info!(delivery = ?delivery, "verified push webhook: fetching");
    puller.trigger();
    Ok((StatusCode::ACCEPTED, Json(HookResponse { accepted: true, reason: None })))
}
