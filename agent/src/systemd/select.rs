//! Which [`ServiceManager`] starts activations (`service_manager:` in agent.yaml), and
//! the routing of journaled handles to the manager that started them: a handle read back
//! after a restart may come from an agent configured otherwise (or from before systemd
//! units existed), and only the manager that made it can follow it.

use std::path::Path;

use hostctl_schemas::agent_config::{AgentConfig, ServiceManagerKind};

use super::{SystemdUnits, MANAGER};
use crate::activation::{
    ActivationError, ActivationHandle, ActivationSpec, ActivationStatus, Answer, DetachedChild, Prepared,
    ServiceManager, DETACHED_CHILD,
};

/// Exists when systemd is the init system (what `sd_booted()` checks).
const SYSTEMD_BOOTED: &str = "/run/systemd/system";

/// Both managers; new activations go to the configured one.
#[derive(Debug)]
pub struct Managers {
    use_systemd: bool,
    systemd: SystemdUnits,
    detached: DetachedChild,
}

impl Managers {
    /// For `config.service_manager` (`auto`: systemd if it runs this host), with systemd
    /// reached on `config.bus`.
    pub fn for_config(config: &AgentConfig) -> Self {
        Self::new(config.service_manager, Path::new(SYSTEMD_BOOTED), SystemdUnits::new(config.bus.clone()))
    }

    fn new(kind: ServiceManagerKind, booted: &Path, systemd: SystemdUnits) -> Self {
        let use_systemd = match kind {
            ServiceManagerKind::Systemd => true,
            ServiceManagerKind::Detached => false,
            ServiceManagerKind::Auto => booted.is_dir(),
        };
        let bus = systemd.describe_bus();
        if use_systemd {
            tracing::info!(configured = kind.as_str(), bus, "activations run as systemd transient units");
        } else {
            tracing::info!(configured = kind.as_str(), "activations run as detached child processes");
        }
        Self { use_systemd, systemd, detached: DetachedChild }
    }

    /// Whether new activations are systemd units.
    pub fn uses_systemd(&self) -> bool {
        self.use_systemd
    }

    fn owner(&self, handle: &ActivationHandle) -> Result<&dyn ServiceManager, ActivationError> {
        match handle.manager.as_str() {
            MANAGER => Ok(&self.systemd),
            DETACHED_CHILD => Ok(&self.detached),
            other => Err(ActivationError::UnknownManager(other.to_owned())),
        }
    }
}

impl ServiceManager for Managers {
    fn prepare(&self, spec: &ActivationSpec) -> Result<Prepared, ActivationError> {
        if self.use_systemd {
            self.systemd.prepare(spec)
        } else {
            self.detached.prepare(spec)
        }
    }

    fn status<'a>(&'a self, handle: &'a ActivationHandle) -> Answer<'a, ActivationStatus> {
        match self.owner(handle) {
            Ok(owner) => owner.status(handle),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn kill<'a>(&'a self, handle: &'a ActivationHandle) -> Answer<'a, ()> {
        match self.owner(handle) {
            Ok(owner) => owner.kill(handle),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn reboot(&self) -> Answer<'_, ()> {
        if self.use_systemd {
            self.systemd.reboot()
        } else {
            self.detached.reboot()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostctl_schemas::agent_config::Bus;
    use hostctl_schemas::inventory::Mode;

    fn managers(kind: ServiceManagerKind, booted: &Path) -> Managers {
        // No bus behind this address: these tests never reach systemd.
        Managers::new(kind, booted, SystemdUnits::new(Bus::Address("unix:path=/nonexistent/bus".into())))
    }

    #[test]
    fn auto_means_systemd_when_it_is_the_init_system() {
        let dir = tempfile::tempdir().unwrap();
        let booted = dir.path().join("run-systemd-system");
        assert!(!managers(ServiceManagerKind::Auto, &booted).uses_systemd());
        std::fs::create_dir(&booted).unwrap();
        assert!(managers(ServiceManagerKind::Auto, &booted).uses_systemd());
        assert!(!managers(ServiceManagerKind::Detached, &booted).uses_systemd());
        assert!(managers(ServiceManagerKind::Systemd, &dir.path().join("none")).uses_systemd());
    }

    #[tokio::test]
    async fn a_detached_handle_is_followed_by_a_systemd_agent() {
        // An activation started by an agent that ran without systemd, then restarted with
        // `service_manager: systemd`.
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("switch-to-configuration");
        std::fs::write(&program, "#!/bin/sh\nexit 100\n").unwrap();
        std::fs::set_permissions(&program, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let spec = ActivationSpec {
            program,
            mode: Mode::Boot,
            log: dir.path().join("a.log"),
            exit_file: dir.path().join("a.exit"),
        };
        let handle = DetachedChild.prepare(&spec).unwrap().launch().await.unwrap();
        let systemd = managers(ServiceManagerKind::Systemd, dir.path());
        for _ in 0..200 {
            if systemd.status(&handle).await.unwrap() != ActivationStatus::Running {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(systemd.status(&handle).await.unwrap(), ActivationStatus::Finished(100));
        systemd.kill(&handle).await.unwrap();

        let mut unknown = handle.clone();
        unknown.manager = "launchd".into();
        let e = systemd.status(&unknown).await.unwrap_err().to_string();
        assert!(e.contains("`launchd`"), "{e}");
    }
}
