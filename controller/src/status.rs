//! `hostctl status`: what each agent reports (`GET /v1/status`), and drift: whether the
//! toplevel it runs is what the flake evaluates to now (what `apply` would deploy), and
//! whether the lock it is pinned to is the flake's current lock (after a rollback to an
//! older lock it is not, until the next `apply`). Pull-mode agents add their GitOps state
//! (`mode`, `pull`: tracked branch, fetched and applied commits, pending lock change).
//! Read-only: evaluation only (none with `--no-drift`), no build, nothing sent that
//! changes a host. An agent that answers HTTP 401 is `refused`, another error status
//! `HTTP 500` (...), an answer API v1 does not allow `bad answer`; only one that does not
//! answer is `unreachable`.

use std::sync::Arc;

use hostctl_nix::Nix;
use hostctl_schemas::api::deployments::DeploymentState;
use hostctl_schemas::api::status::{AgentState, DamagedRecord, LastDeployment, PullStatus, StatusResponse};
use hostctl_schemas::ids::{HostName, LockId};
use schemars::JsonSchema;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::context::FleetContext;
use crate::error::Error;
use crate::host::{Host, HostError};
use crate::pipeline::{eval_selected, EvalOptions, Evaluated};
use crate::report::{short_rev, Fields, HostReport, HostResult, Report};
use crate::select::Selection;

/// Whether a host runs what the flake describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Drift {
    InSync,
    Drifted,
    /// The host is unreachable or its configuration did not evaluate.
    Unknown,
}

impl Drift {
    pub fn as_str(self) -> &'static str {
        match self {
            Drift::InSync => "in-sync",
            Drift::Drifted => "drifted",
            Drift::Unknown => "unknown",
        }
    }
}

/// Compares the running toplevel with the evaluated one. A host with no generation yet
/// has drifted from any configuration that evaluates.
pub fn drift(running: Option<&str>, expected: Option<&str>) -> Drift {
    match (running, expected) {
        (_, None) => Drift::Unknown,
        (Some(r), Some(e)) if r == e => Drift::InSync,
        (_, Some(_)) => Drift::Drifted,
    }
}

/// A `status` entry's own fields: what the agent reports, or that it could not be asked.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum StatusFields {
    Reachable(Box<ReachableFields>),
    Unreachable(UnreachableFields),
}

impl Fields for StatusFields {}

/// A host whose agent answered. `rev`, `lock` and `toplevel` (the common fields) are
/// what it runs.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ReachableFields {
    pub agent_version: String,
    pub booted_system: Option<String>,
    pub current_system: Option<String>,
    /// Journal records the agent moved aside at start.
    pub damaged_records: Vec<DamagedRecord>,
    pub deployment: Option<String>,
    pub drift: Drift,
    /// Why drift is `unknown`: the configuration did not evaluate.
    pub drift_error: Option<String>,
    /// The flake's current lock.
    pub expected_lock: Option<String>,
    /// What the flake evaluates to now.
    pub expected_toplevel: Option<String>,
    pub generation: Option<u64>,
    /// The newest deployment that ended: its result, why (`end_reason`,
    /// `health_failure`) and who asked for it (`requested_by`); null before the first.
    pub last_deployment: Option<LastDeployment>,
    /// Whether the host is pinned to another lock than the flake's.
    pub lock_drift: Option<bool>,
    /// `push` or `pull`.
    pub mode: &'static str,
    pub pinned_lock: Option<String>,
    /// A pull-mode agent's GitOps state.
    pub pull: Option<PullStatus>,
    pub reachable: bool,
    /// Whether the system the profile points at needs a reboot to take full effect (its
    /// boot parts differ from the booted system's); null when the agent cannot tell.
    pub reboot_required: Option<bool>,
    /// What differs: `{part, booted, new}` per part.
    pub reboot_reasons: Vec<hostctl_schemas::api::deployments::RebootReason>,
    /// The host's boot id (a new one after every boot); null from older agents.
    pub boot_id: Option<String>,
    /// Always false: the agent answered.
    pub refused: bool,
    /// Who signed `rev` (when a signature policy checked it).
    pub signer: Option<hostctl_schemas::commits::Signer>,
    pub state: AgentState,
    pub system: String,
}

