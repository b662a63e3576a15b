//! One host's deployment: status -> (unchanged?) -> push the closure -> start the
//! deployment -> wait for it, confirming over a new connection when the agent asks.
//! Generic over [`Host`] and [`LocalStore`]; the outcome names the step that failed.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hostctl_schemas::api::deployments::{Deployment, DeploymentRequest, DeploymentState};
use hostctl_schemas::ids::{HostName, LockId, StorePath};
use hostctl_schemas::inventory::Mode;

use crate::client::random_hex;
use crate::host::{Host, HostError};
use crate::progress;
use crate::push::{push_closure, PushError, PushStats};
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
    /// Wall time this host took in its batch (status to final state), in seconds.
    pub seconds: f64,
}

impl Outcome {
    pub fn failed(step: Step, error: impl Into<String>) -> Self {
        Self::new(HostResult::Failed).with_error(step, error)
    }

    fn new(result: HostResult) -> Self {
        Self {
            result,
            step: None,
            error: None,
            previous_toplevel: None,
            pushed: PushStats::default(),
            deployment: None,
            generation: None,
            log_tail: None,
            seconds: 0.0,
        }
    }

    fn with_error(mut self, step: Step, error: impl Into<String>) -> Self {
        self.step = Some(step);
        self.error = Some(error.into());
        self
    }
}

/// `<host>-<unix time>-<8 hex digits>`: unique per request, readable in logs.
pub fn deployment_id(host: &HostName) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{host}-{now}-{}", random_hex::<4>())
}

/// Whether a host already running `toplevel` needs nothing: `switch` and `boot` would
/// only re-add what is there; `test` and `dry-activate` are asked for explicitly.
pub fn is_unchanged(mode: Mode, current: Option<&str>, toplevel: &StorePath) -> bool {
    matches!(mode, Mode::Switch | Mode::Boot) && current == Some(toplevel.as_str())
}

/// Deploys `toplevel` to `host`. Never returns early without an outcome: every failure
/// becomes a `failed` (or `rolled-back`) outcome naming its step.
pub async fn deploy_host<H: Host, S: crate::push::LocalStore>(
    host: &H,
    store: &S,
    toplevel: &StorePath,
    settings: &DeploySettings,
) -> Outcome {
    let name = host.name();
    progress::step(name, "connecting");
    let status = match host.status().await {
        Ok(status) => status,
        Err(e) => return Outcome::failed(Step::Connect, e.to_string()),
    };
    let previous = status.toplevel.clone();
    if is_unchanged(settings.mode, previous.as_deref(), toplevel) {
        let mut outcome = Outcome::new(HostResult::Unchanged);
        outcome.previous_toplevel = previous;
        outcome.generation = status.generation;
        outcome.deployment = status.deployment;
        return outcome;
    }
    let mut outcome = match push_closure(host, store, toplevel).await {
        Ok(pushed) => Outcome { pushed, ..Outcome::new(HostResult::Activated) },
        Err(PushError::Host(e)) => Outcome::failed(Step::Push, e.to_string()),
        Err(PushError::Local(e)) => Outcome::failed(Step::Push, format!("{name}: {e}")),
    };
    outcome.previous_toplevel = previous;
    if outcome.result == HostResult::Failed {
        return outcome;
    }
    let request = DeploymentRequest {
        id: deployment_id(name),
        toplevel: toplevel.clone(),
        rev: settings.rev.clone(),
        lock: settings.lock.clone(),
        mode: settings.mode,
        confirm_timeout: settings.confirm_timeout,
        health: Vec::new(),
    };
    outcome.deployment = Some(request.id.clone());
    progress::step(name, format!("activating ({}, deployment {})", settings.mode, request.id));
    if let Err(e) = host.deploy(&request).await {
        return outcome.with_error(Step::Deploy, e.to_string()).into_failed();
    }
    match wait(host, &request.id, settings).await {
        Ok(deployment) => finish(name, outcome, deployment),
        Err((step, e)) => outcome.with_error(step, e).into_failed(),
    }
}

impl Outcome {
    fn into_failed(mut self) -> Self {
        self.result = HostResult::Failed;
        self
    }
}

