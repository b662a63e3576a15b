//! `POST /v1/deployments` and `GET /v1/deployments/{id}` — signed. Activation.

use serde::{Deserialize, Serialize};

use crate::commits::{CommitRefusal, Signer, UnsignedOverride};
use crate::duration::Duration;
use crate::ids::{LockId, StorePath};
use crate::inventory::{CacheUrl, HealthCheck, Mode};

/// `POST /v1/deployments` starts a deployment (202 Accepted with a [`Deployment`]).
pub const PATH: &str = "/v1/deployments";

/// `GET /v1/deployments/{id}`: the deployment's state and log tail.
pub fn path_of(id: &str) -> String {
    format!("{PATH}/{id}")
}

/// `POST /v1/deployments/{id}/confirm`: confirms a deployment in `awaiting-confirmation`
/// (200 with the [`Deployment`], now `confirmed`; confirming a confirmed one is a no-op;
/// any other state is a 409). The body is empty. Without it the agent rolls back after
/// `confirm_timeout`.
pub fn confirm_path_of(id: &str) -> String {
    format!("{PATH}/{id}/confirm")
}

/// The largest request body `POST /v1/deployments` accepts.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A deployment id: `[A-Za-z0-9._-]{1,128}` (the controller uses host + time + random).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Request body of `POST /v1/deployments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRequest {
    /// The deployment's id: `[A-Za-z0-9._-]`, 1 to 128 characters (checked by `valid_id`).
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,128}$"))]
    pub id: String,
    /// The system to activate; must already be in the host's store.
    pub toplevel: StorePath,
    pub rev: Option<String>,
    pub lock: Option<LockId>,
    pub mode: Mode,
    /// How long the agent waits for confirmation (0s: no confirmation needed; `boot` and
    /// `dry-activate` never wait). The window opens when the activation and the health
    /// checks have finished: its deadline (`confirm_deadline`) is set then, so a slow
    /// switch does not eat into it. The need for a confirmation is journaled before the
    /// activation starts, so an agent that dies mid-switch still finishes the deployment
    /// (the window, or a rollback) when it comes back.
    pub confirm_timeout: Duration,
    /// `command` health checks from the inventory, run by the agent after activation in
    /// addition to its own `health` checks; any failing means rollback. The agent refuses
    /// `http` checks here: those run on the controller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<HealthCheck>,
    /// A binary cache to fetch `toplevel`'s closure from when the host lacks it
    /// (`hostctl apply --via-cache`), instead of a `paths/import` by the controller. The
    /// agent accepts only a URL listed in its `caches` (else 400), fetches before
    /// anything else happens (`nix copy --from`, state `queued`), and takes only paths
    /// signed by its `trusted_keys` or `pull.trusted_public_keys`; a failed fetch fails
    /// the deployment with `end_reason` [`EndReason::CacheFetchFailed`] (its error starts
    /// with `cache <URL>: `), nothing activated. Left out when unset, so older agents (which refuse unknown fields) only
    /// see it when it is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheUrl>,
    /// What the controller's commit-signature policy found of `rev` (fleet.yaml
    /// `commits`): its signer, recorded as the deployment's `signer`, or that
    /// `--allow-unsigned` overrode a refusal, recorded with the name of the key that
    /// signed this request. Left out when there is no policy, as `cache` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_signature: Option<CommitSignature>,
    /// fleet.yaml's generation retention for this host: applied by the agent once this
    /// deployment is confirmed (`crate::api::gc`), instead of its own `retention`. Left
    /// out when unset, as `cache` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::retention::Retention>,
    /// `boot` only: boot the new system once and reboot into it (issue 16). The agent
    /// sets the boot loader's default to the running system's entry and its one-shot
    /// entry to the new one, journals `rebooting` and reboots; once it is back on the new
    /// system the deployment waits for confirmation (health checks, `confirm_timeout`
    /// counted from then), and the confirmation makes the new entry the default. Booted
    /// into anything else, or not confirmed in time: `rolled-back`. Left out when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reboot: bool,
}

/// The commit-signature part of a deployment request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CommitSignature {
    /// The commit passed the policy; signed by this key.
    Signed(Signer),
    /// The commit failed the policy (the text says why) and the operator deployed it
    /// anyway (`hostctl apply --allow-unsigned`).
    AllowedUnsigned(String),
}

/// A deployment's state (DESIGN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeploymentState {
    Queued,
    Activating,
    AwaitingConfirmation,
    Confirmed,
    Failed,
    RolledBack,
    /// A `boot` deployment with `reboot`: the new system is the one-shot boot entry and
    /// the host is rebooting (or about to); the agent continues after the boot.
    Rebooting,
}

