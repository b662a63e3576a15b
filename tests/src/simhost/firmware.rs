//! The fast lane's stand-in for UEFI firmware and systemd-boot (issue 16; the real ones
//! are the VM lane's): a simulated ESP in ROOT/state/esp (the example's
//! `switch-to-configuration` writes its loader entries when `loader/loader.conf` exists),
//! a `bootctl` double on the agent's PATH that keeps the EFI variables
//! `LoaderEntryDefault` and `LoaderEntryOneShot` as files in ROOT/efivars, a boot id in
//! ROOT/boot_id, and a reboot command that only leaves a request (ROOT/reboot-requested)
//! for the test process, which then "boots" the host ([`SimHost::firmware_boot`]): the
//! agent stopped, the one-shot entry (consumed) or else the default entry chosen as
//! systemd-boot does, `/run/booted-system` pointed at its `init=` system, a new boot id,
//! the agent started again. A system marked unbootable ([`SimHost::make_unbootable`])
//! "panics": the watchdog's power cycle then boots the default entry.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use super::SimHost;
use crate::fail;

/// The `bootctl` double: `bootctl --esp-path=ESP set-default|set-oneshot ENTRY`
/// (`""` removes the variable), refusing an ESP without loader.conf or an unknown entry.
const BOOTCTL: &str = r#"#!/bin/sh
# bootctl double (hostctl fast test lane): EFI variables are files in $EFIVARS.
set -u
esp=
case ${1-} in --esp-path=*) esp=${1#--esp-path=}; shift ;; esac
[ -f "$esp/loader/loader.conf" ] || { echo "bootctl: $esp/loader/loader.conf: not a systemd-boot ESP" >&2; exit 1; }
case ${1-} in
  set-default) var=LoaderEntryDefault ;;
  set-oneshot) var=LoaderEntryOneShot ;;
  *) echo "bootctl double: unsupported command ${1-}" >&2; exit 1 ;;
esac
entry=${2-}
if [ -z "$entry" ]; then /bin/rm -f "$EFIVARS/$var"; exit 0; fi
[ -f "$esp/loader/entries/$entry" ] || { echo "bootctl: no boot loader entry $entry" >&2; exit 1; }
printf '%s\n' "$entry" > "$EFIVARS/$var"
"#;

/// How a simulated boot went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// The entries tried, in order (a panicking one first, then the default).
    pub entries: Vec<String>,
    /// The system that came up.
    pub system: String,
}

impl SimHost {
    fn esp(&self) -> PathBuf {
        self.state_dir().join("esp")
    }

    fn efivars(&self) -> PathBuf {
        self.root.join("efivars")
    }

    fn reboot_request(&self) -> PathBuf {
        self.root.join("reboot-requested")
    }

    fn boot_id_file(&self) -> PathBuf {
        self.root.join("boot_id")
    }

