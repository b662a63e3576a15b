//! Rolling a deployment back: re-activating the exact `previous_toplevel` (the system
//! that was running when it was accepted) its journal record holds (never
//! "generation - 1", which may be a system nobody ran), and the confirmation timer that
//! triggers it.
//!
//! Steps, each journaled before it starts ([`RollbackStep`]): for `switch`/`boot`,
//! `nix-env -p PROFILE --set PREVIOUS_PROFILE` (what the profile pointed at before; a new
//! generation, skipped when the profile already points there), then the activations of
//! [`rollback_plan`]: `PREVIOUS/bin/switch-to-configuration <mode>`, or after an earlier
//! `boot` deployment (running system ≠ profile) `test` of the running system and `boot`
//! of the profile's. The activations are the same detached
//! [`crate::activation::ServiceManager`] ones, journaled with their index in the plan, so
//! a restarted agent follows or repeats the one it was at (re-activating is idempotent).
//! `RollbackRun::done` is journaled once all succeeded: the previous system runs again.
//!
//! The deployment stays `activating` while it is rolled back and then ends in the
//! [`RollbackRun::end_state`] decided when the rollback began (`failed` or `rolled-back`,
//! see `deploy.rs`), with `error` = the reason + what was done. A deployment with no
//! previous system (the host's first) cannot be rolled back: it ends `failed` and its
//! profile and running system are left as they are, which the error says.
//!
//! `POST /v1/rollback` ([`Deployer::rollback`]) is here too: "previous" while a
//! deployment awaits confirmation rolls that one back; otherwise it deploys the target
//! `rollback_target.rs` resolves, as a new deployment.

use std::sync::Arc;

use hostctl_schemas::api::deployments::{
    ActivationOutcome, Deployment, DeploymentRequest, DeploymentState, EndReason, HealthFailure, Requester,
};
use hostctl_schemas::api::rollback::{RollbackRequest, RollbackTarget};
use hostctl_schemas::ids::StorePath;
use hostctl_schemas::inventory::Mode;

use crate::activation::{ActivationSpec, ActivationStatus};
use crate::deploy::{check_id, creates_generation, state_name, Deployer};
use crate::deploy_error::DeployError;
use crate::journal::{Record, RollbackRun, RollbackStep};
use crate::rollback_target::{RollbackTargets, Target};
use crate::transition::{Ending, Failure, Transition};
use crate::{unix_now, unix_now_ms};

/// How many times the previous system's activation is started before giving up (it is
/// started again when it never ran, or vanished without an exit status).
const ACTIVATION_ATTEMPTS: u32 = 3;

impl Deployer {
    /// Rolls deployment `id` back now and waits for the rollback to finish.
    pub(crate) async fn roll_back(self: &Arc<Self>, id: &str, reason: Failure, end_state: DeploymentState) {
        if self.begin_rollback(id, reason, end_state, None) {
            self.run_rollback(id).await;
        }
    }

    /// Rolls back a deployment that is awaiting confirmation, at once (its timer ran out
    /// or `POST /v1/rollback` asked). `false` if it is no longer awaiting confirmation.
    pub(crate) fn roll_back_pending(self: &Arc<Self>, id: &str, reason: Failure) -> bool {
        let expect = Some(DeploymentState::AwaitingConfirmation);
        if !self.begin_rollback(id, reason, DeploymentState::RolledBack, expect) {
            return false;
        }
        let this = Arc::clone(self);
        let id = id.to_owned();
        tokio::spawn(async move { this.run_rollback(&id).await });
        true
    }

    /// Journals the decision to roll back (phase `rolling-back`, state `activating`) and
    /// returns `true`; or ends the deployment `failed` when there is nothing to return to.
    /// With `expect`, only from that state: the check and the change happen under one
    /// journal lock, so a confirmation and the timer cannot both win.
    fn begin_rollback(
        &self,
        id: &str,
        reason: Failure,
        end_state: DeploymentState,
        expect: Option<DeploymentState>,
    ) -> bool {
        let mut journal = self.journal();
        let Some(record) = journal.get(id) else { return false };
        if expect.is_some_and(|state| record.deployment.state != state) {
            return false;
        }
        let Failure { reason: end_reason, message: reason, health } = reason;
        if let Some(failure) = health {
            // Under the same lock as the state check above: only the deployment being
            // rolled back gets it.
            if let Err(e) = journal.update(id, |r| r.deployment.health_failure = Some(failure)) {
                tracing::error!(id, error = %e, "cannot journal the failed health check");
            }
        }
        let Some(record) = journal.get(id) else { return false };
        if let Err(why) = rollback_possible(record) {
            drop(journal);
            let error = format!("{reason}; {why}");
            self.finish(id, Ending { state: DeploymentState::Failed, reason: end_reason, error });
            return false;
        }
        tracing::warn!(id, %reason, end = state_name(end_state), "rolling back");
        let run = RollbackRun {
            reason,
            end_state,
            end_reason: Some(end_reason),
            step: RollbackStep::Decided,
            generation: None,
            activation: None,
            activation_index: 0,
            done: false,
        };
        let result = journal.transition(id, Transition::RollBack(run));
        if let Err(e) = &result {
            tracing::error!(id, error = %e, "cannot journal the rollback");
        }
        result.is_ok()
    }

