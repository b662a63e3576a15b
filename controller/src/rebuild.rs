//! Rolling back to a lock whose system the host no longer has (garbage collected):
//! find with git2 the commit whose `flake.lock` has that lock id, evaluate and build
//! the host at that commit (`git+file://...?rev=...`, the work tree is not touched),
//! then deploy it through the normal path (push, confirmation, health gates), pinned to
//! that lock and revision.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use hostctl_nix::flake::gitlock::DEFAULT_SEARCH_LIMIT;
use hostctl_nix::flake::{FlakeRepo, FlakeSource};
use hostctl_nix::{FlakeRef, Nix, Toplevel};
use hostctl_schemas::ids::{AttrName, HostName, LockId, StorePath, System};
use hostctl_schemas::inventory::HealthCheck;

use crate::build::build_all;
use crate::deploy::{deploy_host, DeploySettings, Outcome, Step};
use crate::host::Host;
use crate::progress;
use crate::push::NixStore;

/// What a rebuild did: the deployment's outcome, and the commit and toplevel it built.
#[derive(Debug, Clone)]
pub struct Rebuilt {
    pub outcome: Outcome,
    pub commit: Option<String>,
    pub toplevel: Option<StorePath>,
}

impl Rebuilt {
    fn failed(step: Step, message: String, commit: Option<String>) -> Self {
        Self { outcome: Outcome::failed(step, message), commit, toplevel: None }
    }
}

/// Rebuilds and deploys a host at the commit that had a lock. A trait so the rollback
/// flow can be tested with the fake transport and without Nix.
pub trait Rebuild: Send + Sync {
    fn rebuild<H: Host>(
        &self,
        host: &H,
        lock: &LockId,
        rev_hint: Option<&str>,
        checks: &[HealthCheck],
        settings: &DeploySettings,
    ) -> impl Future<Output = Rebuilt> + Send;
}

/// The real one: the flake's git repository, Nix, and the local store.
#[derive(Debug)]
pub struct FlakeRebuild {
    pub nix: Arc<Nix>,
    /// `None` for a remote flake: nothing to rebuild from.
    pub source: Option<FlakeSource>,
    /// Per host: the `nixosConfigurations` attribute and the inventory's `system`.
    pub hosts: BTreeMap<HostName, (AttrName, Option<System>)>,
    /// The signature policy the rebuilt commit must pass.
    pub commits: crate::commit_policy::RebuildCheck,
}

impl Rebuild for FlakeRebuild {
    async fn rebuild<H: Host>(
        &self,
        host: &H,
        lock: &LockId,
        rev_hint: Option<&str>,
        checks: &[HealthCheck],
        settings: &DeploySettings,
    ) -> Rebuilt {
        let name = host.name();
        let (flake, commit) = match self.find_commit(lock, rev_hint).await {
            Ok(found) => found,
            Err(message) => return Rebuilt::failed(Step::Rollback, format!("{name}: {message}"), None),
        };
        let signature = match self.commits.commit(name, &commit) {
            Ok(signature) => signature,
            Err(message) => {
                return Rebuilt::failed(Step::Rollback, format!("{name}: commit {commit}: {message}"), Some(commit))
            }
        };
        progress::step(
            name,
            format!("lock {} is no longer on the host: rebuilding it from commit {}", lock.short(), &commit[..12]),
        );
        let toplevel = match self.build_at(name, &flake).await {
            Ok(t) => t,
            Err((step, message)) => return Rebuilt::failed(step, message, Some(commit)),
        };
        let mut pinned = settings.clone();
        (pinned.rev, pinned.lock) = (Some(commit.clone()), Some(lock.clone()));
        pinned.commit_signatures = signature.map(|s| BTreeMap::from([(name.clone(), s)])).unwrap_or_default();
        let store = NixStore::new(self.nix.clone());
        let outcome = deploy_host(host, &store, &toplevel.out_path, checks, &pinned).await;
        Rebuilt { outcome, commit: Some(commit), toplevel: Some(toplevel.out_path) }
    }
}

impl FlakeRebuild {
    /// The commit that had `lock` (`rev_hint` first) and the flake reference for it.
    async fn find_commit(&self, lock: &LockId, rev_hint: Option<&str>) -> Result<(FlakeRef, String), String> {
        let Some(source) = self.source.clone() else {
            return Err(format!(
                "the system of lock {} is no longer on the host, and the flake is not a local git repository to \
                 rebuild it from",
                lock.short()
            ));
        };
        let (lock, hint) = (lock.clone(), rev_hint.map(str::to_owned));
        // git2 is blocking, and a search may read thousands of commits.
        let found = tokio::task::spawn_blocking(move || {
            let repo = FlakeRepo::open(&source).map_err(|e| e.to_string())?;
            let search = repo.find_lock(&lock, hint.as_deref(), DEFAULT_SEARCH_LIMIT).map_err(|e| e.to_string())?;
            let Some(commit) = search.commit else {
                return Err(format!(
                    "the system of lock {lock} is no longer on the host, and no commit of {} has that flake.lock \
                     ({} searched, HEAD and its first parents)",
                    repo.workdir().display(),
                    hostctl_schemas::text::plural(search.searched, "commit", "commits")
                ));
            };
            let flake = FlakeRef::git_file_at(repo.workdir(), &commit, repo.subdir()).map_err(|e| e.to_string())?;
            Ok((flake, commit))
        });
        found.await.map_err(|e| format!("the git search failed: {e}"))?
    }

    /// Evaluates and builds one host from `flake`; the failing step and message.
    async fn build_at(&self, name: &HostName, flake: &FlakeRef) -> Result<Toplevel, (Step, String)> {
        let Some((attr, system)) = self.hosts.get(name) else {
            return Err((Step::Eval, format!("{name}: not in the inventory")));
        };
        progress::step(name, format!("evaluating {flake}"));
        let toplevel = self.nix.eval_toplevel(flake, attr).await.map_err(|e| {
            let message = e.nix_message().map_or_else(|| e.to_string(), str::to_owned);
            (Step::Eval, format!("host {name}: evaluation at {flake} failed:\n{message}"))
        })?;
        if let (Some(want), Some(got)) = (system, toplevel.system.as_deref()) {
            if want.as_str() != got {
                return Err((
                    Step::Eval,
                    format!("host {name}: the inventory says system {want}, but {flake} evaluates to {got}"),
                ));
            }
        }
        progress::step(name, "building");
        let targets = BTreeMap::from([(name.clone(), toplevel.clone())]);
        match build_all(&self.nix, &targets).await {
            Ok(mut built) => match built.remove(name) {
                Some(Ok(())) => Ok(toplevel),
                Some(Err(log)) => Err((Step::Build, format!("host {name}: build failed:\n{log}"))),
                None => Err((Step::Build, format!("host {name}: build did not run"))),
            },
            Err(e) => Err((Step::Build, format!("host {name}: {e}"))),
        }
    }
}
