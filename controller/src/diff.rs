//! `hostctl diff`: per host, what changes from the system it runs to the one the flake
//! builds now ([`crate::closure_diff`]). Reads only: agents are asked for their status,
//! nothing is pushed or activated.

use std::sync::Arc;

use hostctl_nix::Nix;
use hostctl_schemas::ids::HostName;
use schemars::JsonSchema;
use serde::Serialize;

use crate::closure_diff::{diff_built, Change, HostDiff};
use crate::context::FleetContext;
use crate::error::Error;
use crate::pipeline::{eval_and_build, EvalOptions};
use crate::push::NixStore;
use crate::report::{Fields, HostReport, HostResult, Report};
use crate::select::Selection;

/// A `diff` entry's own fields.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DiffFields {
    /// The packages whose versions or size change.
    pub changes: Vec<Change>,
    /// NAR bytes of the new closure.
    pub closure_size: u64,
    /// New closure size minus the running one's.
    pub closure_size_delta: i64,
    /// The system the host runs now; null when it has none.
    pub running: Option<String>,
}

impl Fields for DiffFields {}

/// Runs `diff`.
pub async fn diff(
    opts: &EvalOptions,
    ctx: &FleetContext,
    nix: Arc<Nix>,
    selection: &Selection,
) -> Result<Report<DiffFields>, Error> {
    let built = eval_and_build(opts, ctx, nix.clone(), selection).await?;
    let mut report = Report::default();
    let store = Arc::new(NixStore::new(nix.clone()));
    for (name, outcome) in diff_built(ctx, nix, store, built).await? {
        report.hosts.insert(name.to_string(), entry(ctx, &name, outcome));
    }
    Ok(report)
}

fn entry(ctx: &FleetContext, name: &HostName, outcome: Result<HostDiff, String>) -> HostReport<DiffFields> {
    let d = match outcome {
        Ok(d) => d,
        Err(message) => return HostReport::failed(ctx, format!("{name}: {message}")),
    };
    let result = if d.unchanged() { HostResult::Unchanged } else { HostResult::Ok };
    let fields = DiffFields {
        changes: d.changes.clone(),
        closure_size: d.new_size,
        closure_size_delta: d.size_delta(),
        running: d.running.clone(),
    };
    let mut e = HostReport::base(ctx, result).with(fields);
    e.toplevel = Some(d.toplevel.to_string());
    e.summary = Some(d.summary());
    let lines = d.lines();
    e.body = (!lines.is_empty()).then(|| lines.join("\n"));
    e
}
