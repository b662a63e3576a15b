//! After a restart (a crash, `kill -9`, a reboot, or the switch restarting the agent):
//! every deployment the journal left open is finished from the phase marker that was
//! journaled before the step that may have been cut short.
//!
//! Before anything else, a profile-changing `nix-env` the killed agent left running for
//! an open deployment (journaled as `nix_child`, see `orphan.rs`) is killed and waited
//! for, so the profile is read and restored only once nothing else can change it.
//!
//! | phase | what the host may look like | what recovery does (`end_reason`) |
//! | --- | --- | --- |
//! | `accepted` | untouched | `failed` (`agent-restarted`) |
//! | `substituting` | untouched (some store paths fetched from the cache) | `failed` ("restarted while fetching", `cache-fetch-failed`); a `nix copy` the killed agent left running only adds signed store paths |
//! | `setting-profile`, `profile-set` | profile maybe at the new system; running system untouched | profile back to what it pointed at before (`previous_profile`, `nix-env --set`), `failed` ("agent stopped before activation", `agent-restarted`) |
//! | `activating` | `switch-to-configuration` running or done | follow it / read its exit file, then as without a restart (health checks, window); lost (no exit status) → roll back, `failed` (`activation-lost`); cancelled (never let go) → as `profile-set` |
//! | `checking` | new system active, checks cut short | roll back, `rolled-back` (`agent-restarted`) |
//! | `awaiting-confirmation` | new system active | wait until the journaled `confirm_deadline`; passed → roll back at once (`not-confirmed`) |
//! | `rolling-back` | part-way back | continue from the journaled rollback step |
//! | `rebooting` | the new system set to boot once; maybe rebooted | see `boot_once.rs`: same boot → reboot again; booted the new system → health checks and window; anything else → roll back, `rolled-back` (`booted-previous`) |
//!
//! Leftover import streams in `state_dir/tmp` are removed by the importer at start; an
//! import only registers paths after the whole stream was validated, so a killed import
//! leaves none half-imported. A power cut after Nix registered an import's paths but
//! before their files reached the disk leaves valid paths with lost contents: the importer
//! deletes them at start, before this recovery (`Importer::recover_interrupted`).

use std::sync::Arc;

use hostctl_schemas::api::deployments::{DeploymentState, EndReason};

use crate::activation::ActivationStatus;
use crate::deploy::Deployer;
use crate::journal::{Phase, Record};
use crate::transition::{Ending, Failure};
use crate::unix_now_ms;

/// Why a deployment cut short before its activation ran fails.
fn stopped_before_activation() -> Failure {
    Failure::new(EndReason::AgentRestarted, "agent stopped before activation")
}

/// A `failed` end because of a restart.
fn restarted(reason: EndReason, error: String) -> Ending {
    Ending { state: DeploymentState::Failed, reason, error }
}

impl Deployer {
    /// Finishes or resumes every open deployment. Quick steps (restoring a profile) are
    /// done before this returns; activations, rollbacks and windows continue in tasks.
    pub async fn recover(self: &Arc<Self>) {
        for record in self.records().into_iter().filter(Record::is_open) {
            let id = record.deployment.id.clone();
            tracing::info!(id, phase = ?record.phase, "recovering a deployment left open");
            // A profile change the killed agent started may still be running: it must
            // not move the profile after recovery decided where it points.
            crate::orphan::stop_leftover_nix(&id, record.nix_child).await;
            match record.phase {
                Phase::Accepted => self.finish(
                    &id,
                    restarted(EndReason::AgentRestarted, "the agent restarted before the activation started".into()),
                ),
                Phase::Substituting => self.finish(
                    &id,
                    restarted(
                        EndReason::CacheFetchFailed,
                        format!(
                            "{}the agent restarted while fetching the system from it; nothing was activated",
                            crate::substitute::cache_error_start(record.cache.as_ref())
                        ),
                    ),
                ),
                Phase::SettingProfile | Phase::ProfileSet => {
                    self.fail_before_activation(&id, stopped_before_activation()).await
                }
                Phase::Activating => self.recover_activation(record).await,
                Phase::Checking => {
                    let this = Arc::clone(self);
                    let reason =
                        Failure::new(EndReason::AgentRestarted, "the agent restarted during the health checks");
                    tokio::spawn(async move { this.roll_back(&id, reason, DeploymentState::RolledBack).await });
                }
                Phase::AwaitingConfirmation => self.recover_window(&record),
                Phase::Rebooting => self.recover_reboot(record).await,
                Phase::RollingBack => {
                    let this = Arc::clone(self);
                    tokio::spawn(async move { this.run_rollback(&id).await });
                }
                // A final phase with an open state cannot be written; close it as it says.
                Phase::Done => {
                    self.finish(&id, restarted(EndReason::AgentRestarted, "left open by an earlier agent".into()))
                }
            }
        }
    }

    async fn recover_activation(self: &Arc<Self>, record: Record) {
        let id = record.deployment.id.clone();
        let Some(handle) = record.activation else {
            // The handle is journaled in the same write as the phase; without it nothing ran.
            return self.fail_before_activation(&id, stopped_before_activation()).await;
        };
        match self.activator.status(&handle).await {
            Ok(ActivationStatus::Cancelled) => self.fail_before_activation(&id, stopped_before_activation()).await,
            Ok(ActivationStatus::Running) => {
                tracing::info!(id, pid = handle.pid, "following an activation started before the restart");
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    let status = this.activator.watch(&handle).await;
                    this.after_activation(&id, status).await;
                });
            }
            Ok(ActivationStatus::Vanished) => {
                let reason = Failure::new(
                    EndReason::ActivationLost,
                    "agent restarted; the activation ended without an exit status (result unknown)",
                );
                let this = Arc::clone(self);
                tokio::spawn(async move { this.roll_back(&id, reason, DeploymentState::Failed).await });
            }
            status => {
                let status = status.map_err(|e| Failure::new(EndReason::ActivationLost, e.to_string()));
                let this = Arc::clone(self);
                tokio::spawn(async move { this.after_activation(&id, status).await });
            }
        }
    }

    /// Resumes a confirmation window: the timer again, or the rollback at once.
    fn recover_window(self: &Arc<Self>, record: &Record) {
        let id = record.deployment.id.clone();
        let deadline = record.deployment.confirm_deadline.unwrap_or(0);
        if u128::from(deadline) * 1000 <= u128::from(unix_now_ms()) {
            let reason = Failure::new(
                EndReason::NotConfirmed,
                format!("not confirmed within {} (the window closed while the agent was down)", record.confirm_timeout),
            );
            self.roll_back_pending(&id, reason);
        } else {
            tracing::info!(id, deadline, "resuming the confirmation window");
            self.arm_timer(id, deadline);
        }
    }
}

#[cfg(test)]
#[path = "recovery_tests.rs"]
mod tests;
