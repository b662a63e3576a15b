//! GC roots for what `apply` last deployed to each host, in this machine's store: `diff`
//! compares against the system a host runs and needs it here, and a local
//! `nix-collect-garbage` must not take it. One indirect root per host,
//! `<state>/gcroots/<fleet>/<host>` (`<state>`: `evalcache::controller_state_dir`,
//! `<fleet>`: the first 16 hex digits of the SHA-256 of the fleet file's absolute path),
//! replaced on each deployment (`nix-store --add-root`, through `hostctl_nix`), so only
//! the last one is held.
//!
//! Invariant: roots are only added or replaced, never made for a host that did not end
//! `activated` or `unchanged`; a failure to add one is a warning, never a failed host.

use std::path::{Path, PathBuf};

use hostctl_nix::command::NixCommand;
use hostctl_nix::Nix;
use hostctl_schemas::ids::{HostName, StorePath};
use sha2::{Digest as _, Sha256};

/// The directory of `fleet_file`'s roots, if this machine has a state directory.
pub fn dir(fleet_file: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(fleet_file).unwrap_or_else(|_| fleet_file.to_path_buf());
    let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    Some(crate::evalcache::controller_state_dir()?.join("gcroots").join(&hex::encode(digest)[..16]))
}

/// Roots `toplevel` as what `host` runs; returns why not, naming the link.
pub async fn keep(nix: &Nix, fleet_file: &Path, host: &HostName, toplevel: &StorePath) -> Result<(), String> {
    let Some(dir) = dir(fleet_file) else { return Ok(()) };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let link = dir.join(host.as_str());
    nix.run(&NixCommand::add_root(&link, toplevel))
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot keep {toplevel} as {}: {e}", link.display()))
}
