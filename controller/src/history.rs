//! `hostctl history HOST...`: each selected host's deployments, newest first, as its agent's journal
//! records them (`GET /v1/generations`): time, id, rev, lock, toplevel, mode, result,
//! generation, who asked (key and address), and below one that did not end confirmed its
//! error's first line (for a health-check rollback: which check and what it said).
//! Read-only.

use hostctl_schemas::api::deployments::{Deployment, DeploymentState, Requester};
use hostctl_schemas::api::generations::{Generation, GenerationsResponse};
use hostctl_schemas::text::plural;
use schemars::JsonSchema;
use serde::Serialize;

use crate::clock::utc_iso8601;
use crate::context::FleetContext;
use crate::error::Error;
use crate::host::{Host, HostError};
use crate::report::{short_rev, Fields, HostReport, HostResult, Report};
use crate::select::Selection;
use crate::tasks::ask_each_agent;

/// A `history` entry's own fields: the agent's records, unchanged; null when it could
/// not be asked.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HistoryFields {
    /// Newest first.
    pub deployments: Option<Vec<Deployment>>,
    pub generations: Option<Vec<Generation>>,
}

impl Fields for HistoryFields {}

/// Runs `history`: one request per selected host, in parallel.
pub async fn history(selection: &Selection, ctx: &FleetContext) -> Result<Report<HistoryFields>, Error> {
    let answers =
        ask_each_agent(
            ctx,
            selection.hosts(),
            "GET /v1/generations",
            |_, client| async move { client.generations().await },
        )
        .await?;
    let mut report = Report::default();
    for (host, answer) in answers {
        report.hosts.insert(host.to_string(), entry(answer));
    }
    Ok(report)
}

/// The host's entry: `rev`, `lock`, `toplevel` are those of its current generation;
/// `deployments` and `generations` are the agent's records, unchanged.
fn entry(answer: Result<GenerationsResponse, HostError>) -> HostReport<HistoryFields> {
    let g = match answer {
        Ok(g) => g,
        Err(e) => {
            let mut entry = HostReport::new(HostResult::Failed, None, None)
                .with(HistoryFields { deployments: None, generations: None });
            entry.error = Some(e.to_string());
            entry.summary = Some(e.what_happened());
            return entry;
        }
    };
    let current = g.generations.iter().find(|g| g.current);
    let lock = current.and_then(|c| c.lock.as_ref()).map(ToString::to_string);
    let mut entry = HostReport::new(HostResult::Ok, current.and_then(|c| c.rev.clone()), lock);
    entry.toplevel = current.map(|c| c.toplevel.to_string());
    let generation = current.map_or_else(|| "none".to_owned(), |c| c.number.to_string());
    let deployments = plural(g.deployments.len(), "deployment", "deployments");
    entry.summary = Some(format!("{deployments}, current generation {generation}"));
    entry.body = Some(table(&g.deployments));
    entry.with(HistoryFields { deployments: Some(g.deployments), generations: Some(g.generations) })
}

/// The deployments as an aligned table, newest first (the agent's order).
fn table(deployments: &[Deployment]) -> String {
    const HEADER: [&str; 9] = ["TIME", "DEPLOYMENT", "REV", "LOCK", "MODE", "RESULT", "GEN", "TOPLEVEL", "BY"];
    if deployments.is_empty() {
        return "no deployments recorded\n".to_owned();
    }
    let rows: Vec<[String; 9]> = deployments.iter().map(row).collect();
    let mut widths = HEADER.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    // A failed or rolled-back deployment's error (its first line) goes below its row: for
    // pull mode's failed commits and health-check rollbacks it is the only place the
    // reason shows (`--json` has all of it).
    let ended_badly = |d: &Deployment| matches!(d.state, DeploymentState::Failed | DeploymentState::RolledBack);
    let errors = deployments.iter().map(|d| d.error.as_deref().filter(|_| ended_badly(d)));
    let signatures = std::iter::once(String::new()).chain(deployments.iter().map(signature_lines));
    for ((cells, error), signature) in
        std::iter::once(HEADER.map(str::to_owned)).chain(rows).zip(std::iter::once(None).chain(errors)).zip(signatures)
    {
        let line: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if let Some(first) = error.and_then(|e| e.lines().next()) {
            out.push_str(&format!("  error: {first}\n"));
        }
        out.push_str(&signature);
    }
    out
}

/// What a deployment's record says of its commit's signature, and of a reboot its system
/// needs, as lines below its row.
fn signature_lines(d: &Deployment) -> String {
    let mut out = String::new();
    if d.reboot_required == Some(true) {
        out.push_str(&format!("  {}\n", crate::deploy_report::reboot_note(&d.reboot_reasons)));
    }
    if let Some(signer) = &d.signer {
        out.push_str(&format!("  signed by {signer}\n"));
    }
    if let Some(o) = &d.unsigned_override {
        out.push_str(&format!("  deployed with --allow-unsigned (key {}): {}\n", o.key, o.refusal));
    }
    out
}

