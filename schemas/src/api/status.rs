//! `GET /v1/status` — signed; read-only. What the host runs and how the agent is.

use serde::{Deserialize, Serialize};

use crate::api::deployments::{Deployment, DeploymentState, EndReason, HealthFailure, Requester};
use crate::ids::LockId;

/// Path of this endpoint.
pub const PATH: &str = "/v1/status";

/// The agent's overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// Journal records the agent could not read at start: moved aside (kept, never
    /// loaded again) so the agent could go on. Empty when the journal was whole.
    #[serde(default)]
    pub damaged_records: Vec<DamagedRecord>,
    /// Who signed `rev`, when a signature policy checked it (the current deployment's
    /// `signer`); `None` otherwise and from older agents.
    #[serde(default)]
    pub signer: Option<crate::commits::Signer>,
    /// The newest deployment that ended (any result), in short: `null` before the first
    /// one and from older agents.
    #[serde(default)]
    pub last_deployment: Option<LastDeployment>,
    /// Bytes free (for unprivileged writers: `statvfs` available blocks) on the file
    /// system holding the host's Nix store: `apply` refuses to push a closure whose NAR
    /// size exceeds it. `null` when it cannot be read, and from older agents.
    #[serde(default)]
    pub store_free_bytes: Option<u64>,
    /// Whether the system the profile points at (what the next boot runs) needs a reboot
    /// to take full effect: one of its boot parts differs from the booted system's.
    /// `null` when it cannot be told (no `/run/booted-system`, no profile) and from older
    /// agents.
    #[serde(default)]
    pub reboot_required: Option<bool>,
    /// What differs, when `reboot_required` is true.
    #[serde(default)]
    pub reboot_reasons: Vec<crate::api::deployments::RebootReason>,
    /// The host's boot id (`/proc/sys/kernel/random/boot_id`, or the agent's
    /// `boot.boot_id_file`): a new one proves the host rebooted. Absent from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// Bytes free on the file system mounted at `/boot` (where boot loaders copy kernels
    /// and initrds) when it is not the store's: `apply` refuses to push a system with a
    /// new kernel and initrd larger than it. `null` when `/boot` is on the store's file
    /// system or cannot be read, and from older agents.
    #[serde(default)]
    pub boot_free_bytes: Option<u64>,
}

/// How the newest ended deployment went, and who asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LastDeployment {
    pub id: String,
    pub state: DeploymentState,
    /// Unix time it ended.
    pub finished: Option<u64>,
    pub end_reason: Option<EndReason>,
    /// The first line of its error.
    pub error: Option<String>,
    pub health_failure: Option<HealthFailure>,
    pub requested_by: Option<Requester>,
}

impl LastDeployment {
    pub fn of(d: &Deployment) -> Self {
        Self {
            id: d.id.clone(),
            state: d.state,
            finished: d.finished,
            end_reason: d.end_reason,
            error: d.error.as_deref().and_then(|e| e.lines().next()).map(str::to_owned),
            health_failure: d.health_failure.clone(),
            requested_by: d.requested_by.clone(),
        }
    }
}

/// A journal record moved aside at start because it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DamagedRecord {
    /// Where the record was (`<state_dir>/deployments/<id>.json`).
    pub file: String,
    /// Where it is now (`<file>.corrupt-<unix time>`).
    pub moved_to: String,
    /// Why it could not be read: `file:line:column: message` for a parse error.
    pub problem: String,
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
            damaged_records: Vec::new(),
            signer: None,
            last_deployment: None,
            store_free_bytes: None,
            reboot_required: None,
            reboot_reasons: Vec::new(),
            boot_id: None,
            boot_free_bytes: None,
        }
    }
}

/// What a pull-mode agent tracks and where it is (DESIGN.md, pull mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// The newest fetched commit the signature policy (`pull.commits`) refused, and why;
    /// nothing of it was evaluated. Cleared when a later commit passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<crate::commits::CommitRefusal>,
}
