//! The deployment state machine: every change of a record's [`Phase`], its API state and
//! `armed` is one [`Transition`] applied by [`Record::apply`], which refuses a transition
//! the record's phase does not allow.
//!
//! The API state is derived from the phase ([`Phase::open_state`]) while the deployment
//! is open; only the end ([`Transition::Activated`] without a window,
//! [`Transition::Confirm`], [`Transition::End`]) chooses the final state. The rest of a
//! record (exit code, log tail, the `nix-env` child, ...) is data, changed by
//! `Journal::update`, never by hand-setting phase, state or `armed`.
//!
//! | transition | from | to |
//! | --- | --- | --- |
//! | `Substitute` | accepted | substituting |
//! | `SetProfile` | accepted, substituting | setting-profile |
//! | `ProfileSet` | accepted, substituting, setting-profile | profile-set |
//! | `Activate` | profile-set | activating (`armed` set) |
//! | `Check` | activating | checking |
//! | `Reboot` | activating | rebooting (a `reboot` deployment after its `boot` activation) |
//! | `Activated` | activating, checking, rebooting | awaiting-confirmation if armed, else done (`confirmed`) |
//! | `Confirm` | awaiting-confirmation | done (`confirmed`) |
//! | `RollBack` | activating, checking, awaiting-confirmation, rebooting | rolling-back |
//! | `RollbackStep`, `RollbackActivation`, `RollbackDone` | rolling-back | rolling-back |
//! | `End` | any open record | done (`failed` / `rolled-back`) |

use hostctl_schemas::api::deployments::{DeploymentState, EndReason, HealthFailure};

use crate::activation::ActivationHandle;
use crate::journal::{Phase, Record, RollbackRun, RollbackStep};
use crate::unix_now;

/// One step of a deployment's life; see the module documentation for where each is legal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Fetching the toplevel's closure from the request's cache starts.
    Substitute,
    /// `nix-env --set TOPLEVEL` is about to run.
    SetProfile,
    /// The profile has the new generation (`None` for modes that add none).
    ProfileSet { generation: Option<u64> },
    /// The activation exists (not yet launched): its handle, and whether it needs a
    /// confirmation (the dead man's switch), in one write.
    Activate { handle: ActivationHandle, armed: bool },
    /// The loader boots the new system once and the reboot is asked for next.
    Reboot(hostctl_schemas::api::deployments::RebootProgress),
    /// The health checks start.
    Check,
    /// The activation and the checks succeeded: the window opens until `deadline` (Unix
    /// seconds) if the deployment is armed, else it is confirmed at once.
    Activated { deadline: u64 },
    /// `POST /v1/deployments/{id}/confirm` within the window.
    Confirm,
    /// The rollback is decided.
    RollBack(RollbackRun),
    /// The rollback reached `step` (and the profile generation it made, if any).
    RollbackStep { step: RollbackStep, generation: Option<u64> },
    /// The handle of step `index` of the rollback's plan is journaled.
    RollbackActivation { handle: ActivationHandle, index: usize },
    /// Every activation of the rollback succeeded.
    RollbackDone,
    /// The deployment ends `failed` or `rolled-back`.
    End(Ending),
}

/// How a deployment ends badly: its final state, why (typed), and its error in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub state: DeploymentState,
    pub reason: EndReason,
    pub error: String,
}

/// Why a step failed: the typed reason and the words for the deployment's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: EndReason,
    pub message: String,
    /// The health check that failed (for [`EndReason::HealthCheckFailed`]): kept in the
    /// deployment's `health_failure`.
    pub health: Option<HealthFailure>,
}

impl Failure {
    pub fn new(reason: EndReason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into(), health: None }
    }

    /// A health check failed (the agent's, or the controller's named in a rollback request).
    pub fn health(failure: HealthFailure) -> Self {
        Self {
            reason: EndReason::HealthCheckFailed,
            message: crate::health::failure_message(&failure),
            health: Some(failure),
        }
    }

    /// The journal could not be read or written.
    pub fn journal(message: String) -> Self {
        Self::new(EndReason::JournalWriteFailed, message)
    }
}

/// A transition the record's phase does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("deployment `{id}` cannot go from {from:?} (state {state:?}) by {transition}")]
pub struct IllegalTransition {
    pub id: String,
    pub from: Phase,
    pub state: DeploymentState,
    pub transition: &'static str,
}

