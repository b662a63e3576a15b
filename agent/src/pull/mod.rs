//! Pull mode (GitOps, DESIGN.md): the agent tracks one branch of the fleet repository,
//! fetches it on its poll interval and at once when a verified webhook wakes it
//! ([`webhook`]), builds `nixosConfigurations.<hostname>` at the fetched commit on the host
//! ([`apply`]) and activates it through the ordinary [`Deployer`] (same journal, health
//! checks and rollback), as a `switch` with no confirmation window.
//!
//! One task ([`Puller::run`]) does all of it in rounds: fetch ([`fetch`]), decide (lock
//! policy: a commit whose `flake.lock` differs from the pinned lock is held as pending
//! under `pinned`), build, activate. A wake-up during a build fetches again; a newer commit
//! drops the older build (the Nix runner kills its children on drop).
//!
//! Invariants: never applies a commit it did not fetch itself (the webhook's payload only
//! wakes the task); never rewrites `flake.lock` (evaluation uses `--no-update-lock-file`);
//! an older commit is never activated after a newer one (the branch only moves forward
//! unless force pushes are allowed, only the current head is activated, and a commit
//! already deployed by pull is not deployed again); no pull deployment starts while
//! another deployment is open (it waits for the next round).

pub mod apply;
pub mod failed;
pub mod fetch;
pub mod known_hosts;
pub mod ssh;
pub mod verify;
pub mod webhook;

use std::sync::{Arc, Mutex, MutexGuard};

use hostctl_commits::Trust;
use hostctl_schemas::agent_config::{AgentConfig, PullConfig};
use hostctl_schemas::api::deployments::{CommitSignature, DeploymentState};
use hostctl_schemas::api::status::PullStatus;
use hostctl_schemas::commits::{CommitRefusal, Signer};
use hostctl_schemas::ids::{AttrName, LockId, StorePath};
use hostctl_schemas::inventory::Mode;
use tokio::sync::Notify;

use self::apply::{classify, Build, BuildFailure, NixBuilder, Verdict};
use self::fetch::Mirror;
use self::ssh::SshAuth;
use self::webhook::HookAuth;
use crate::deploy::Deployer;
use crate::deploy_error::DeployError;
use crate::journal::Record;
use crate::{unix_now, unix_now_ms};

/// What the pull task knows, shared with `GET /v1/status`. Changes go through
/// [`Puller::update`], which announces those the status shows.
#[derive(Debug, Default)]
struct Shared {
    fetched_commit: Option<String>,
    pending: Option<(String, Option<LockId>)>,
    last_fetch: Option<u64>,
    last_error: Option<String>,
    /// A commit whose build failed, and why: not retried until the branch moves.
    failed: Option<(String, String)>,
    /// The last commit built and its system, so a round that could not activate it
    /// (another deployment open) does not build it again.
    built: Option<(String, StorePath)>,
    /// When the last fetch, evaluation and build ended, and whether they succeeded.
    outcomes: PullOutcomes,
    /// The newest commit the signature policy refused.
    refused: Option<CommitRefusal>,
}

/// When a step last ended (Unix seconds) and whether it succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepOutcome {
    pub time: u64,
    pub ok: bool,
}

/// The pull task's last outcomes, for `GET /metrics` (`None`: never ran since start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullOutcomes {
    pub fetch: Option<StepOutcome>,
    pub eval: Option<StepOutcome>,
    pub build: Option<StepOutcome>,
    /// The signature policy's check (`pull.commits`), when one is configured.
    pub verify: Option<StepOutcome>,
}

fn ended(ok: bool) -> Option<StepOutcome> {
    Some(StepOutcome { time: unix_now(), ok })
}

/// What the status shows of [`Shared`]: a change is announced to the D-Bus service.
/// `last_fetch` is left out on purpose: it moves every poll without anything changing.
type Visible = (Option<String>, Option<(String, Option<LockId>)>, Option<String>);

impl Shared {
    fn visible(&self) -> Visible {
        (self.fetched_commit.clone(), self.pending.clone(), self.last_error.clone())
    }
}

/// How a build in progress ended.
#[derive(Debug, PartialEq, Eq)]
pub enum BuildEnd {
    Built(StorePath),
    Failed(BuildFailure),
    /// A newer commit was fetched meanwhile; the older build was dropped.
    Superseded(String),
}

/// The pull-mode task and its state.
#[derive(Debug)]
pub struct Puller {
    config: PullConfig,
    mirror: Mirror,
    ssh: Option<SshAuth>,
    builder: Arc<dyn Build>,
    deployer: Arc<Deployer>,
    hook: Option<HookAuth>,
    /// The signature policy with its keys; `None`: every fetched commit may be built.
    trust: Option<Arc<Trust>>,
    wake: Notify,
    shared: Mutex<Shared>,
}

