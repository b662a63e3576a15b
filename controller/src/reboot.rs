//! Reboots in a rollout (issue 16): whether a host is rebooted into its new system
//! (fleet.yaml `reboot`, `apply --reboot`, `hostctl reboot`), and what is reported of it.
//! The agent does the reboot itself (a `boot` deployment with `reboot`, see the agent's
//! `boot_once.rs`); `deploy.rs` waits for it with the hard `--reboot-timeout`.
//!
//! Never decides what the host boots, and never reboots a host by any other means.

use std::path::Path;

use hostctl_schemas::api::deployments::{Deployment, DeploymentState, RebootReason};
use hostctl_schemas::api::status::StatusResponse;
use hostctl_schemas::ids::StorePath;
use hostctl_schemas::inventory::RebootPolicy;
use schemars::JsonSchema;
use serde::Serialize;

/// A host's reboot as `apply`, `reboot` (`--json`) report it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RebootReport {
    /// Why it was rebooted (`kernel, initrd changed`, `reboot: always`, `hostctl reboot`).
    pub why: String,
    /// The boot id before the reboot (from the agent's journal).
    pub boot_id_before: Option<String>,
    /// The boot id once the host was back; null if it did not come back.
    pub boot_id_after: Option<String>,
    /// The system the host booted (`/run/booted-system`); null if it did not come back.
    pub booted: Option<String>,
    /// Whether it came back on the new system.
    pub booted_new: bool,
}

impl RebootReport {
    /// A reboot asked for `why`, before anything is known of it.
    pub fn asked(why: String) -> Self {
        Self { why, boot_id_before: None, boot_id_after: None, booted: None, booted_new: false }
    }

    /// Adds what the agent's record says of the reboot.
    pub fn with_deployment(mut self, d: &Deployment) -> Self {
        if let Some(progress) = &d.reboot {
            self.boot_id_before = Some(progress.boot_id_before.clone());
            self.boot_id_after = progress.boot_id_after.clone();
            self.booted = progress.booted.as_ref().map(ToString::to_string);
            self.booted_new = progress.booted.as_ref() == Some(&d.toplevel);
        }
        self
    }

    /// The human line's note: `rebooted (boot 1a2b3c4d -> 5e6f7a8b)`.
    pub fn note(&self) -> String {
        let short = |id: &Option<String>| id.as_deref().map_or("?", |i| i.get(..8).unwrap_or(i)).to_owned();
        match (&self.boot_id_after, self.booted_new) {
            (Some(_), true) => {
                format!(
                    "rebooted ({}; boot {} -> {})",
                    self.why,
                    short(&self.boot_id_before),
                    short(&self.boot_id_after)
                )
            }
            (Some(_), false) => format!(
                "rebooted ({}) but came back on {}",
                self.why,
                self.booted.as_deref().unwrap_or("an unknown system")
            ),
            (None, _) => format!("reboot ({}) not completed", self.why),
        }
    }
}

/// Why `policy` reboots a host whose agent reported `status` into `toplevel`; `None`:
/// no reboot. An unchanged host (already at `toplevel`) is rebooted only when its agent
/// says its system needs one. `if-needed` compares the boot parts of the booted system
/// and the new one in this machine's store; a booted system this machine lacks cannot
/// be compared, and is not rebooted (its agent's `reboot_required` says the rest).
pub fn wanted(policy: RebootPolicy, status: &StatusResponse, toplevel: &StorePath, unchanged: bool) -> Option<String> {
    if policy == RebootPolicy::Never {
        return None;
    }
    if unchanged {
        return (status.reboot_required == Some(true)).then(|| changed(&status.reboot_reasons));
    }
    if policy == RebootPolicy::Always {
        return Some("reboot: always".to_owned());
    }
    let booted = status.booted_system.as_deref().map(Path::new).filter(|p| p.is_dir())?;
    let reasons = hostctl_nix::boot_parts::compare(booted, Path::new(toplevel.as_str()));
    (!reasons.is_empty()).then(|| changed(&reasons))
}

/// `kernel, initrd changed`.
fn changed(reasons: &[RebootReason]) -> String {
    let parts: Vec<&str> = reasons.iter().map(|r| r.part.as_str()).collect();
    format!("{} changed", parts.join(", "))
}

/// Whether `d` says the host came back from its reboot (an agent answering after it).
pub fn came_back(d: &Deployment) -> bool {
    d.state != DeploymentState::Rebooting && d.reboot.as_ref().is_some_and(|r| r.boot_id_after.is_some())
}