/// Maps the deployment's final state onto the host's result. Errors start with the
/// host and say what failed, then the agent's own words.
fn finish(host: &HostName, mut outcome: Outcome, d: Deployment) -> Outcome {
    outcome.generation = d.generation;
    let log_tail = (!d.log_tail.trim().is_empty()).then(|| d.log_tail.clone());
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
            outcome = outcome.with_error(Step::Confirm, format!("{host}: rolled back: {why}"));
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

/// Polls the deployment until it is final, confirming it when the agent waits for
/// that. Unreachability while polling is expected (a switch may restart the agent or
/// its network) and retried until the time limit.
async fn wait<H: Host>(host: &H, id: &str, settings: &DeploySettings) -> Result<Deployment, (Step, String)> {
    let deadline = Instant::now() + settings.wait_limit;
    let mut confirmed = false;
    let mut last_error: Option<HostError> = None;
    // Activations often finish within tens of milliseconds: poll soon, then back off to
    // `poll_interval` so a long activation costs few requests.
    let mut delay = FIRST_POLL.min(settings.poll_interval);
    loop {
        match host.deployment(id).await {
            Ok(d) if d.state.is_final() => {
                return Ok(match (d.state, last_error) {
                    (DeploymentState::RolledBack, Some(e)) if !confirmed => with_confirm_error(d, &e),
                    (_, _) => d,
                });
            }
            Ok(d) if d.state == DeploymentState::AwaitingConfirmation && !confirmed => {
                progress::step(host.name(), "confirming over a new connection");
                match host.confirm(id).await {
                    Ok(d) if d.state.is_final() => return Ok(d),
                    Ok(_) => confirmed = true,
                    // Keep trying while the agent's window lasts; if it rolls back, the
                    // error says why the controller could not confirm.
                    Err(e) if e.is_transport() => last_error = Some(e),
                    Err(e) => return Err((Step::Confirm, e.to_string())),
                }
            }
            Ok(_) => {}
            Err(e) if e.is_transport() => last_error = Some(e),
            Err(e) => return Err((Step::Wait, e.to_string())),
        }
        if Instant::now() >= deadline {
            let why = last_error.map(|e| format!("; last error: {e}")).unwrap_or_default();
            let limit = settings.wait_limit.as_secs();
            return Err((Step::Wait, format!("{}: deployment {id} not finished after {limit}s{why}", host.name())));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(settings.poll_interval);
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
mod tests {
    use super::*;
    use crate::host::fake::{FakeHost, Script};
    use crate::push::tests_support::FakeStore;
    use hostctl_schemas::api::deployments::{valid_id, ActivationOutcome};

    fn settings() -> DeploySettings {
        let mut s = DeploySettings::new(Mode::Switch, hostctl_schemas::duration::Duration::from_secs(30));
        s.poll_interval = Duration::from_millis(1);
        s
    }

    #[test]
    fn deployment_ids_are_valid_and_unique() {
        let host: HostName = "web-1".parse().unwrap();
        let a = deployment_id(&host);
        let b = deployment_id(&host);
        assert!(valid_id(&a), "{a}");
        assert_ne!(a, b);
        let parts: Vec<&str> = a.rsplitn(3, '-').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2], "web-1");
        assert!(parts[1].parse::<u64>().unwrap() > 1_600_000_000);
        assert!(parts[0].len() == 8 && parts[0].bytes().all(|b| b.is_ascii_hexdigit()), "{a}");
    }

    #[test]
    fn unchanged_only_for_switch_and_boot() {
        let t = FakeStore::toplevel();
        assert!(is_unchanged(Mode::Switch, Some(t.as_str()), &t));
        assert!(is_unchanged(Mode::Boot, Some(t.as_str()), &t));
        assert!(!is_unchanged(Mode::Test, Some(t.as_str()), &t));
        assert!(!is_unchanged(Mode::DryActivate, Some(t.as_str()), &t));
        assert!(!is_unchanged(Mode::Switch, None, &t));
    }

    // These drive the flow with the fake transport (`host::fake`) and a fake store; the
    // HTTP client against a real agent is covered by the end-to-end tests.

    #[tokio::test]
    async fn activates_with_confirmation_over_the_fake_transport() {
        let store = FakeStore;
        let script = Script { lacks: store.closure_paths(), needs_confirmation: true, ..Script::default() };
        let host = FakeHost::new("web1", script);
        let outcome = deploy_host(&host, &store, &FakeStore::toplevel(), &settings()).await;
        assert_eq!(outcome.result, HostResult::Activated, "{outcome:?}");
        assert_eq!(outcome.pushed.paths, 2);
        assert_eq!(outcome.pushed.nar_bytes, 300);
        assert_eq!(outcome.generation, Some(2));
        let calls = host.calls();
        assert_eq!(&calls[..4], ["status", "missing", "import", "deploy"]);
        assert!(calls.contains(&"confirm".to_owned()), "{calls:?}");
    }

    fn final_deployment(state: DeploymentState, outcome: Option<ActivationOutcome>) -> Deployment {
        let request = DeploymentRequest {
            id: "web1-1-00000000".into(),
            toplevel: FakeStore::toplevel(),
            rev: None,
            lock: None,
            mode: Mode::Switch,
            confirm_timeout: hostctl_schemas::duration::Duration::from_secs(0),
            health: Vec::new(),
        };
        Deployment {
            state,
            generation: Some(3),
            outcome,
            finished: Some(1),
            log_tail: "last line\n".into(),
            ..Deployment::queued(&request, None, 0)
        }
    }

    #[test]
    fn final_states_map_to_results() {
        let host: HostName = "web1".parse().unwrap();
        let end = |state, outcome| finish(&host, Outcome::new(HostResult::Activated), final_deployment(state, outcome));
        let o = end(DeploymentState::Confirmed, Some(ActivationOutcome::Ok));
        assert_eq!((o.result, o.step, o.generation), (HostResult::Activated, None, Some(3)));
        let o = end(DeploymentState::RolledBack, Some(ActivationOutcome::Ok));
        assert_eq!((o.result, o.step), (HostResult::RolledBack, Some(Step::Confirm)));
        assert_eq!(o.error.as_deref(), Some("web1: rolled back: the deployment was not confirmed in time"));
        let o = end(DeploymentState::RolledBack, Some(ActivationOutcome::UnitsFailed));
        assert_eq!((o.result, o.step), (HostResult::Failed, Some(Step::Activate)));
        assert!(o.error.unwrap().ends_with("(the previous system was restored)"));
        let o = end(DeploymentState::Failed, Some(ActivationOutcome::UnitsFailed));
        assert_eq!((o.result, o.step), (HostResult::Failed, Some(Step::Activate)));
        assert_eq!(o.error.as_deref(), Some("web1: activation failed (units-failed)"));
        assert_eq!(o.log_tail.as_deref(), Some("last line\n"));
        let mut d = final_deployment(DeploymentState::Failed, Some(ActivationOutcome::UnitsFailed));
        d.exit_code = Some(4);
        let o = finish(&host, Outcome::new(HostResult::Activated), d.clone());
        assert_eq!(
            o.error.as_deref(),
            Some("web1: activation failed: switch-to-configuration exited with 4 (units-failed)")
        );
        d.error = Some("foo.service failed".into());
        let o = finish(&host, Outcome::new(HostResult::Activated), d);
        assert_eq!(o.error.as_deref(), Some("web1: activation failed: foo.service failed"));
    }

    #[tokio::test]
    async fn unchanged_host_gets_no_transfer_and_no_deployment() {
        let script = Script { current: Some(FakeStore::toplevel()), ..Script::default() };
        let host = FakeHost::new("web1", script);
        let outcome = deploy_host(&host, &FakeStore, &FakeStore::toplevel(), &settings()).await;
        assert_eq!(outcome.result, HostResult::Unchanged);
        assert_eq!(host.calls(), ["status"]);
    }

    #[tokio::test]
    async fn failures_name_their_step() {
        let host = FakeHost::new("web1", Script { unreachable: true, ..Script::default() });
        let outcome = deploy_host(&host, &FakeStore, &FakeStore::toplevel(), &settings()).await;
        assert_eq!((outcome.result, outcome.step), (HostResult::Failed, Some(Step::Connect)));
        assert!(outcome.error.unwrap().contains("connection refused"));

        let fails = Some(("switch-to-configuration exited with 4".to_owned(), "unit foo.service failed".to_owned()));
        let host = FakeHost::new("web2", Script { activation_fails: fails, ..Script::default() });
        let outcome = deploy_host(&host, &FakeStore, &FakeStore::toplevel(), &settings()).await;
        assert_eq!((outcome.result, outcome.step), (HostResult::Failed, Some(Step::Activate)));
        assert_eq!(outcome.error.as_deref(), Some("web2: activation failed: switch-to-configuration exited with 4"));
        assert_eq!(outcome.log_tail.as_deref(), Some("unit foo.service failed"));
        assert!(outcome.deployment.is_some_and(|id| id.starts_with("web2-")));
    }
}
