//! One host's deployment: status -> (unchanged?) -> push the closure -> start the
//! deployment -> wait for it; when the agent asks for confirmation, run the health gate
//! ([`crate::health`]) and confirm over a new connection, or have it roll back.
//! Generic over [`Host`] and [`LocalStore`]; the outcome names the step that failed.
//! [`follow`] is the waiting part alone, which `rollback` shares.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hostctl_schemas::api::deployments::{
    CommitSignature, Deployment, DeploymentRequest, DeploymentState, EndReason, RebootReason,
};
use hostctl_schemas::ids::{HostName, LockId, StorePath};
use hostctl_schemas::inventory::{HealthCheck, Mode, RebootPolicy};

use crate::cache::ViaCache;
use crate::client::deployment_id;
use crate::health::{self, CheckReport, Gate};
use crate::host::{Host, HostError};
use crate::progress;
use crate::push::{push_closure, FreeSpace, PushError, PushStats};
use crate::reboot::{self, RebootReport};
use crate::report::HostResult;

/// What every host of one `apply` shares.
#[derive(Debug, Clone)]
pub struct DeploySettings {
    pub mode: Mode,
    pub confirm_timeout: hostctl_schemas::duration::Duration,
    pub rev: Option<String>,
    pub lock: Option<LockId>,
    /// How often the deployment's state is asked for.
    pub poll_interval: Duration,
    /// How long a deployment may take from start to a final state.
    pub wait_limit: Duration,
    /// The binary cache the agents fetch the closures from (`apply --via-cache`): no
    /// stream is pushed, the request names the cache instead.
    pub cache: Option<Arc<ViaCache>>,
    /// Per host, what the signature policy found of `rev` (`commit_policy`).
    pub commit_signatures: std::collections::BTreeMap<hostctl_schemas::ids::HostName, CommitSignature>,
    /// Per host, fleet.yaml's generation retention (sent with the deployment).
    pub retention: std::collections::BTreeMap<hostctl_schemas::ids::HostName, hostctl_schemas::retention::Retention>,
    /// Per host, whether it is rebooted into its new system (absent: `never`).
    pub reboot: std::collections::BTreeMap<hostctl_schemas::ids::HostName, RebootPolicy>,
    /// `hostctl reboot`: every host is rebooted into what it has, with this reason.
    pub reboot_all: Option<String>,
    /// How long a rebooting host has to come back.
    pub reboot_timeout: Duration,
}

impl DeploySettings {
    /// Polls every 200 ms for up to 10 minutes plus the confirmation window.
    pub fn new(mode: Mode, confirm_timeout: hostctl_schemas::duration::Duration) -> Self {
        Self {
            mode,
            confirm_timeout,
            rev: None,
            lock: None,
            poll_interval: Duration::from_millis(200),
            wait_limit: Duration::from_secs(600) + confirm_timeout.as_std(),
            cache: None,
            commit_signatures: std::collections::BTreeMap::new(),
            retention: std::collections::BTreeMap::new(),
            reboot: std::collections::BTreeMap::new(),
            reboot_all: None,
            reboot_timeout: Duration::from_secs(600),
        }
    }
}

/// The step a host was at when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Eval,
    Build,
    Connect,
    Push,
    Deploy,
    Activate,
    Confirm,
    Wait,
    /// A health check failed.
    Health,
    /// `POST /v1/rollback` (or reading the history it needs) failed.
    Rollback,
    /// The host did not come back from its reboot in time, or came back on another system.
    Reboot,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Eval => "eval",
            Step::Build => "build",
            Step::Connect => "connect",
            Step::Push => "push",
            Step::Deploy => "deploy",
            Step::Activate => "activate",
            Step::Confirm => "confirm",
            Step::Wait => "wait",
            Step::Health => "health",
            Step::Rollback => "rollback",
            Step::Reboot => "reboot",
        }
    }
}

