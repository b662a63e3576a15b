//! Building evaluated toplevels: one `nix build` for all hosts; if it fails, each host
//! whose output is still missing is built again on its own, so every host gets its own
//! result and Nix's message about *its* failure.
//!
//! The retry is needed because some failures abort the whole `nix build` even with
//! `--keep-going` (a derivation for a platform this machine cannot build is one), which
//! would otherwise mark buildable hosts as failed.

use std::collections::BTreeMap;

use hostctl_nix::{Nix, NixError, Toplevel};
use hostctl_schemas::ids::{HostName, StorePath};
use hostctl_schemas::text::plural;

/// Builds every toplevel; a host's result is `Err(message)` if its output is not in the
/// store afterwards. A Nix failure that is not about a build (e.g. Nix missing) is `Err`.
pub async fn build_all(
    nix: &Nix,
    targets: &BTreeMap<HostName, Toplevel>,
) -> Result<BTreeMap<HostName, Result<(), String>>, NixError> {
    let mut drvs: Vec<StorePath> = targets.values().map(|t| t.drv_path.clone()).collect();
    drvs.sort();
    drvs.dedup();
    if drvs.is_empty() {
        return Ok(BTreeMap::new());
    }
    for host in targets.keys() {
        crate::progress::step(host, format!("building ({} in one nix build)", plural(drvs.len(), "system", "systems")));
    }
    let batch_error = match nix.build_outputs(&drvs).await {
        Ok(_) => None,
        Err(NixError::Failed { stderr_tail, .. }) => Some(stderr_tail),
        Err(e) => return Err(e),
    };
    let outs: Vec<StorePath> = targets.values().map(|t| t.out_path.clone()).collect();
    let invalid = nix.invalid_paths(&outs).await?;
    let mut results = BTreeMap::new();
    for (host, t) in targets {
        let result = if !invalid.iter().any(|p| p == t.out_path.as_str()) {
            Ok(())
        } else if drvs.len() == 1 {
            Err(batch_error.clone().unwrap_or_else(|| missing_output(t)))
        } else {
            build_one(nix, t).await?
        };
        results.insert(host.clone(), result);
    }
    Ok(results)
}

/// Builds one host's toplevel alone: its error message is then exactly its own.
async fn build_one(nix: &Nix, t: &Toplevel) -> Result<Result<(), String>, NixError> {
    tracing::info!(drv = %t.drv_path, "building alone after a failed batch");
    match nix.build_outputs(std::slice::from_ref(&t.drv_path)).await {
        Ok(_) if nix.invalid_paths(std::slice::from_ref(&t.out_path)).await?.is_empty() => Ok(Ok(())),
        Ok(_) => Ok(Err(missing_output(t))),
        Err(NixError::Failed { stderr_tail, .. }) => Ok(Err(stderr_tail)),
        Err(e) => Err(e),
    }
}

fn missing_output(t: &Toplevel) -> String {
    format!("nix build reported success but {} is not in the store", t.out_path)
}
