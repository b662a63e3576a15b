//! The agent's state in the Prometheus text exposition format (0.0.4), served as
//! `GET /metrics` by `crate::http::metrics`.
//!
//! Unauthenticated, as DESIGN.md says (scrapers do not sign requests), so it shows only
//! what a fleet's monitoring should see: the running system's identity, deployment and
//! rollback totals, the last activation and pull steps, the pending lock change, binfmt
//! entries. Computed per scrape from the status snapshot and the journal: totals survive
//! a restart because they are counted from the journal, not kept in memory.

use std::fmt::Write as _;

use hostctl_schemas::api::deployments::DeploymentState;
use hostctl_schemas::api::status::{AgentState, StatusResponse};

use crate::journal::Record;
use crate::pull::{PullOutcomes, StepOutcome};

/// The exposition format's content type.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The text of one scrape.
pub fn render(status: &StatusResponse, records: &[Record], pull: Option<&PullOutcomes>) -> String {
    let mut out = Text::default();
    out.family("hostctl_agent_info", "gauge", "The agent: version, host name and Nix system.");
    out.sample(
        "hostctl_agent_info",
        &[("version", &status.version), ("hostname", &status.hostname), ("system", &status.system)],
        1,
    );
    out.family("hostctl_agent_state", "gauge", "1 for what the agent is doing now.");
    for (state, name) in [
        (AgentState::Idle, "idle"),
        (AgentState::Activating, "activating"),
        (AgentState::AwaitingConfirmation, "awaiting-confirmation"),
    ] {
        out.sample("hostctl_agent_state", &[("state", name)], u64::from(status.state == state));
    }
    system(&mut out, status);
    deployments(&mut out, records);
    out.family("hostctl_binfmt_emulated", "gauge", "binfmt_misc entries registered for emulated systems.");
    for system in &status.emulated_systems {
        out.sample("hostctl_binfmt_emulated", &[("system", system)], 1);
    }
    if let (Some(pull), Some(outcomes)) = (&status.pull, pull) {
        out.family("hostctl_pull_info", "gauge", "Pull mode: the tracked remote, branch and lock policy.");
        out.sample(
            "hostctl_pull_info",
            &[("url", &pull.url), ("branch", &pull.branch), ("lock_policy", &pull.lock_policy)],
            1,
        );
        for (step, outcome) in
            [("fetch", outcomes.fetch), ("verify", outcomes.verify), ("eval", outcomes.eval), ("build", outcomes.build)]
        {
            step_metrics(&mut out, &format!("hostctl_pull_last_{step}"), &format!("the last {step}"), outcome);
        }
        out.family(
            "hostctl_pull_pending_lock_change",
            "gauge",
            "1 while a commit with another lock waits for approval.",
        );
        out.sample("hostctl_pull_pending_lock_change", &[], u64::from(pull.pending_commit.is_some()));
        if let Some(commit) = &pull.pending_commit {
            let lock = pull.pending_lock.as_ref().map(ToString::to_string).unwrap_or_default();
            out.family("hostctl_pull_pending_info", "gauge", "The commit and lock held as a pending lock change.");
            out.sample("hostctl_pull_pending_info", &[("commit", commit), ("lock", &lock)], 1);
        }
        if let Some(refused) = &pull.refused {
            let help = "The newest fetched commit the signature policy refused, and why.";
            out.family("hostctl_pull_commit_refused_info", "gauge", help);
            let labels = [("commit", refused.commit.as_str()), ("reason", refused.reason.as_str())];
            out.sample("hostctl_pull_commit_refused_info", &labels, 1);
        }
    }
    out.0
}

/// The running system: generation, and its rev/lock/toplevel as labels.
fn system(out: &mut Text, status: &StatusResponse) {
    if let Some(generation) = status.generation {
        out.family("hostctl_system_generation", "gauge", "The system profile's current generation.");
        out.sample("hostctl_system_generation", &[], generation);
    }
    if let Some(toplevel) = &status.toplevel {
        let (rev, lock, deployment) = (status.rev.as_deref(), status.lock.as_deref(), status.deployment.as_deref());
        out.family("hostctl_system_info", "gauge", "The system the profile points at, and where it comes from.");
        out.sample(
            "hostctl_system_info",
            &[
                ("toplevel", toplevel),
                ("rev", rev.unwrap_or_default()),
                ("lock", lock.unwrap_or_default()),
                ("deployment", deployment.unwrap_or_default()),
            ],
            1,
        );
    }
    if let Some(lock) = &status.pinned_lock {
        out.family("hostctl_pinned_lock_info", "gauge", "The lock the host is pinned to.");
        out.sample("hostctl_pinned_lock_info", &[("lock", lock)], 1);
    }
    if let Some(required) = status.reboot_required {
        let help = "1 when the system the profile points at needs a reboot to take full effect.";
        out.family("hostctl_reboot_required", "gauge", help);
        out.sample("hostctl_reboot_required", &[], u64::from(required));
        if required {
            let help = "The parts that differ from the booted system's (kernel, initrd, ...).";
            out.family("hostctl_reboot_required_reason", "gauge", help);
            for reason in &status.reboot_reasons {
                out.sample("hostctl_reboot_required_reason", &[("part", &reason.part)], 1);
            }
        }
    }
}

