//! `hostctl gc HOST... [--dry-run]`: asks each selected host's agent to apply its
//! generation retention now (`POST /v1/gc`) and reports what it deleted — generations,
//! store paths, bytes — or, with `--dry-run`, what it would delete (nothing changes).
//! The policy sent: `--keep-last`/`--keep-younger-than`, else the host's fleet.yaml
//! `retention`, else none (the agent then uses its newest deployment's or its own).

use hostctl_schemas::api::gc::{GcGeneration, GcReport, GcRequest};
use hostctl_schemas::ids::HostName;
use hostctl_schemas::retention::Retention;
use hostctl_schemas::text::plural;
use schemars::JsonSchema;
use serde::Serialize;

use crate::clock::utc_iso8601;
use crate::context::FleetContext;
use crate::error::Error;
use crate::host::HostError;
use crate::progress::bytes;
use crate::report::{Fields, HostReport, HostResult, Report};
use crate::tasks::ask_each_agent;

/// What `gc` was asked for.
#[derive(Debug, Clone)]
pub struct GcOptions {
    pub hosts: Vec<HostName>,
    pub dry_run: bool,
    /// From the command line; replaces fleet.yaml's for every host.
    pub retention: Option<Retention>,
}

/// A `gc` entry's own fields: the agent's report, unchanged; null when it failed.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GcFields {
    pub gc: Option<GcReport>,
}

impl Fields for GcFields {}

/// Runs `gc`: one request per host, in parallel.
pub async fn gc(opts: &GcOptions, ctx: &FleetContext) -> Result<Report<GcFields>, Error> {
    let endpoint = format!("POST {}", hostctl_schemas::api::gc::PATH);
    let answers = ask_each_agent(ctx, &opts.hosts, &endpoint, |host, client| {
        let request = GcRequest { dry_run: opts.dry_run, retention: opts.retention.or_else(|| ctx.retention(host)) };
        async move { client.gc(&request).await }
    })
    .await?;
    let mut report = Report::default();
    for (host, answer) in answers {
        report.hosts.insert(host.to_string(), entry(answer));
    }
    Ok(report)
}

fn entry(answer: Result<GcReport, HostError>) -> HostReport<GcFields> {
    let gc = match answer {
        Ok(gc) => gc,
        Err(e) => {
            let mut entry = HostReport::new(HostResult::Failed, None, None).with(GcFields { gc: None });
            entry.summary = Some(if e.status() == Some(409) { "busy" } else { "failed" }.to_owned());
            entry.error = Some(e.to_string());
            return entry;
        }
    };
    let mut entry = HostReport::new(HostResult::Ok, None, None);
    entry.summary = Some(summary(&gc));
    entry.body = Some(body(&gc));
    entry.with(GcFields { gc: Some(gc) })
}

/// `would delete 2 generations and 14 store paths (3.1 MiB), policy keep_last 3 (request)`.
fn summary(gc: &GcReport) -> String {
    let verb = if gc.dry_run { "would delete" } else { "deleted" };
    let generations = plural(gc.deleted_generations.len(), "generation", "generations");
    let paths = plural(gc.store_paths.len(), "store path", "store paths");
    let policy = gc.retention.map_or_else(|| "no policy".to_owned(), |p| format!("policy {p}"));
    format!("{verb} {generations} and {paths} ({}), {policy} ({})", bytes(gc.bytes_freed), gc.policy_source)
}

/// One line per generation (deleted, then kept with why), then the store paths.
fn body(gc: &GcReport) -> String {
    let verb = if gc.dry_run { "would delete" } else { "deleted" };
    let line = |g: &GcGeneration| format!("generation {} ({}) {}", g.number, utc_iso8601(g.time), g.toplevel);
    let mut out = String::new();
    for g in &gc.deleted_generations {
        out.push_str(&format!("{verb} {}\n", line(g)));
    }
    for g in &gc.kept_generations {
        let why: Vec<String> =
            g.kept_because.iter().filter_map(|r| serde_json::to_value(r).ok()?.as_str().map(str::to_owned)).collect();
        out.push_str(&format!("kept {}: {}\n", line(g), why.join(", ")));
    }
    for path in &gc.store_paths {
        out.push_str(&format!("{verb} {path}\n"));
    }
    out
}
