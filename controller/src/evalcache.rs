//! The evaluation cache: what each host evaluated to at a clean commit, so re-running
//! `apply`, `eval` or `status` on an unchanged revision runs no evaluator.
//!
//! Soundness: an entry is keyed by everything a pure flake evaluation of a clean git tree
//! depends on: the commit (the flake's whole source; untracked files are invisible to Nix
//! there), the flake's directory inside the repository, the lock id (every input pinned),
//! the `nixosConfigurations` attribute, the Nix version, the store, and
//! [`FORMAT`] (what hostctl asks Nix for). A dirty tree, a tree without a commit or a
//! remote flake is never cached. A hit is used only while its `.drv` is still valid in
//! the store (checked by the caller), since a collected derivation cannot be built.
//!
//! Invariant: the cache only ever saves evaluator time; a missing, unreadable or corrupt
//! entry is a miss, and writing one never fails a command.

use std::path::{Path, PathBuf};

use hostctl_nix::Toplevel;
use hostctl_schemas::ids::{AttrName, StorePath};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::context::FleetContext;

/// Bumped when what an entry means changes (e.g. `eval_toplevel` asks Nix for more).
const FORMAT: u32 = 1;

/// Where entries live unless `HOSTCTL_CACHE_DIR` says otherwise:
/// `$XDG_CACHE_HOME/hostctl/eval` or `~/.cache/hostctl/eval`.
fn default_dir() -> Option<PathBuf> {
    Some(controller_state_dir()?.join("eval"))
}

/// The controller's own state on this machine: `HOSTCTL_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/hostctl` or `~/.cache/hostctl`.
pub fn controller_state_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HOSTCTL_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|d| !d.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("hostctl"))
}

/// What every key of one run shares.
#[derive(Debug, Clone, Serialize)]
struct KeyBase {
    format: u32,
    rev: String,
    subdir: PathBuf,
    lock: Option<String>,
    nix: String,
    store: Option<String>,
}

/// The cache for one fleet run; [`EvalCache::disabled`] when the tree cannot be cached.
#[derive(Debug, Clone)]
pub struct EvalCache {
    dir: Option<PathBuf>,
    base: Option<KeyBase>,
}

/// An entry on disk.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    drv: StorePath,
    out: StorePath,
    system: Option<String>,
}

impl EvalCache {
    /// A cache that never hits and never writes.
    pub fn disabled() -> Self {
        Self { dir: None, base: None }
    }

    /// The cache for `ctx`'s flake as Nix `nix_version` on `store` sees it; disabled for
    /// a dirty or remote tree, or when no cache directory can be found.
    pub fn for_fleet(ctx: &FleetContext, nix_version: &str, store: Option<&str>) -> Self {
        Self::at(default_dir(), ctx, nix_version, store)
    }

    fn at(dir: Option<PathBuf>, ctx: &FleetContext, nix_version: &str, store: Option<&str>) -> Self {
        let base = ctx.source.as_ref().and_then(|source| {
            let git = source.git.as_ref().filter(|g| g.is_clean())?;
            Some(KeyBase {
                format: FORMAT,
                rev: git.rev.clone()?,
                subdir: source.dir.strip_prefix(&git.workdir).unwrap_or(Path::new("")).to_path_buf(),
                lock: ctx.lock_id().map(ToString::to_string),
                nix: nix_version.to_owned(),
                store: store.map(str::to_owned),
            })
        });
        Self { dir: dir.filter(|_| base.is_some()), base }
    }

    /// Whether lookups can hit at all (a clean tree and a cache directory).
    pub fn is_enabled(&self) -> bool {
        self.dir.is_some() && self.base.is_some()
    }

    fn file(&self, attr: &AttrName) -> Option<PathBuf> {
        let (dir, base) = (self.dir.as_ref()?, self.base.as_ref()?);
        let key = serde_json::to_vec(&(base, attr.as_str())).ok()?;
        Some(dir.join(format!("{}.json", hex::encode(Sha256::digest(key)))))
    }

    /// The cached result for `attr`, if any.
    pub fn get(&self, attr: &AttrName) -> Option<Toplevel> {
        let text = std::fs::read(self.file(attr)?).ok()?;
        let entry: Entry = serde_json::from_slice(&text).ok()?;
        Some(Toplevel { drv_path: entry.drv, out_path: entry.out, system: entry.system })
    }

    /// The clean revision entries are keyed by, if the cache is enabled.
    pub fn rev(&self) -> Option<&str> {
        self.dir.as_ref().and(self.base.as_ref()).map(|b| b.rev.as_str())
    }

    /// Where incremental evaluation keeps the latest record of what `attr`'s evaluation
    /// read, and the key it is filed under (the record repeats it, so a record read back
    /// is checked against the whole key, not just its hash). Keyed like an entry but
    /// without the revision: a record made at one commit serves the next.
    pub fn reads_file(&self, attr: &AttrName) -> Option<(PathBuf, String)> {
        let (dir, base) = (self.dir.as_ref()?, self.base.as_ref()?);
        let without_rev = KeyBase { rev: String::new(), ..base.clone() };
        let key = serde_json::to_string(&(without_rev, attr.as_str(), "reads")).ok()?;
        Some((dir.join(format!("{}.reads.json", hex::encode(Sha256::digest(&key)))), key))
    }

    /// Records `toplevel` for `attr`; failures are logged, never returned.
    pub fn put(&self, attr: &AttrName, toplevel: &Toplevel) {
        let Some(file) = self.file(attr) else { return };
        let entry =
            Entry { drv: toplevel.drv_path.clone(), out: toplevel.out_path.clone(), system: toplevel.system.clone() };
        if let Err(e) = write_entry(&file, &entry) {
            tracing::warn!(file = %file.display(), error = %e, "cannot write an evaluation cache entry");
        }
    }
}

fn write_entry(file: &Path, entry: &Entry) -> std::io::Result<()> {
    write_file(file, &serde_json::to_vec(entry).map_err(std::io::Error::other)?)
}

/// Write-then-rename, so a concurrent reader sees the old file or the whole new one.
pub fn write_file(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
#[path = "evalcache_tests.rs"]
mod tests;