/// Totals by result, rollbacks, and the last activation, from the journal.
fn deployments(out: &mut Text, records: &[Record]) {
    let finals = [
        (DeploymentState::Confirmed, "confirmed"),
        (DeploymentState::Failed, "failed"),
        (DeploymentState::RolledBack, "rolled-back"),
    ];
    out.family("hostctl_deployments_total", "counter", "Deployments in the journal that ended, by result.");
    for (state, name) in finals {
        let count = records.iter().filter(|r| r.deployment.state == state).count();
        out.sample("hostctl_deployments_total", &[("result", name)], count as u64);
    }
    let rollbacks = records.iter().filter(|r| r.rollback.is_some() || r.deployment.rollback_of.is_some()).count();
    out.family("hostctl_rollbacks_total", "counter", "Rollbacks: automatic ones and those asked for.");
    out.sample("hostctl_rollbacks_total", &[], rollbacks as u64);
    let last = records
        .iter()
        .filter(|r| finals.iter().any(|(s, _)| *s == r.deployment.state))
        .filter_map(|r| Some((r.deployment.finished?, r.deployment.state == DeploymentState::Confirmed)))
        .max_by_key(|(time, _)| *time);
    step_metrics(
        out,
        "hostctl_last_activation",
        "the last deployment that ended (success: confirmed)",
        last.map(|(time, ok)| StepOutcome { time, ok }),
    );
    last_deployment_info(out, records);
}

/// One sample for the newest deployment that ended: its id, result, why, and who asked
/// (key name and address; empty when not recorded, e.g. pull mode's own). One series at
/// a time, so the labels cannot multiply.
fn last_deployment_info(out: &mut Text, records: &[Record]) {
    let Some(d) = records.iter().rev().map(|r| &r.deployment).find(|d| d.state.is_final()) else { return };
    let name = |v: serde_json::Result<serde_json::Value>| {
        v.ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    };
    let (key, address) =
        d.requested_by.as_ref().map(|r| (r.key.as_str(), r.address.as_deref().unwrap_or_default())).unwrap_or_default();
    let result = name(serde_json::to_value(d.state));
    let reason = d.end_reason.map(|r| name(serde_json::to_value(r))).unwrap_or_default();
    out.family(
        "hostctl_last_deployment_info",
        "gauge",
        "The newest deployment that ended: id, result, end reason, and the key and address that asked for it.",
    );
    out.sample(
        "hostctl_last_deployment_info",
        &[("deployment", &d.id), ("result", &result), ("end_reason", &reason), ("key", key), ("address", address)],
        1,
    );
}

/// The newest garbage collection's figures (`crate::gc`'s journal), when one ran.
pub fn render_gc(reports: &[hostctl_schemas::api::gc::GcReport]) -> String {
    let mut out = Text::default();
    let Some(last) = reports.last() else { return out.0 };
    for (name, help, value) in [
        ("hostctl_gc_last_run_timestamp_seconds", "Unix time the newest garbage collection ended.", last.finished),
        ("hostctl_gc_last_bytes_freed", "Bytes (NAR sizes) the newest garbage collection freed.", last.bytes_freed),
        (
            "hostctl_gc_last_generations_deleted",
            "System generations the newest garbage collection deleted.",
            last.deleted_generations.len() as u64,
        ),
        (
            "hostctl_gc_last_store_paths_deleted",
            "Store paths the newest garbage collection deleted.",
            last.store_paths.len() as u64,
        ),
    ] {
        out.family(name, "gauge", help);
        out.sample(name, &[], value);
    }
    out.0
}

/// `<prefix>_timestamp_seconds` and `<prefix>_success`, when the step has run.
fn step_metrics(out: &mut Text, prefix: &str, what: &str, outcome: Option<StepOutcome>) {
    let Some(outcome) = outcome else { return };
    let (time, success) = (format!("{prefix}_timestamp_seconds"), format!("{prefix}_success"));
    out.family(&time, "gauge", &format!("Unix time {what} ended."));
    out.sample(&time, &[], outcome.time);
    out.family(&success, "gauge", &format!("1 if {what} succeeded."));
    out.sample(&success, &[], u64::from(outcome.ok));
}

