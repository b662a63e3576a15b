//! Deployments: accepting a request, adding the profile generation, starting the
//! activation, health checks, the confirmation window, and what happens when any of it
//! fails (the rollback and `POST /v1/rollback` are in `rollback.rs`, restarts in
//! `recovery.rs`).
//!
//! [`Deployer`] orchestrates; it owns its collaborators: the [`Journal`] (records on
//! disk; every change a `transition.rs` transition or a data update), the
//! [`Activator`] (profile, store, service manager) and the [`Substituter`] (fetching
//! from caches). `rollback_target.rs` resolves `POST /v1/rollback` targets and
//! `running.rs` says what runs now, both from what the journal and the activator read.
//!
//! States: `queued` → `activating` (profile, activation, health checks; also while a
//! rollback re-activates the previous system) → `awaiting-confirmation` (switch/test with
//! a non-zero `confirm_timeout`) → `confirmed`; or `failed` / `rolled-back`.
//!
//! **Magic rollback, armed before the work.** Before `switch-to-configuration` can run,
//! one journal write records the activation handle and `armed` (the deployment needs a
//! confirmation), next to `previous_toplevel` (journaled when the request was accepted);
//! only then is the activation let go (`activation::Prepared::launch`). So no agent,
//! however it dies, can meet an activation it does not know it must watch. The confirmation deadline is
//! `confirm_deadline = (time the activation and health checks finished) +
//! confirm_timeout`, rounded up to the second and journaled in the same write that makes
//! the deployment `awaiting-confirmation`. A restarted agent resumes the wait until that
//! deadline (or rolls back at once if it passed); one that finds the activation finished
//! continues with the health checks and the wait; one that finds it lost, or finds health
//! checks that were cut short, rolls back. So an unconfirmed switch never stays in place
//! past its window, restarts included.
//!
//! `previous_toplevel` is the system that was *running* when the deployment was accepted
//! (`running.rs` says how that is known); a rollback re-activates exactly that, never
//! "generation - 1" and never a system that was only set for the next boot. Separately,
//! the journal keeps what the profile pointed at then (`previous_profile`): a failed or
//! rolled-back switch/boot deployment points the profile (and the boot entry) back there.
//!
//! **Activation time limit.** An activation (also a rollback's) that runs longer than the
//! agent's `activation_timeout` has its process group killed; the deployment is then
//! rolled back and ends `failed`, its error saying it timed out. A restarted agent that
//! follows an activation gives it the full limit again from the restart.
//!
//! **`failed` vs `rolled-back`** (either way the host ends on `previous_toplevel`, when
//! there is one):
//! - `failed`: the activation itself failed (exit status other than 0 and 100), or its
//!   result was lost; also every failure before the activation ran (the profile is then
//!   restored, the running system was never touched), and any deployment whose rollback
//!   was needed but impossible (no previous system) or itself failed. `error` says which.
//! - `rolled-back`: the activation succeeded but the deployment was not confirmed within
//!   its window, a health check failed, the agent restarted during the health checks, or
//!   `POST /v1/rollback` `"previous"` asked for it.
//!
//! Invariants: at most one deployment is not final at a time (another one is a 409);
//! every state change is journaled before it is reported, and each step that changes the
//! host is preceded by its journaled phase marker.

use std::sync::{Arc, Mutex, MutexGuard};

use hostctl_nix::profile::Profile;
use hostctl_nix::Nix;
use hostctl_schemas::api::deployments::{
    valid_id, ActivationOutcome, CommitSignature, Deployment, DeploymentRequest, DeploymentState, EndReason, Requester,
};
use hostctl_schemas::commits::UnsignedOverride;
use hostctl_schemas::duration::Duration;
use hostctl_schemas::ids::StorePath;
use hostctl_schemas::inventory::{HealthCheck, Mode};

use crate::activation::{log_tail, ActivationHandle, ActivationSpec, ActivationStatus, ServiceManager};
use crate::activator::Activator;
use crate::deploy_error::DeployError;
use crate::events::Events;
use crate::host::StoreFs;
use crate::journal::{Journal, Phase, Record};
use crate::orphan::ChildProcess;
use crate::substitute::Substituter;
use crate::transition::{Ending, Failure, Transition};
use crate::{health, unix_now, unix_now_ms};