impl Transition {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Substitute => "substitute",
            Self::SetProfile => "set-profile",
            Self::ProfileSet { .. } => "profile-set",
            Self::Activate { .. } => "activate",
            Self::Reboot(_) => "reboot",
            Self::Check => "check",
            Self::Activated { .. } => "activated",
            Self::Confirm => "confirm",
            Self::RollBack(_) => "roll-back",
            Self::RollbackStep { .. } => "rollback-step",
            Self::RollbackActivation { .. } => "rollback-activation",
            Self::RollbackDone => "rollback-done",
            Self::End(_) => "end",
        }
    }

    /// Whether a record at `phase` (open or not) may take this transition.
    fn allowed_from(&self, phase: Phase, open: bool) -> bool {
        use Phase::*;
        if !open {
            return false;
        }
        match self {
            Self::Substitute => phase == Accepted,
            Self::SetProfile => matches!(phase, Accepted | Substituting),
            Self::ProfileSet { .. } => matches!(phase, Accepted | Substituting | SettingProfile),
            Self::Activate { .. } => phase == ProfileSet,
            Self::Reboot(_) => phase == Activating,
            Self::Check => matches!(phase, Activating | Rebooting),
            Self::Activated { .. } => matches!(phase, Activating | Checking | Rebooting),
            Self::Confirm => phase == AwaitingConfirmation,
            Self::RollBack(_) => matches!(phase, Activating | Checking | AwaitingConfirmation | Rebooting),
            Self::RollbackStep { .. } | Self::RollbackActivation { .. } | Self::RollbackDone => phase == RollingBack,
            Self::End(_) => true,
        }
    }
}

impl Phase {
    /// The API state of an open deployment at this phase; `None` for [`Phase::Done`],
    /// whose state the end chose.
    pub fn open_state(self) -> Option<DeploymentState> {
        match self {
            Phase::Accepted | Phase::Substituting => Some(DeploymentState::Queued),
            Phase::SettingProfile | Phase::ProfileSet | Phase::Activating | Phase::Checking | Phase::RollingBack => {
                Some(DeploymentState::Activating)
            }
            Phase::AwaitingConfirmation => Some(DeploymentState::AwaitingConfirmation),
            Phase::Rebooting => Some(DeploymentState::Rebooting),
            Phase::Done => None,
        }
    }
}

impl Record {
    /// Applies `transition`: the only place phase, state and `armed` change. A refused
    /// transition leaves the record as it was.
    pub fn apply(&mut self, transition: Transition) -> Result<(), IllegalTransition> {
        if !transition.allowed_from(self.phase, self.is_open()) {
            return Err(IllegalTransition {
                id: self.deployment.id.clone(),
                from: self.phase,
                state: self.deployment.state,
                transition: transition.name(),
            });
        }
        let end = match transition {
            Transition::Substitute => self.enter(Phase::Substituting),
            Transition::SetProfile => self.enter(Phase::SettingProfile),
            Transition::ProfileSet { generation } => {
                self.deployment.generation = generation;
                self.enter(Phase::ProfileSet)
            }
            Transition::Activate { handle, armed } => {
                self.activation = Some(handle);
                self.armed = armed;
                self.enter(Phase::Activating)
            }
            Transition::Reboot(progress) => {
                self.deployment.reboot = Some(progress);
                self.enter(Phase::Rebooting)
            }
            Transition::Check => self.enter(Phase::Checking),
            Transition::Activated { deadline } if self.armed => {
                self.deployment.confirm_deadline = Some(deadline);
                self.enter(Phase::AwaitingConfirmation)
            }
            Transition::Activated { .. } | Transition::Confirm => Some((DeploymentState::Confirmed, None, None)),
            Transition::RollBack(run) => {
                self.rollback = Some(run);
                self.enter(Phase::RollingBack)
            }
            Transition::RollbackStep { step, generation } => self.rollback_step(step, generation),
            Transition::RollbackActivation { handle, index } => {
                if let Some(run) = self.rollback.as_mut() {
                    run.step = RollbackStep::Activating;
                    run.activation = Some(handle);
                    run.activation_index = index;
                }
                None
            }
            Transition::RollbackDone => {
                self.rollback.iter_mut().for_each(|run| run.done = true);
                None
            }
            Transition::End(Ending { state, reason, error }) => Some((state, Some(reason), Some(error))),
        };
        if let Some((state, reason, error)) = end {
            self.phase = Phase::Done;
            self.deployment.state = state;
            self.deployment.end_reason = reason;
            if error.is_some() {
                self.deployment.error = error;
            }
            self.deployment.finished = Some(unix_now());
        }
        Ok(())
    }

    /// Moves to the open `phase`, its API state with it.
    fn enter(&mut self, phase: Phase) -> Option<(DeploymentState, Option<EndReason>, Option<String>)> {
        self.phase = phase;
        if let Some(state) = phase.open_state() {
            self.deployment.state = state;
        }
        None
    }

    fn rollback_step(
        &mut self,
        step: RollbackStep,
        generation: Option<u64>,
    ) -> Option<(DeploymentState, Option<EndReason>, Option<String>)> {
        if let Some(run) = self.rollback.as_mut() {
            run.step = step;
            if generation.is_some() {
                run.generation = generation;
            }
        }
        None
    }
}

#[cfg(test)]
#[path = "transition_tests.rs"]
mod tests;
