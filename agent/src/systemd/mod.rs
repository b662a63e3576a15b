//! Activations as systemd transient units, started and followed over D-Bus
//! (`org.freedesktop.systemd1` on the agent's configured bus), and the choice between
//! them and detached children (`select.rs`).
//!
//! Invariant: this module is the only part of the agent that speaks
//! `org.freedesktop.systemd1`.
//!
//! A unit lives in its own cgroup, outside the agent's service, so a switch that restarts
//! the agent (or anything stopping it) does not stop the activation. Lifecycle:
//! - `prepare` names the unit (`unit.rs`), removes the previous log and exit file, and
//!   builds the `StartTransientUnit` properties; nothing exists in systemd yet.
//! - `launch` is `StartTransientUnit(name, "fail", properties, [])`.
//! - `status` ([`decide`]): the exit file first (the result; systemd forgets the unit
//!   once it ends), else the unit: loaded and active, or with a queued start job →
//!   `Running`; gone (or ended) → the exit file again, else `ExecMainStatus` if the unit is
//!   still loaded and its main process exited, else `Vanished` if the wrapper had begun
//!   (the log exists: it is opened before `switch-to-configuration` runs) and `Cancelled`
//!   if not (never launched, or the launch was refused).
//! - `kill` is `KillUnit(name, "all", SIGKILL)` (every process of the unit's cgroup), then
//!   waits until `status` is no longer `Running`.
//!
//! When the bus does not answer (even after connecting again), `status` says `Running`:
//! the exit file still ends the wait the moment the switch finishes, and reporting a live
//! switch as gone would start a rollback racing it; the activation time limit bounds the
//! wait.

mod connection;
mod proxies;
mod select;
pub mod unit;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use hostctl_schemas::agent_config::Bus;
use zbus::proxy::CacheProperties;

use crate::activation::{
    read_exit_file, ActivationError, ActivationHandle, ActivationSpec, ActivationStatus, Answer, Prepared,
    ServiceManager,
};
use connection::{BusConnection, CallError};
use proxies::{ManagerProxy, ServiceProxy, UnitProxy};
pub use select::Managers;

/// [`ActivationHandle::manager`] of a [`SystemdUnits`] activation.
pub const MANAGER: &str = "systemd";

/// systemd's error for a unit it does not have loaded.
const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";

/// `ExecMainCode` of a main process that exited (rather than was killed).
const CLD_EXITED: i32 = 1;

/// SIGKILL, as `KillUnit` takes it.
const SIGKILL: i32 = 9;

/// How long a killed unit may take to stop.
const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts activations as transient units of the systemd on `bus`. See the module
/// documentation.
#[derive(Debug)]
pub struct SystemdUnits {
    /// Connected on first use.
    bus: BusConnection,
    /// Units whose `StartTransientUnit` systemd refused: they never ran.
    refused: Arc<Mutex<HashSet<String>>>,
}

/// What systemd says about a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitView {
    /// Not loaded (never started, or collected after it ended).
    Missing,
    Loaded {
        active_state: String,
        /// The queued job's id, 0 if none.
        job: u32,
        /// `ExecMainCode`/`ExecMainStatus`, read only once it is not running (else 0).
        exec_main_code: i32,
        exec_main_status: i32,
    },
}

impl UnitView {
    fn running(&self) -> bool {
        match self {
            Self::Missing => false,
            Self::Loaded { active_state, job, .. } => {
                *job != 0 || matches!(active_state.as_str(), "active" | "activating" | "deactivating" | "reloading")
            }
        }
    }
}

/// The activation's status from what systemd said (`view`) and the files, read after it.
pub fn decide(view: &UnitView, exit_file: &Path, log: &Path) -> Result<ActivationStatus, ActivationError> {
    if view.running() {
        return Ok(ActivationStatus::Running);
    }
    // It may have written the exit file (and been collected) since the caller's first look.
    if let Some(done) = read_exit_file(exit_file)? {
        return Ok(done);
    }
    if let UnitView::Loaded { exec_main_code: CLD_EXITED, exec_main_status, .. } = view {
        // The wrapper exits with switch-to-configuration's status even when it could not
        // write the exit file.
        return Ok(ActivationStatus::Finished(*exec_main_status));
    }
    Ok(if log.exists() { ActivationStatus::Vanished } else { ActivationStatus::Cancelled })
}

impl SystemdUnits {
    /// Talks to the systemd on `bus` (connected on first use).
    pub fn new(bus: Bus) -> Self {
        Self { bus: BusConnection::new(bus), refused: Arc::new(Mutex::new(HashSet::new())) }
    }

    /// `system`, `session` or the bus address, for messages.
    pub fn describe_bus(&self) -> String {
        connection::describe(self.bus.bus())
    }

    fn was_refused(&self, unit: &str) -> bool {
        self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(unit)
    }

    /// The unit as systemd sees it now.
    async fn query(&self, unit: &str) -> Result<UnitView, CallError> {
        self.bus
            .call(|conn| async move {
                let manager = ManagerProxy::new(&conn).await?;
                let path = match manager.get_unit(unit).await {
                    Ok(path) => path,
                    Err(zbus::Error::MethodError(error, _, _)) if error.as_str() == NO_SUCH_UNIT => {
                        return Ok(UnitView::Missing)
                    }
                    Err(e) => return Err(e),
                };
                let unit =
                    UnitProxy::builder(&conn).path(path.clone())?.cache_properties(CacheProperties::No).build().await?;
                let active_state = unit.active_state().await?;
                let (job, _) = unit.job().await?;
                let mut view = UnitView::Loaded { active_state, job, exec_main_code: 0, exec_main_status: 0 };
                if !view.running() {
                    let service =
                        ServiceProxy::builder(&conn).path(path)?.cache_properties(CacheProperties::No).build().await?;
                    let (code, status) = (service.exec_main_code().await?, service.exec_main_status().await?);
                    if let UnitView::Loaded { exec_main_code, exec_main_status, .. } = &mut view {
                        (*exec_main_code, *exec_main_status) = (code, status);
                    }
                }
                Ok(view)
            })
            .await
    }