    /// Carries out (or, after a restart, continues) the journaled rollback of `id`.
    pub(crate) async fn run_rollback(self: &Arc<Self>, id: &str) {
        let (state, reason, error) = match self.rollback_steps(id).await {
            Ok((run, done)) => {
                if let Err(e) = self.transition(id, Transition::RollbackDone) {
                    tracing::error!(id, error = %e, "cannot journal the end of the rollback");
                }
                (run.end_state, run.end_reason, format!("{}; {done}", run.reason))
            }
            Err((reason, end_reason, problem)) => (DeploymentState::Failed, end_reason, format!("{reason}; {problem}")),
        };
        // Rollbacks journaled by older agents do not say why (typed).
        let reason = reason.unwrap_or(EndReason::Other);
        self.finish(id, Ending { state, reason, error });
        self.reboot_after_rollback(id).await;
    }

    /// `Ok` with the rollback and what it did, or `Err((reason, typed reason, problem))`.
    async fn rollback_steps(&self, id: &str) -> Result<(RollbackRun, String), (String, Option<EndReason>, String)> {
        let interrupted =
            |problem: String| ("rollback interrupted".to_owned(), Some(EndReason::JournalWriteFailed), problem);
        let record = self.record(id).map_err(interrupted)?;
        let run = record.rollback.clone().ok_or_else(|| interrupted("no rollback journaled".into()))?;
        let fail = |problem: String| (run.reason.clone(), run.end_reason, problem);
        let plan = rollback_plan(&record);
        if plan.is_empty() {
            return Err(fail("no previous system".into()));
        }
        if matches!(run.step, RollbackStep::Decided | RollbackStep::SettingProfile) {
            self.rollback_profile(&record).await.map_err(fail)?;
        }
        let resume = if run.step == RollbackStep::Activating { run.activation_index } else { 0 };
        for (index, (toplevel, mode)) in plan.iter().enumerate().skip(resume) {
            let handle = run.activation.clone().filter(|_| run.step == RollbackStep::Activating && index == resume);
            self.rollback_activation(&record, index, handle).await.map_err(fail)?;
            tracing::info!(id, %toplevel, %mode, "rollback activation done");
        }
        Ok((run, describe_plan(&plan)))
    }

    /// Runs step `index` of the rollback plan to success (following `handle` if it was
    /// started before a restart), starting it again when it ended without an exit status.
    async fn rollback_activation(
        &self,
        record: &Record,
        index: usize,
        mut handle: Option<crate::activation::ActivationHandle>,
    ) -> Result<(), String> {
        let plan = rollback_plan(record);
        let (toplevel, mode) = plan.get(index).ok_or("the rollback plan changed")?;
        let id = &record.deployment.id;
        let mut started = 0;
        loop {
            let current = match handle.take() {
                Some(h) => h,
                None => {
                    started += 1;
                    self.start_rollback_activation(record, index).await?
                }
            };
            let watched = self.activator.watch(&current).await;
            let again = match watched.map_err(|e| format!("rolling back to {toplevel} failed too: {}", e.message))? {
                ActivationStatus::Finished(code) if ActivationOutcome::from_exit_code(Some(code)).succeeded() => {
                    return Ok(())
                }
                ActivationStatus::Finished(code) => {
                    return Err(format!(
                        "rolling back to {toplevel} failed too: its switch-to-configuration {mode} exited with {code}"
                    ))
                }
                // It never ran, or was killed mid-way: re-activating the previous system
                // is idempotent, so start it again.
                ActivationStatus::Cancelled | ActivationStatus::Vanished | ActivationStatus::Running => {
                    "its activation ended without an exit status"
                }
            };
            if started >= ACTIVATION_ATTEMPTS {
                return Err(format!("rolling back to {toplevel} failed too: {again}"));
            }
            tracing::warn!(id, %toplevel, "{again}; starting it again");
        }
    }

