//! Agent HTTP API v1: one module per endpoint, each documenting its method, path and
//! permission. Agent (server) and controller (client) both use these types, so they
//! cannot disagree about a field.
//!
//! Every endpoint except the git webhook, `/metrics` and bundles (which carry their own
//! signature) requires a request signed by a trusted controller key ([`crate::signing`]).

pub mod bundles;
pub mod deployments;
pub mod gc;
pub mod generations;
pub mod hooks;
pub mod logs;
pub mod paths;
pub mod rollback;
pub mod status;

use serde::{Deserialize, Serialize};

/// The body of every error response: `{"error": "<code>", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApiError {
    pub error: ErrorCode,
    pub message: String,
}

/// Machine-readable error codes; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// 400: the request is malformed or names an invalid value (e.g. a bad store path).
    BadRequest,
    /// 401: missing, invalid, stale or replayed signature, or signed for another host.
    Unauthorized,
    /// 404: no such route or object.
    NotFound,
    /// 409: conflicts with the agent's state (e.g. a deployment is already running).
    Conflict,
    /// 413: the body is larger than the endpoint allows.
    PayloadTooLarge,
    /// 500: the agent failed (e.g. a Nix command failed).
    Internal,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Internal => 500,
        }
    }
}

/// Headers carrying a request's signature ([`crate::signing`]).
pub mod headers {
    /// The signing scheme, [`crate::signing::SIGNATURE_VERSION`]; a request without it
    /// was signed with v1, which agents refuse.
    pub const VERSION: &str = "x-hostctl-signature-version";
    /// The host the request is for (the agent's `hostname`), covered by the signature.
    pub const HOST: &str = "x-hostctl-host";
    /// Name of the controller key that signed (the `name` of `name:base64`).
    pub const KEY: &str = "x-hostctl-key";
    /// Unix time in seconds when the request was signed.
    pub const TIMESTAMP: &str = "x-hostctl-timestamp";
    /// A random value used once (hex, 32 characters), against replay.
    pub const NONCE: &str = "x-hostctl-nonce";
    /// SHA-256 of the exact request body in hex (of the empty string for no body).
    pub const CONTENT_SHA256: &str = "x-hostctl-content-sha256";
    /// Base64 ed25519 signature over [`crate::signing::canonical_request`].
    pub const SIGNATURE: &str = "x-hostctl-signature";
    /// Base64 of the identity public key of the agent the request is for (the key its
    /// TLS certificate is made from), covered by the signature (scheme v3).
    pub const IDENTITY: &str = "x-hostctl-agent-identity";
    /// Every header a signed request carries, in the order the agent reads them.
    pub const ALL: [&str; 8] = [KEY, TIMESTAMP, NONCE, CONTENT_SHA256, SIGNATURE, VERSION, HOST, IDENTITY];
}