/// A host whose agent could not be asked (`reachable: false`), or answered with an error
/// or a bad answer (`reachable: true`; `refused: true` for HTTP 401); null `mode`, `pull`
/// and `lock_drift`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct UnreachableFields {
    pub drift: Drift,
    pub expected_lock: Option<String>,
    pub expected_toplevel: Option<String>,
    pub lock_drift: Option<bool>,
    pub mode: Option<&'static str>,
    pub pull: Option<Box<PullStatus>>,
    /// False when nothing answered (or not the pinned agent); true when the agent
    /// answered an error status or an answer API v1 does not allow (`error` says which).
    pub reachable: bool,
    /// The agent answered HTTP 401: it does not accept this controller's key (or the
    /// request's signature); `error` has its reason.
    pub refused: bool,
}

/// Runs `status`: agents are asked while the flake evaluates. Without `opts`
/// (`--no-drift`) nothing is evaluated: drift is `unknown`, the `expected_*` fields null.
pub async fn status(
    opts: Option<&EvalOptions>,
    ctx: &FleetContext,
    nix: Arc<Nix>,
    selection: &Selection,
) -> Result<Report<StatusFields>, Error> {
    let mut set = JoinSet::new();
    for name in selection.hosts().iter().cloned() {
        let client = ctx.agent(&name)?;
        set.spawn(async move {
            let status = match client {
                Ok(client) => client.status().await,
                Err(e) => Err(e),
            };
            (name, status)
        });
    }
    let evaluate = async {
        match opts {
            Some(opts) => eval_selected(opts, ctx, nix, selection).await.map(Some),
            None => Ok(None),
        }
    };
    let (evaluated, statuses) = tokio::join!(evaluate, crate::tasks::collect_keyed(set, "status"));
    let evaluated = match evaluated {
        // What stops evaluation for the whole fleet leaves the agents' answers standing:
        // each host's drift is unknown, with the cause's first line.
        Err(e @ (Error::StaleLock { .. } | Error::NixMissing { .. })) => {
            let text = e.to_string();
            let cause = text.lines().next().unwrap_or_default();
            let hosts = selection.hosts().iter();
            Some(hosts.map(|h| (h.clone(), Err(format!("host {h}: not evaluated: {cause}")))).collect())
        }
        other => other?,
    };
    let flake_lock = evaluated.as_ref().and(ctx.lock_id());
    let mut report = Report { tally: true, ..Report::default() };
    for (name, status) in statuses {
        report.hosts.insert(name.to_string(), entry(evaluated.as_ref(), flake_lock, &name, status));
    }
    Ok(report)
}

/// Whether the host is pinned to another lock than the flake's current one; `None` when
/// either is unknown. The pin is the agent's `pinned_lock`, else its current `lock`.
pub fn lock_drift(s: &StatusResponse, flake_lock: Option<&LockId>) -> Option<bool> {
    let pinned = s.pinned_lock.as_deref().or(s.lock.as_deref())?;
    Some(!pinned.eq_ignore_ascii_case(flake_lock?.as_str()))
}

/// One host's entry. `rev`, `lock` and `toplevel` are what the host runs (from its
/// agent), not what the flake holds; `expected_toplevel` and `expected_lock` are the
/// flake's.
fn entry(
    evaluated: Option<&Evaluated>,
    flake_lock: Option<&LockId>,
    name: &HostName,
    status: Result<StatusResponse, HostError>,
) -> HostReport<StatusFields> {
    let expected_lock = flake_lock.map(ToString::to_string);
    let (expected, eval_error) = match evaluated.map(|e| e.get(name)) {
        // `--no-drift`: not evaluated on purpose, which is no error.
        None => (None, None),
        Some(Some(Ok(t))) => (Some(t.out_path.to_string()), None),
        Some(Some(Err(e))) => (None, Some(e.clone())),
        Some(None) => (None, Some(format!("host {name}: not evaluated"))),
    };
    let s = match status {
        Ok(s) => s,
        Err(e) => return not_answered(&e, expected_lock, expected),
    };
    let d = if eval_error.is_some() { Drift::Unknown } else { drift(s.toplevel.as_deref(), expected.as_deref()) };
    let lock_drift = lock_drift(&s, flake_lock);
    let mut summary = summary(&s, d);
    if lock_drift == Some(true) {
        let pinned = s.pinned_lock.as_deref().or(s.lock.as_deref()).unwrap_or_default();
        let short = |v: &str| v.chars().take(12).collect::<String>();
        summary.push_str(&format!(
            ", pinned to lock {} (flake: {})",
            short(pinned),
            short(expected_lock.as_deref().unwrap_or_default())
        ));
    }
    summary.push_str(if s.pull.is_some() { ", mode pull" } else { ", mode push" });
    if let Some(signer) = &s.signer {
        summary.push_str(&format!(", signed by {}", signer.name));
    }
    if s.reboot_required == Some(true) {
        summary.push_str(&format!(", {}", crate::deploy_report::reboot_note(&s.reboot_reasons)));
    }
    let mut body = s.pull.as_ref().map(|p| pull_lines(p, unix_now())).unwrap_or_default();
    body.push_str(&damaged_lines(&s.damaged_records));
    body.push_str(&last_deployment_line(s.last_deployment.as_ref()));
    body.push_str(&version_warning(&s.version));
    let fields = ReachableFields {
        agent_version: s.version,
        booted_system: s.booted_system,
        current_system: s.current_system,
        damaged_records: s.damaged_records,
        deployment: s.deployment,
        drift: d,
        drift_error: eval_error,
        expected_lock,
        expected_toplevel: expected,
        generation: s.generation,
        last_deployment: s.last_deployment,
        lock_drift,
        mode: if s.pull.is_some() { "pull" } else { "push" },
        pinned_lock: s.pinned_lock,
        pull: s.pull,
        reachable: true,
        reboot_required: s.reboot_required,
        reboot_reasons: s.reboot_reasons,
        boot_id: s.boot_id,
        refused: false,
        signer: s.signer,
        state: s.state,
        system: s.system,
    };
    let mut entry = HostReport::new(HostResult::Ok, s.rev, s.lock).with(StatusFields::Reachable(Box::new(fields)));
    entry.toplevel = s.toplevel;
    entry.summary = Some(summary);
    entry.body = (!body.is_empty()).then_some(body);
    entry
}