    /// `nix-env --set` back to what the profile pointed at before (switch/boot), unless
    /// the profile already points there.
    async fn rollback_profile(&self, record: &Record) -> Result<(), String> {
        let id = &record.deployment.id;
        let mut generation = None;
        if let Some(previous) = record.profile_before().filter(|_| creates_generation(record.deployment.mode)) {
            set_step(self, id, RollbackStep::SettingProfile, None)?;
            let profile = self.profile();
            let now = profile.current().map_err(|e| format!("cannot read the profile {profile}: {e}"))?;
            if now.as_ref().and_then(|(_, t)| t.as_ref()) != Some(previous) {
                self.set_profile_journaled(id, previous)
                    .await
                    .map_err(|e| format!("rolling back the profile to {previous} failed: {e}"))?;
            }
            generation = profile.current_generation().map_err(|e| format!("cannot read {profile}: {e}"))?;
        }
        set_step(self, id, RollbackStep::ProfileSet, generation)
    }

    /// Prepares step `index` of the plan, journals its handle, launches it.
    async fn start_rollback_activation(
        &self,
        record: &Record,
        index: usize,
    ) -> Result<crate::activation::ActivationHandle, String> {
        let id = &record.deployment.id;
        let plan = rollback_plan(record);
        let (toplevel, mode) = plan.get(index).ok_or("no previous system")?;
        let (log, exit_file) = {
            let journal = self.journal();
            (journal.rollback_log_path(id), journal.rollback_exit_path(id))
        };
        let spec = ActivationSpec { program: self.activator.switch_program(toplevel), mode: *mode, log, exit_file };
        let prepared = self.activator.prepare(&spec).map_err(|e| format!("cannot re-activate {toplevel}: {e}"))?;
        self.transition(id, Transition::RollbackActivation { handle: prepared.handle.clone(), index })?;
        let handle = prepared.handle.clone();
        if let Err(e) = prepared.launch().await {
            tracing::error!(id, error = %e, "cannot launch the rollback activation");
        }
        tracing::info!(id, pid = handle.pid, %toplevel, %mode, "rollback activation started");
        Ok(handle)
    }

    /// Rolls deployment `id` back when its window closes at `deadline` (Unix seconds)
    /// unless it was confirmed (or rolled back on request) before.
    pub(crate) fn arm_timer(self: &Arc<Self>, id: String, deadline: u64) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let wait_ms = (u128::from(deadline) * 1000).saturating_sub(u128::from(unix_now_ms()));
            tokio::time::sleep(std::time::Duration::from_millis(u64::try_from(wait_ms).unwrap_or(u64::MAX))).await;
            let reason = match this.record(&id) {
                Ok(r) => Failure::new(EndReason::NotConfirmed, format!("not confirmed within {}", r.confirm_timeout)),
                Err(_) => return,
            };
            if this.roll_back_pending(&id, reason) {
                tracing::warn!(id, "confirmation window closed without a confirmation");
            }
        });
    }
}

/// `POST /v1/rollback`: deploying an earlier system (`rollback_target.rs` resolves which).
impl Deployer {
    /// Handles `POST /v1/rollback`: 202 with the rollback's deployment (or with the
    /// pending deployment that is now being rolled back).
    pub async fn rollback(self: &Arc<Self>, request: RollbackRequest) -> Result<Deployment, DeployError> {
        self.rollback_by(request, None).await
    }

    /// [`Deployer::rollback`], journaling who asked in the rollback's deployment.
    pub async fn rollback_by(
        self: &Arc<Self>,
        request: RollbackRequest,
        by: Option<Requester>,
    ) -> Result<Deployment, DeployError> {
        if let Some(id) = &request.id {
            check_id(id)?;
            if let Some(existing) = self.journal().get(id) {
                return match &existing.rollback_target {
                    Some(target) if *target == request.to => Ok(existing.deployment.clone()),
                    _ => Err(DeployError::conflict(format!("deployment `{id}` exists with other content"))),
                };
            }
        }
        let records = self.records();
        if let Some(open) = records.iter().find(|r| r.is_open()) {
            return self.rollback_open(open, &request.to, request.health_failure.as_ref());
        }
        let targets = RollbackTargets::new(&self.activator);
        let target = targets.resolve(&records, &request.to)?;
        targets.check_still_valid(&target).await?;
        let mut record = self.rollback_record(&records, &request, target)?;
        record.deployment.requested_by = by;
        self.accept(record)
    }

