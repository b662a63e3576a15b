//! `POST /v1/rollback` — signed. Returns the host to an earlier system that is still in
//! its store, through the same activation, confirmation window and health checks as a
//! deployment (202 + the rollback's [`Deployment`], followed with
//! `GET /v1/deployments/{id}` and confirmed with `POST /v1/deployments/{id}/confirm`).
//!
//! While a deployment awaits confirmation, `"previous"` ends that wait at once: the
//! pending deployment becomes `rolled-back` (what a controller does when its health
//! checks fail, instead of letting the window run out).
//!
//! Errors: 404 when no journal entry or generation matches the target, 409 while a
//! deployment is activating, 400 for a bad id.

use serde::{Deserialize, Serialize};

use crate::api::deployments::{Deployment, HealthFailure};
use crate::duration::Duration;
use crate::ids::LockId;

/// Path of this endpoint.
pub const PATH: &str = "/v1/rollback";

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 16 * 1024;

/// What to return to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(
    untagged,
    expecting = "a rollback target: \"previous\", {\"lock\": \"<64 hex>\"} or {\"generation\": <number of 0 or more>}"
)]
pub enum RollbackTarget {
    /// `{"lock": "<lock id>"}`: the newest confirmed deployment with this lock.
    Lock { lock: LockId },
    /// `{"generation": N}`: that generation of the system profile.
    Generation { generation: u64 },
    /// `"previous"`: the newest earlier confirmed deployment with a different lock
    /// than the current one; the previous toplevel if no lock differs.
    Previous(Previous),
}

/// The literal string `"previous"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Previous {
    Previous,
}

/// Request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    pub to: RollbackTarget,
    /// The rollback's deployment id (as for deployments); the agent makes one if absent.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,128}$"))]
    pub id: Option<String>,
    /// The confirmation window for the rollback itself (0s: none). Default: the agent's.
    #[serde(default)]
    pub confirm_timeout: Option<Duration>,
    /// Why a controller rolls back a deployment awaiting confirmation: the `http` health
    /// check that failed. The pending deployment then ends with `end_reason`
    /// `health-check-failed` and this as its `health_failure` (instead of
    /// `rollback-requested`). Left out when unset, so older agents (which refuse unknown
    /// fields) only see it when it is used; ignored unless the target is `"previous"` and
    /// a deployment awaits confirmation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_failure: Option<HealthFailure>,
}

/// Response body (202).
pub type RollbackResponse = Deployment;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_as_design_md_writes_them() {
        let lock = "a".repeat(64);
        let r: RollbackRequest = serde_json::from_str(&format!(r#"{{"to":{{"lock":"{lock}"}}}}"#)).unwrap();
        assert!(matches!(r.to, RollbackTarget::Lock { .. }));
        let r: RollbackRequest = serde_json::from_str(r#"{"to":{"generation":3}}"#).unwrap();
        assert_eq!(r.to, RollbackTarget::Generation { generation: 3 });
        let r: RollbackRequest = serde_json::from_str(r#"{"to":"previous","confirm_timeout":"10s"}"#).unwrap();
        assert_eq!(r.to, RollbackTarget::Previous(Previous::Previous));
        assert!(serde_json::from_str::<RollbackRequest>(r#"{"to":"latest"}"#).is_err());
        assert!(serde_json::from_str::<RollbackRequest>(r#"{"to":{"lock":"nope"}}"#).is_err());
        assert_eq!(serde_json::to_string(&RollbackTarget::Previous(Previous::Previous)).unwrap(), r#""previous""#);
    }
}
