//! Boot once, then confirm (`boot_once.rs`) against real Nix on a private store: an ESP
//! with loader.conf and an entry per system, a `bootctl` double keeping the EFI variables
//! as files, a reboot command that leaves a mark, and a "reboot" = a new boot id, the
//! booted-system link repointed and a fresh deployer recovering from the journal.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use hostctl_schemas::boot_config::BootConfig;

use super::tests::{ended, request, TestHost};
use super::*;

/// The pieces of one simulated machine around a [`TestHost`].
struct Machine {
    host: TestHost,
    options: DeployerOptions,
    old: StorePath,
    new: StorePath,
}

impl Machine {
    async fn new() -> Self {
        let host = TestHost::new();
        let (old, new) = (host.system("old", 0).await, host.system("new", 0).await);
        let dir = host.dir.path().to_path_buf();
        let esp = dir.join("esp");
        std::fs::create_dir_all(esp.join("loader/entries")).unwrap();
        std::fs::write(esp.join("loader/loader.conf"), "timeout 0\n").unwrap();
        for (n, toplevel) in [(1, &old), (2, &new)] {
            let text = format!("title NixOS\nversion Generation {n}\noptions init={toplevel}/init quiet\n");
            std::fs::write(esp.join(format!("loader/entries/nixos-generation-{n}.conf")), text).unwrap();
        }
        std::fs::create_dir_all(dir.join("efivars")).unwrap();
        let bootctl = dir.join("bootctl");
        let script = format!(
            "#!/bin/sh\ncase $2 in set-default) v=LoaderEntryDefault ;; set-oneshot) v=LoaderEntryOneShot ;; esac\n\
             if [ -z \"$3\" ]; then rm -f {efi}/$v; else echo \"$3\" > {efi}/$v; fi\n",
            efi = dir.join("efivars").display()
        );
        std::fs::write(&bootctl, script).unwrap();
        std::fs::set_permissions(&bootctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("boot_id"), "boot-1\n").unwrap();
        std::os::unix::fs::symlink(old.as_str(), dir.join("booted-system")).unwrap();
        let reboot_command = vec!["/bin/touch".to_owned(), dir.join("rebooted").display().to_string()];
        let options = DeployerOptions {
            booted_system: Some(dir.join("booted-system")),
            boot: Some(BootConfig { esp, reboot_command, boot_id_file: dir.join("boot_id") }),
            bootctl: Some(bootctl),
            ..DeployerOptions::default()
        };
        Self { host, options, old, new }
    }

    fn dir(&self) -> &Path {
        self.host.dir.path()
    }