impl DeploymentState {
    /// A state that will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, DeploymentState::Confirmed | DeploymentState::Failed | DeploymentState::RolledBack)
    }
}

/// Why a deployment ended `failed` or `rolled-back`: what started its end (whether a
/// rollback then worked is its state; `error` says both in words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// Fetching the system from the request's `cache` failed, or an agent restart cut it
    /// short; nothing was activated.
    CacheFetchFailed,
    /// Adding the profile generation (`nix-env --set`) failed; nothing was activated.
    ProfileFailed,
    /// The activation could not be created; nothing was activated.
    ActivationNotStarted,
    /// The activation was cancelled before `switch-to-configuration` ran.
    ActivationCancelled,
    /// `switch-to-configuration` exited with a failure status (see `outcome`).
    ActivationFailed,
    /// The activation ended without an exit status, or its result could not be read.
    ActivationLost,
    /// `switch-to-configuration` ran longer than the agent's `activation_timeout` and
    /// was killed.
    TimedOut,
    /// A `command` health check failed.
    HealthCheckFailed,
    /// Not confirmed within its window.
    NotConfirmed,
    /// `POST /v1/rollback` `"previous"` rolled it back.
    RollbackRequested,
    /// The agent restarted at a step it does not resume (before the activation, during
    /// the health checks).
    AgentRestarted,
    /// The agent's journal could not be written (or read) at a step.
    JournalWriteFailed,
    /// Pull mode: the fetched commit failed the signature policy (`commit_refusal`);
    /// nothing was evaluated, built or activated.
    CommitRefused,
    /// A `reboot` deployment: the host came back on another system than the new one
    /// (the one-shot boot failed, a watchdog or power cycle booted the default).
    BootedPrevious,
    /// A `reboot` deployment: the reboot could not be prepared or asked for.
    RebootFailed,
    /// Not known: a reason newer than this program, or a rollback an older agent began.
    #[serde(other)]
    Other,
}

/// What `switch-to-configuration` reported, from its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationOutcome {
    /// 0.
    Ok,
    /// 1: checks or bootloader installation failed.
    CheckFailed,
    /// 2: the activation script failed.
    ActivationFailed,
    /// 4: some units failed to start.
    UnitsFailed,
    /// 100: the switch worked but a reboot is required.
    RebootRequired,
    /// Any other exit code, or killed by a signal.
    Other,
}

impl ActivationOutcome {
    pub fn from_exit_code(code: Option<i32>) -> Self {
        match code {
            Some(0) => Self::Ok,
            Some(1) => Self::CheckFailed,
            Some(2) => Self::ActivationFailed,
            Some(4) => Self::UnitsFailed,
            Some(100) => Self::RebootRequired,
            _ => Self::Other,
        }
    }

    /// The deployment counts as successful (a reboot being needed is not a failure).
    pub fn succeeded(self) -> bool {
        matches!(self, Self::Ok | Self::RebootRequired)
    }
}

/// Response body of both endpoints: a deployment as the agent's journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Deployment {
    pub id: String,
    pub state: DeploymentState,
    pub toplevel: StorePath,
    /// The system that was running when the deployment was accepted (not necessarily
    /// what the profile pointed at, after a `boot` or `test` deployment): what a rollback
    /// re-activates.
    pub previous_toplevel: Option<StorePath>,
    pub rev: Option<String>,
    pub lock: Option<LockId>,
    pub mode: Mode,
    /// The profile generation this deployment created (none for `test`/`dry-activate`).
    pub generation: Option<u64>,
    pub exit_code: Option<i32>,
    pub outcome: Option<ActivationOutcome>,
    /// Unix times in seconds.
    pub created: u64,
    pub finished: Option<u64>,
    /// The last lines of the activation's output.
    pub log_tail: String,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Unix time after which an unconfirmed deployment is rolled back: set when the
    /// deployment becomes `awaiting-confirmation` (activation and health checks done,
    /// plus `confirm_timeout`, rounded up to the second); `None` before and for
    /// deployments that need no confirmation.
    #[serde(default)]
    pub confirm_deadline: Option<u64>,
    /// For a rollback: the deployment or generation it returned from, in words.
    #[serde(default)]
    pub rollback_of: Option<String>,
    /// Why a `failed` or `rolled-back` deployment ended; `None` before it ended, for
    /// `confirmed` ones, and from agents older than this field.
    #[serde(default)]
    pub end_reason: Option<EndReason>,
    /// Who signed `rev`, when a signature policy checked it (principal or key fingerprint);
    /// `None` without a policy, for unsigned commits and from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<Signer>,
    /// Deployed although `rev` failed the controller's policy (`--allow-unsigned`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsigned_override: Option<UnsignedOverride>,
    /// Pull mode: why the commit was refused (end reason `commit-refused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_refusal: Option<CommitRefusal>,
    /// For `end_reason` `health-check-failed`: the check that failed and what it said
    /// (an `http` check of the controller, sent with its `POST /v1/rollback`, or a
    /// `command` check the agent ran). Absent otherwise and from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_failure: Option<HealthFailure>,
    /// Who asked for it: the name of the trusted key that signed the request and the
    /// address it came from. Absent for pull mode's own deployments and from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<Requester>,
    /// Whether this system takes full effect only after a reboot: one of its boot parts
    /// ([`REBOOT_PARTS`]) differs from the booted system's (`/run/booted-system`), or
    /// `switch-to-configuration` exited with 100. `None` when it could not be told (no
    /// booted system to compare with) and from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_required: Option<bool>,
    /// What differs, part by part, when `reboot_required` is true.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reboot_reasons: Vec<RebootReason>,
    /// A `reboot` deployment: the boot id (`/proc/sys/kernel/random/boot_id`) before the
    /// reboot and, once the host is back, after it, and the system it booted. Absent
    /// otherwise and from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<RebootProgress>,
}