/// What the agent's configuration adds to every deployment.
#[derive(Debug, Clone, Default)]
pub struct DeployerOptions {
    /// The agent's own `health` checks (command checks only), run before the request's.
    pub health: Vec<HealthCheck>,
    /// The confirmation window of a `POST /v1/rollback` that does not name one.
    pub confirm_timeout: Duration,
    /// How long one `switch-to-configuration` may run before it is killed; `None`: no
    /// limit.
    pub activation_timeout: Option<std::time::Duration>,
    /// The link naming the running system (`/run/current-system`); `None`: not read
    /// (tests), the journal and the profile tell.
    pub current_system: Option<std::path::PathBuf>,
    /// Binary caches a request may name to fetch its system from (`caches`; see
    /// `substitute.rs`).
    pub caches: Vec<hostctl_schemas::inventory::CacheUrl>,
    /// The keys paths fetched from those caches must be signed with (`trusted_keys`
    /// and `pull.trusted_public_keys`).
    pub cache_keys: Vec<hostctl_schemas::key::PublicKey>,
    /// The link naming the booted system (`/run/booted-system`), which `reboot.rs`
    /// compares new systems with; `None`: not compared (tests).
    pub booted_system: Option<std::path::PathBuf>,
    /// agent.yaml's `boot` (the boot loader, how to reboot, the boot id); `None`: a
    /// request asking for a reboot is refused (tests).
    pub boot: Option<hostctl_schemas::boot_config::BootConfig>,
    /// The program in place of `bootctl` (tests); `None`: `bootctl` on PATH.
    pub bootctl: Option<std::path::PathBuf>,
}

/// Owns the journal and its collaborators, and runs deployments.
#[derive(Debug)]
pub struct Deployer {
    journal: Mutex<Journal>,
    events: Events,
    pub(crate) activator: Activator,
    substituter: Substituter,
    pub(crate) options: DeployerOptions,
}

/// Whether a mode adds a profile generation (`test` and `dry-activate` do not).
pub(crate) fn creates_generation(mode: Mode) -> bool {
    matches!(mode, Mode::Switch | Mode::Boot)
}

/// Whether a mode changes the running system: only those can cut the controller off or
/// break services, so only they get health checks and the confirmation window.
fn changes_running_system(mode: Mode) -> bool {
    matches!(mode, Mode::Switch | Mode::Test)
}

/// Whether a successful activation waits for confirmation (the dead man's switch).
fn awaits_confirmation(mode: Mode, confirm_timeout: Duration) -> bool {
    changes_running_system(mode) && confirm_timeout.as_millis() > 0
}

/// Why an activation that exited with `code` failed, `None` if it succeeded.
fn failure_reason(mode: Mode, code: i32) -> Option<String> {
    let why = match ActivationOutcome::from_exit_code(Some(code)) {
        ActivationOutcome::Ok | ActivationOutcome::RebootRequired => return None,
        ActivationOutcome::CheckFailed => "checks or the bootloader installation failed",
        ActivationOutcome::ActivationFailed => "the activation script failed",
        ActivationOutcome::UnitsFailed => "some units failed to start",
        ActivationOutcome::Other => "unexpected exit status",
    };
    Some(format!("switch-to-configuration {mode} exited with {code}: {why}"))
}

/// The Unix second by which a window of `timeout` opened now closes (rounded up, so the
/// window is never shorter than asked).
fn deadline_after(timeout: Duration) -> u64 {
    let end_ms = u128::from(unix_now_ms()) + timeout.as_millis();
    u64::try_from(end_ms.div_ceil(1000)).unwrap_or(u64::MAX)
}

impl Deployer {
    pub fn new(
        journal: Journal,
        nix: Arc<Nix>,
        profile: Profile,
        store_fs: StoreFs,
        services: Arc<dyn ServiceManager>,
        options: DeployerOptions,
    ) -> Self {
        let events = Events::new();
        let mut journal = journal;
        journal.set_events(events.clone());
        let substituter = Substituter::new(Arc::clone(&nix), options.caches.clone(), options.cache_keys.clone());
        let activator = Activator::new(
            nix,
            profile,
            store_fs,
            services,
            options.activation_timeout,
            options.current_system.clone(),
        );
        Self { journal: Mutex::new(journal), events, activator, substituter, options }
    }

    /// Where every journaled change is announced (see [`crate::events`]).
    pub fn events(&self) -> &Events {
        &self.events
    }

    pub fn profile(&self) -> &Profile {
        self.activator.profile()
    }

    pub(crate) fn journal(&self) -> MutexGuard<'_, Journal> {
        // A poisoned lock means a panic elsewhere mid-update; the journal on disk and in
        // memory only change together, so the data is still consistent.
        self.journal.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every record, oldest first (a snapshot).
    pub fn records(&self) -> Vec<Record> {
        self.journal().records().into_iter().cloned().collect()
    }