/// A host whose agent did not answer (`unreachable`), answered HTTP 401 (`refused`: it
/// is reachable but does not accept this controller's key or request), answered another
/// error status (`HTTP 500`) or something API v1 does not allow (`bad answer`), or is not
/// the pinned agent (`wrong identity`); the agent's own text is in `error`. All `failed`.
fn not_answered(e: &HostError, expected_lock: Option<String>, expected: Option<String>) -> HostReport<StatusFields> {
    let refused = e.status() == Some(401);
    let fields = UnreachableFields {
        drift: Drift::Unknown,
        expected_lock,
        expected_toplevel: expected,
        lock_drift: None,
        mode: None,
        pull: None,
        reachable: e.answered(),
        refused,
    };
    let mut entry = HostReport::new(HostResult::Failed, None, None).with(StatusFields::Unreachable(fields));
    entry.error = Some(e.to_string());
    entry.summary = Some(e.what_happened());
    entry
}

/// A warning line when the agent is another version than this controller: after an
/// upgrade of the fleet's hostctl the agents follow only once each has restarted into
/// the new binary (docs/DESIGN.md, "Agent upgrades").
fn version_warning(agent: &str) -> String {
    let ours = env!("CARGO_PKG_VERSION");
    if agent == ours {
        return String::new();
    }
    format!("warning: the agent is hostctl-agent {agent}, this hostctl is {ours}\n")
}