/// How one host's deployment ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub result: HostResult,
    pub step: Option<Step>,
    pub error: Option<String>,
    /// The toplevel the host ran before (from its status).
    pub previous_toplevel: Option<String>,
    pub pushed: PushStats,
    pub deployment: Option<String>,
    pub generation: Option<u64>,
    pub log_tail: Option<String>,
    /// The http health checks run by the controller.
    pub health: Vec<CheckReport>,
    /// Wall time this host took in its batch (status to final state), in seconds.
    pub seconds: f64,
    /// Whether the deployed system needs a reboot, and why (the agent's
    /// `reboot_required` and `reboot_reasons`; for an unchanged host, its status').
    pub reboot_required: Option<bool>,
    pub reboot_reasons: Vec<RebootReason>,
    /// The host's reboot, when it was rebooted (or asked to).
    pub reboot: Option<RebootReport>,
}

impl Outcome {
    pub fn failed(step: Step, error: impl Into<String>) -> Self {
        Self::new(HostResult::Failed).with_error(step, error)
    }

    pub fn new(result: HostResult) -> Self {
        Self {
            result,
            step: None,
            error: None,
            previous_toplevel: None,
            pushed: PushStats::default(),
            deployment: None,
            generation: None,
            log_tail: None,
            health: Vec::new(),
            seconds: 0.0,
            reboot_required: None,
            reboot_reasons: Vec::new(),
            reboot: None,
        }
    }

    pub fn with_error(mut self, step: Step, error: impl Into<String>) -> Self {
        self.step = Some(step);
        self.error = Some(error.into());
        self
    }
}

/// Whether a host already running `toplevel` needs nothing: `switch` and `boot` would
/// only re-add what is there; `test` and `dry-activate` are asked for explicitly.
pub fn is_unchanged(mode: Mode, current: Option<&str>, toplevel: &StorePath) -> bool {
    matches!(mode, Mode::Switch | Mode::Boot) && current == Some(toplevel.as_str())
}

/// Deploys `toplevel` to `host`, gated by its health `checks`. Never returns early
/// without an outcome: every failure becomes a `failed` (or `rolled-back`) outcome
/// naming its step.
pub async fn deploy_host<H: Host, S: crate::push::LocalStore>(
    host: &H,
    store: &S,
    toplevel: &StorePath,
    checks: &[HealthCheck],
    settings: &DeploySettings,
) -> Outcome {
    let name = host.name();
    progress::step(name, "connecting");
    let status = match host.status().await {
        Ok(status) => status,
        Err(e) => return Outcome::failed(Step::Connect, e.to_string()),
    };
    let previous = status.toplevel.clone();
    let unchanged = is_unchanged(settings.mode, previous.as_deref(), toplevel);
    let policy = settings.reboot.get(name).copied().unwrap_or(RebootPolicy::Never);
    let reboot = settings.reboot_all.clone().or_else(|| reboot::wanted(policy, &status, toplevel, unchanged));
    if unchanged && reboot.is_none() {
        let mut outcome = Outcome::new(HostResult::Unchanged);
        outcome.previous_toplevel = previous;
        outcome.generation = status.generation;
        outcome.deployment = status.deployment;
        outcome.reboot_required = status.reboot_required;
        outcome.reboot_reasons = status.reboot_reasons;
        return outcome;
    }
    let pushed = match &settings.cache {
        // `hostctl reboot`: the host has its system already.
        _ if settings.reboot_all.is_some() => Ok(PushStats::default()),
        Some(cache) => match cache.ensure_pushed().await {
            Ok(()) => {
                progress::step(name, format!("the agent fetches the closure from {}", cache.substituter));
                Ok(PushStats::default())
            }
            Err(e) => Err(PushError::Local(e)),
        },
        None => {
            let free = FreeSpace { store: status.store_free_bytes, boot: status.boot_free_bytes };
            push_closure(host, store, toplevel, free).await
        }
    };
    let mut outcome = match pushed {
        Ok(pushed) => Outcome { pushed, ..Outcome::new(HostResult::Activated) },
        Err(PushError::Host(e)) => Outcome::failed(Step::Push, e.to_string()),
        Err(PushError::Local(e)) => Outcome::failed(Step::Push, format!("{name}: {e}")),
    };
    outcome.previous_toplevel = previous;
    if outcome.result == HostResult::Failed {
        return outcome;
    }
    let mode = if reboot.is_some() { Mode::Boot } else { settings.mode };
    // `hostctl reboot` deploys what the host has: its record keeps that system's source.
    let (rev, lock) = match settings.reboot_all {
        Some(_) => (status.rev.clone(), status.lock.as_deref().and_then(|l| l.parse().ok())),
        None => (settings.rev.clone(), settings.lock.clone()),
    };
    let request = DeploymentRequest {
        id: deployment_id(name),
        toplevel: toplevel.clone(),
        rev,
        lock,
        mode,
        confirm_timeout: settings.confirm_timeout,
        health: health::command_checks(checks),
        cache: settings.cache.as_ref().map(|c| c.substituter.clone()),
        commit_signature: settings.commit_signatures.get(name).cloned(),
        retention: settings.retention.get(name).copied(),
        reboot: reboot.is_some(),
    };
    outcome.deployment = Some(request.id.clone());
    let then = reboot.as_ref().map(|why| format!(", then reboot: {why}")).unwrap_or_default();
    progress::step(name, format!("activating ({mode}{then}, deployment {})", request.id));
    outcome.reboot = reboot.map(RebootReport::asked);
    if let Err(e) = host.deploy(&request).await {
        return outcome.with_error(Step::Deploy, e.to_string()).into_failed();
    }
    follow(host, outcome, &request.id, checks, settings).await.0
}