    pub(crate) fn record(&self, id: &str) -> Result<Record, String> {
        self.journal().get(id).cloned().ok_or_else(|| format!("deployment `{id}` vanished from the journal"))
    }

    /// Moves a record on by `transition` (the error as text, for the background tasks).
    pub(crate) fn transition(&self, id: &str, transition: Transition) -> Result<Record, String> {
        self.journal().transition(id, transition).map_err(|e| e.to_string())
    }

    /// Changes a record's data in the journal (the error as text, for the background tasks).
    pub(crate) fn update(&self, id: &str, change: impl FnOnce(&mut Record)) -> Result<Record, String> {
        self.journal().update(id, change).map_err(|e| e.to_string())
    }

    /// A deployment as the API reports it; a running activation's log tail is read live.
    pub fn get(&self, id: &str) -> Option<Deployment> {
        let journal = self.journal();
        let record = journal.get(id)?;
        let mut deployment = record.deployment.clone();
        if record.phase == Phase::Activating {
            deployment.log_tail = log_tail(&journal.log_path(id));
        }
        Some(deployment)
    }

    /// Accepts a deployment request: checks it, journals it as `queued` and starts it in
    /// the background. A repeated request with the same id and content returns the
    /// existing deployment (a controller retrying after a lost response).
    pub async fn create(self: &Arc<Self>, request: DeploymentRequest) -> Result<Deployment, DeployError> {
        self.create_by(request, None).await
    }

    /// [`Deployer::create`], journaling who asked (`None`: the agent itself, pull mode).
    pub async fn create_by(
        self: &Arc<Self>,
        request: DeploymentRequest,
        by: Option<Requester>,
    ) -> Result<Deployment, DeployError> {
        check_id(&request.id)?;
        health::refuse_http("health", &request.health).map_err(DeployError::invalid)?;
        if let Some(existing) = self.journal().get(&request.id) {
            return same_request(existing, &request).then(|| existing.deployment.clone()).ok_or_else(|| {
                DeployError::conflict(format!("deployment `{}` exists with other content", request.id))
            });
        }
        self.check_reboot_request(&request)?;
        self.check_source(&request).await?;
        let (running, profile) = self.previous_systems()?;
        let mut deployment = Deployment::queued(&request, running, unix_now());
        if let Some(CommitSignature::AllowedUnsigned(why)) = &request.commit_signature {
            let key = by.as_ref().map_or("(local)", |r| r.key.as_str()).to_owned();
            deployment.unsigned_override = Some(UnsignedOverride { key, refusal: why.clone() });
        }
        deployment.requested_by = by;
        let mut record = Record::new(deployment, request.confirm_timeout);
        record.health = request.health;
        record.cache = request.cache;
        record.retention = request.retention;
        record.reboot = request.reboot;
        record.previous_profile = profile;
        self.accept(record)
    }

    /// What a new deployment returns to: the system running now (its
    /// `previous_toplevel`) and what the profile points at now (its `previous_profile`).
    pub(crate) fn previous_systems(&self) -> Result<(Option<StorePath>, Option<StorePath>), DeployError> {
        let running = crate::running::running_toplevel(&self.activator, &self.records())?;
        Ok((running, self.activator.profile_toplevel()?))
    }

    /// Journals a new deployment unless another one is open, and starts it.
    pub(crate) fn accept(self: &Arc<Self>, record: Record) -> Result<Deployment, DeployError> {
        let record = {
            // Checked under the same lock as the insert: requests race.
            let mut journal = self.journal();
            if let Some(busy) = journal.records().into_iter().find(|r| r.is_open()) {
                return Err(DeployError::conflict(format!(
                    "deployment `{}` is {}; wait for it to finish",
                    busy.deployment.id,
                    state_name(busy.deployment.state)
                )));
            }
            if journal.get(&record.deployment.id).is_some() {
                return Err(DeployError::conflict(format!("deployment `{}` was just created", record.deployment.id)));
            }
            journal.insert_record(record)?
        };
        let d = &record.deployment;
        tracing::info!(id = %d.id, toplevel = %d.toplevel, mode = %d.mode, rollback_of = ?d.rollback_of, "deployment accepted");
        let this = Arc::clone(self);
        let id = d.id.clone();
        tokio::spawn(async move { this.run(id).await });
        Ok(record.deployment)
    }

