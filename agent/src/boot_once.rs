//! Boot once, then confirm (issue 16): a `boot` deployment with `reboot` makes the boot
//! loader boot the new system once, reboots, and only a confirmation after the host came
//! back on it makes it the default. Every path that does not end in that confirmation
//! leaves the previous system the default, so whatever reboots the host next (the agent,
//! a watchdog, a power cycle) runs the previous system.
//!
//! Order (see docs/DESIGN.md, "Reboots"): after `switch-to-configuration boot` of the new
//! system, `bootctl set-default <entry of the running system>`, `bootctl set-oneshot
//! <entry of the new system>`, the boot id journaled with phase `rebooting`, then the
//! reboot (systemd's `reboot.target`, or `boot.reboot_command`). The agent that starts
//! after it ([`Deployer::recover_reboot`]) compares the boot id and `/run/booted-system`:
//! - same boot id: the host did not go down yet; the reboot is asked for again;
//! - booted the new system: the usual health checks and confirmation window (counted
//!   from now); the confirmation makes it the default ([`SystemdBoot::make_default`]);
//! - booted anything else: `rolled-back` (`booted-previous`), the profile pointed back
//!   and `switch-to-configuration boot` of the previous system.
//!
//! A rollback after the host ran the new system (window expired, health check failed)
//! sets the previous entry as the default again and reboots into it.
//!
//! Never writes loader entries (`switch-to-configuration` does) and never decides what
//! the previous system is: that is the deployment's `previous_toplevel`.

use std::sync::Arc;

use hostctl_schemas::api::deployments::{DeploymentRequest, DeploymentState, EndReason, RebootProgress};
use hostctl_schemas::ids::StorePath;
use hostctl_schemas::inventory::Mode;

use crate::bootloader::{read_boot_id, run_reboot_command, SystemdBoot};
use crate::deploy::Deployer;
use crate::deploy_error::DeployError;
use crate::journal::Record;
use crate::transition::{Failure, Transition};

/// Whether the host runs `record`'s system because it rebooted into it.
pub(crate) fn runs_new(record: &Record) -> bool {
    record.deployment.reboot.as_ref().is_some_and(|p| p.booted.as_ref() == Some(&record.deployment.toplevel))
}

fn reboot_failed(message: impl Into<String>) -> Failure {
    Failure::new(EndReason::RebootFailed, message)
}

impl Deployer {
    /// systemd-boot at `boot.esp`, or why a reboot cannot be rolled back.
    fn loader(&self) -> Result<SystemdBoot, String> {
        let boot = self.options.boot.as_ref().ok_or("this agent has no `boot` settings, so it cannot reboot")?;
        let loader = SystemdBoot::detect(&boot.esp).map_err(|e| e.to_string())?;
        Ok(match &self.options.bootctl {
            Some(program) => loader.with_program(program.clone()),
            None => loader,
        })
    }

    /// 400 unless the request's `reboot` can be done: mode `boot` and a boot loader that
    /// can boot a system once.
    pub(crate) fn check_reboot_request(&self, request: &DeploymentRequest) -> Result<(), DeployError> {
        if !request.reboot {
            return Ok(());
        }
        if request.mode != Mode::Boot {
            return Err(DeployError::invalid(format!(
                "reboot: only a `boot` deployment can reboot into its system (mode is `{}`)",
                request.mode
            )));
        }
        self.loader().map(drop).map_err(|e| DeployError::invalid(format!("reboot: {e}")))
    }

    /// The boot id now (`boot.boot_id_file`).
    pub(crate) fn boot_id(&self) -> Option<String> {
        read_boot_id(&self.options.boot.as_ref()?.boot_id_file)
    }

    /// After the `boot` activation of a `reboot` deployment: the loader is set up to boot
    /// the new system once, `rebooting` is journaled and the reboot asked for. Any
    /// failure before the reboot rolls the deployment back (`failed`, `reboot-failed`).
    pub(crate) async fn boot_once(self: &Arc<Self>, id: &str) {
        let progress = match self.prepare_boot_once(id) {
            Ok(progress) => progress,
            Err(failure) => return self.roll_back(id, failure, DeploymentState::Failed).await,
        };
        tracing::warn!(id, entry = %progress.new_entry, "the new system boots once; rebooting");
        if let Err(e) = self.transition(id, Transition::Reboot(progress)) {
            return self.undo_boot_once(id, Failure::journal(e)).await;
        }
        crate::pause::point("reboot:before");
        if let Err(e) = self.request_reboot().await {
            self.undo_boot_once(id, reboot_failed(format!("asking for the reboot failed: {e}"))).await;
        }
    }

    /// The loader's default at the running system, its one-shot entry at the new one,
    /// and the boot id before the reboot.
    fn prepare_boot_once(&self, id: &str) -> Result<RebootProgress, Failure> {
        let record = self.record(id).map_err(Failure::journal)?;
        let loader = self.loader().map_err(reboot_failed)?;
        let previous = record
            .deployment
            .previous_toplevel
            .clone()
            .ok_or_else(|| reboot_failed("no running system is known to fall back to, so no reboot was done"))?;
        let entry = |t: &StorePath| loader.entry_of(t).map_err(|e| reboot_failed(e.to_string()));
        let previous_entry = entry(&previous)?;
        let new_entry = entry(&record.deployment.toplevel)?;
        loader.set_default(&previous_entry).map_err(|e| reboot_failed(e.to_string()))?;
        loader.set_oneshot(&new_entry).map_err(|e| reboot_failed(e.to_string()))?;
        let boot_id_before = self.boot_id().ok_or_else(|| reboot_failed("cannot read the boot id"))?;
        Ok(RebootProgress { boot_id_before, boot_id_after: None, previous_entry, new_entry, booted: None })
    }

