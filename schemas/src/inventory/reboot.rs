//! fleet.yaml's `reboot` (per host, per tag in `tag_reboot`, or in `defaults`): whether
//! `apply` reboots a host into its new system (issue 16).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// When `apply` reboots a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RebootPolicy {
    /// Never: a system that needs a reboot is activated as usual and shows
    /// `reboot_required` (also with `apply --reboot`).
    Never,
    /// When the new system's boot parts (kernel, initrd, kernel modules, kernel
    /// parameters, systemd) differ from the booted system's: activated with `boot`,
    /// booted once, confirmed. What `apply --reboot` does for hosts without a setting.
    IfNeeded,
    /// Every deployment of the host is activated with `boot` and rebooted into.
    Always,
}

impl RebootPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::IfNeeded => "if-needed",
            Self::Always => "always",
        }
    }
}
