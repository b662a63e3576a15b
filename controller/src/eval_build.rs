//! `hostctl eval` and `hostctl build`: the pipeline's results as reports, host ->
//! `.drv` path, host -> toplevel. Nothing is contacted or changed.

use std::sync::Arc;

use hostctl_nix::Nix;
use schemars::JsonSchema;
use serde::Serialize;

use crate::context::FleetContext;
use crate::error::Error;
use crate::pipeline::{eval_and_build, eval_selected, EvalOptions};
use crate::report::{Fields, HostReport, HostResult, Report};
use crate::select::Selection;

/// An `eval` entry's own fields.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EvalFields {
    /// The toplevel's derivation.
    pub drv_path: String,
    /// The platform the configuration evaluates to.
    pub system: Option<String>,
}

impl Fields for EvalFields {}

/// A `build` entry's own fields.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BuildFields {
    /// The toplevel's derivation.
    pub drv_path: String,
}

impl Fields for BuildFields {}

/// Runs `eval`.
pub async fn eval(
    opts: &EvalOptions,
    ctx: &FleetContext,
    nix: Arc<Nix>,
    selection: &Selection,
) -> Result<Report<EvalFields>, Error> {
    let mut report = Report::default();
    for (name, result) in eval_selected(opts, ctx, nix, selection).await? {
        let entry = match result {
            Ok(t) => {
                let drv_path = t.drv_path.to_string();
                let mut e = HostReport::base(ctx, HostResult::Evaluated)
                    .with(EvalFields { drv_path: drv_path.clone(), system: t.system.clone() });
                e.toplevel = Some(t.out_path.to_string());
                e.summary = Some(drv_path);
                e
            }
            Err(message) => HostReport::failed(ctx, message),
        };
        report.hosts.insert(name.to_string(), entry);
    }
    Ok(report)
}

/// Runs `build`.
pub async fn build(
    opts: &EvalOptions,
    ctx: &FleetContext,
    nix: Arc<Nix>,
    selection: &Selection,
) -> Result<Report<BuildFields>, Error> {
    let mut report = Report::default();
    for (name, result) in eval_and_build(opts, ctx, nix, selection).await? {
        let entry = match result {
            Ok(t) => {
                let mut e =
                    HostReport::base(ctx, HostResult::Built).with(BuildFields { drv_path: t.drv_path.to_string() });
                e.toplevel = Some(t.out_path.to_string());
                e
            }
            Err(failure) => HostReport::failed(ctx, failure.message),
        };
        report.hosts.insert(name.to_string(), entry);
    }
    Ok(report)
}
