//! GC roots for imported paths until a deployment uses them: between `POST
//! /v1/paths/import` and the deployment that sets the profile to them, nothing else refers
//! to the imported paths, so a garbage collection on the host (`nix-collect-garbage`, a
//! `nix.gc` timer) would delete them and the deployment would fail.
//!
//! After each import, every path of it that no other path of the same import refers to
//! gets an indirect root `<state_dir>/gcroots/imports/<n>-<name>` (`nix-store --add-root`,
//! through `hostctl_nix`), which keeps its whole closure. They are released (the links
//! removed) when a deployment ends, whatever its result (the profile, the running system
//! or nothing holds them then), and at agent start (imports whose deployment never came:
//! abandoned).
//!
//! Invariant: only links in its own directory are ever removed; the store is never
//! touched here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hostctl_nix::command::NixCommand;
use hostctl_nix::export_stream::ExportedPath;
use hostctl_nix::Nix;
use hostctl_schemas::ids::StorePath;

use crate::events::{AgentEvent, Events};

/// The roots of imported paths, in one directory.
#[derive(Debug)]
pub struct ImportRoots {
    dir: PathBuf,
    nix: Arc<Nix>,
    next: AtomicU64,
}

impl ImportRoots {
    /// Creates `dir` (private) and releases what a previous run left there.
    pub fn open(dir: &Path, nix: Arc<Nix>) -> std::io::Result<Self> {
        crate::journal::create_private_dir(dir).map_err(std::io::Error::other)?;
        let roots = Self { dir: dir.to_path_buf(), nix, next: AtomicU64::new(0) };
        let released = roots.release_all();
        if released > 0 {
            tracing::info!(dir = %dir.display(), released, "released the GC roots of imports no deployment used");
        }
        Ok(roots)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Roots the paths of `imported` that none of the others refers to (their closures
    /// hold the rest). A failure is returned with Nix's argv and stderr.
    pub async fn hold(&self, imported: &[ExportedPath]) -> Result<(), hostctl_nix::NixError> {
        for path in heads(imported) {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let link = self.dir.join(format!("{n}-{}", path.name()));
            self.nix.run(&NixCommand::add_root(&link, path)).await?;
        }
        Ok(())
    }

    /// Removes every root; returns how many there were.
    pub fn release_all(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return 0 };
        let mut released = 0;
        for entry in entries.flatten() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => released += 1,
                Err(e) => tracing::warn!(link = %entry.path().display(), error = %e, "cannot release a GC root"),
            }
        }
        released
    }

    /// Releases every root whenever a deployment ends (`events` come from the journal).
    pub fn release_when_deployments_end(self: &Arc<Self>, events: &Events) {
        let mut receiver = events.subscribe();
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match receiver.recv().await {
                    Ok(AgentEvent::Deployment { previous, deployment })
                        if deployment.state.is_final() && previous.is_none_or(|p| !p.is_final()) =>
                    {
                        let released = this.release_all();
                        tracing::debug!(id = deployment.id, released, "released the GC roots of imports");
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}

/// The paths no other path of `imported` refers to, in order.
fn heads(imported: &[ExportedPath]) -> Vec<&StorePath> {
    let referred: BTreeSet<&StorePath> =
        imported.iter().flat_map(|e| e.references.iter().filter(move |r| **r != e.path)).collect();
    imported.iter().map(|e| &e.path).filter(|p| !referred.contains(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exported(path: &str, references: &[&str]) -> ExportedPath {
        let p = |s: &str| format!("/nix/store/{}-{s}", s[..1].repeat(32)).parse().unwrap();
        ExportedPath { path: p(path), references: references.iter().map(|r| p(r)).collect(), deriver: None, nar_size: 1 }
    }

    #[test]
    fn only_paths_nothing_else_in_the_import_refers_to_are_rooted() {
        let imported = [exported("b", &["b"]), exported("c", &["b"]), exported("d", &["c", "d"]), exported("f", &[])];
        let names: Vec<&str> = heads(&imported).into_iter().map(|p| p.name()).collect();
        assert_eq!(names, ["d", "f"], "b and c are held by d's closure; self-references do not count");
    }
}
