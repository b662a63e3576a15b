//! `GET /v1/status` — signed; read-only. What the host runs and how the agent is.

use serde::{Deserialize, Serialize};

use crate::ids::LockId;

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
    /// GitOps state when the agent runs in pull mode (`null` in push mode).
    #[serde(default)]
    pub pull: Option<PullStatus>,
}

impl StatusResponse {
    /// An idle `x86_64-linux` host with nothing deployed and nothing emulated, in push
    /// mode: the starting point of fakes and tests (`StatusResponse { generation:
    /// Some(3), ..StatusResponse::idle("web1") }`).
    pub fn idle(hostname: &str) -> Self {
        Self {
            hostname: hostname.to_owned(),
            system: "x86_64-linux".to_owned(),
            state: AgentState::Idle,
            generation: None,
            toplevel: None,
            rev: None,
            lock: None,
            deployment: None,
            pinned_lock: None,
            booted_system: None,
            current_system: None,
            emulated_systems: Vec::new(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pull: None,
        }
    }
}

/// What a pull-mode agent tracks and where it is (DESIGN.md, pull mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullStatus {
    /// The tracked remote and branch.
    pub url: String,
    pub branch: String,
    /// `pinned` or `follow`.
    pub lock_policy: String,
    /// The newest commit fetched from the branch.
    pub fetched_commit: Option<String>,
    /// The commit whose system is running (last applied by pull or push).
    pub applied_commit: Option<String>,
    /// A fetched commit whose `flake.lock` differs from the pinned lock, held until an
    /// operator approves it with `hostctl apply` (pinned policy only).
    pub pending_commit: Option<String>,
    pub pending_lock: Option<LockId>,
    /// Unix time of the last fetch attempt and its error, if it failed.
    pub last_fetch: Option<u64>,
    pub last_error: Option<String>,
}