    /// Gives the host the simulated ESP, `bootctl` double and boot id; returns the
    /// agent.yaml `boot:` block that uses them (append it to the agent's configuration).
    pub fn install_boot_loader(&mut self) -> String {
        let write = |path: PathBuf, text: &str| {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
            }
            std::fs::write(&path, text).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
        };
        write(self.esp().join("loader/loader.conf"), "timeout 0\n");
        std::fs::create_dir_all(self.esp().join("loader/entries")).unwrap_or_else(|e| fail(&e.to_string()));
        std::fs::create_dir_all(self.efivars()).unwrap_or_else(|e| fail(&e.to_string()));
        let bootctl = self.root.join("bin/bootctl");
        let efivars = serde_json::Value::String(self.efivars().display().to_string());
        write(bootctl.clone(), &BOOTCTL.replace("set -u\n", &format!("set -u\nEFIVARS={efivars}\n")));
        std::fs::set_permissions(&bootctl, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| fail(&e.to_string()));
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![self.root.join("bin")];
        dirs.extend(std::env::split_paths(&path));
        self.path = Some(std::env::join_paths(dirs).unwrap_or_else(|e| fail(&e.to_string())));
        self.new_boot_id();
        let quote = |p: PathBuf| serde_json::Value::String(p.display().to_string()).to_string();
        format!(
            "boot:\n  esp: {}\n  boot_id_file: {}\n  reboot_command: [\"/bin/touch\", {}]\n",
            quote(self.esp()),
            quote(self.boot_id_file()),
            quote(self.reboot_request())
        )
    }

    fn new_boot_id(&self) {
        let id = format!("{:032x}", rand_u128());
        std::fs::write(self.boot_id_file(), format!("{id}\n")).unwrap_or_else(|e| fail(&e.to_string()));
    }

    /// The host's boot id now.
    pub fn boot_id(&self) -> String {
        std::fs::read_to_string(self.boot_id_file()).unwrap_or_default().trim().to_owned()
    }

    /// An EFI variable of the double (`LoaderEntryDefault`, `LoaderEntryOneShot`).
    pub fn efi_variable(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.efivars().join(name)).ok().map(|t| t.trim().to_owned())
    }

    /// The system the loader entry `entry` boots (its `init=<toplevel>/init`).
    pub fn entry_system(&self, entry: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.esp().join("loader/entries").join(entry)).ok()?;
        let options = text.lines().find_map(|l| l.strip_prefix("options "))?;
        options.split_whitespace().find_map(|w| w.strip_prefix("init=")?.strip_suffix("/init")).map(str::to_owned)
    }

    /// What the loader boots when nothing is asked for: `LoaderEntryDefault`, else
    /// loader.conf's `default`.
    pub fn default_entry(&self) -> Option<String> {
        self.efi_variable("LoaderEntryDefault").or_else(|| {
            let conf = std::fs::read_to_string(self.esp().join("loader/loader.conf")).ok()?;
            conf.lines().find_map(|l| l.strip_prefix("default ")).map(|e| e.trim().to_owned())
        })
    }

    /// Makes `toplevel` panic at boot (from the next simulated boot on).
    pub fn make_unbootable(&self, toplevel: &str) {
        let file = self.root.join("unbootable");
        let mut text = std::fs::read_to_string(&file).unwrap_or_default();
        text.push_str(&format!("{toplevel}\n"));
        std::fs::write(&file, text).unwrap_or_else(|e| fail(&e.to_string()));
    }

    fn unbootable(&self, toplevel: &str) -> bool {
        std::fs::read_to_string(self.root.join("unbootable")).unwrap_or_default().lines().any(|l| l == toplevel)
    }

    /// Whether the agent asked for a reboot since the last [`SimHost::firmware_boot`];
    /// takes the request.
    pub fn take_reboot_request(&self) -> bool {
        std::fs::remove_file(self.reboot_request()).is_ok()
    }

    /// The agent asked for a reboot and the host went down: stops the agent (SIGTERM, as
    /// systemd does at shutdown) and leaves it down (a host that never comes back).
    pub fn shut_down(&mut self) {
        self.stop_agent();
    }

    /// A reboot: the agent stopped, then the firmware boots as described in the module
    /// documentation, and the agent starts again.
    pub fn firmware_boot(&mut self) -> Boot {
        self.stop_agent();
        let mut entries = Vec::new();
        let oneshot = self.efi_variable("LoaderEntryOneShot");
        let _ = std::fs::remove_file(self.efivars().join("LoaderEntryOneShot"));
        let mut system = None;
        for entry in oneshot.into_iter().chain(self.default_entry()) {
            let Some(toplevel) = self.entry_system(&entry) else { fail(&format!("no loader entry {entry}")) };
            entries.push(entry);
            if !self.unbootable(&toplevel) {
                system = Some(toplevel);
                break;
            }
        }
        let Some(system) = system else { fail(&format!("host {}: no entry boots: {entries:?}", self.name)) };
        self.new_boot_id();
        self.reboot_into(&system);
        Boot { entries, system }
    }
}

/// Random enough for a boot id (never the same twice in a test run).
fn rand_u128() -> u128 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    (u128::from(h.finish()) << 64) | u128::from(std::process::id())
}