    async fn status_of(&self, handle: &ActivationHandle) -> Result<ActivationStatus, ActivationError> {
        if let Some(done) = read_exit_file(&handle.exit_file)? {
            return Ok(done);
        }
        let unit = unit_of(handle)?;
        if self.was_refused(unit) {
            return Ok(ActivationStatus::Cancelled);
        }
        // A broken connection is made again by the second try.
        let view = match self.query(unit).await {
            Ok(view) => Ok(view),
            Err(_) => self.query(unit).await,
        };
        match view {
            Ok(view) => decide(&view, &handle.exit_file, &handle.log),
            Err(e) => {
                tracing::warn!(unit, error = %e, "cannot ask systemd about the activation; taking it as still running");
                Ok(ActivationStatus::Running)
            }
        }
    }

    async fn kill_unit(&self, handle: &ActivationHandle) -> Result<(), ActivationError> {
        let unit = unit_of(handle)?;
        let killed =
            self.bus.call(|conn| async move { ManagerProxy::new(&conn).await?.kill_unit(unit, "all", SIGKILL).await });
        match killed.await {
            Ok(()) => {}
            Err(e) if e.is(NO_SUCH_UNIT) => {}
            Err(e) => return Err(systemd_error(unit, &format!("KillUnit: {e}"))),
        }
        let start = std::time::Instant::now();
        while self.status_of(handle).await? == ActivationStatus::Running {
            if start.elapsed() > KILL_WAIT {
                return Err(systemd_error(unit, &format!("still running {KILL_WAIT:?} after KillUnit SIGKILL")));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

fn systemd_error(unit: &str, problem: &dyn std::fmt::Display) -> ActivationError {
    ActivationError::Systemd { unit: unit.to_owned(), problem: problem.to_string() }
}

fn unit_of(handle: &ActivationHandle) -> Result<&str, ActivationError> {
    handle.unit.as_deref().ok_or_else(|| ActivationError::Systemd {
        unit: "?".into(),
        problem: format!("the journaled activation handle names no unit: {handle:?}"),
    })
}

/// Removes `file` (of `unit`) if it exists.
fn remove(unit: &str, file: &Path) -> Result<(), ActivationError> {
    match std::fs::remove_file(file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(systemd_error(unit, &format!("cannot remove {}: {e}", file.display()))),
    }
}

impl ServiceManager for SystemdUnits {
    fn prepare(&self, spec: &ActivationSpec) -> Result<Prepared, ActivationError> {
        let unit = unit::unit_name(spec);
        // The log is the sign that the unit's command ran (see `decide`), so an earlier
        // attempt's must go; the wrapper would truncate it anyway.
        remove(&unit, &spec.exit_file)?;
        remove(&unit, &spec.log)?;
        let locale_archive = std::env::var("LOCALE_ARCHIVE").ok();
        let properties = unit::properties(spec, unit::environment(locale_archive.as_deref()));
        let bus = self.bus.clone();
        let handle = ActivationHandle {
            manager: MANAGER.to_owned(),
            pid: 0,
            start_time: None,
            log: spec.log.clone(),
            exit_file: spec.exit_file.clone(),
            unit: Some(unit.clone()),
        };
        let refused = Arc::clone(&self.refused);
        let go = async move {
            let name = unit.as_str();
            let properties = &properties;
            let started = bus
                .call(|conn| async move {
                    let manager = ManagerProxy::new(&conn).await?;
                    manager.start_transient_unit(name, "fail", properties, &[]).await
                })
                .await;
            match started {
                Ok(job) => {
                    tracing::info!(unit, job = %job.as_str(), "transient unit started");
                    Ok(())
                }
                Err(e) => {
                    // Refused, or never sent: systemd has no such unit, and never will.
                    if let CallError::Refused { .. } | CallError::NotConnected(_) = e {
                        refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(unit.clone());
                    }
                    Err(std::io::Error::other(format!("StartTransientUnit {unit}: {e}")))
                }
            }
        };
        Ok(Prepared::new(handle, Box::pin(go)))
    }

    fn status<'a>(&'a self, handle: &'a ActivationHandle) -> Answer<'a, ActivationStatus> {
        Box::pin(self.status_of(handle))
    }

    fn kill<'a>(&'a self, handle: &'a ActivationHandle) -> Answer<'a, ()> {
        Box::pin(self.kill_unit(handle))
    }

    fn reboot(&self) -> Answer<'_, ()> {
        Box::pin(async move {
            let started = self
                .bus
                .call(|conn| async move {
                    ManagerProxy::new(&conn).await?.start_unit(REBOOT_TARGET, "replace-irreversibly").await
                })
                .await;
            let job = started.map_err(|e| systemd_error(REBOOT_TARGET, &format!("StartUnit: {e}")))?;
            tracing::warn!(job = %job.as_str(), "rebooting the host");
            Ok(())
        })
    }
}

/// What `systemctl reboot` starts.
const REBOOT_TARGET: &str = "reboot.target";

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
