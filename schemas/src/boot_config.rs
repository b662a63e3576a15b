//! agent.yaml's `boot`: where the agent finds the boot loader and how it reboots the
//! host for a deployment that asks for a reboot (issue 16).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the EFI system partition is mounted by default (NixOS's `boot.loader.efi.efiSysMountPoint`).
pub const DEFAULT_ESP: &str = "/boot";

/// The kernel's boot id: a new one after every boot.
pub const DEFAULT_BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

/// Boot loader and reboot settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    /// Where the EFI system partition is mounted: systemd-boot's `loader/loader.conf`
    /// and `loader/entries/` are there. Without `loader/loader.conf` a deployment that
    /// asks for a reboot is refused (400).
    #[serde(default = "default_esp")]
    pub esp: PathBuf,
    /// The program (and arguments) that reboots the host, instead of systemd's
    /// `reboot.target` over D-Bus (what `systemctl reboot` does). Empty: systemd's,
    /// which needs the agent to run under systemd. The test lanes use it for a simulated
    /// reboot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reboot_command: Vec<String>,
    /// The file holding the boot id that proves a reboot happened.
    #[serde(default = "default_boot_id_file")]
    pub boot_id_file: PathBuf,
}

impl Default for BootConfig {
    fn default() -> Self {
        Self { esp: default_esp(), reboot_command: Vec::new(), boot_id_file: default_boot_id_file() }
    }
}

impl BootConfig {
    /// Whether nothing was changed from the defaults (then it is left out when printed).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_esp() -> PathBuf {
    PathBuf::from(DEFAULT_ESP)
}

fn default_boot_id_file() -> PathBuf {
    PathBuf::from(DEFAULT_BOOT_ID_FILE)
}