fn row(d: &Deployment) -> [String; 9] {
    let dash = || "-".to_owned();
    let rev = d.rev.as_deref().map_or_else(dash, short_rev);
    let state = serde_json::to_value(d.state).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    [
        utc_iso8601(d.created),
        d.id.clone(),
        rev,
        d.lock.as_ref().map_or_else(dash, |l| l.short().to_owned()),
        d.mode.to_string(),
        state,
        d.generation.map_or_else(dash, |g| g.to_string()),
        d.toplevel.to_string(),
        d.requested_by.as_ref().map_or_else(dash, |r| match &r.address {
            Some(address) => format!("{}@{address}", r.key),
            None => r.key.clone(),
        }),
    ]
}

/// ` by KEY from ADDRESS` (nothing when the agent did not record who asked).
pub fn requester_words(by: Option<&Requester>) -> String {
    match by {
        Some(Requester { key, address: Some(address) }) => format!(" by {key} from {address}"),
        Some(Requester { key, address: None }) => format!(" by {key}"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostctl_schemas::api::deployments::{DeploymentRequest, DeploymentState};
    use hostctl_schemas::api::generations::Generation;
    use hostctl_schemas::inventory::Mode;

    const A: &str = "/nix/store/22222222222222222222222222222222-nixos-system-web";

    fn deployment(id: &str, created: u64, state: DeploymentState, rev: &str) -> Deployment {
        let request = DeploymentRequest {
            id: id.into(),
            toplevel: A.parse().unwrap(),
            rev: Some(rev.into()),
            lock: Some("0123456789abcdef".repeat(4).parse().unwrap()),
            mode: Mode::Switch,
            confirm_timeout: hostctl_schemas::duration::Duration::from_secs(30),
            health: Vec::new(),
            cache: None,
            commit_signature: None,
            retention: None,
            reboot: false,
        };
        Deployment { state, generation: Some(2), ..Deployment::queued(&request, None, created) }
    }

    #[test]
    fn entries_list_deployments_newest_first() {
        let rev = "1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d";
        let answer = GenerationsResponse {
            generations: vec![Generation {
                number: 2,
                toplevel: A.parse().unwrap(),
                time: 1_700_000_000,
                current: true,
                deployment: Some("web1-2".into()),
                rev: Some(rev.into()),
                lock: Some("0123456789abcdef".repeat(4).parse().unwrap()),
                result: Some(DeploymentState::Confirmed),
                mode: Some(Mode::Switch),
            }],
            deployments: vec![
                deployment("web1-2", 1_700_000_000, DeploymentState::Confirmed, rev),
                Deployment {
                    error: Some("health check `GET http://web1/` failed: HTTP 503 (1 attempt); re-activated A".into()),
                    requested_by: Some(Requester { key: "fleet-1".into(), address: Some("10.0.0.1".into()) }),
                    ..deployment("web1-1", 1_699_999_000, DeploymentState::RolledBack, &format!("{rev}-dirty"))
                },
                Deployment {
                    error: Some("evaluating failed at 1a2b: boom\nsecond line".into()),
                    generation: None,
                    ..deployment("pull-1", 1_699_998_000, DeploymentState::Failed, rev)
                },
            ],
        };
        let entry = entry(Ok(answer));
        let body = entry.body.clone().unwrap();
        let lines: Vec<&str> = body.lines().collect();
        assert!(lines[0].starts_with("TIME                  DEPLOYMENT  REV"), "{body}");
        assert!(lines[1]
            .starts_with("2023-11-14T22:13:20Z  web1-2      1a2b3c4d5e6f        0123456789ab  switch  confirmed"));
        assert!(lines[2].contains("1a2b3c4d5e6f-dirty  0123456789ab  switch  rolled-back  2    /nix/store/"), "{body}");
        assert!(lines[2].ends_with("  fleet-1@10.0.0.1"), "who asked: {body}");
        assert_eq!(lines[3], "  error: health check `GET http://web1/` failed: HTTP 503 (1 attempt); re-activated A");
        assert!(lines[4].contains("pull-1      1a2b3c4d5e6f        0123456789ab  switch  failed       -"), "{body}");
        assert!(lines[4].ends_with("  -"), "nobody recorded: {body}");
        assert_eq!(lines[5], "  error: evaluating failed at 1a2b: boom", "{body}");
        assert_eq!(lines.len(), 6, "only failed and rolled-back deployments have an error line: {body}");
        let v = serde_json::to_value(&entry).unwrap();
        crate::output_schemas::assert_entry_conforms("history", &v);
        assert_eq!((v["result"].as_str(), v["rev"].as_str(), v["toplevel"].as_str()), (Some("ok"), Some(rev), Some(A)));
        assert_eq!(v["deployments"][0]["id"], "web1-2");
        assert_eq!(v["deployments"][1]["state"], "rolled-back");
        assert_eq!(v["deployments"][1]["requested_by"]["address"], "10.0.0.1");
        assert_eq!(v["generations"][0]["number"], 2);
        assert_eq!(entry.summary.as_deref(), Some("3 deployments, current generation 2"));

        let down = HostError::Transport {
            host: "web1".into(),
            endpoint: "GET /v1/generations".into(),
            message: "refused".into(),
        };
        let v = serde_json::to_value(super::entry(Err(down))).unwrap();
        crate::output_schemas::assert_entry_conforms("history", &v);
        assert_eq!(
            (v["result"].as_str(), v["error"].as_str()),
            (Some("failed"), Some("web1: GET /v1/generations: refused"))
        );
    }
}