    /// Checks where the request's system comes from: without a cache it must be in the
    /// store already (400 otherwise); a cache must be one of `caches` (400), and then a
    /// missing toplevel is fetched once the deployment runs.
    async fn check_source(&self, request: &DeploymentRequest) -> Result<(), DeployError> {
        if let Some(cache) = &request.cache {
            self.substituter.check_listed(cache)?;
            if self.substituter.lacks(&request.toplevel).await? {
                return Ok(());
            }
        }
        self.activator.check_toplevel(&request.toplevel).await
    }

    /// Fetches the deployment's toplevel from its cache if the record names one and the
    /// store lacks it. `Err` is the deployment's error; nothing was changed but the store.
    async fn fetch_if_needed(&self, id: &str) -> Result<(), Failure> {
        let record = self.record(id).map_err(Failure::journal)?;
        let Some(cache) = record.cache else { return Ok(()) };
        let toplevel = record.deployment.toplevel;
        let program = self.activator.switch_program(&toplevel);
        let begin = || self.transition(id, Transition::Substitute).map(drop).map_err(Failure::journal);
        self.substituter.fetch_if_missing(id, &cache, &toplevel, &program, begin).await
    }

    /// `nix-env --set TOPLEVEL` for deployment `id`, journaling the `nix-env` process
    /// before waiting on it (see `orphan.rs`).
    pub(crate) async fn set_profile_journaled(&self, id: &str, toplevel: &StorePath) -> Result<(), String> {
        let mut journal_child = |child: ChildProcess| self.update(id, |r| r.nix_child = Some(child)).map(drop);
        self.activator.set_profile(toplevel, &mut journal_child).await
    }

    /// Confirms a deployment awaiting confirmation (idempotent for a confirmed one). A
    /// confirmation after the deadline is refused: the rollback timer owns it then.
    pub fn confirm(&self, id: &str) -> Result<Deployment, DeployError> {
        let mut journal = self.journal();
        let record = journal.get(id).ok_or_else(|| DeployError::not_found(format!("no deployment `{id}`")))?;
        match record.deployment.state {
            DeploymentState::Confirmed => Ok(record.deployment.clone()),
            DeploymentState::AwaitingConfirmation => {
                let deadline = record.deployment.confirm_deadline.unwrap_or(0);
                if u128::from(unix_now_ms()) >= u128::from(deadline) * 1000 {
                    return Err(DeployError::conflict(format!(
                        "the confirmation window of deployment `{id}` closed at {deadline} (Unix time); it is being rolled back"
                    )));
                }
                crate::pause::point("confirm:received");
                if record.deployment.reboot.is_some() {
                    // Under the journal lock, so the timer cannot roll it back meanwhile;
                    // if this fails, it stays unconfirmed (the window still rules).
                    self.set_new_default(&record.deployment.toplevel).map_err(DeployError::internal)?;
                }
                let record = journal.transition(id, Transition::Confirm)?;
                tracing::info!(id, "deployment confirmed");
                Ok(record.deployment)
            }
            other => Err(DeployError::conflict(format!(
                "deployment `{id}` is {}; only a deployment awaiting confirmation can be confirmed",
                state_name(other)
            ))),
        }
    }

    /// Runs a queued deployment to its result.
    async fn run(self: Arc<Self>, id: String) {
        if let Err(failure) = self.fetch_if_needed(&id).await {
            return self.fail_before_activation(&id, failure).await;
        }
        match self.activate(&id).await {
            Ok(handle) => {
                let status = self.activator.watch(&handle).await;
                self.after_activation(&id, status).await;
            }
            Err(failure) => self.fail_before_activation(&id, failure).await,
        }
    }

