//! Closure differences: per host, what changes from the system it runs (its agent's
//! status) to a built one, by package as `nix store diff-closures` reports it (versions
//! added, removed or changed, and each package's size change), plus the closure size
//! change. Used by `hostctl diff` and `apply --diff`; reads only.
//!
//! Both closures must be in this machine's store; the running system is when this
//! controller deployed it and nothing collected it. A host whose running system is not
//! here fails with that reason rather than showing half a diff.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hostctl_nix::Nix;
use hostctl_schemas::ids::{HostName, StorePath};
use hostctl_schemas::text::plural;
use schemars::JsonSchema;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::context::FleetContext;
use crate::error::Error;
use crate::host::Host as _;
use crate::pipeline::Built;
use crate::push::{LocalStore, NixStore};

/// A store path name split as Nix splits derivation names: the version starts at the
/// first `-` followed by a digit (`nginx-1.20.1` -> `nginx`, `1.20.1`).
pub fn split_name(path: &StorePath) -> (String, String) {
    let base = path.as_str().rsplit('/').next().unwrap_or_default();
    let name = base.split_once('-').map_or(base, |(_, n)| n);
    let bytes = name.as_bytes();
    let cut = (0..bytes.len()).find(|&i| bytes[i] == b'-' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit));
    match cut {
        Some(i) => (name[..i].to_owned(), name[i + 1..].to_owned()),
        None => (name.to_owned(), String::new()),
    }
}

/// One package's change between two closures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Change {
    pub package: String,
    pub old: BTreeSet<String>,
    pub new: BTreeSet<String>,
    /// NAR bytes of the package's paths, new minus old.
    pub size_delta: i64,
}

/// The packages whose versions or size differ between `old` and `new` (path -> NAR size).
pub fn closure_changes(old: &BTreeMap<StorePath, u64>, new: &BTreeMap<StorePath, u64>) -> Vec<Change> {
    let group = |closure: &BTreeMap<StorePath, u64>| {
        let mut by_package: BTreeMap<String, (BTreeSet<String>, i64)> = BTreeMap::new();
        for (path, size) in closure {
            let (package, version) = split_name(path);
            let entry = by_package.entry(package).or_default();
            entry.0.insert(version);
            entry.1 += i64::try_from(*size).unwrap_or(i64::MAX);
        }
        by_package
    };
    let (old, new) = (group(old), group(new));
    let packages: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    packages
        .into_iter()
        .filter_map(|package| {
            let (old_versions, old_size) = old.get(package).cloned().unwrap_or_default();
            let (new_versions, new_size) = new.get(package).cloned().unwrap_or_default();
            let size_delta = new_size - old_size;
            (old_versions != new_versions || size_delta != 0).then(|| Change {
                package: package.clone(),
                old: old_versions,
                new: new_versions,
                size_delta,
            })
        })
        .collect()
}

/// `1.18 → 1.20`, `∅ → 1.0`, `1.0 → ∅`; an empty version shows as `ε` (as Nix does).
fn versions(set: &BTreeSet<String>) -> String {
    if set.is_empty() {
        return "∅".to_owned();
    }
    set.iter().map(|v| if v.is_empty() { "ε" } else { v.as_str() }).collect::<Vec<_>>().join(", ")
}

/// `+1.2 KiB` / `-300 B`.
fn signed_bytes(delta: i64) -> String {
    let sign = if delta < 0 { "-" } else { "+" };
    format!("{sign}{}", crate::progress::bytes(delta.unsigned_abs()))
}

/// Each built host's diff against what its agent runs (asked in parallel). `store` is
/// shared with whatever runs next (`apply --diff`), so closures are queried once.
pub async fn diff_built(
    ctx: &FleetContext,
    nix: Arc<Nix>,
    store: Arc<NixStore>,
    built: Built,
) -> Result<BTreeMap<HostName, Result<HostDiff, String>>, Error> {
    let mut set = JoinSet::new();
    for (name, result) in built {
        if !ctx.fleet.hosts.contains_key(&name) {
            continue;
        }
        let client = ctx.agent(&name)?;
        let (nix, store) = (nix.clone(), store.clone());
        set.spawn(async move {
            let outcome = match (result, client) {
                (Err(failure), _) => Err(failure.message),
                (Ok(_), Err(e)) => Err(e.to_string()),
                (Ok(t), Ok(client)) => match client.status().await {
                    Ok(s) => host_diff(&nix, store.as_ref(), s.current_system.or(s.toplevel), &t.out_path).await,
                    Err(e) => Err(e.to_string()),
                },
            };
            (name, outcome)
        });
    }
    Ok(crate::tasks::collect_keyed(set, "diff").await)
}

/// What one host's diff found.
#[derive(Debug)]
pub struct HostDiff {
    /// What the host runs now; `None` when it has no system yet.
    pub running: Option<String>,
    pub toplevel: StorePath,
    pub changes: Vec<Change>,
    pub old_size: u64,
    pub new_size: u64,
}

