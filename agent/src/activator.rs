//! The deployer's hands on the host: the system profile (`nix-env --set`), the store (is
//! a toplevel there, where is its `switch-to-configuration`), what runs now (read for
//! `running.rs`), and the service manager (start, follow, the activation time limit,
//! kill).
//!
//! It never touches the journal: what must be journaled while it works (the `nix-env`
//! child, see `orphan.rs`) goes through a callback from the deployer, which owns every
//! record change.

use std::path::PathBuf;
use std::sync::Arc;

use hostctl_nix::profile::Profile;
use hostctl_nix::Nix;
use hostctl_schemas::api::deployments::EndReason;
use hostctl_schemas::ids::StorePath;

use crate::activation::{
    ActivationError, ActivationHandle, ActivationSpec, ActivationStatus, Prepared, ServiceManager,
};
use crate::deploy_error::DeployError;
use crate::host::StoreFs;
use crate::orphan::ChildProcess;
use crate::transition::Failure;

/// How often a running activation is checked on: soon after the start (most test and
/// small switches are quick), then every [`POLL_INTERVAL`].
const FIRST_POLL: std::time::Duration = std::time::Duration::from_millis(20);
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// See the module documentation.
#[derive(Debug)]
pub struct Activator {
    nix: Arc<Nix>,
    profile: Profile,
    store_fs: StoreFs,
    services: Arc<dyn ServiceManager>,
    /// How long one `switch-to-configuration` may run; `None`: no limit.
    activation_timeout: Option<std::time::Duration>,
    /// The link naming the running system (`/run/current-system`); `None`: not read.
    current_system: Option<PathBuf>,
}

impl Activator {
    /// `activation_timeout`: how long one `switch-to-configuration` may run (`None`: no
    /// limit); `current_system`: the link naming the running system (`None`: not read).
    pub fn new(
        nix: Arc<Nix>,
        profile: Profile,
        store_fs: StoreFs,
        services: Arc<dyn ServiceManager>,
        activation_timeout: Option<std::time::Duration>,
        current_system: Option<PathBuf>,
    ) -> Self {
        Self { nix, profile, store_fs, services, activation_timeout, current_system }
    }

    pub fn nix(&self) -> &Arc<Nix> {
        &self.nix
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Where store paths are on the file system.
    pub fn store_fs(&self) -> &StoreFs {
        &self.store_fs
    }

    /// Reboots the host through the service manager (systemd's `reboot.target`).
    pub async fn reboot(&self) -> Result<(), crate::activation::ActivationError> {
        self.services.reboot().await
    }

    pub fn switch_program(&self, toplevel: &StorePath) -> PathBuf {
        self.store_fs.real_path(toplevel).join("bin/switch-to-configuration")
    }

    /// 400 unless the toplevel is in the store and has `bin/switch-to-configuration`.
    pub async fn check_toplevel(&self, toplevel: &StorePath) -> Result<(), DeployError> {
        if !self.nix.invalid_paths(std::slice::from_ref(toplevel)).await?.is_empty() {
            return Err(DeployError::invalid(format!(
                "toplevel: {toplevel} is not in this host's store; import its closure first"
            )));
        }
        if !self.switch_program(toplevel).is_file() {
            return Err(DeployError::invalid(format!(
                "toplevel: {toplevel} has no bin/switch-to-configuration; is it a NixOS system?"
            )));
        }
        Ok(())
    }

    /// `nix-env --set TOPLEVEL` on the profile; `journal_child` is told the `nix-env`
    /// process before it is waited on (see `orphan.rs`).
    pub async fn set_profile(
        &self,
        toplevel: &StorePath,
        journal_child: &mut (dyn FnMut(ChildProcess) -> Result<(), String> + Send),
    ) -> Result<(), String> {
        let mut observe = |pid: u32| journal_child(ChildProcess::observe(pid)).map_err(std::io::Error::other);
        self.nix.set_profile_observed(&self.profile, toplevel, &mut observe).await.map_err(|e| e.to_string())
    }

    /// What the profile points at now.
    pub fn profile_toplevel(&self) -> Result<Option<StorePath>, DeployError> {
        let current = self
            .profile
            .current()
            .map_err(|e| DeployError::internal(format!("cannot read the profile {}: {e}", self.profile)))?;
        Ok(current.and_then(|(_, toplevel)| toplevel))
    }

    /// `/run/current-system` (or the configured link) if it points at a NixOS system in
    /// this host's store.
    pub fn current_system_link(&self) -> Option<StorePath> {
        let target = std::fs::read_link(self.current_system.as_ref()?).ok()?;
        let toplevel: StorePath = target.to_str()?.parse().ok()?;
        self.switch_program(&toplevel).is_file().then_some(toplevel)
    }

    /// Creates an activation without letting it run (see [`ServiceManager::prepare`]).
    pub fn prepare(&self, spec: &ActivationSpec) -> Result<Prepared, ActivationError> {
        self.services.prepare(spec)
    }

    pub async fn status(&self, handle: &ActivationHandle) -> Result<ActivationStatus, ActivationError> {
        self.services.status(handle).await
    }

    /// Polls the activation until it has a result; past the activation time limit, kills
    /// its process group and returns why (the error says it timed out).
    pub async fn watch(&self, handle: &ActivationHandle) -> Result<ActivationStatus, Failure> {
        let started = std::time::Instant::now();
        let mut pause = FIRST_POLL;
        loop {
            let status = self.services.status(handle).await;
            let unknown =
                |e| Failure::new(EndReason::ActivationLost, format!("the activation's result is unknown: {e}"));
            match status.map_err(unknown)? {
                ActivationStatus::Running => tokio::time::sleep(pause).await,
                done => return Ok(done),
            }
            if let Some(limit) = self.activation_timeout.filter(|limit| started.elapsed() >= *limit) {
                return Err(Failure::new(EndReason::TimedOut, self.kill_timed_out(handle, limit).await));
            }
            pause = (pause * 2).min(POLL_INTERVAL);
        }
    }

    /// Kills an activation that ran past `limit` (its whole process group) and waits until
    /// it is gone; returns the deployment's error.
    async fn kill_timed_out(&self, handle: &ActivationHandle, limit: std::time::Duration) -> String {
        let why = format!("switch-to-configuration timed out: still running after {limit:?} (activation_timeout)");
        tracing::error!(pid = handle.pid, "{why}; killing its process group");
        match self.services.kill(handle).await {
            Ok(()) => format!("{why}; its process group was killed"),
            Err(e) => format!("{why}; killing it failed: {e}"),
        }
    }
}