/// The exposition text being written.
#[derive(Debug, Default)]
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}", help.replace('\\', "\\\\").replace('\n', "\\n"));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label(v))).collect();
            let _ = write!(self.0, "{{{}}}", pairs.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Label values escape backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_families_declared_once() {
        let mut out = Text::default();
        out.family("m", "gauge", "help\nwith a newline");
        out.sample("m", &[("a", "x\"y\\z\nw")], 3);
        out.sample("m", &[], 0);
        assert_eq!(out.0, "# HELP m help\\nwith a newline\n# TYPE m gauge\nm{a=\"x\\\"y\\\\z\\nw\"} 3\nm 0\n");
    }

    fn status() -> StatusResponse {
        let emulated_systems = vec!["aarch64-linux".into(), "riscv64-linux".into()];
        StatusResponse { emulated_systems, ..StatusResponse::idle("web1") }
    }

    #[test]
    fn binfmt_entries_and_a_pending_lock_change_are_shown() {
        let lock: hostctl_schemas::ids::LockId = "a".repeat(64).parse().unwrap();
        let mut status = status();
        status.pull = Some(hostctl_schemas::api::status::PullStatus {
            url: "https://git.example.com/infra.git".into(),
            branch: "main".into(),
            lock_policy: "pinned".into(),
            fetched_commit: Some("c".repeat(40)),
            applied_commit: None,
            pending_commit: Some("c".repeat(40)),
            pending_lock: Some(lock.clone()),
            last_fetch: Some(5),
            last_error: None,
            refused: None,
        });
        let outcomes = PullOutcomes {
            fetch: Some(StepOutcome { time: 5, ok: true }),
            eval: Some(StepOutcome { time: 6, ok: false }),
            build: None,
            verify: Some(StepOutcome { time: 5, ok: false }),
        };
        let text = render(&status, &[], Some(&outcomes));
        for line in [
            "hostctl_binfmt_emulated{system=\"aarch64-linux\"} 1\n",
            "hostctl_binfmt_emulated{system=\"riscv64-linux\"} 1\n",
            "hostctl_pull_last_fetch_success 1\n",
            "hostctl_pull_last_eval_success 0\n",
            "hostctl_pull_last_verify_success 0\n",
            "hostctl_pull_last_eval_timestamp_seconds 6\n",
            "hostctl_pull_pending_lock_change 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        assert!(text.contains(&format!("hostctl_pull_pending_info{{commit=\"{}\",lock=\"{lock}\"}} 1", "c".repeat(40))));
        assert!(!text.contains("hostctl_pull_last_build"), "the build never ran");
        assert!(!render(&self::status(), &[], None).contains("hostctl_pull_"), "push mode has no pull metrics");
    }

    #[test]
    fn a_needed_reboot_is_shown_with_its_parts_and_an_unknown_one_is_not() {
        use hostctl_schemas::api::deployments::RebootReason;
        assert!(!render(&status(), &[], None).contains("hostctl_reboot_required"), "not known: no sample");
        let mut status = status();
        status.reboot_required = Some(true);
        let reason = |part: &str| RebootReason { part: part.into(), booted: None, new: Some("x".into()) };
        status.reboot_reasons = vec![reason("kernel"), reason("initrd")];
        let text = render(&status, &[], None);
        for line in [
            "hostctl_reboot_required 1\n",
            "hostctl_reboot_required_reason{part=\"kernel\"} 1\n",
            "hostctl_reboot_required_reason{part=\"initrd\"} 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        status.reboot_required = Some(false);
        status.reboot_reasons.clear();
        let text = render(&status, &[], None);
        assert!(text.contains("hostctl_reboot_required 0\n") && !text.contains("_reason{"), "{text}");
    }

    #[test]
    fn steps_that_never_ran_have_no_samples() {
        let mut out = Text::default();
        step_metrics(&mut out, "p", "x", None);
        assert!(out.0.is_empty());
        step_metrics(&mut out, "p", "x", Some(StepOutcome { time: 7, ok: false }));
        assert!(out.0.contains("p_timestamp_seconds 7\n") && out.0.contains("p_success 0\n"), "{}", out.0);
    }

    #[test]
    fn the_last_deployment_names_who_asked_for_it() {
        use hostctl_schemas::api::deployments::{EndReason, Requester};
        let mut records: Vec<Record> = ["d1", "d2", "d3"]
            .iter()
            .map(|id| Record::new(crate::journal::tests::deployment(id), Default::default()))
            .collect();
        records[0].deployment.state = DeploymentState::Confirmed;
        records[1].deployment.state = DeploymentState::RolledBack;
        records[1].deployment.end_reason = Some(EndReason::HealthCheckFailed);
        records[1].deployment.requested_by = Some(Requester { key: "ops".into(), address: Some("10.0.0.9".into()) });
        let text = render(&status(), &records, None);
        let line = "hostctl_last_deployment_info{deployment=\"d2\",result=\"rolled-back\",\
                    end_reason=\"health-check-failed\",key=\"ops\",address=\"10.0.0.9\"} 1\n";
        assert!(text.contains(line), "the newest ended one, d3 is still queued:\n{text}");
        assert_eq!(text.matches("hostctl_last_deployment_info{").count(), 1, "one series");
        assert!(!render(&status(), &records[2..], None).contains("hostctl_last_deployment_info"), "none ended");
    }
}