    fn efi(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir().join("efivars").join(name)).ok().map(|t| t.trim().to_owned())
    }

    /// Whether the agent asked for a reboot since the last call.
    fn take_reboot(&self) -> bool {
        std::fs::remove_file(self.dir().join("rebooted")).is_ok()
    }

    /// Waits up to 2.5 s for the agent to ask for a reboot; takes the request.
    async fn wait_reboot(&self) -> bool {
        for _ in 0..100 {
            if self.take_reboot() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        false
    }

    /// The old system running, then the new one deployed with `boot` + `reboot`; returns
    /// once it is `rebooting`.
    async fn rebooting(&self, confirm_secs: u64) -> Arc<Deployer> {
        let deployer = self.host.deployer_with(self.options.clone());
        deployer.create(request("d1", &self.old, Mode::Switch, 0)).await.unwrap();
        ended(&deployer, "d1").await;
        let mut req = request("d2", &self.new, Mode::Boot, confirm_secs);
        req.reboot = true;
        deployer.create(req).await.unwrap();
        for _ in 0..400 {
            if deployer.get("d2").unwrap().state == DeploymentState::Rebooting {
                return deployer;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("not rebooting: {:?}", deployer.get("d2"));
    }

    /// The host comes back (new boot id) on `system`, and a fresh agent recovers.
    async fn boot(&self, system: &StorePath, id: &str) -> Arc<Deployer> {
        std::fs::write(self.dir().join("boot_id"), format!("{id}\n")).unwrap();
        let link = self.dir().join("booted-system");
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(system.as_str(), &link).unwrap();
        let deployer = self.host.deployer_with(self.options.clone());
        deployer.recover().await;
        deployer
    }
}

async fn state_of(deployer: &Deployer, id: &str, want: DeploymentState) -> Deployment {
    for _ in 0..400 {
        let d = deployer.get(id).unwrap();
        if d.state == want {
            return d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("{id} never {want:?}: {:?}", deployer.get(id));
}

#[tokio::test]
async fn the_new_system_boots_once_and_only_the_confirmation_makes_it_the_default() {
    let m = Machine::new().await;
    let deployer = m.rebooting(30).await;
    assert!(m.wait_reboot().await, "the reboot was asked for");
    assert_eq!(m.efi("LoaderEntryDefault").as_deref(), Some("nixos-generation-1.conf"), "the previous system");
    assert_eq!(m.efi("LoaderEntryOneShot").as_deref(), Some("nixos-generation-2.conf"), "the new one, once");
    assert!(m.host.ran().contains(&"new boot".to_owned()), "{:?}", m.host.ran());
    let progress = deployer.get("d2").unwrap().reboot.unwrap();
    assert_eq!((progress.boot_id_before.as_str(), progress.boot_id_after), ("boot-1", None));
    drop(deployer);

    let deployer = m.boot(&m.new, "boot-2").await;
    let d = state_of(&deployer, "d2", DeploymentState::AwaitingConfirmation).await;
    let progress = d.reboot.unwrap();
    assert_eq!((progress.boot_id_after.as_deref(), progress.booted.as_ref()), (Some("boot-2"), Some(&m.new)));
    assert_eq!(m.efi("LoaderEntryDefault").as_deref(), Some("nixos-generation-1.conf"), "not before the confirmation");
    deployer.confirm("d2").unwrap();
    assert_eq!(m.efi("LoaderEntryDefault").as_deref(), Some("nixos-generation-2.conf"));
    assert_eq!(crate::running::running_from_journal(&deployer.records()), Some(m.new.clone()), "it runs now");
    assert!(!m.take_reboot(), "no second reboot");
}

#[tokio::test]
async fn back_on_the_previous_system_it_is_rolled_back_with_the_reason() {
    let m = Machine::new().await;
    drop(m.rebooting(30).await);
    assert!(m.wait_reboot().await);
    let deployer = m.boot(&m.old, "boot-2").await;
    let d = ended(&deployer, "d2").await;
    assert_eq!((d.state, d.end_reason), (DeploymentState::RolledBack, Some(EndReason::BootedPrevious)), "{d:?}");
    let error = d.error.unwrap();
    assert!(error.starts_with(&format!("booted {} instead of {}: the new generation did not come up", m.old, m.new)));
    assert_eq!(m.host.current().unwrap().1.as_ref(), Some(&m.old), "the profile points back");
    assert_eq!(m.host.ran().last().map(String::as_str), Some("old boot"), "{:?}", m.host.ran());
    assert_eq!(m.efi("LoaderEntryDefault").as_deref(), Some("nixos-generation-1.conf"));
    assert!(!m.wait_reboot().await, "it runs the previous system already: no reboot");
}

#[tokio::test]
async fn an_unconfirmed_reboot_is_rolled_back_and_rebooted_into_the_previous_system() {
    let m = Machine::new().await;
    drop(m.rebooting(1).await);
    assert!(m.wait_reboot().await);
    let deployer = m.boot(&m.new, "boot-2").await;
    let d = ended(&deployer, "d2").await;
    assert_eq!((d.state, d.end_reason), (DeploymentState::RolledBack, Some(EndReason::NotConfirmed)), "{d:?}");
    assert_eq!(m.efi("LoaderEntryDefault").as_deref(), Some("nixos-generation-1.conf"));
    assert_eq!(m.host.current().unwrap().1.as_ref(), Some(&m.old));
    assert!(m.wait_reboot().await, "no reboot into the previous system");
}

#[tokio::test]
async fn an_agent_restarted_before_the_reboot_asks_for_it_again() {
    let m = Machine::new().await;
    drop(m.rebooting(30).await);
    assert!(m.wait_reboot().await);
    let deployer = m.host.deployer_with(m.options.clone());
    deployer.recover().await;
    assert!(m.wait_reboot().await, "the reboot was not asked for again");
    assert_eq!(deployer.get("d2").unwrap().state, DeploymentState::Rebooting);
}

#[tokio::test]
async fn a_reboot_is_refused_without_a_boot_loader_or_in_another_mode() {
    let m = Machine::new().await;
    let deployer = m.host.deployer_with(m.options.clone());
    let mut req = request("s1", &m.new, Mode::Switch, 30);
    req.reboot = true;
    let e = deployer.create(req).await.unwrap_err().to_string();
    assert!(e.contains("reboot: only a `boot` deployment can reboot into its system (mode is `switch`)"), "{e}");
    std::fs::remove_file(m.dir().join("esp/loader/loader.conf")).unwrap();
    let mut req = request("b1", &m.new, Mode::Boot, 30);
    req.reboot = true;
    let e = deployer.create(req).await.unwrap_err().to_string();
    assert!(e.contains("reboot: no supported boot loader: ") && e.contains("loader/loader.conf"), "{e}");
    assert!(m.host.ran().is_empty(), "nothing ran");
}