    /// The reboot did not happen: the one-shot entry goes, then the usual rollback.
    async fn undo_boot_once(self: &Arc<Self>, id: &str, failure: Failure) {
        if let Err(e) = self.loader().and_then(|l| l.set_oneshot("").map_err(|e| e.to_string())) {
            tracing::error!(id, error = %e, "cannot remove the one-shot boot entry");
        }
        self.roll_back(id, failure, DeploymentState::Failed).await;
    }

    /// Reboots: `boot.reboot_command` if set, else systemd's `reboot.target`.
    async fn request_reboot(&self) -> Result<(), String> {
        let command = self.options.boot.as_ref().map(|b| b.reboot_command.clone()).unwrap_or_default();
        if command.is_empty() {
            return self.activator.reboot().await.map_err(|e| e.to_string());
        }
        tokio::task::spawn_blocking(move || run_reboot_command(&command))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// A deployment the journal left `rebooting` (see the module documentation).
    pub(crate) async fn recover_reboot(self: &Arc<Self>, record: Record) {
        let id = record.deployment.id.clone();
        let this = Arc::clone(self);
        let Some(mut progress) = record.deployment.reboot.clone() else {
            let why = reboot_failed("the journal has no reboot for this deployment");
            tokio::spawn(async move { this.roll_back(&id, why, DeploymentState::Failed).await });
            return;
        };
        let now = self.boot_id();
        if now.as_deref() == Some(progress.boot_id_before.as_str()) {
            tracing::warn!(id, "the host has not rebooted yet (same boot id); asking for the reboot again");
            tokio::spawn(async move {
                if let Err(e) = this.request_reboot().await {
                    this.undo_boot_once(&id, reboot_failed(format!("asking for the reboot failed: {e}"))).await;
                }
            });
            return;
        }
        let booted = self.booted_system();
        progress.boot_id_after = now;
        progress.booted = booted.clone();
        let new = record.deployment.toplevel.clone();
        if let Err(e) = self.update(&id, |r| r.deployment.reboot = Some(progress.clone())) {
            tracing::error!(id, error = %e, "cannot journal what the host booted");
        }
        if booted.as_ref() == Some(&new) {
            tracing::info!(id, "the host booted the new system");
            tokio::spawn(async move { this.booted_new(&id).await });
            return;
        }
        let shown = booted.map_or_else(|| "an unknown system".to_owned(), String::from);
        let why = Failure::new(
            EndReason::BootedPrevious,
            format!(
                "booted {shown} instead of {new}: the new generation did not come up (its one-shot boot failed, the loader fell back to {})",
                progress.previous_entry
            ),
        );
        tokio::spawn(async move { this.roll_back(&id, why, DeploymentState::RolledBack).await });
    }

    /// What `/run/booted-system` names.
    fn booted_system(&self) -> Option<StorePath> {
        let link = self.options.booted_system.as_ref()?;
        std::fs::read_link(link).ok()?.to_str()?.parse().ok()
    }

    /// Back on the new system: without a window it is made the default at once, then the
    /// health checks and the window as after any activation.
    async fn booted_new(self: &Arc<Self>, id: &str) {
        let armed = match self.record(id) {
            Ok(r) => r.armed,
            Err(e) => return tracing::error!(id, error = %e, "cannot continue the deployment"),
        };
        if !armed {
            if let Err(e) = self.make_new_default(id) {
                return self.roll_back(id, reboot_failed(e), DeploymentState::RolledBack).await;
            }
        }
        self.activated(id).await;
    }

    /// The new system as the boot loader's default, for a `reboot` deployment (`id`'s, if
    /// it is one).
    fn make_new_default(&self, id: &str) -> Result<(), String> {
        let record = self.record(id)?;
        match &record.deployment.reboot {
            Some(_) => self.set_new_default(&record.deployment.toplevel),
            None => Ok(()),
        }
    }

    /// The confirmation of a `reboot` deployment: `toplevel` (its new system) becomes
    /// what boots by default ([`SystemdBoot::make_default`]: loader.conf's own default
    /// when that is it, so later deployments move it on as usual).
    pub(crate) fn set_new_default(&self, toplevel: &StorePath) -> Result<(), String> {
        let loader = self.loader()?;
        let entry =
            loader.make_default(toplevel).map_err(|e| format!("cannot make the new system the default: {e}"))?;
        tracing::info!(%entry, "the new system is the boot loader's default");
        Ok(())
    }

    /// After the rollback of a `reboot` deployment: the previous system is the default
    /// again, by loader.conf once the rollback's `switch-to-configuration` wrote it, so no
    /// variable of the reboot outlives it; if the host had rebooted into the new system,
    /// it reboots into the previous one.
    pub(crate) async fn reboot_after_rollback(&self, id: &str) {
        let Ok(record) = self.record(id) else { return };
        let (Some(progress), Some(previous)) = (&record.deployment.reboot, &record.deployment.previous_toplevel) else {
            return;
        };
        let set = self.loader().and_then(|l| l.make_default(previous).map_err(|e| e.to_string()));
        if let Err(e) = set {
            return tracing::error!(id, error = %e, "cannot make the previous system the default again; not rebooting");
        }
        if !runs_new(&record) {
            return;
        }
        tracing::warn!(id, entry = %progress.previous_entry, "rolled back: rebooting into the previous system");
        if let Err(e) = self.request_reboot().await {
            tracing::error!(id, error = %e, "cannot reboot into the previous system");
        }
    }
}
