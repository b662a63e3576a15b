//! Whether a system needs a reboot: its boot parts (`REBOOT_PARTS`: kernel, initrd,
//! kernel modules, kernel parameters, systemd) compared with the booted system's
//! (`/run/booted-system`). Reads links and small files only; never
//! spawns anything and never changes the host.
//!
//! What "the same part" means is `hostctl_nix::boot_parts`' (the controller compares
//! with it too).

use std::path::Path;

use hostctl_schemas::api::deployments::RebootReason;
use hostctl_schemas::ids::StorePath;

use crate::deploy::Deployer;
use crate::host::StoreFs;

/// The reasons `new` needs a reboot (empty: it does not), `None` when there is no booted
/// system to compare with. `booted_link` is `/run/booted-system`.
pub fn reasons(store: &StoreFs, booted_link: &Path, new: &StorePath) -> Option<Vec<RebootReason>> {
    let booted: StorePath = std::fs::read_link(booted_link).ok()?.to_str()?.parse().ok()?;
    if booted == *new {
        return Some(Vec::new());
    }
    Some(hostctl_nix::boot_parts::compare(&store.real_path(&booted), &store.real_path(new)))
}

impl Deployer {
    /// Journals whether deployment `id`'s system needs a reboot, compared with the booted
    /// system (`booted_system` of the options; `None`: not compared). Done before the
    /// activation, while what runs is still the booted system's successor, not the new one.
    pub(crate) fn note_reboot(&self, id: &str) -> Result<(), String> {
        let Some(booted_link) = &self.options.booted_system else { return Ok(()) };
        let record = self.record(id)?;
        let store = self.activator.store_fs();
        let Some(found) = reasons(store, booted_link, &record.deployment.toplevel) else { return Ok(()) };
        if !found.is_empty() {
            let parts: Vec<&str> = found.iter().map(|r| r.part.as_str()).collect();
            tracing::info!(id, ?parts, "the new system needs a reboot to take full effect");
        }
        self.update(id, |r| {
            r.deployment.reboot_required = Some(!found.is_empty());
            r.deployment.reboot_reasons = found;
        })
        .map(drop)
    }
}

/// Adds to `d` that `switch-to-configuration` exited with 100 (it asks for a reboot).
pub fn note_activation_asked(d: &mut hostctl_schemas::api::deployments::Deployment) {
    d.reboot_required = Some(true);
    d.reboot_reasons.push(activation_asked());
}

