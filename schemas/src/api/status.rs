//! `GET /v1/status` — signed; read-only. What the host runs and how the agent is.

use serde::{Deserialize, Serialize};

/// Path of this endpoint.
pub const PATH: &str = "/v1/status";

/// The agent's overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentState {
    /// No deployment in progress.
    Idle,
    /// A deployment is being activated.
    Activating,
    /// A deployment waits for the controller's confirmation.
    AwaitingConfirmation,
}

/// Response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub hostname: String,
    /// The Nix system of the host, e.g. `x86_64-linux`.
    pub system: String,
    pub state: AgentState,
    /// The system profile's current generation number, if it has one.
    pub generation: Option<u64>,
    /// The toplevel the profile's current generation points at.
    pub toplevel: Option<String>,
    /// Revision, lock id and deployment id of the deployment that produced `toplevel`.
    pub rev: Option<String>,
    pub lock: Option<String>,
    pub deployment: Option<String>,
    /// The lock the host is pinned to (the lock of its current deployment).
    pub pinned_lock: Option<String>,
    /// What `/run/booted-system` points at, if readable.
    pub booted_system: Option<String>,
    /// What `/run/current-system` points at, if readable.
    pub current_system: Option<String>,
    pub emulated_systems: Vec<String>,
    /// The agent's version.
    pub version: String,
}