impl Puller {
    /// The puller for `config.pull`, if pull mode is on: opens (or creates) the mirror in
    /// `state_dir/pull/repo` and reads the webhook secret.
    pub fn from_config(config: &AgentConfig, deployer: Arc<Deployer>) -> Result<Option<Arc<Self>>, String> {
        let Some(pull) = &config.pull else { return Ok(None) };
        let dir = config.state_dir.join("pull");
        crate::journal::create_private_dir(&dir).map_err(|e| e.to_string())?;
        let mirror = Mirror::open(&dir.join("repo"), &pull.branch)
            .map_err(|e| format!("cannot open the pull repository in {}: {e}", dir.display()))?;
        let attr = AttrName::from(&config.hostname);
        let builder = NixBuilder::new(config.store.as_deref(), pull, mirror.path().to_owned(), attr);
        let hook = match &pull.webhook_secret_file {
            Some(path) => Some(HookAuth::load(path)?),
            None => None,
        };
        let trust = verify::load_trust(pull)?;
        Self::new(pull.clone(), mirror, Arc::new(builder), deployer, hook).map(|p| Some(Arc::new(p.with_trust(trust))))
    }

    /// The puller; an ssh URL without `ssh_key_file` is refused. A commit whose build
    /// failed before (journaled) is remembered as failed, with its error.
    pub fn new(
        config: PullConfig,
        mirror: Mirror,
        builder: Arc<dyn Build>,
        deployer: Arc<Deployer>,
        hook: Option<HookAuth>,
    ) -> Result<Self, String> {
        let ssh = SshAuth::from_config(&config)?;
        let shared = Shared { failed: failed::last_failure(&deployer.records()), ..Shared::default() };
        let shared = Mutex::new(shared);
        Ok(Self { config, mirror, ssh, builder, deployer, hook, trust: None, wake: Notify::new(), shared })
    }

    /// The puller checking fetched commits against `trust` before building them.
    pub fn with_trust(mut self, trust: Option<Trust>) -> Self {
        self.trust = trust.map(Arc::new);
        self
    }

    pub fn config(&self) -> &PullConfig {
        &self.config
    }

    pub fn hook_auth(&self) -> Option<&HookAuth> {
        self.hook.as_ref()
    }

    /// Wakes the task for a fetch now (a waiting build is interrupted to fetch too).
    pub fn trigger(&self) {
        self.wake.notify_one();
    }

