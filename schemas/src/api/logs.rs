//! `GET /v1/deployments/{id}/log?offset=N` — signed; read-only. A deployment's whole
//! activation output (`switch-to-configuration`, as the agent captured it in
//! `<state_dir>/deployments/<id>.log`), in pieces of at most [`CHUNK_LIMIT`] bytes from
//! byte `offset`: what `hostctl logs` prints and follows (the deployment's `log_tail` is
//! only its last lines). 404 for an unknown deployment, 400 for a bad id or offset.

use serde::{Deserialize, Serialize};

use crate::api::deployments::DeploymentState;

/// The route (axum syntax).
pub const ROUTE: &str = "/v1/deployments/{id}/log";

/// The most bytes of log one answer carries.
pub const CHUNK_LIMIT: u64 = 256 * 1024;

/// The path asking for deployment `id`'s log from byte `offset` (signed with its query).
pub fn path_of(id: &str, offset: u64) -> String {
    format!("/v1/deployments/{id}/log?offset={offset}")
}

/// The query: where to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Byte offset into the log (default 0).
    #[serde(default)]
    pub offset: u64,
}

/// Response body (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogChunk {
    pub id: String,
    /// Where `text` starts in the log.
    pub offset: u64,
    /// The log's bytes from `offset` (at most [`CHUNK_LIMIT`], never ending inside a UTF-8
    /// character unless the log does; invalid UTF-8 shown as U+FFFD).
    pub text: String,
    /// Where the next piece starts: ask again from here.
    pub next_offset: u64,
    /// The deployment's state when the piece was read.
    pub state: DeploymentState,
    /// The deployment has ended and `next_offset` is the end of its log: nothing more
    /// will come.
    pub complete: bool,
}
