//! `POST /v1/paths/missing` and `POST /v1/paths/import` — signed. Closure transfer.

use serde::{Deserialize, Serialize};

use crate::ids::StorePath;

/// `POST /v1/paths/missing`: which of the given paths this host's store lacks.
pub const MISSING_PATH: &str = "/v1/paths/missing";

/// `POST /v1/paths/import`: the body is a zstd-compressed `nix-store --export` stream of
/// the paths in [`IMPORT_PATHS_HEADER`], in an order where references come first. The
/// agent imports it all or nothing: a broken or truncated stream registers no path.
pub const IMPORT_PATH: &str = "/v1/paths/import";

/// Header listing, space-separated, the store paths the import stream carries (so the
/// agent can validate them and check afterwards that exactly those were imported).
pub const IMPORT_PATHS_HEADER: &str = "x-hostctl-paths";

/// The largest body `/v1/paths/missing` accepts.
pub const MISSING_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Request body of `/v1/paths/missing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MissingRequest {
    pub paths: Vec<StorePath>,
}

/// Response body of `/v1/paths/missing`: a subset of the request's paths, same order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MissingResponse {
    pub missing: Vec<StorePath>,
}

/// Response body of `/v1/paths/import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ImportResponse {
    pub imported: Vec<StorePath>,
}