    /// Sets the profile (switch/boot) and starts the activation; `Err` means
    /// `switch-to-configuration` did not run.
    async fn activate(&self, id: &str) -> Result<ActivationHandle, Failure> {
        let record = self.record(id).map_err(Failure::journal)?;
        let d = &record.deployment;
        self.note_reboot(id).map_err(Failure::journal)?;
        let mut generation = None;
        if creates_generation(d.mode) {
            self.transition(id, Transition::SetProfile).map_err(Failure::journal)?;
            let profile_failed = |e: String| Failure::new(EndReason::ProfileFailed, e);
            crate::pause::point("profile:before-set");
            self.set_profile_journaled(id, &d.toplevel).await.map_err(|e| {
                profile_failed(format!("cannot add a generation to the profile {}: {e}", self.profile()))
            })?;
            crate::pause::point("profile:after-set");
            generation = self
                .profile()
                .current_generation()
                .map_err(|e| profile_failed(format!("cannot read {}: {e}", self.profile())))?;
        }
        self.transition(id, Transition::ProfileSet { generation }).map_err(Failure::journal)?;
        let (log, exit_file) = {
            let journal = self.journal();
            (journal.log_path(id), journal.exit_path(id))
        };
        let spec = ActivationSpec { program: self.activator.switch_program(&d.toplevel), mode: d.mode, log, exit_file };
        let prepared =
            self.activator.prepare(&spec).map_err(|e| Failure::new(EndReason::ActivationNotStarted, e.to_string()))?;
        // Armed and journaled before the activation may run (dropping `prepared` on an
        // error here cancels it): see the module documentation.
        let armed = awaits_confirmation(d.mode, record.confirm_timeout)
            || (record.reboot && record.confirm_timeout.as_millis() > 0);
        self.transition(id, Transition::Activate { handle: prepared.handle.clone(), armed })
            .map_err(Failure::journal)?;
        let handle = prepared.handle.clone();
        if let Err(e) = prepared.launch().await {
            // The wrapper is gone; `watch` reports it as cancelled or vanished.
            tracing::error!(id, error = %e, "cannot launch the activation");
        }
        tracing::info!(id, pid = handle.pid, mode = %d.mode, armed, "activation started");
        crate::pause::point("activation:launched");
        Ok(handle)
    }

    /// Continues from the activation's result (also after a restart).
    pub(crate) async fn after_activation(self: &Arc<Self>, id: &str, status: Result<ActivationStatus, Failure>) {
        let mode = match self.record(id) {
            Ok(r) => r.deployment.mode,
            Err(e) => return tracing::error!(id, error = %e, "cannot continue the deployment"),
        };
        crate::pause::point("activation:finished");
        let lost = |message: &str| Failure::new(EndReason::ActivationLost, message);
        let failure = match status {
            Ok(ActivationStatus::Finished(code)) => match self.record_exit(id, mode, code) {
                Ok(None) => return self.activated(id).await,
                Ok(Some(failure)) | Err(failure) => failure,
            },
            Ok(ActivationStatus::Cancelled) => {
                let why =
                    Failure::new(EndReason::ActivationCancelled, "the activation was cancelled before it started");
                return self.fail_before_activation(id, why).await;
            }
            Ok(ActivationStatus::Vanished) => lost("the activation process ended without an exit status"),
            Ok(ActivationStatus::Running) => lost("the activation is still running"),
            Err(failure) => failure,
        };
        self.roll_back(id, failure, DeploymentState::Failed).await;
    }

    /// Journals the exit status and output; returns why it failed, `None` for success.
    fn record_exit(&self, id: &str, mode: Mode, code: i32) -> Result<Option<Failure>, Failure> {
        let tail = log_tail(&self.journal().log_path(id));
        self.update(id, |r| {
            let d = &mut r.deployment;
            d.exit_code = Some(code);
            d.outcome = Some(ActivationOutcome::from_exit_code(Some(code)));
            d.log_tail = tail;
            if d.outcome == Some(ActivationOutcome::RebootRequired) {
                crate::reboot::note_activation_asked(d);
            }
        })
        .map_err(Failure::journal)?;
        tracing::info!(id, code, "activation finished");
        Ok(failure_reason(mode, code).map(|why| Failure::new(EndReason::ActivationFailed, why)))
    }

    /// After a successful activation: health checks, then the confirmation window.
    pub(crate) async fn activated(self: &Arc<Self>, id: &str) {
        if self.record(id).is_ok_and(|r| r.reboot && r.phase == crate::journal::Phase::Activating) {
            return self.boot_once(id).await;
        }
        let result = self.check_health(id).await;
        let next = result.and_then(|()| self.open_window(id).map_err(Failure::journal));
        match next {
            Ok(Some(deadline)) => self.arm_timer(id.to_owned(), deadline),
            Ok(None) => {}
            Err(failure) => self.roll_back(id, failure, DeploymentState::RolledBack).await,
        }
    }

    /// Runs the agent's and the request's health checks (switch/test only).
    async fn check_health(&self, id: &str) -> Result<(), Failure> {
        let record = self.record(id).map_err(Failure::journal)?;
        if !changes_running_system(record.deployment.mode) && !crate::boot_once::runs_new(&record) {
            return Ok(());
        }
        let checks: Vec<HealthCheck> = self.options.health.iter().chain(&record.health).cloned().collect();
        if checks.is_empty() {
            return Ok(());
        }
        self.transition(id, Transition::Check).map_err(Failure::journal)?;
        let output = self.journal().health_log_path(id);
        health::run_checks(&checks, &output).await.map_err(Failure::health)
    }