async fn host_diff(
    nix: &Nix,
    store: &NixStore,
    running: Option<String>,
    toplevel: &StorePath,
) -> Result<HostDiff, String> {
    let new = sized_closure(store, toplevel).await?;
    let old = match running.as_deref().map(str::parse::<StorePath>) {
        None => BTreeMap::new(),
        Some(Err(e)) => return Err(format!("the agent reports a running system that is not a store path: {e}")),
        Some(Ok(path)) if path == *toplevel => new.clone(),
        Some(Ok(path)) => {
            let invalid = nix.invalid_paths(std::slice::from_ref(&path)).await.map_err(|e| e.to_string())?;
            if !invalid.is_empty() {
                return Err(format!(
                    "the running system {path} is not in this machine's store (deployed from elsewhere, or \
                     collected): diff needs both closures; `nix copy --from` the host or rebuild that revision"
                ));
            }
            sized_closure(store, &path).await?
        }
    };
    Ok(HostDiff {
        running,
        toplevel: toplevel.clone(),
        changes: closure_changes(&old, &new),
        old_size: old.values().sum(),
        new_size: new.values().sum(),
    })
}

async fn sized_closure(store: &NixStore, toplevel: &StorePath) -> Result<BTreeMap<StorePath, u64>, String> {
    let closure = store.closure(toplevel).await?;
    let sizes = store.nar_sizes(&closure).await?;
    Ok(closure.into_iter().map(|p| (p.clone(), sizes.get(p.as_str()).copied().unwrap_or(0))).collect())
}

impl HostDiff {
    pub fn unchanged(&self) -> bool {
        self.running.as_deref() == Some(self.toplevel.as_str())
    }

    pub fn size_delta(&self) -> i64 {
        i64::try_from(self.new_size).unwrap_or(i64::MAX) - i64::try_from(self.old_size).unwrap_or(i64::MAX)
    }

    /// The text after the host's name on its human line.
    pub fn summary(&self) -> String {
        match (&self.running, self.unchanged()) {
            (_, true) => format!("{} (runs it already)", self.toplevel),
            (None, _) => format!("nothing running -> {} ({})", self.toplevel, crate::progress::bytes(self.new_size)),
            (Some(_), _) => {
                let packages = plural(self.changes.len(), "package", "packages");
                format!("{packages} changed, closure {}", signed_bytes(self.size_delta()))
            }
        }
    }

    /// One line per changed package (`nginx: 1.18 → 1.20, +1.2 MiB`).
    pub fn lines(&self) -> Vec<String> {
        if self.unchanged() || self.running.is_none() {
            return Vec::new();
        }
        self.changes
            .iter()
            .map(|c| {
                format!("{}: {} → {}, {}", c.package, versions(&c.old), versions(&c.new), signed_bytes(c.size_delta))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(name: &str) -> StorePath {
        format!("/nix/store/{}-{name}", "a".repeat(32)).parse().unwrap()
    }

    #[test]
    fn names_split_where_nix_splits_them() {
        assert_eq!(split_name(&path("nginx-1.20.1")), ("nginx".into(), "1.20.1".into()));
        assert_eq!(
            split_name(&path("nixos-system-web1-24.05-example")),
            ("nixos-system-web1".into(), "24.05-example".into())
        );
        assert_eq!(split_name(&path("etc")), ("etc".into(), String::new()));
        assert_eq!(split_name(&path("python3.8-foo-2")), ("python3.8-foo".into(), "2".into()));
    }

    #[test]
    fn changes_are_versions_added_removed_or_resized() {
        let old: BTreeMap<StorePath, u64> =
            [(path("nginx-1.18"), 100), (path("etc"), 10), (path("bash-5.1"), 50), (path("gone-1.0"), 7)].into();
        let mut new: BTreeMap<StorePath, u64> = [(path("nginx-1.20"), 120), (path("bash-5.1"), 50)].into();
        new.insert(format!("/nix/store/{}-etc", "b".repeat(32)).parse().unwrap(), 12);
        new.insert(path("postgresql-13.2"), 300);
        let changes = closure_changes(&old, &new);
        let summary: Vec<(String, String, String, i64)> =
            changes.iter().map(|c| (c.package.clone(), versions(&c.old), versions(&c.new), c.size_delta)).collect();
        assert_eq!(
            summary,
            [
                ("etc".into(), "ε".into(), "ε".into(), 2),
                ("gone".into(), "1.0".into(), "∅".into(), -7),
                ("nginx".into(), "1.18".into(), "1.20".into(), 20),
                ("postgresql".into(), "∅".into(), "13.2".into(), 300),
            ]
        );
        assert_eq!(signed_bytes(-7), "-7 B");
    }
}
