//! A deployment's [`Outcome`] as report fields and a human summary: what `apply` and
//! `rollback` entries share. Knows nothing of either command.

use hostctl_schemas::text::plural;
use schemars::JsonSchema;
use serde::Serialize;

use crate::deploy::Outcome;
use crate::health::CheckReport;
use crate::progress;
use crate::report::HostResult;

/// How a host's deployment (or rollback) went; every key is present, null where it
/// does not apply.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct OutcomeFields {
    /// NAR bytes of the paths copied to the host.
    pub bytes_copied: u64,
    /// The deployment's id on the agent.
    pub deployment: Option<String>,
    /// The system profile generation the host ended on.
    pub generation: Option<u64>,
    /// The http health checks the controller ran.
    pub health: Vec<CheckReport>,
    /// The tail of the activation's output, when it explains a failure.
    pub log_tail: Option<String>,
    pub paths_copied: u64,
    /// The toplevel the host ran before.
    pub previous_toplevel: Option<String>,
    /// Wall time the host took, in seconds (millisecond precision).
    pub seconds: f64,
    /// The step the host failed at (`connect`, `push`, `activate`, `health`, ...).
    pub step: Option<&'static str>,
    /// Compressed bytes sent.
    pub wire_bytes: u64,
    /// Whether the system needs a reboot to take full effect (its kernel, initrd,
    /// kernel modules, kernel parameters or systemd differ from the booted system's);
    /// null when the agent could not tell (or is older).
    pub reboot_required: Option<bool>,
    /// What differs: `{part, booted, new}` per part.
    pub reboot_reasons: Vec<hostctl_schemas::api::deployments::RebootReason>,
    /// The host's reboot into its new system (`apply --reboot`, fleet.yaml `reboot`,
    /// `hostctl reboot`); null when it was not rebooted.
    pub reboot: Option<crate::reboot::RebootReport>,
}

impl OutcomeFields {
    pub fn new(o: &Outcome) -> Self {
        Self {
            bytes_copied: o.pushed.nar_bytes,
            deployment: o.deployment.clone(),
            generation: o.generation,
            health: o.health.clone(),
            log_tail: o.log_tail.clone(),
            paths_copied: o.pushed.paths,
            previous_toplevel: o.previous_toplevel.clone(),
            seconds: (o.seconds * 1000.0).round() / 1000.0,
            step: o.step.map(|s| s.as_str()),
            wire_bytes: o.pushed.wire_bytes,
            reboot_required: o.reboot_required,
            reboot_reasons: o.reboot_reasons.clone(),
            reboot: o.reboot.clone(),
        }
    }
}

/// The human line's text after the result: the generation and what was copied, the
/// toplevel kept, or the failed step.
pub fn summary(o: &Outcome, toplevel: Option<&str>) -> String {
    let mut text = result_summary(o, toplevel);
    if let Some(reboot) = &o.reboot {
        text = format!("{text}; {}", reboot.note());
    }
    let rebooted = o.reboot.as_ref().is_some_and(|r| r.booted_new);
    match (o.result, o.reboot_required) {
        (HostResult::Activated | HostResult::Unchanged, Some(true)) if !rebooted => {
            format!("{text}; {}", reboot_note(&o.reboot_reasons))
        }
        _ => text,
    }
}

/// `reboot required (kernel, initrd changed)`.
pub fn reboot_note(reasons: &[hostctl_schemas::api::deployments::RebootReason]) -> String {
    let parts: Vec<&str> = reasons.iter().map(|r| r.part.as_str()).collect();
    if parts.is_empty() {
        "reboot required".to_owned()
    } else {
        format!("reboot required ({} changed)", parts.join(", "))
    }
}

fn result_summary(o: &Outcome, toplevel: Option<&str>) -> String {
    match (o.result, o.step) {
        (HostResult::Activated, _) => format!(
            "generation {}, {} ({}) copied",
            o.generation.map_or_else(|| "-".to_owned(), |g| g.to_string()),
            plural(o.pushed.paths, "path", "paths"),
            progress::bytes(o.pushed.nar_bytes)
        ),
        (HostResult::Unchanged, _) => toplevel.unwrap_or_default().to_owned(),
        (_, Some(step)) => format!("at step {}", step.as_str()),
        _ => String::new(),
    }
}
