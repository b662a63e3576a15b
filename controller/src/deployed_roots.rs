//! GC roots for what `apply` and `rollback` last deployed to each host, in this machine's
//! store: `diff` compares against the system a host runs and needs it here, a rollback
//! to the previous system (and `diff` after it) needs that one, and a local
//! `nix-collect-garbage` must take neither. Two indirect roots per host,
//! `<state>/gcroots/<fleet>/<host>` (what it runs) and `<host>.previous` (what it ran
//! before that) (`<state>`: `evalcache::controller_state_dir`, `<fleet>`: the first 16
//! hex digits of the SHA-256 of the fleet file's absolute path), replaced on each
//! deployment (`nix-store --add-root`, through `hostctl_nix`), so only those two are held.
//!
//! The flake's source and inputs are kept as `<fleet>/inputs/<n>` (after each `apply`),
//! so evaluating again (`diff`, a rebuild) needs no fetch.
//!
//! Invariant: roots are only added or replaced, never made for a host that did not end
//! `activated` or `unchanged` (or a rollback that landed); a failure to add one is a
//! warning, never a failed host.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hostctl_nix::command::NixCommand;
use hostctl_nix::Nix;
use hostctl_schemas::ids::{HostName, StorePath};
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The directory of `fleet_file`'s roots, if this machine has a state directory.
pub fn dir(fleet_file: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(fleet_file).unwrap_or_else(|_| fleet_file.to_path_buf());
    let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    Some(crate::evalcache::controller_state_dir()?.join("gcroots").join(&hex::encode(digest)[..16]))
}

/// Roots `toplevel` as what `host` runs, and what it ran until now (if that was another
/// system) as its previous one; returns why not, naming the link.
pub async fn keep(nix: &Nix, fleet_file: &Path, host: &HostName, toplevel: &StorePath) -> Result<(), String> {
    let Some(dir) = dir(fleet_file) else { return Ok(()) };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let link = dir.join(host.as_str());
    let before: Option<StorePath> = std::fs::read_link(&link).ok().and_then(|t| t.to_str()?.parse().ok());
    if before.as_ref() == Some(toplevel) {
        // Rooted by an earlier run (the link is only ever made by `nix-store --add-root`,
        // which registers it): an unchanged host costs no Nix process.
        return Ok(());
    }
    if let Some(before) = before.filter(|b| b != toplevel) {
        // Still valid: the current root held it until this line.
        add(nix, &dir.join(format!("{host}.previous")), &before).await?;
    }
    add(nix, &link, toplevel).await
}

/// How many `nix-store --add-root` run at once in [`keep_all`]: one after another, 500
/// hosts took 14 s after a rollout.
const KEEP_JOBS: usize = 8;

/// [`keep`] for each host and the system it now runs, [`KEEP_JOBS`] at a time; returns
/// the warnings (`<host>: <why>`), in host order.
pub async fn keep_all(nix: Arc<Nix>, fleet_file: &Path, systems: Vec<(HostName, StorePath)>) -> Vec<String> {
    let permits = Arc::new(Semaphore::new(KEEP_JOBS));
    let mut set = JoinSet::new();
    for (host, toplevel) in systems {
        let (nix, permits, fleet_file) = (nix.clone(), permits.clone(), fleet_file.to_path_buf());
        set.spawn(async move {
            // Never closed: acquiring fails only if it were, and running unthrottled is
            // still correct.
            let _permit = permits.acquire_owned().await.ok();
            let result = keep(&nix, &fleet_file, &host, &toplevel).await;
            (host, result)
        });
    }
    let results = crate::tasks::collect_keyed(set, "keeping a GC root").await;
    results.into_iter().filter_map(|(host, r)| r.err().map(|e| format!("{host}: {e}"))).collect()
}

/// [`keep`] for a system that may not be in this store (a rollback's target the agent
/// still had): kept only if it is here; otherwise nothing changes.
pub async fn keep_if_present(
    nix: &Nix,
    fleet_file: &Path,
    host: &HostName,
    toplevel: &StorePath,
) -> Result<(), String> {
    let missing = nix.invalid_paths(std::slice::from_ref(toplevel)).await.map_err(|e| e.to_string())?;
    if missing.is_empty() {
        keep(nix, fleet_file, host, toplevel).await
    } else {
        Ok(())
    }
}

/// Roots the fleet flake's source and inputs (`<dir>/inputs/<n>`, replacing the previous
/// set): evaluating `diff` or a rebuild again needs them, and Nix cannot fetch every kind
/// of input again (relative `path:` inputs, offline machines).
pub async fn keep_inputs(nix: &Nix, fleet_file: &Path, flake: &hostctl_nix::FlakeRef) -> Result<(), String> {
    let Some(dir) = dir(fleet_file) else { return Ok(()) };
    let sources = nix.flake_sources(flake).await.map_err(|e| format!("cannot list the flake's inputs: {e}"))?;
    let inputs = dir.join("inputs");
    if let Ok(old) = std::fs::read_dir(&inputs) {
        for link in old.flatten() {
            let _ = std::fs::remove_file(link.path());
        }
    }
    std::fs::create_dir_all(&inputs).map_err(|e| format!("cannot create {}: {e}", inputs.display()))?;
    for (n, source) in sources.iter().enumerate() {
        add(nix, &inputs.join(n.to_string()), source).await?;
    }
    Ok(())
}

async fn add(nix: &Nix, link: &Path, toplevel: &StorePath) -> Result<(), String> {
    nix.run(&NixCommand::add_root(link, toplevel))
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot keep {toplevel} as {}: {e}", link.display()))
}
