//! Deployments: accepting a request, adding the profile generation, starting the
//! activation, following it to its result, and picking up after an agent restart.
//!
//! States (this issue): `queued` → `activating` → `confirmed`, or `awaiting-confirmation`
//! when the request asked for a confirmation window (`switch`/`test` with a non-zero
//! `confirm_timeout`) until `POST /v1/deployments/{id}/confirm`, or `failed`. The rollback
//! timer that turns an unconfirmed deployment into `rolled-back` is issue 4; until then an
//! unconfirmed deployment simply stays `awaiting-confirmation`.
//!
//! Invariants: at most one deployment is not final-or-awaiting at a time (a second one is a
//! 409); every state change is journaled before it is reported; a failed `switch` leaves
//! its profile generation in place, with `previous_toplevel` recorded for the rollback.

use std::sync::{Arc, Mutex, MutexGuard};

use hostctl_nix::profile::Profile;
use hostctl_nix::Nix;
use hostctl_schemas::api::deployments::{valid_id, ActivationOutcome, Deployment, DeploymentRequest, DeploymentState};
use hostctl_schemas::inventory::Mode;

use crate::activation::{log_tail, read_exit_file, ActivationHandle, ActivationSpec, ActivationStatus, ServiceManager};
use crate::error::ApiFailure;
use crate::host::StoreFs;
use crate::journal::{Journal, JournalError, Record};
use crate::unix_now;

/// How often a running activation is checked on.
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Owns the journal and runs deployments.
#[derive(Debug)]
pub struct Deployer {
    journal: Mutex<Journal>,
    nix: Arc<Nix>,
    profile: Profile,
    store_fs: StoreFs,
    services: Arc<dyn ServiceManager>,
}

impl From<JournalError> for ApiFailure {
    fn from(e: JournalError) -> Self {
        ApiFailure::internal(e.to_string())
    }
}

/// Whether a mode adds a profile generation (`test` and `dry-activate` do not).
fn creates_generation(mode: Mode) -> bool {
    matches!(mode, Mode::Switch | Mode::Boot)
}

/// Whether a successful activation waits for confirmation: only modes that change the
/// running system can cut the controller off, so only they need the dead man's switch.
fn awaits_confirmation(mode: Mode, confirm_timeout: hostctl_schemas::duration::Duration) -> bool {
    matches!(mode, Mode::Switch | Mode::Test) && confirm_timeout.as_millis() > 0
}

/// The state, finish time and error of a deployment whose activation exited with `code`.
fn finished_state(
    outcome: ActivationOutcome,
    code: i32,
    mode: Mode,
    confirm_timeout: hostctl_schemas::duration::Duration,
) -> (DeploymentState, Option<String>) {
    if outcome.succeeded() {
        let state = if awaits_confirmation(mode, confirm_timeout) {
            DeploymentState::AwaitingConfirmation
        } else {
            DeploymentState::Confirmed
        };
        return (state, None);
    }
    let why = match outcome {
        ActivationOutcome::CheckFailed => "checks or the bootloader installation failed",
        ActivationOutcome::ActivationFailed => "the activation script failed",
        ActivationOutcome::UnitsFailed => "some units failed to start",
        _ => "unexpected exit status",
    };
    (DeploymentState::Failed, Some(format!("switch-to-configuration {mode} exited with {code}: {why}")))
}