/// `last deployment ID: rolled-back (health-check-failed) by KEY from ADDR`, and its
/// error's first line below it, when it did not end confirmed; nothing otherwise (the
/// status line already says what runs).
fn last_deployment_line(last: Option<&LastDeployment>) -> String {
    let Some(last) = last.filter(|l| l.state != DeploymentState::Confirmed) else { return String::new() };
    let name = |v: serde_json::Result<serde_json::Value>| v.ok().and_then(|v| v.as_str().map(str::to_owned));
    let state = name(serde_json::to_value(last.state)).unwrap_or_default();
    let mut out = format!("last deployment {}: {state}", last.id);
    if let Some(reason) = last.end_reason.and_then(|r| name(serde_json::to_value(r))) {
        out.push_str(&format!(" ({reason})"));
    }
    out.push_str(&crate::history::requester_words(last.requested_by.as_ref()));
    out.push('\n');
    if let Some(error) = &last.error {
        out.push_str(&format!("  error: {error}\n"));
    }
    out
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A pull-mode host's lines below its status line:
/// `pull: main of URL (lock pinned): fetched …, applied …, last fetch 3s ago`, then the
/// pending lock change and the last error (its first line), when there are any.
fn pull_lines(p: &PullStatus, now: u64) -> String {
    let short = |v: Option<&str>| v.map_or_else(|| "-".to_owned(), |v| v.chars().take(12).collect());
    let last_fetch = p.last_fetch.map_or_else(|| "never".to_owned(), |t| format!("{}s ago", now.saturating_sub(t)));
    let mut out = format!(
        "pull: {} of {} (lock {}): fetched {}, applied {}, last fetch {last_fetch}\n",
        p.branch,
        p.url,
        p.lock_policy,
        short(p.fetched_commit.as_deref()),
        short(p.applied_commit.as_deref()),
    );
    if p.pending_commit.is_some() || p.pending_lock.is_some() {
        out.push_str(&format!(
            "pull: pending lock change to {} at commit {}: approve with `hostctl apply`\n",
            short(p.pending_lock.as_ref().map(LockId::as_str)),
            short(p.pending_commit.as_deref()),
        ));
    }
    if let Some(refused) = &p.refused {
        out.push_str(&format!(
            "pull: refused commit {} ({}): the signature policy; nothing of it was built\n",
            short(Some(&refused.commit)),
            refused.reason.as_str()
        ));
    }
    if let Some(error) = &p.last_error {
        let mut lines = error.lines();
        out.push_str(&format!("pull: error: {}\n", lines.next().unwrap_or_default()));
        let more = lines.count();
        if more > 0 {
            out.push_str(&format!("pull:   ({more} more lines: `--json` shows all)\n"));
        }
    }
    out
}

/// One line per journal record the agent moved aside at start: someone should look.
fn damaged_lines(records: &[DamagedRecord]) -> String {
    records.iter().map(|r| format!("journal: damaged record moved aside to {} ({})\n", r.moved_to, r.problem)).collect()
}

/// `idle, generation 3, in-sync, rev 1a2b3c4d5e6f, lock 0123456789ab`.
fn summary(s: &StatusResponse, d: Drift) -> String {
    let state = match s.state {
        AgentState::Idle => "idle",
        AgentState::Activating => "activating",
        AgentState::AwaitingConfirmation => "awaiting-confirmation",
    };
    let short = |v: &Option<String>| v.as_deref().map_or("-".to_owned(), |v| v.chars().take(12).collect());
    let rev = s.rev.as_deref().map_or_else(|| "-".to_owned(), short_rev);
    let generation = s.generation.map_or_else(|| "-".to_owned(), |g| g.to_string());
    format!("{state}, generation {generation}, {}, rev {rev}, lock {}", d.as_str(), short(&s.lock))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "/nix/store/22222222222222222222222222222222-nixos-system-web";
    const B: &str = "/nix/store/33333333333333333333333333333333-nixos-system-web";

    #[test]
    fn drift_compares_running_with_evaluated() {
        assert_eq!(drift(Some(A), Some(A)), Drift::InSync);
        assert_eq!(drift(Some(A), Some(B)), Drift::Drifted);
        assert_eq!(drift(None, Some(B)), Drift::Drifted);
        assert_eq!(drift(Some(A), None), Drift::Unknown);
    }

    #[test]
    fn lock_drift_compares_the_pin_with_the_flake_lock() {
        let a: LockId = "a".repeat(64).parse().unwrap();
        let mut s = status_response();
        (s.lock, s.pinned_lock) = (Some("b".repeat(64)), Some("a".repeat(64)));
        assert_eq!(lock_drift(&s, Some(&a)), Some(false), "the pin counts, not the running lock");
        s.pinned_lock = Some("c".repeat(64));
        assert_eq!(lock_drift(&s, Some(&a)), Some(true));
        s.pinned_lock = None;
        assert_eq!(lock_drift(&s, Some(&a)), Some(true), "no pin reported: the running lock");
        assert_eq!(lock_drift(&s, None), None);
        s.lock = None;
        assert_eq!(lock_drift(&s, Some(&a)), None);

        let name: HostName = "web1".parse().unwrap();
        let evaluated: Evaluated = [(name.clone(), Err("not evaluated".into()))].into();
        let mut s = status_response();
        s.pinned_lock = Some("c".repeat(64));
        let e = entry(Some(&evaluated), Some(&a), &name, Ok(s));
        assert!(e
            .summary
            .as_deref()
            .unwrap()
            .ends_with(", pinned to lock cccccccccccc (flake: aaaaaaaaaaaa), mode push"));
        let v = serde_json::to_value(&e).unwrap();
        crate::output_schemas::assert_entry_conforms("status", &v);
        assert_eq!((v["lock_drift"].as_bool(), v["expected_lock"].as_str()), (Some(true), Some(a.as_str())));
    }

    #[test]
    fn a_last_deployment_that_did_not_end_confirmed_is_shown_with_its_cause() {
        use hostctl_schemas::api::deployments::{EndReason, HealthFailure, Requester};
        let name: HostName = "web1".parse().unwrap();
        let mut s = status_response();
        let last = LastDeployment {
            id: "web1-2".into(),
            state: DeploymentState::RolledBack,
            finished: Some(5),
            end_reason: Some(EndReason::HealthCheckFailed),
            error: Some("health check `GET http://web1/` failed: HTTP 503 (1 attempt); re-activated …".into()),
            health_failure: Some(HealthFailure::new("GET http://web1/", "HTTP 503 (1 attempt)")),
            requested_by: Some(Requester { key: "fleet-1".into(), address: Some("10.0.0.1".into()) }),
        };
        s.last_deployment = Some(last.clone());
        let e = entry(None, None, &name, Ok(s.clone()));
        assert_eq!(
            e.body.as_deref(),
            Some(
                "last deployment web1-2: rolled-back (health-check-failed) by fleet-1 from 10.0.0.1\n  \
                 error: health check `GET http://web1/` failed: HTTP 503 (1 attempt); re-activated …\n"
            )
        );
        let v = serde_json::to_value(&e).unwrap();
        crate::output_schemas::assert_entry_conforms("status", &v);
        assert_eq!(v["last_deployment"]["health_failure"]["check"], "GET http://web1/");
        assert_eq!(v["last_deployment"]["requested_by"]["key"], "fleet-1");
        s.last_deployment = Some(LastDeployment { state: DeploymentState::Confirmed, ..last });
        assert_eq!(entry(None, None, &name, Ok(s.clone())).body, None, "a confirmed one needs no line");
        s.version = "0.0.9".into();
        let body = entry(None, None, &name, Ok(s)).body.unwrap();
        let ours = env!("CARGO_PKG_VERSION");
        assert_eq!(body, format!("warning: the agent is hostctl-agent 0.0.9, this hostctl is {ours}\n"));
    }

    fn status_response() -> StatusResponse {
        StatusResponse {
            generation: Some(3),
            toplevel: Some(A.into()),
            rev: Some("1a2b3c4d5e6f7a8b9c0d".into()),
            lock: Some("0123456789abcdef".into()),
            deployment: Some("web1-1-00000000".into()),
            version: env!("CARGO_PKG_VERSION").into(),
            ..StatusResponse::idle("web1")
        }
    }

    #[test]
    fn entries_for_reachable_and_unreachable_hosts() {
        let name: HostName = "web1".parse().unwrap();
        let toplevel = hostctl_nix::Toplevel {
            drv_path: format!("{B}.drv").parse().unwrap(),
            out_path: A.parse().unwrap(),
            system: None,
        };
        let evaluated: Evaluated = [(name.clone(), Ok(toplevel))].into();
        let entry = entry(Some(&evaluated), None, &name, Ok(status_response()));
        assert_eq!(
            entry.summary.as_deref(),
            Some("idle, generation 3, in-sync, rev 1a2b3c4d5e6f, lock 0123456789ab, mode push")
        );
        assert_eq!(entry.body, None);
        let mut dirty = status_response();
        dirty.rev = Some("1a2b3c4d5e6f7a8b9c0d-dirty".into());
        let summary = super::entry(Some(&evaluated), None, &name, Ok(dirty)).summary.unwrap();
        assert!(summary.contains(", rev 1a2b3c4d5e6f-dirty, lock "), "as in the JSON: {summary}");
        let v = serde_json::to_value(&entry).unwrap();
        crate::output_schemas::assert_entry_conforms("status", &v);
        assert_eq!(
            (v["result"].as_str(), v["drift"].as_str(), v["state"].as_str()),
            (Some("ok"), Some("in-sync"), Some("idle"))
        );
        assert_eq!((v["toplevel"].as_str(), v["generation"].as_u64()), (Some(A), Some(3)));
        assert_eq!(v["rev"], "1a2b3c4d5e6f7a8b9c0d");
        assert_eq!((v["mode"].as_str(), v["pull"].is_null()), (Some("push"), true));

        let down =
            HostError::Transport { host: "web1".into(), endpoint: "GET /v1/status".into(), message: "refused".into() };
        let v = serde_json::to_value(super::entry(Some(&evaluated), None, &name, Err(down))).unwrap();
        crate::output_schemas::assert_entry_conforms("status", &v);
        assert_eq!((v["result"].as_str(), v["drift"].as_str()), (Some("failed"), Some("unknown")));
        assert_eq!(v["error"], "web1: GET /v1/status: refused");
        assert!(v["mode"].is_null() && v["pull"].is_null());
        assert_eq!((v["reachable"].as_bool(), v["refused"].as_bool()), (Some(false), Some(false)));

        let refused = HostError::Api {
            host: "web1".into(),
            endpoint: "GET /v1/status".into(),
            status: 401,
            code: Some(hostctl_schemas::api::ErrorCode::Unauthorized),
            message: "no trusted key matches".into(),
        };
        let e = super::entry(Some(&evaluated), None, &name, Err(refused));
        assert_eq!(e.summary.as_deref(), Some("refused"));
        let v = serde_json::to_value(&e).unwrap();
        crate::output_schemas::assert_entry_conforms("status", &v);
        assert_eq!((v["result"].as_str(), v["drift"].as_str()), (Some("failed"), Some("unknown")));
        assert_eq!((v["reachable"].as_bool(), v["refused"].as_bool()), (Some(true), Some(true)));
        assert_eq!(v["error"], "web1: GET /v1/status: HTTP 401 (unauthorized): no trusted key matches");

        let broken: Evaluated = [(name.clone(), Err("host web1: evaluation failed".into()))].into();
        let v = serde_json::to_value(super::entry(Some(&broken), None, &name, Ok(status_response()))).unwrap();
        crate::output_schemas::assert_entry_conforms("status", &v);
        assert_eq!((v["result"].as_str(), v["drift"].as_str()), (Some("ok"), Some("unknown")));
        assert_eq!(v["drift_error"], "host web1: evaluation failed");

        // `--no-drift`: nothing evaluated, and no error for it.
        let v = serde_json::to_value(super::entry(None, None, &name, Ok(status_response()))).unwrap();
        crate::output_schemas::assert_entry_conforms("status", &v);
        assert_eq!((v["result"].as_str(), v["drift"].as_str()), (Some("ok"), Some("unknown")));
        for field in ["drift_error", "expected_toplevel", "expected_lock", "lock_drift"] {
            assert!(v[field].is_null(), "{field}: {v}");
        }
    }

    #[test]
    fn pull_mode_hosts_show_their_gitops_state() {
        let name: HostName = "web1".parse().unwrap();
        let evaluated: Evaluated = [(name.clone(), Err("not evaluated".into()))].into();
        let mut s = status_response();
        s.pull = Some(PullStatus {
            url: "root@git.example.com:fleet.git".into(),
            branch: "main".into(),
            lock_policy: "pinned".into(),
            fetched_commit: Some("f".repeat(40)),
            applied_commit: Some("a".repeat(40)),
            pending_commit: Some("f".repeat(40)),
            pending_lock: Some("b".repeat(64).parse().unwrap()),
            last_fetch: Some(unix_now() - 3),
            last_error: Some("evaluating failed:\nline 2\nline 3".into()),
            refused: None,
        });
        let e = entry(Some(&evaluated), None, &name, Ok(s));
        assert!(e.summary.as_deref().unwrap().ends_with(", mode pull"), "{:?}", e.summary);
        let body = e.body.clone().unwrap();
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(
            lines,
            [
                "pull: main of root@git.example.com:fleet.git (lock pinned): fetched ffffffffffff, applied aaaaaaaaaaaa, last fetch 3s ago",
                "pull: pending lock change to bbbbbbbbbbbb at commit ffffffffffff: approve with `hostctl apply`",
                "pull: error: evaluating failed:",
                "pull:   (2 more lines: `--json` shows all)",
            ]
        );
        let v = serde_json::to_value(&e).unwrap();
        crate::output_schemas::assert_entry_conforms("status", &v);
        assert_eq!(v["mode"], "pull");
        assert_eq!(v["pull"]["branch"], "main");
        assert_eq!(v["pull"]["pending_lock"], "b".repeat(64));
        assert_eq!(v["pull"]["last_error"], "evaluating failed:\nline 2\nline 3");

        let mut quiet = status_response();
        quiet.pull = Some(PullStatus {
            pending_commit: None,
            pending_lock: None,
            last_error: None,
            refused: None,
            last_fetch: None,
            fetched_commit: None,
            ..serde_json::from_value(v["pull"].clone()).unwrap()
        });
        let body = entry(Some(&evaluated), None, &name, Ok(quiet)).body.unwrap();
        assert_eq!(body, "pull: main of root@git.example.com:fleet.git (lock pinned): fetched -, applied aaaaaaaaaaaa, last fetch never\n");
    }
}