/// How a deployment's reboot went (see [`Deployment::reboot`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RebootProgress {
    /// The boot id when the reboot was asked for.
    pub boot_id_before: String,
    /// The boot id the agent found after the reboot (`None` until then).
    #[serde(default)]
    pub boot_id_after: Option<String>,
    /// The loader entry of the system running before (made the default before the
    /// reboot).
    pub previous_entry: String,
    /// The loader entry of the new system (the one-shot entry).
    pub new_entry: String,
    /// What `/run/booted-system` named after the reboot.
    #[serde(default)]
    pub booted: Option<StorePath>,
}

/// The parts of a NixOS toplevel that only a reboot brings into effect, compared between
/// the booted system and a new one (each a path inside the toplevel; a part missing in
/// both counts as unchanged).
pub const REBOOT_PARTS: [&str; 5] = ["kernel", "initrd", "kernel-modules", "kernel-params", "systemd"];

/// One reason a system needs a reboot: a part that differs between the booted system and
/// the new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RebootReason {
    /// Which part: one of [`REBOOT_PARTS`], or `switch-to-configuration` (it exited
    /// with 100).
    pub part: String,
    /// What the booted system has there: the link's target, or a file's text (the
    /// kernel parameters); null when it has nothing there.
    pub booted: Option<String>,
    /// What the new system has there, in the same form.
    pub new: Option<String>,
}

impl std::fmt::Display for RebootReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".to_owned());
        write!(f, "{}: {} -> {}", self.part, shown(&self.booted), shown(&self.new))
    }
}

/// The health check that made a deployment roll back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HealthFailure {
    /// Which check: `GET <url>` for an `http` check, the command line for a `command` check.
    pub check: String,
    /// What its last attempt said (`HTTP 503`, `exit status 1`, ...), with the attempts
    /// made.
    pub error: String,
}

impl HealthFailure {
    pub fn new(check: impl Into<String>, error: impl Into<String>) -> Self {
        Self { check: check.into(), error: error.into() }
    }
}

/// Who asked the agent for a deployment or rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Requester {
    /// The name of the trusted key whose signature verified (`fleet-1` of `fleet-1:…`).
    pub key: String,
    /// The peer's IP address as the agent saw it (`hostctl-agent import`: a loopback one).
    pub address: Option<String>,
}

impl Deployment {
    /// The record of a request the agent has just accepted, before anything ran.
    pub fn queued(request: &DeploymentRequest, previous_toplevel: Option<StorePath>, created: u64) -> Self {
        Self {
            id: request.id.clone(),
            state: DeploymentState::Queued,
            toplevel: request.toplevel.clone(),
            previous_toplevel,
            rev: request.rev.clone(),
            lock: request.lock.clone(),
            mode: request.mode,
            generation: None,
            exit_code: None,
            outcome: None,
            created,
            finished: None,
            log_tail: String::new(),
            error: None,
            confirm_deadline: None,
            rollback_of: None,
            end_reason: None,
            signer: match &request.commit_signature {
                Some(CommitSignature::Signed(signer)) => Some(signer.clone()),
                _ => None,
            },
            unsigned_override: None,
            commit_refusal: None,
            health_failure: None,
            requested_by: None,
            reboot_required: None,
            reboot_reasons: Vec::new(),
            reboot: None,
        }
    }
}