impl Deployer {
    pub fn new(
        journal: Journal,
        nix: Arc<Nix>,
        profile: Profile,
        store_fs: StoreFs,
        services: Arc<dyn ServiceManager>,
    ) -> Self {
        Self { journal: Mutex::new(journal), nix, profile, store_fs, services }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    fn journal(&self) -> MutexGuard<'_, Journal> {
        // A poisoned lock means a panic elsewhere mid-update; the journal on disk and in
        // memory only change together, so the data is still consistent.
        self.journal.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every record, oldest first (a snapshot).
    pub fn records(&self) -> Vec<Record> {
        self.journal().records().into_iter().cloned().collect()
    }

    /// A deployment as the API reports it; a running activation's log tail is read live.
    pub fn get(&self, id: &str) -> Option<Deployment> {
        let record = self.journal().get(id).cloned()?;
        let mut deployment = record.deployment;
        if deployment.state == DeploymentState::Activating {
            deployment.log_tail = log_tail(&self.journal().log_path(id));
        }
        Some(deployment)
    }

    /// Accepts a deployment request: checks it, journals it as `queued` and starts it in
    /// the background. A repeated request with the same id and content returns the
    /// existing deployment (a controller retrying after a lost response).
    pub async fn create(self: &Arc<Self>, request: DeploymentRequest) -> Result<Deployment, ApiFailure> {
        if !valid_id(&request.id) {
            return Err(ApiFailure::bad_request(format!(
                "id: `{}` is not a deployment id ([A-Za-z0-9._-], 1 to 128 characters)",
                request.id
            )));
        }
        if let Some(existing) = self.journal().get(&request.id) {
            return same_request(existing, &request)
                .then(|| existing.deployment.clone())
                .ok_or_else(|| ApiFailure::conflict(format!("deployment `{}` exists with other content", request.id)));
        }
        self.check_toplevel(&request).await?;
        let previous_toplevel = self
            .profile
            .current()
            .map_err(|e| ApiFailure::internal(format!("cannot read the profile {}: {e}", self.profile)))?
            .and_then(|(_, toplevel)| toplevel);
        let deployment = Deployment::queued(&request, previous_toplevel, unix_now());
        let record = {
            // Checked again under the same lock as the insert: requests race.
            let mut journal = self.journal();
            if let Some(busy) = journal.records().into_iter().find(|r| is_busy(r.deployment.state)) {
                return Err(ApiFailure::conflict(format!(
                    "deployment `{}` is {}; wait for it to finish",
                    busy.deployment.id,
                    state_name(busy.deployment.state)
                )));
            }
            if journal.get(&request.id).is_some() {
                return Err(ApiFailure::conflict(format!("deployment `{}` was just created", request.id)));
            }
            journal.insert(deployment, request.confirm_timeout)?
        };
        tracing::info!(id = %record.deployment.id, toplevel = %record.deployment.toplevel, mode = %record.deployment.mode, "deployment accepted");
        let this = Arc::clone(self);
        let id = record.deployment.id.clone();
        tokio::spawn(async move { this.run(id).await });
        Ok(record.deployment)
    }

    /// 400 unless the toplevel is in the store and has `bin/switch-to-configuration`.
    async fn check_toplevel(&self, request: &DeploymentRequest) -> Result<(), ApiFailure> {
        let toplevel = &request.toplevel;
        if !self.nix.invalid_paths(std::slice::from_ref(toplevel)).await?.is_empty() {
            return Err(ApiFailure::bad_request(format!(
                "toplevel: {toplevel} is not in this host's store; import its closure first"
            )));
        }
        let program = self.switch_program(toplevel);
        if !program.is_file() {
            return Err(ApiFailure::bad_request(format!(
                "toplevel: {toplevel} has no bin/switch-to-configuration; is it a NixOS system?"
            )));
        }
        Ok(())
    }

    fn switch_program(&self, toplevel: &hostctl_schemas::ids::StorePath) -> std::path::PathBuf {
        self.store_fs.real_path(toplevel).join("bin/switch-to-configuration")
    }

    /// Confirms a deployment awaiting confirmation (idempotent for a confirmed one).
    pub fn confirm(&self, id: &str) -> Result<Deployment, ApiFailure> {
        let mut journal = self.journal();
        let record = journal.get(id).ok_or_else(|| ApiFailure::not_found(format!("no deployment `{id}`")))?;
        match record.deployment.state {
            DeploymentState::Confirmed => Ok(record.deployment.clone()),
            DeploymentState::AwaitingConfirmation => {
                let record = journal.update(id, |r| {
                    r.deployment.state = DeploymentState::Confirmed;
                    r.deployment.finished = Some(unix_now());
                })?;
                tracing::info!(id, "deployment confirmed");
                Ok(record.deployment)
            }
            other => Err(ApiFailure::conflict(format!(
                "deployment `{id}` is {}; only a deployment awaiting confirmation can be confirmed",
                state_name(other)
            ))),
        }
    }

    /// Runs a queued deployment to its result; any error fails it.
    async fn run(self: Arc<Self>, id: String) {
        if let Err(message) = self.activate(&id).await {
            self.fail(&id, message);
        }
    }

    async fn activate(self: &Arc<Self>, id: &str) -> Result<(), String> {
        let record = self.journal().get(id).cloned().ok_or_else(|| format!("deployment `{id}` vanished"))?;
        let d = &record.deployment;
        let mut generation = None;
        if creates_generation(d.mode) {
            self.nix
                .set_profile(&self.profile, &d.toplevel)
                .await
                .map_err(|e| format!("cannot add a generation to the profile {}: {e}", self.profile))?;
            generation = self.profile.current_generation().map_err(|e| format!("cannot read {}: {e}", self.profile))?;
        }
        let (log, exit_file) = {
            let journal = self.journal();
            (journal.log_path(id), journal.exit_path(id))
        };
        let spec = ActivationSpec { program: self.switch_program(&d.toplevel), mode: d.mode, log, exit_file };
        // Journaled before the start: a crash right after the start still finds the exit
        // file (its path follows from the id), so the result is not lost.
        self.journal()
            .update(id, |r| {
                r.deployment.state = DeploymentState::Activating;
                r.deployment.generation = generation;
            })
            .map_err(|e| e.to_string())?;
        let handle = self.services.start(&spec).map_err(|e| e.to_string())?;
        tracing::info!(id, pid = handle.pid, mode = %d.mode, "activation started");
        self.journal().update(id, |r| r.activation = Some(handle.clone())).map_err(|e| e.to_string())?;
        self.watch(id, &handle).await
    }

    /// Polls the activation until it has a result, then records it.
    async fn watch(&self, id: &str, handle: &ActivationHandle) -> Result<(), String> {
        loop {
            match self.services.status(handle).map_err(|e| e.to_string())? {
                ActivationStatus::Running => tokio::time::sleep(POLL_INTERVAL).await,
                ActivationStatus::Finished(code) => return self.finish(id, code),
                ActivationStatus::Vanished => {
                    return Err("the activation process ended without an exit status".to_owned())
                }
            }
        }
    }

    fn finish(&self, id: &str, code: i32) -> Result<(), String> {
        let outcome = ActivationOutcome::from_exit_code(Some(code));
        let mut journal = self.journal();
        let tail = log_tail(&journal.log_path(id));
        let record = journal
            .update(id, |r| {
                let (state, error) = finished_state(outcome, code, r.deployment.mode, r.confirm_timeout);
                let d = &mut r.deployment;
                d.state = state;
                d.exit_code = Some(code);
                d.outcome = Some(outcome);
                d.error = error;
                d.log_tail = tail;
                d.finished = state.is_final().then(unix_now);
            })
            .map_err(|e| e.to_string())?;
        tracing::info!(id, code, state = state_name(record.deployment.state), "activation finished");
        Ok(())
    }

    fn fail(&self, id: &str, message: String) {
        tracing::error!(id, %message, "deployment failed");
        let mut journal = self.journal();
        let tail = log_tail(&journal.log_path(id));
        let result = journal.update(id, |r| {
            r.deployment.state = DeploymentState::Failed;
            r.deployment.error = Some(message);
            r.deployment.finished = Some(unix_now());
            r.deployment.log_tail = tail;
        });
        if let Err(e) = result {
            tracing::error!(id, error = %e, "cannot journal the failure");
        }
    }

    /// After a restart: finishes what the journal left open. An activation still running
    /// is followed again; one that ended while the agent was away is finished from its
    /// exit file; without one its result is unknown and the deployment failed (issue 4
    /// adds the rollback). Deployments awaiting confirmation keep waiting.
    pub fn recover(self: &Arc<Self>) {
        for record in self.records() {
            let id = record.deployment.id.clone();
            match record.deployment.state {
                DeploymentState::Queued => self.fail(&id, "the agent restarted before the activation started".into()),
                DeploymentState::Activating => self.recover_activating(record),
                _ => {}
            }
        }
    }

    fn recover_activating(self: &Arc<Self>, record: Record) {
        let id = record.deployment.id.clone();
        let exit_file = self.journal().exit_path(&id);
        let status = match &record.activation {
            Some(handle) => self.services.status(handle).map_err(|e| e.to_string()),
            None => read_exit_file(&exit_file)
                .map(|code| code.map_or(ActivationStatus::Vanished, ActivationStatus::Finished))
                .map_err(|e| e.to_string()),
        };
        let result = match (status, record.activation) {
            (Ok(ActivationStatus::Running), Some(handle)) => {
                tracing::info!(id, pid = handle.pid, "following an activation started before the restart");
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    if let Err(message) = this.watch(&id, &handle).await {
                        this.fail(&id, message);
                    }
                });
                return;
            }
            (Ok(ActivationStatus::Finished(code)), _) => self.finish(&id, code),
            (Ok(_), _) => Err("agent restarted; activation result unknown".to_owned()),
            (Err(e), _) => Err(format!("agent restarted; activation result unknown: {e}")),
        };
        if let Err(message) = result {
            self.fail(&id, message);
        }
    }
}

/// A state in which the agent will not start another deployment.
fn is_busy(state: DeploymentState) -> bool {
    matches!(state, DeploymentState::Queued | DeploymentState::Activating | DeploymentState::AwaitingConfirmation)
}

fn same_request(record: &Record, request: &DeploymentRequest) -> bool {
    let d = &record.deployment;
    d.toplevel == request.toplevel
        && d.rev == request.rev
        && d.lock == request.lock
        && d.mode == request.mode
        && record.confirm_timeout == request.confirm_timeout
}

/// The API name of a state (`awaiting-confirmation`).
pub fn state_name(state: DeploymentState) -> &'static str {
    match state {
        DeploymentState::Queued => "queued",
        DeploymentState::Activating => "activating",
        DeploymentState::AwaitingConfirmation => "awaiting-confirmation",
        DeploymentState::Confirmed => "confirmed",
        DeploymentState::Failed => "failed",
        DeploymentState::RolledBack => "rolled-back",
    }
}

#[cfg(test)]
#[path = "deploy_tests.rs"]
mod tests;
