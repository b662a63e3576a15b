//! Deciding what to do with a fetched commit (lock policy), building its system on the
//! host, and the deployment request that hands it to [`crate::deploy::Deployer`].
//!
//! Builds go through `hostctl-nix` only: `eval_toplevel` (which passes
//! `--no-update-lock-file`, so the committed lock is used as is or the evaluation fails)
//! and `build_outputs`, on a Nix handle carrying the pull config's substituters and
//! trusted keys (signature checking stays on).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use hostctl_nix::command::FlakeRef;
use hostctl_nix::{Nix, NixError};
use hostctl_schemas::agent_config::{LockPolicy, PullConfig};
use hostctl_schemas::api::deployments::DeploymentRequest;
use hostctl_schemas::duration::Duration;
use hostctl_schemas::ids::{AttrName, LockId, StorePath};
use hostctl_schemas::inventory::{CacheUrl, Mode};

/// What the lock policy says about a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Build and activate it.
    Apply,
    /// Hold it as pending until an operator deploys its lock.
    Hold,
}

/// Lock policy: `follow` applies everything; `pinned` applies a commit whose lock equals
/// the pinned one, or any commit when nothing is pinned yet (the first deployment pins).
pub fn classify(policy: LockPolicy, pinned: Option<&LockId>, lock: Option<&LockId>) -> Verdict {
    match (policy, pinned) {
        (LockPolicy::Follow, _) | (LockPolicy::Pinned, None) => Verdict::Apply,
        (LockPolicy::Pinned, Some(pinned)) if lock == Some(pinned) => Verdict::Apply,
        (LockPolicy::Pinned, Some(_)) => Verdict::Hold,
    }
}

/// Why a commit could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildFailure {
    /// Names the step (evaluating or building), the commit and Nix's own message.
    pub message: String,
    /// The system the commit evaluated to, when the build failed after evaluation.
    pub toplevel: Option<StorePath>,
}

impl BuildFailure {
    fn eval(message: String) -> Self {
        Self { message, toplevel: None }
    }
}

/// A boxed build future (the trait is object safe so tests can use a fake builder).
pub type BuildFuture<'a> = Pin<Box<dyn Future<Output = Result<StorePath, BuildFailure>> + Send + 'a>>;

/// Builds the host's system at a commit of the local mirror; dropping the future cancels
/// the build.
pub trait Build: Send + Sync + std::fmt::Debug {
    fn build<'a>(&'a self, commit: &'a str) -> BuildFuture<'a>;
}

/// The real builder: Nix on the host.
#[derive(Debug)]
pub struct NixBuilder {
    nix: Arc<Nix>,
    repo: PathBuf,
    attr: AttrName,
}

impl NixBuilder {
    /// A Nix handle for `store` with the pull config's caches and keys.
    pub fn new(store: Option<&str>, config: &PullConfig, repo: PathBuf, attr: AttrName) -> Self {
        let mut nix = Nix::new();
        if let Some(store) = store {
            nix = nix.with_store(store);
        }
        if !config.substituters.is_empty() {
            let urls: Vec<&str> = config.substituters.iter().map(CacheUrl::as_str).collect();
            nix = nix.with_option("substituters", urls.join(" "));
        }
        if !config.trusted_public_keys.is_empty() {
            let keys: Vec<String> = config.trusted_public_keys.iter().map(ToString::to_string).collect();
            nix = nix.with_option("trusted-public-keys", keys.join(" "));
        }
        Self { nix: Arc::new(nix), repo, attr }
    }