    /// Waits until [`Puller::trigger`] is called (tests check the webhook with it).
    pub async fn triggered(&self) {
        self.wake.notified().await;
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        // Plain fields, each written whole: still consistent after a panic elsewhere.
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the shared state; a change the status shows is announced
    /// ([`crate::events`]), after the lock is released.
    fn update<R>(&self, change: impl FnOnce(&mut Shared) -> R) -> R {
        let (result, changed) = {
            let mut shared = self.shared();
            let before = shared.visible();
            let result = change(&mut shared);
            (result, shared.visible() != before)
        };
        if changed {
            self.deployer.events().changed();
        }
        result
    }

    /// The status for `GET /v1/status`. Applied commit and pinned lock come from the
    /// journal; a pending commit whose lock has been deployed since (the operator
    /// approved it) is no longer pending.
    pub fn status(&self, records: &[Record]) -> PullStatus {
        let shared = self.shared();
        let pinned = pinned_lock(records);
        let pending = shared.pending.as_ref().filter(|(_, lock)| lock.as_ref() != pinned);
        PullStatus {
            url: hostctl_schemas::git_url::redact_url(&self.config.url),
            branch: self.config.branch.clone(),
            lock_policy: self.config.lock.as_str().to_owned(),
            fetched_commit: shared.fetched_commit.clone(),
            applied_commit: applied_commit(records).map(str::to_owned),
            pending_commit: pending.map(|(c, _)| c.clone()),
            pending_lock: pending.and_then(|(_, l)| l.clone()),
            last_fetch: shared.last_fetch,
            last_error: shared.last_error.clone(),
            refused: shared.refused.clone(),
        }
    }

    /// When the last fetch, evaluation and build ended, and how.
    pub fn outcomes(&self) -> PullOutcomes {
        self.shared().outcomes
    }

    /// Runs rounds forever: one at once, then one per interval or wake-up.
    pub async fn run(self: Arc<Self>) {
        let url = hostctl_schemas::git_url::redact_url(&self.config.url);
        tracing::info!(%url, branch = %self.config.branch, "pull mode: tracking");
        loop {
            self.round().await;
            tokio::select! {
                () = tokio::time::sleep(self.config.interval.into()) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// One round: fetch, decide, build (superseded by newer commits), activate.
    pub async fn round(&self) {
        let Some(mut commit) = self.fetch().await else { return };
        loop {
            if self.settled(&commit) {
                return;
            }
            let Ok(signer) = self.admit(&commit).await else { return };
            let Some(lock) = self.plan(&commit) else { return };
            let end = match self.already_built(&commit) {
                Some(toplevel) => BuildEnd::Built(toplevel),
                None => self.build_newest(&commit).await,
            };
            match end {
                BuildEnd::Built(toplevel) => return self.activate(&commit, lock, toplevel, signer).await,
                BuildEnd::Failed(failure) => return self.build_failed(&commit, lock, failure),
                BuildEnd::Superseded(newer) => {
                    tracing::info!(old = %commit, new = %newer, "pull: build superseded by a newer commit");
                    commit = newer;
                }
            }
        }
    }

    /// Fetches the branch (on a blocking thread) and records the outcome; returns the
    /// newest commit fetched so far (also after a failed or refused fetch), if any.
    pub async fn fetch(&self) -> Option<String> {
        let mirror = self.mirror.clone();
        let (url, force, ssh) = (self.config.url.clone(), self.config.allow_force_push, self.ssh.clone());
        let started = unix_now_ms();
        let result = tokio::task::spawn_blocking(move || {
            let fetched = mirror.fetch(&url, force, ssh.as_ref());
            (fetched, mirror.head())
        })
        .await;
        let (fetched, head) = match result {
            // A git error may quote the URL, and with it a token.
            Ok((fetched, head)) => (
                fetched.map_err(|e| hostctl_schemas::git_url::redact_in(&self.config.url, &e.to_string())),
                head.ok().flatten(),
            ),
            Err(e) => (Err(format!("the fetch task failed: {e}")), None),
        };
        self.update(|shared| {
            shared.last_fetch = Some(unix_now());
            shared.outcomes.fetch = ended(fetched.is_ok());
            match fetched {
                Ok(f) => {
                    if f.forced {
                        tracing::warn!(commit = %f.commit, "pull: branch was force-pushed (allowed by allow_force_push)");
                    }
                    if f.changed {
                        let fetch_ms = unix_now_ms().saturating_sub(started);
                        tracing::info!(commit = %f.commit, fetch_ms, "pull: fetched a new commit");
                    }
                    let failure = shared.failed.as_ref().filter(|(c, _)| *c == f.commit).map(|(_, e)| e.clone());
                    shared.last_error = failure;
                    shared.fetched_commit = Some(f.commit);
                }
                Err(error) => {
                    tracing::warn!(%error, "pull: fetch failed");
                    shared.last_error = Some(error);
                    shared.fetched_commit = head.clone();
                }
            }
        });
        head
    }

    /// Whether nothing is left to do for `commit`: the host runs it (or something newer),
    /// or pull mode tried it before (built, failed or refused).
    fn settled(&self, commit: &str) -> bool {
        let records = self.deployer.records();
        if let Some(applied) = applied_commit(&records) {
            // Running it already, or something newer (a controller deployment).
            if self.mirror.descends_from(applied, commit).unwrap_or(false) {
                self.update(|s| s.pending = None);
                return true;
            }
        }
        failed::tried(&records, commit) || self.shared().failed.as_ref().is_some_and(|(c, _)| c == commit)
    }

    /// Whether `commit` should be built and activated, with its lock id; records a commit
    /// held by the lock policy as pending.
    fn plan(&self, commit: &str) -> Option<Option<LockId>> {
        let records = self.deployer.records();
        // git2 reads one blob: quick enough not to need a blocking thread.
        let lock = match self.mirror.lock_of(commit) {
            Ok(lock) => lock,
            Err(e) => {
                self.update(|s| s.last_error = Some(format!("cannot read flake.lock at {commit}: {e}")));
                return None;
            }
        };
        match classify(self.config.lock, pinned_lock(&records), lock.as_ref()) {
            Verdict::Apply => {
                self.update(|s| s.pending = None);
                Some(lock)
            }
            Verdict::Hold => {
                tracing::info!(commit, lock = ?lock, "pull: lock change held as pending (lock: pinned)");
                self.update(|s| s.pending = Some((commit.to_owned(), lock)));
                None
            }
        }
    }

    fn already_built(&self, commit: &str) -> Option<StorePath> {
        self.shared().built.as_ref().filter(|(c, _)| c == commit).map(|(_, t)| t.clone())
    }

    /// Builds `commit`; a wake-up or the poll interval during the build fetches again,
    /// and a newer commit drops this build.
    pub async fn build_newest(&self, commit: &str) -> BuildEnd {
        tracing::info!(commit, "pull: building");
        let build = self.builder.build(commit);
        tokio::pin!(build);
        loop {
            tokio::select! {
                result = &mut build => return match result {
                    Ok(toplevel) => {
                        let mut shared = self.shared();
                        shared.built = Some((commit.to_owned(), toplevel.clone()));
                        (shared.outcomes.eval, shared.outcomes.build) = (ended(true), ended(true));
                        BuildEnd::Built(toplevel)
                    }
                    Err(failure) => {
                        // Only a failure after evaluation knows the system it evaluated to.
                        let evaluated = failure.toplevel.is_some();
                        let mut shared = self.shared();
                        shared.outcomes.eval = ended(evaluated);
                        if evaluated {
                            shared.outcomes.build = ended(false);
                        }
                        BuildEnd::Failed(failure)
                    }
                },
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.interval.into()) => {}
            }
            match self.fetch().await {
                Some(head) if head != commit => return BuildEnd::Superseded(head),
                _ => {}
            }
        }
    }

    /// Remembers the failure (in memory for this run, and in the journal as a failed
    /// deployment, so history shows it and a restarted agent does not build it again).
    fn build_failed(&self, commit: &str, lock: Option<LockId>, failure: BuildFailure) {
        tracing::error!(commit, error = %failure.message, "pull: build failed; the running system is unchanged");
        self.update(|s| {
            s.last_error = Some(failure.message.clone());
            s.failed = Some((commit.to_owned(), failure.message.clone()));
        });
        self.journal_failure(commit, |systems| failed::record(commit, lock, &failure, systems, unix_now()));
    }

    /// Journals the record `make` builds from the systems running now (once per id): a
    /// commit that failed or was refused before anything ran. `None`: nothing to name.
    fn journal_failure(
        &self,
        commit: &str,
        make: impl FnOnce((Option<StorePath>, Option<StorePath>)) -> Option<Record>,
    ) {
        let systems = match self.deployer.previous_systems() {
            Ok(systems) => systems,
            Err(e) => return tracing::warn!(commit, error = %e, "pull: the failure is not journaled"),
        };
        let Some(record) = make(systems) else {
            return tracing::warn!(
                commit,
                "pull: nothing evaluated and no system running: the failure is not journaled"
            );
        };
        let mut journal = self.deployer.journal();
        if journal.get(&record.deployment.id).is_none() {
            if let Err(e) = journal.insert_record(record) {
                tracing::error!(commit, error = %e, "pull: cannot journal the failure");
            }
        }
    }

    /// Hands the built system to the deployer, unless a newer commit was fetched
    /// meanwhile or another deployment is open (then the next round tries again). A
    /// system the deployer refuses (400: not a NixOS system) is a failure of the commit.
    async fn activate(&self, commit: &str, lock: Option<LockId>, toplevel: StorePath, signer: Option<Signer>) {
        if self.shared().fetched_commit.as_deref() != Some(commit) {
            return;
        }
        let mut request = apply::request(commit, lock.clone(), toplevel.clone(), unix_now());
        request.commit_signature = signer.map(CommitSignature::Signed);
        match self.deployer.create(request).await {
            Ok(d) => {
                tracing::info!(id = %d.id, commit, "pull: deployment started");
                self.update(|s| {
                    s.last_error = None;
                    s.built = None;
                });
            }
            Err(DeployError::Invalid(refusal)) => {
                let message = format!("the agent refused the system of {commit}: {refusal}");
                self.update(|s| s.built = None);
                self.build_failed(commit, lock, BuildFailure { message, toplevel: Some(toplevel) });
            }
            Err(e) => {
                let message = format!("cannot start the deployment of {commit} (retrying next round): {e}");
                tracing::warn!("pull: {message}");
                self.update(|s| s.last_error = Some(message));
            }
        }
    }
}

/// The deployments that count as "what runs": confirmed and not `dry-activate`.
fn current_deployment(records: &[Record]) -> Option<&Record> {
    records
        .iter()
        .rev()
        .find(|r| r.deployment.state == DeploymentState::Confirmed && r.deployment.mode != Mode::DryActivate)
}

/// The lock the host is pinned to: that of its current deployment (DESIGN.md).
pub fn pinned_lock(records: &[Record]) -> Option<&LockId> {
    current_deployment(records).and_then(|r| r.deployment.lock.as_ref())
}

/// The commit of the current deployment (pull or push); a dirty controller tree's
/// `-dirty` suffix is dropped.
pub fn applied_commit(records: &[Record]) -> Option<&str> {
    current_deployment(records).and_then(|r| r.deployment.rev.as_deref()).map(|r| r.trim_end_matches("-dirty"))
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