/// Follows a started deployment `id` to its end (health gate, confirmation) and maps
/// it onto `outcome`; also returns the deployment's final record when there is one.
pub async fn follow<H: Host>(
    host: &H,
    mut outcome: Outcome,
    id: &str,
    checks: &[HealthCheck],
    settings: &DeploySettings,
) -> (Outcome, Option<Deployment>) {
    outcome.deployment = Some(id.to_owned());
    let (deployment, mut gate) = match wait(host, id, checks, settings, outcome.reboot.is_some()).await {
        Ok(waited) => waited,
        Err((step, e)) => return (outcome.with_error(step, e).into_failed(), None),
    };
    // Without a confirmation window the agent confirms by itself: the checks can still
    // fail the host (and stop the rollout), only not roll it back.
    if deployment.state == DeploymentState::Confirmed && !gate.ran && health::probes_new_system(deployment.mode) {
        gate = health::run(host, checks).await;
    }
    (finish(host.name(), outcome, deployment.clone(), gate), Some(deployment))
}

impl Outcome {
    fn into_failed(mut self) -> Self {
        self.result = HostResult::Failed;
        self
    }
}

/// Maps the deployment's final state and the health gate onto the host's result.
/// Errors start with the host and say what failed, then the agent's own words.
fn finish(host: &HostName, mut outcome: Outcome, d: Deployment, gate: Gate) -> Outcome {
    outcome.generation = d.generation;
    outcome.reboot_required = d.reboot_required;
    outcome.reboot_reasons = d.reboot_reasons.clone();
    outcome.reboot = outcome.reboot.take().map(|r| r.with_deployment(&d));
    outcome.health = gate.checks;
    let log_tail = (!d.log_tail.trim().is_empty()).then(|| d.log_tail.clone());
    if let Some(failure) = gate.failure {
        outcome.log_tail = log_tail;
        return match d.state {
            DeploymentState::RolledBack => {
                let mut o = outcome.with_error(Step::Health, format!("{host}: {failure}; the agent rolled back"));
                o.result = HostResult::RolledBack;
                o
            }
            DeploymentState::Confirmed => {
                let why = "not rolled back: there is no confirmation window (confirm_timeout 0s)";
                outcome.with_error(Step::Health, format!("{host}: {failure}; {why}")).into_failed()
            }
            _ => {
                let agent = d.error.map(|e| format!("; agent: {e}")).unwrap_or_default();
                outcome.with_error(Step::Health, format!("{host}: {failure}{agent}")).into_failed()
            }
        };
    }
    // The agent could not fetch the system from the cache: nothing ran, the transfer failed.
    if let (DeploymentState::Failed, Some(EndReason::CacheFetchFailed)) = (d.state, d.end_reason) {
        outcome.log_tail = log_tail;
        let e = d.error.as_deref().unwrap_or("fetching the system from the cache failed");
        return outcome.with_error(Step::Push, format!("{host}: {e}")).into_failed();
    }
    // The agent's own error when it gave one (it names the exit code itself), else
    // what its record says.
    let failed = d.error.as_deref().map_or_else(|| activation_failed(&d), |e| format!("activation failed: {e}"));
    match d.state {
        DeploymentState::Confirmed => {
            outcome.result = HostResult::Activated;
            return outcome;
        }
        // The agent restored the previous system after the activation itself failed:
        // that host `failed` at `activate`.
        DeploymentState::RolledBack if d.outcome.is_some_and(|o| !o.succeeded()) => {
            let error = format!("{host}: {failed} (the previous system was restored)");
            outcome = outcome.with_error(Step::Activate, error).into_failed();
        }
        // Activated, but not confirmed in time (or not healthy): magic rollback.
        DeploymentState::RolledBack => {
            let why = d.error.clone().unwrap_or_else(|| "the deployment was not confirmed in time".into());
            // The agent's own (`command`) checks failing: the step says so.
            let step = match d.end_reason {
                Some(EndReason::HealthCheckFailed) => Step::Health,
                Some(EndReason::BootedPrevious) => Step::Reboot,
                _ => Step::Confirm,
            };
            outcome = outcome.with_error(step, format!("{host}: rolled back: {why}"));
            outcome.result = HostResult::RolledBack;
        }
        // `wait` only returns final states; anything else is reported as a failure.
        _ => {
            let error = format!("{host}: {failed}");
            outcome = outcome.with_error(Step::Activate, error).into_failed();
        }
    }
    outcome.log_tail = log_tail;
    outcome
}