/// The reason a `switch-to-configuration` that exited with 100 gives.
pub fn activation_asked() -> RebootReason {
    RebootReason {
        part: "switch-to-configuration".to_owned(),
        booted: None,
        new: Some("exited with 100 (reboot required)".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store under `dir` (a `local?root=` store) with two toplevels: `old` links its
    /// kernel to `linux-a`, `new` to `linux-b`; both have the same systemd link and
    /// `kernel-params` per the arguments.
    fn systems(dir: &Path, new_kernel: &str, new_params: &str) -> (StoreFs, StorePath, StorePath) {
        let store = StoreFs::from_store_url(Some(&format!("local?root={}", dir.display())));
        let old: StorePath = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-web1".parse().unwrap();
        let new: StorePath = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-web1".parse().unwrap();
        for (toplevel, kernel, params) in [(&old, "a", "quiet"), (&new, new_kernel, new_params)] {
            let root = store.real_path(toplevel);
            std::fs::create_dir_all(&root).unwrap();
            let linux = format!("/nix/store/cccccccccccccccccccccccccccccccc-linux-{kernel}/bzImage");
            std::os::unix::fs::symlink(linux, root.join("kernel")).unwrap();
            std::os::unix::fs::symlink("/nix/store/dddddddddddddddddddddddddddddddd-systemd", root.join("systemd"))
                .unwrap();
            std::fs::write(root.join("kernel-params"), format!("{params}\n")).unwrap();
        }
        std::os::unix::fs::symlink(old.as_str(), dir.join("booted-system")).unwrap();
        (store, old, new)
    }

    #[test]
    fn the_same_parts_need_no_reboot_and_a_new_kernel_does() {
        let dir = tempfile::tempdir().unwrap();
        let (store, old, new) = systems(dir.path(), "a", "quiet");
        let booted = dir.path().join("booted-system");
        assert_eq!(reasons(&store, &booted, &new), Some(vec![]), "only the toplevel differs");
        assert_eq!(reasons(&store, &booted, &old), Some(vec![]));

        let dir = tempfile::tempdir().unwrap();
        let (store, _, new) = systems(dir.path(), "b", "quiet console=ttyS0");
        let booted = dir.path().join("booted-system");
        let found = reasons(&store, &booted, &new).unwrap();
        let parts: Vec<&str> = found.iter().map(|r| r.part.as_str()).collect();
        assert_eq!(parts, ["kernel", "kernel-params"]);
        assert_eq!(found[1].booted.as_deref(), Some("quiet"));
        assert_eq!(found[1].new.as_deref(), Some("quiet console=ttyS0"));
        assert!(
            found[0]
                .to_string()
                .ends_with("-linux-a/bzImage -> /nix/store/cccccccccccccccccccccccccccccccc-linux-b/bzImage"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn a_part_only_one_side_has_differs() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, new) = systems(dir.path(), "a", "quiet");
        let initrd = "/nix/store/ffffffffffffffffffffffffffffffff-initrd";
        std::os::unix::fs::symlink(initrd, store.real_path(&new).join("initrd")).unwrap();
        let booted = dir.path().join("booted-system");
        let found = reasons(&store, &booted, &new).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].part.as_str(), found[0].booted.as_deref()), ("initrd", None));
        assert_eq!(found[0].to_string(), format!("initrd: (none) -> {initrd}"));
        std::fs::remove_file(store.real_path(&new).join("systemd")).unwrap();
        let found = reasons(&store, &booted, &new).unwrap();
        assert_eq!(found[1].to_string(), "systemd: /nix/store/dddddddddddddddddddddddddddddddd-systemd -> (none)");
    }

    /// A system in `host`'s store with `kernel-params` and a `switch-to-configuration`
    /// that exits with `code`.
    async fn system(host: &crate::deploy::tests::TestHost, name: &str, params: &str, code: i32) -> StorePath {
        use std::os::unix::fs::PermissionsExt as _;
        let src = host.dir.path().join("src").join(name);
        std::fs::create_dir_all(src.join("bin")).unwrap();
        let script = src.join("bin/switch-to-configuration");
        std::fs::write(&script, format!("#!/bin/sh\nexit {code}\n")).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(src.join("kernel-params"), params).unwrap();
        host.nix.add_to_store(&src).await.unwrap()
    }

    #[tokio::test]
    async fn a_deployment_records_what_needs_a_reboot() {
        use crate::deploy::tests::{ended, request, TestHost};
        use crate::deploy::DeployerOptions;
        use hostctl_schemas::inventory::Mode;
        let host = TestHost::new();
        let (old, new) = (system(&host, "old", "quiet", 0).await, system(&host, "new", "quiet nomodeset", 100).await);
        let booted = host.dir.path().join("booted-system");
        std::os::unix::fs::symlink(old.as_str(), &booted).unwrap();
        let deployer =
            host.deployer_with(DeployerOptions { booted_system: Some(booted), ..DeployerOptions::default() });
        deployer.create(request("d1", &new, Mode::Switch, 0)).await.unwrap();
        let d = ended(&deployer, "d1").await;
        assert_eq!(d.reboot_required, Some(true), "{d:?}");
        let parts: Vec<&str> = d.reboot_reasons.iter().map(|r| r.part.as_str()).collect();
        assert_eq!(parts, ["kernel-params", "switch-to-configuration"]);
        assert_eq!(d.reboot_reasons[0].new.as_deref(), Some("quiet nomodeset"));
        deployer.create(request("d2", &old, Mode::Switch, 0)).await.unwrap();
        let d = ended(&deployer, "d2").await;
        assert_eq!((d.reboot_required, d.reboot_reasons.len()), (Some(false), 0), "back to the booted system");

        let unknown = TestHost::new();
        let system = system(&unknown, "new", "quiet", 0).await;
        let deployer = unknown.deployer();
        deployer.create(request("d1", &system, Mode::Switch, 0)).await.unwrap();
        assert_eq!(ended(&deployer, "d1").await.reboot_required, None, "no booted system to compare with");
    }

    #[test]
    fn without_a_booted_system_it_cannot_be_told() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, new) = systems(dir.path(), "b", "quiet");
        assert_eq!(reasons(&store, &dir.path().join("nothing-here"), &new), None);
        std::os::unix::fs::symlink("/not/a/store/path", dir.path().join("odd")).unwrap();
        assert_eq!(reasons(&store, &dir.path().join("odd"), &new), None);
    }
}
