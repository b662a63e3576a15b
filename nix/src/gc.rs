//! Garbage collection as typed operations: the store's GC roots, the paths a collection
//! would delete, NAR sizes, and deleting profile generations. Deciding what to delete is
//! the caller's (the agent's retention); Nix still refuses to delete anything alive.

use std::collections::BTreeSet;

use hostctl_schemas::ids::StorePath;

use crate::command::NixCommand;
use crate::profile::Profile;
use crate::runner::{Nix, NixError};

/// One GC root: the link (or `{censored}`, `/proc/...` for runtime roots) and the store
/// path it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcRoot {
    pub link: String,
    pub target: StorePath,
}

/// Parses `nix-store --gc --print-roots` (`LINK -> TARGET` lines; the same from Nix 2.8
/// to 2.26). A target inside a store object counts as that object; lines whose target is
/// not in the store are skipped (Nix prints none).
pub fn parse_roots(text: &str) -> Vec<GcRoot> {
    text.lines()
        .filter_map(|line| {
            let (link, target) = line.rsplit_once(" -> ")?;
            Some(GcRoot { link: link.to_owned(), target: store_object(target)? })
        })
        .collect()
}

/// `/nix/store/<hash>-<name>` of a path at or below it.
fn store_object(path: &str) -> Option<StorePath> {
    let rest = path.strip_prefix("/nix/store/")?;
    let base = rest.split('/').next()?;
    format!("/nix/store/{base}").parse().ok()
}

/// The `path`s of `nix flake archive --json` output, the flake's first, inputs after.
pub fn parse_flake_sources(json: &serde_json::Value) -> Vec<StorePath> {
    let mut paths: Vec<StorePath> = json["path"].as_str().and_then(|p| p.parse().ok()).into_iter().collect();
    if let Some(inputs) = json["inputs"].as_object() {
        for input in inputs.values() {
            paths.extend(parse_flake_sources(input));
        }
    }
    paths
}

impl Nix {
    /// The store paths of `flake`'s source and of all its inputs.
    pub async fn flake_sources(&self, flake: &crate::command::FlakeRef) -> Result<Vec<StorePath>, NixError> {
        let json: serde_json::Value = self.run_json(&NixCommand::flake_sources(flake)).await?;
        Ok(parse_flake_sources(&json))
    }

    /// Every GC root of the store.
    pub async fn gc_roots(&self) -> Result<Vec<GcRoot>, NixError> {
        let out = self.run(&NixCommand::print_roots()).await?;
        Ok(parse_roots(&String::from_utf8_lossy(&out.stdout)))
    }

    /// The paths a collection would delete now.
    pub async fn dead_paths(&self) -> Result<BTreeSet<StorePath>, NixError> {
        let cmd = NixCommand::print_dead();
        let out = self.run(&cmd).await?;
        crate::output::store_path_lines(self, &cmd, &out.stdout)
    }

    /// The NAR sizes of `paths` added up (`path_info`'s sizes).
    pub async fn total_nar_size(&self, paths: &[StorePath]) -> Result<u64, NixError> {
        if paths.is_empty() {
            return Ok(0);
        }
        let infos = self.path_info(paths, false).await?;
        Ok(infos.iter().fold(0u64, |total, info| total.saturating_add(info.nar_size)))
    }

    /// Deletes generations `numbers` of `profile` (none: nothing runs).
    pub async fn delete_generations(&self, profile: &Profile, numbers: &[u64]) -> Result<(), NixError> {
        if numbers.is_empty() {
            return Ok(());
        }
        self.run(&NixCommand::delete_generations(profile, numbers)).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_parsed_as_nix_prints_them() {
        // Nix 2.8's `nix-store --gc --print-roots`: indirect roots, profiles, runtime roots.
        let a = "/nix/store/zr2knphxg8yyy2mkq8akf2hfknjvdiz7-system";
        let text = format!(
            "/x/state/profiles/system-3-link -> {a}\n/proc/42/maps -> {a}/sw/lib/libc.so\n{{censored}} -> {a}\nnoise\n"
        );
        let roots = parse_roots(&text);
        assert_eq!(roots.len(), 3, "{roots:?}");
        assert_eq!(roots[0].link, "/x/state/profiles/system-3-link");
        assert!(roots.iter().all(|r| r.target.as_str() == a), "{roots:?}");
        let json = serde_json::json!({"path": a, "inputs": {"x": {"path": a, "inputs": {}}}});
        assert_eq!(parse_flake_sources(&json).len(), 2);
        let cmd = NixCommand::delete_generations(&Profile::new(std::path::Path::new("/p/system")).unwrap(), &[2, 5]);
        assert_eq!(cmd.argv(), ["nix-env", "--profile", "/p/system", "--delete-generations", "2", "5"]);
    }
}