/// `activation failed: switch-to-configuration exited with 4 (units-failed)`, from
/// what the agent recorded.
fn activation_failed(d: &Deployment) -> String {
    let code = d.exit_code.map(|c| format!(": switch-to-configuration exited with {c}")).unwrap_or_default();
    let outcome = d.outcome.and_then(|o| serde_json::to_value(o).ok()).and_then(|v| v.as_str().map(str::to_owned));
    format!("activation failed{code}{}", outcome.map(|o| format!(" ({o})")).unwrap_or_default())
}

/// Polls the deployment until it is final; when the agent waits for confirmation, runs
/// the health gate once and confirms (or, if it failed, has the agent roll back).
/// Unreachability while polling is expected (a switch may restart the agent or its
/// network) and retried until the time limit.
async fn wait<H: Host>(
    host: &H,
    id: &str,
    checks: &[HealthCheck],
    settings: &DeploySettings,
    expects_reboot: bool,
) -> Result<(Deployment, Gate), (Step, String)> {
    let deadline = Instant::now() + settings.wait_limit;
    let mut w = Waiting {
        host,
        id,
        checks,
        gate: Gate::default(),
        confirmed: false,
        refused: false,
        last_error: None,
        reboot: if expects_reboot { RebootWait::Expected } else { RebootWait::None },
    };
    // Activations often finish within tens of milliseconds: poll soon, then back off to
    // `poll_interval` so a long activation costs few requests.
    let mut delay = FIRST_POLL.min(settings.poll_interval);
    loop {
        let answer = host.deployment(id).await;
        w.note_reboot(answer.as_ref());
        match answer {
            Ok(d) if d.state.is_final() => return Ok(w.end(d)),
            Ok(d) if d.state == DeploymentState::AwaitingConfirmation && w.may_confirm() => {
                if let Some(d) = w.gate_and_confirm().await? {
                    return Ok(w.end(d));
                }
            }
            Ok(_) => {}
            Err(e) if e.is_transport() => w.last_error = Some(e),
            Err(e) => return Err((Step::Wait, e.to_string())),
        }
        if let Some(e) = w.reboot_overdue(settings.reboot_timeout) {
            return Err((Step::Reboot, e));
        }
        if Instant::now() >= deadline {
            let why = w.last_error.map(|e| format!("; last error: {e}")).unwrap_or_default();
            let limit = settings.wait_limit.as_secs();
            return Err((Step::Wait, format!("{}: deployment {id} not finished after {limit}s{why}", host.name())));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(settings.poll_interval);
    }
}

/// What [`wait`] knows about one deployment so far.
struct Waiting<'a, H> {
    host: &'a H,
    id: &'a str,
    checks: &'a [HealthCheck],
    gate: Gate,
    /// The agent accepted the confirmation.
    confirmed: bool,
    /// The agent refused it (409: the window is over); its final state tells the rest.
    refused: bool,
    last_error: Option<HostError>,
    reboot: RebootWait,
}

