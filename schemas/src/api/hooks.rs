//! `POST /v1/hooks/git` — NOT signed with a controller key: a forge's push webhook,
//! verified with the agent's `pull.webhook_secret_file`: HMAC-SHA256 of the raw body
//! (`X-Hub-Signature-256: sha256=<hex>`; Gitea/Forgejo also `X-Gitea-Signature` /
//! `X-Forgejo-Signature: <hex>`) or GitLab's `X-Gitlab-Token` (the secret), compared in
//! constant time. Pull mode only (404 otherwise). GitHub, Gitea/Forgejo and GitLab
//! payloads: only `ref` is read; a delivery id (`X-GitHub-Delivery` / `X-Gitea-Delivery`
//! / ...) seen before is ignored, and a push to another branch is ignored. It only
//! triggers a fetch: the agent never trusts a revision named in the payload without
//! fetching it.
//!
//! Responses: 202 `{"accepted": true}` (a fetch was triggered), 200 `{"accepted": false,
//! "reason": ...}` (ignored: a ping or another event, other branch, repeated delivery),
//! 401 (missing or bad signature), 400 (not JSON / no `ref`), 413 (declared or actual body
//! over [`BODY_LIMIT`]).

use serde::{Deserialize, Serialize};

/// Path of this endpoint.
pub const PATH: &str = "/v1/hooks/git";

/// The largest payload accepted (forges send up to a few hundred KiB for big pushes).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The signature header (GitHub, Gitea and Forgejo all send it).
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Delivery-id headers, checked in this order (GitLab's last).
pub const DELIVERY_HEADERS: [&str; 4] =
    ["x-github-delivery", "x-gitea-delivery", "x-forgejo-delivery", "x-gitlab-event-uuid"];

/// Response body for 200/202.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HookResponse {
    pub accepted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