    /// A rollback request while a deployment is open.
    fn rollback_open(
        self: &Arc<Self>,
        open: &Record,
        to: &RollbackTarget,
        health_failure: Option<&HealthFailure>,
    ) -> Result<Deployment, DeployError> {
        let id = &open.deployment.id;
        let state = open.deployment.state;
        if state == DeploymentState::AwaitingConfirmation && matches!(to, RollbackTarget::Previous(_)) {
            let reason = match health_failure {
                Some(failure) => Failure::health(failure.clone()),
                None => Failure::new(EndReason::RollbackRequested, "rolled back on request"),
            };
            if self.roll_back_pending(id, reason) {
                return self.get(id).ok_or_else(|| DeployError::internal(format!("deployment `{id}` vanished")));
            }
            return Err(DeployError::conflict(format!("deployment `{id}` just left awaiting-confirmation; ask again")));
        }
        let hint = if state == DeploymentState::AwaitingConfirmation {
            "; roll it back with \"previous\" or confirm it first"
        } else {
            "; wait for it to finish"
        };
        Err(DeployError::conflict(format!("deployment `{id}` is {}{hint}", state_name(state))))
    }

    /// The journal record of the rollback deployment: mode switch, the target's identity,
    /// the request's (or the agent's) window, the newest deployment's health checks.
    fn rollback_record(
        &self,
        records: &[Record],
        request: &RollbackRequest,
        target: Target,
    ) -> Result<Record, DeployError> {
        let id = match &request.id {
            Some(id) => id.clone(),
            None => format!("rollback-{}-{}", unix_now(), self.journal().next_seq()),
        };
        let confirm_timeout = request.confirm_timeout.unwrap_or(self.options.confirm_timeout);
        let deployment_request = DeploymentRequest {
            id,
            toplevel: target.toplevel,
            rev: target.rev,
            lock: target.lock,
            mode: Mode::Switch,
            confirm_timeout,
            health: Vec::new(),
            cache: None,
            commit_signature: None,
            retention: None,
            reboot: false,
        };
        let (running, profile) = self.previous_systems()?;
        let mut deployment = Deployment::queued(&deployment_request, running, unix_now());
        deployment.rollback_of = Some(target.description);
        let mut record = Record::new(deployment, confirm_timeout);
        record.previous_profile = profile;
        // The inventory's command checks for this host came with its latest deployment.
        record.health = records.last().map(|r| r.health.clone()).unwrap_or_default();
        record.rollback_target = Some(request.to.clone());
        Ok(record)
    }
}

/// The activations that bring back what ran (and what was set to boot) before the
/// deployment, in order:
/// - `test`: the running system, `test`;
/// - `boot`: what the profile pointed at, `boot`;
/// - `switch`: the running system, `switch`, if the profile pointed at it too (the
///   usual case); after an earlier `boot` deployment it did not: then the running system
///   with `test` (so the boot-only system is never switched to), and the profile's
///   system with `boot` (so the boot entry is what it was).
pub(crate) fn rollback_plan(record: &Record) -> Vec<(StorePath, Mode)> {
    let running = record.deployment.previous_toplevel.clone();
    let profile = record.profile_before().cloned();
    match (record.deployment.mode, running, profile) {
        (Mode::DryActivate, _, _) => Vec::new(),
        (Mode::Test, running, _) => running.map(|r| (r, Mode::Test)).into_iter().collect(),
        (Mode::Boot, _, profile) => profile.map(|p| (p, Mode::Boot)).into_iter().collect(),
        (Mode::Switch, Some(r), Some(p)) if r != p => vec![(r, Mode::Test), (p, Mode::Boot)],
        (Mode::Switch, running, _) => running.map(|r| (r, Mode::Switch)).into_iter().collect(),
    }
}

/// What a rollback that ran `plan` did, for the deployment's error.
fn describe_plan(plan: &[(StorePath, Mode)]) -> String {
    match plan {
        [(running, _), (boot, Mode::Boot)] => {
            format!("re-activated the previous system {running} (test) and the boot entry of {boot}")
        }
        [(toplevel, _), ..] => format!("re-activated the previous system {toplevel}"),
        [] => "nothing to re-activate".to_owned(),
    }
}

/// Whether `record` can be rolled back; `Err` says why not (for its error).
fn rollback_possible(record: &Record) -> Result<(), String> {
    if record.deployment.mode == Mode::DryActivate {
        return Err("dry-activate changed nothing, so there is nothing to roll back".into());
    }
    if rollback_plan(record).is_empty() {
        return Err("nothing to roll back to: no system was active before this deployment (the host's first), \
                    so the profile and the running system were left as they are"
            .into());
    }
    Ok(())
}

fn set_step(deployer: &Deployer, id: &str, step: RollbackStep, generation: Option<u64>) -> Result<(), String> {
    deployer.transition(id, Transition::RollbackStep { step, generation }).map(|_| ())
}