/// Where a deployment that reboots the host is, as [`wait`] saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RebootWait {
    /// No reboot was asked for.
    None,
    /// Asked for; the host has not gone yet (as far as the controller knows).
    Expected,
    /// `rebooting`, or the agent stopped answering, since then: the reboot clock runs.
    Away(Instant),
    /// The agent answered after the reboot.
    Back,
}

impl<H: Host> Waiting<'_, H> {
    /// Starts the reboot clock at the first `rebooting` answer, stops it once the host
    /// is back.
    /// The agent may be gone before it was ever seen `rebooting` (the reboot is quick),
    /// so not answering starts the clock too.
    fn note_reboot(&mut self, answer: Result<&Deployment, &HostError>) {
        let away = match answer {
            Ok(d) if reboot::came_back(d) => {
                if matches!(self.reboot, RebootWait::Away(_)) {
                    progress::step(self.host.name(), "back from its reboot");
                }
                self.reboot = RebootWait::Back;
                return;
            }
            Ok(d) => d.state == DeploymentState::Rebooting,
            Err(e) => e.is_transport() && self.reboot == RebootWait::Expected,
        };
        if away && matches!(self.reboot, RebootWait::Expected | RebootWait::None) {
            progress::step(self.host.name(), "rebooting");
            self.reboot = RebootWait::Away(Instant::now());
        }
    }

    /// The error once the host has been rebooting for longer than `limit`.
    fn reboot_overdue(&self, limit: Duration) -> Option<String> {
        let RebootWait::Away(since) = self.reboot else { return None };
        (since.elapsed() >= limit).then(|| {
            let why = self.last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default();
            format!(
                "{}: did not come back within {}s of its reboot (--reboot-timeout){why}",
                self.host.name(),
                limit.as_secs()
            )
        })
    }

    fn may_confirm(&self) -> bool {
        !self.confirmed && !self.refused && self.gate.failure.is_none()
    }

    /// Runs the gate (once), then confirms if it passed; `Some` when the confirmation
    /// answer is already final.
    async fn gate_and_confirm(&mut self) -> Result<Option<Deployment>, (Step, String)> {
        if !self.gate.ran {
            self.gate = health::run(self.host, self.checks).await;
            if self.gate.failure.is_some() {
                health::reject(self.host, &self.gate).await;
                return Ok(None);
            }
        }
        progress::step(self.host.name(), "confirming over a new connection");
        match self.host.confirm(self.id).await {
            Ok(d) if d.state.is_final() => return Ok(Some(d)),
            Ok(_) => self.confirmed = true,
            // Keep trying while the agent's window lasts; if it rolls back, the error
            // says why the controller could not confirm.
            Err(e) if e.is_transport() => self.last_error = Some(e),
            Err(e) if e.status() == Some(409) => {
                self.refused = true;
                self.last_error = Some(e);
            }
            Err(e) => return Err((Step::Confirm, e.to_string())),
        }
        Ok(None)
    }

    fn end(&mut self, d: Deployment) -> (Deployment, Gate) {
        let gate = std::mem::take(&mut self.gate);
        let d = match (d.state, self.last_error.take()) {
            (DeploymentState::RolledBack, Some(e)) if !self.confirmed && gate.failure.is_none() => {
                with_confirm_error(d, &e)
            }
            _ => d,
        };
        (d, gate)
    }
}

/// The first wait between polls of a deployment.
const FIRST_POLL: Duration = Duration::from_millis(20);

fn with_confirm_error(mut d: Deployment, e: &HostError) -> Deployment {
    let agent = d.error.take().unwrap_or_else(|| "the agent rolled back".into());
    d.error = Some(format!("{agent}; the controller could not confirm: {e}"));
    d
}

#[cfg(test)]
#[path = "deploy_tests.rs"]
mod tests;