    /// Confirmed at once, or `awaiting-confirmation` until the returned deadline.
    fn open_window(&self, id: &str) -> Result<Option<u64>, String> {
        let deadline = deadline_after(self.record(id)?.confirm_timeout);
        let record = self.transition(id, Transition::Activated { deadline })?;
        let d = &record.deployment;
        tracing::info!(id, state = state_name(d.state), deadline = ?d.confirm_deadline, "deployment activated");
        Ok(d.confirm_deadline.filter(|_| record.armed))
    }

    /// Ends a deployment that never ran `switch-to-configuration`: the running system
    /// is untouched, and the profile goes back to the previous system if it changed.
    pub(crate) async fn fail_before_activation(&self, id: &str, failure: Failure) {
        let note = match self.restore_profile(id).await {
            Ok(note) => note,
            Err(e) => Some(e),
        };
        let Failure { reason, message, .. } = failure;
        let error = match note {
            Some(note) => format!("{message}; {note}"),
            None => message,
        };
        self.finish(id, Ending { state: DeploymentState::Failed, reason, error });
    }

    /// Points the profile at what it pointed at before (`previous_profile`) again if it
    /// points elsewhere now;
    /// returns what it did (or why it could not) for the deployment's error.
    async fn restore_profile(&self, id: &str) -> Result<Option<String>, String> {
        let record = self.record(id)?;
        if !creates_generation(record.deployment.mode) {
            return Ok(None);
        }
        let profile = self.profile();
        let current = profile.current().map_err(|e| format!("cannot read the profile {profile}: {e}"))?;
        if let Some((n, Some(t))) = &current {
            if *t == record.deployment.toplevel && record.deployment.generation.is_none() {
                // `nix-env --set` ran but the agent died before journaling the number:
                // record it so the history joins that generation with this deployment.
                self.update(id, |r| r.deployment.generation = Some(*n))?;
            }
        }
        let now = current.and_then(|(_, toplevel)| toplevel);
        let Some(previous) = record.profile_before().cloned() else {
            return Ok(now.map(|t| {
                format!("the profile still points at {t}: there was no previous system to restore (first deployment)")
            }));
        };
        if now.as_ref() == Some(&previous) {
            return Ok(None);
        }
        self.set_profile_journaled(id, &previous)
            .await
            .map(|()| Some(format!("the profile points at the previous system {previous} again")))
            .map_err(|e| format!("restoring the profile to {previous} failed: {e}"))
    }

    /// Makes a deployment final as `ending` says.
    pub(crate) fn finish(&self, id: &str, ending: Ending) {
        tracing::warn!(id, state = state_name(ending.state), reason = ?ending.reason, error = %ending.error, "deployment ended");
        if let Err(e) = self.transition(id, Transition::End(ending.clone())) {
            // Ended in memory anyway (written before the next deployment is accepted), or
            // the agent would stay stuck on it: see `Journal::close_unwritten`.
            tracing::error!(id, error = %e, "cannot journal the end of the deployment");
            let error =
                format!("{}; journaling this end failed too, it is written before the next deployment", ending.error);
            if let Err(e) = self.journal().close_unwritten(id, Transition::End(Ending { error, ..ending })) {
                tracing::error!(id, error = %e, "cannot end the deployment");
            }
        }
    }
}

/// 400 unless `id` is a deployment id.
pub(crate) fn check_id(id: &str) -> Result<(), DeployError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(DeployError::invalid(format!("id: `{id}` is not a deployment id ([A-Za-z0-9._-], 1 to 128 characters)")))
    }
}

fn same_request(record: &Record, request: &DeploymentRequest) -> bool {
    let d = &record.deployment;
    d.toplevel == request.toplevel
        && d.rev == request.rev
        && d.lock == request.lock
        && d.mode == request.mode
        && record.confirm_timeout == request.confirm_timeout
        && record.health == request.health
        && record.cache == request.cache
        && record.reboot == request.reboot
        && record.rollback_target.is_none()
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
        DeploymentState::Rebooting => "rebooting",
    }
}

#[cfg(test)]
#[path = "deploy_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "running_tests.rs"]
mod running_tests;

#[cfg(test)]
#[path = "boot_once_tests.rs"]
mod boot_once_tests;
