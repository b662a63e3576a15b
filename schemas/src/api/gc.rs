//! `POST /v1/gc` — signed (any trusted key); changes the host unless `dry_run`. Applies a
//! generation retention policy now: deletes the system profile's generations the policy
//! does not keep (never the running, booted, pending, last confirmed or current one),
//! then collects the store's garbage (every path no GC root keeps any more), and reports
//! what it deleted — or, with `dry_run`, what it would delete, changing nothing. The same
//! run follows every confirmed deployment (with the deployment's policy or the agent's).
//!
//! Errors: 409 while a deployment is queued, activating or awaiting confirmation (its
//! systems are in flight), 400 for a bad body, 500 when Nix fails (the report of what
//! was done before is in the agent's GC journal).

use serde::{Deserialize, Serialize};

use crate::ids::StorePath;
use crate::retention::Retention;

/// Path of this endpoint.
pub const PATH: &str = "/v1/gc";

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 4 * 1024;

/// Request body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    /// Report what would be deleted; delete nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The policy to apply; default: the newest confirmed deployment's (fleet.yaml
    /// `retention`), else the agent's `retention`. With none, no generation is deleted
    /// (the store's garbage is still collected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

/// Why a generation was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KeepReason {
    /// The profile's current generation (Nix never deletes it).
    Current,
    /// Its system is the running one (`/run/current-system`).
    Running,
    /// Its system is the one the host booted (`/run/booted-system`).
    Booted,
    /// Its system is a deployment's in flight, or the newest confirmed deployment's.
    Deployment,
    /// Among the newest `keep_last`.
    KeepLast,
    /// Younger than `keep_younger_than`.
    Young,
    /// No policy applies: nothing is deleted.
    NoPolicy,
}

/// One generation of the system profile, kept or deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GcGeneration {
    pub number: u64,
    pub toplevel: StorePath,
    /// Unix time in seconds the generation was made (its link's mtime).
    pub time: u64,
    /// Why it is kept; empty for a deleted generation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_because: Vec<KeepReason>,
}

/// Response body (200), also what the agent journals of each run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GcReport {
    pub dry_run: bool,
    /// The policy applied (`None`: none configured, no generation deleted).
    pub retention: Option<Retention>,
    /// Where the policy came from: `request`, `deployment <id>`, `agent.yaml` or `none`.
    pub policy_source: String,
    /// Generations deleted (or that would be), oldest first.
    pub deleted_generations: Vec<GcGeneration>,
    /// Generations kept, oldest first, with why.
    pub kept_generations: Vec<GcGeneration>,
    /// Store paths deleted (or that would be), sorted.
    pub store_paths: Vec<StorePath>,
    /// Their NAR sizes added up (what Nix reports as freed, before hard-link savings).
    pub bytes_freed: u64,
    /// Unix time in seconds the run finished.
    pub finished: u64,
    /// The deployment whose confirmation started the run; `None` for `POST /v1/gc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_deployment: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_as_design_md_writes_them() {
        let r: GcRequest = serde_json::from_str(r#"{"dry_run":true,"retention":{"keep_last":2}}"#).unwrap();
        assert!(r.dry_run);
        assert_eq!(r.retention.and_then(|p| p.keep_last), Some(2));
        assert_eq!(serde_json::from_str::<GcRequest>("{}").unwrap(), GcRequest::default());
        assert!(serde_json::from_str::<GcRequest>(r#"{"retention":{"keep_last":0}}"#).is_err());
    }
}