    /// Evaluates and builds; the durations of both are logged (`pull: built`), so the
    /// pull-mode benchmark can tell the agent's own overhead from Nix's work.
    async fn build_at(&self, commit: &str) -> Result<StorePath, BuildFailure> {
        let started = Instant::now();
        // The flake is at the repository's root in pull mode.
        let flake = FlakeRef::git_file_at(&self.repo, commit, std::path::Path::new(""))
            .map_err(|e| BuildFailure::eval(e.to_string()))?;
        let eval_failed = |e: &NixError| {
            let attr = &self.attr;
            BuildFailure::eval(format!(
                "evaluating nixosConfigurations.{attr} at {commit} failed: {}\n{e}",
                headline(e)
            ))
        };
        let toplevel = match self.nix.eval_toplevel(&flake, &self.attr).await {
            Ok(t) => t,
            Err(e) if e.nix_message().is_some_and(|m| m.contains(RELATIVE_INPUT_ERROR)) => {
                if let Err(why) = self.fetch_relative_inputs(commit).await {
                    let mut failure = eval_failed(&e);
                    failure.message = format!("{}\n{why}", failure.message);
                    return Err(failure);
                }
                self.nix.eval_toplevel(&flake, &self.attr).await.map_err(|e| eval_failed(&e))?
            }
            Err(e) => return Err(eval_failed(&e)),
        };
        let evaluated = Instant::now();
        crate::pause::point("pull:evaluated");
        self.nix.build_outputs(std::slice::from_ref(&toplevel.drv_path)).await.map_err(|e| BuildFailure {
            message: format!("building {} at {commit} failed: {}\n{e}", toplevel.drv_path, headline(&e)),
            toplevel: Some(toplevel.out_path.clone()),
        })?;
        let (eval_ms, build_ms) = (millis(evaluated - started), millis(evaluated.elapsed()));
        tracing::info!(commit, eval_ms, build_ms, toplevel = %toplevel.out_path, "pull: built");
        crate::pause::point("pull:built");
        Ok(toplevel.out_path)
    }

    /// Nix 2.8 reads a locked relative `path:` input only from the store, so a host whose
    /// store never saw one cannot evaluate the commit. `nix flake update` of a checkout puts
    /// the inputs there; it writes only the throwaway checkout's lock, never the agent's
    /// repository, and the evaluation that follows still uses the commit's own lock.
    async fn fetch_relative_inputs(&self, commit: &str) -> Result<(), String> {
        let tmp = tempfile::Builder::new()
            .prefix("hostctl-pull-inputs-")
            .tempdir()
            .map_err(|e| format!("cannot create a checkout for the flake's inputs: {e}"))?;
        let checkout = tmp.path().join("flake");
        let (repo, target) = (self.repo.clone(), checkout.clone());
        let commit_id = commit.to_owned();
        tokio::task::spawn_blocking(move || checkout_commit(&repo, &commit_id, &target))
            .await
            .map_err(|e| format!("checkout task failed: {e}"))??;
        let dir = checkout.to_str().ok_or("the checkout path is not UTF-8")?;
        self.nix.flake_update(dir).await.map_err(|e| format!("fetching the flake's relative inputs failed: {e}"))
    }
}

/// The line of a Nix failure that says what went wrong (Nix's first `error:` line), for
/// the first line of a message whose later lines carry the whole error (argv, status,
/// stderr tail): `hostctl status` and `history` show first lines.
fn headline(e: &NixError) -> String {
    let from_nix = e.nix_message().and_then(|m| m.lines().map(str::trim).find(|l| l.starts_with("error:")));
    match from_nix {
        Some(line) => line.to_owned(),
        None => e.to_string().lines().next().unwrap_or_default().to_owned(),
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What Nix 2.8 says when a locked relative input is not in the store.
const RELATIVE_INPUT_ERROR: &str = "because it uses a relative path";

/// A git clone of `repo` at `commit` in `target` (a git repository, as Nix expects).
fn checkout_commit(repo: &std::path::Path, commit: &str, target: &std::path::Path) -> Result<(), String> {
    let fail = |e: git2::Error| format!("cannot check out {commit} for the flake's inputs: {e}");
    let url = repo.to_str().ok_or("the repository path is not UTF-8")?;
    let clone = git2::Repository::clone(url, target).map_err(fail)?;
    let oid = git2::Oid::from_str(commit).map_err(fail)?;
    let object = clone.find_object(oid, None).map_err(fail)?;
    clone.checkout_tree(&object, Some(git2::build::CheckoutBuilder::new().force())).map_err(fail)?;
    clone.set_head_detached(oid).map_err(fail)
}

impl Build for NixBuilder {
    fn build<'a>(&'a self, commit: &'a str) -> BuildFuture<'a> {
        Box::pin(self.build_at(commit))
    }
}

/// The first 12 hex digits of a commit id.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// A pull deployment: switch, no controller confirmation (the agent's own `health`
/// checks still gate it and roll it back), id `pull-<short commit>-<unix time>`.
pub fn request(commit: &str, lock: Option<LockId>, toplevel: StorePath, now: u64) -> DeploymentRequest {
    DeploymentRequest {
        id: format!("pull-{}-{now}", short(commit)),
        toplevel,
        rev: Some(commit.to_owned()),
        lock,
        mode: Mode::Switch,
        confirm_timeout: Duration::from_secs(0),
        health: Vec::new(),
        cache: None,
        commit_signature: None,
        retention: None,
        reboot: false,
    }
}
