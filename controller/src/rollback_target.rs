//! What `hostctl rollback` returns a host to. `--to-lock`/`--generation` are parsed
//! before anything is contacted, then resolved per host against its deployment history
//! (`GET /v1/generations`) and the flake's git history. A target that names nothing is
//! bad input (exit 2), reported before any host is changed.

use hostctl_nix::flake::{FlakeRepo, GitLockError, LockSearch};
use hostctl_schemas::api::deployments::{Deployment, DeploymentState};
use hostctl_schemas::api::generations::GenerationsResponse;
use hostctl_schemas::api::rollback::{Previous, RollbackTarget};
use hostctl_schemas::ids::{HostName, LockId};
use hostctl_schemas::text::plural;

use crate::error::Error;

/// The shortest lock id prefix accepted (the short form printed everywhere).
pub const MIN_PREFIX: usize = 12;

/// `--to-lock`'s argument, classified by its syntax alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockSpec {
    /// 64 hex digits: a lock id.
    Lock(LockId),
    /// 12 to 63 hex digits: a prefix of a lock in the host's history, else a commit id.
    Prefix(String),
    /// Anything else git may resolve: a short commit id, a tag, a branch, `HEAD~2`.
    Rev(String),
}

/// What the user asked to return to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    Previous,
    Generation(u64),
    Lock(LockSpec),
}

impl Wanted {
    /// From the command line (clap already refuses `--to-lock` with `--generation`).
    pub fn from_args(to_lock: Option<&str>, generation: Option<u64>) -> Result<Self, Error> {
        match (to_lock, generation) {
            (Some(spec), _) => parse_lock_spec(spec).map(Wanted::Lock).map_err(Error::Target),
            (None, Some(n)) => Ok(Wanted::Generation(n)),
            (None, None) => Ok(Wanted::Previous),
        }
    }
}

/// Classifies `--to-lock X`; refuses what can be neither a lock nor a git revision.
pub fn parse_lock_spec(spec: &str) -> Result<LockSpec, String> {
    let bad = |why: &str| Err(format!("--to-lock `{spec}`: {why}"));
    if spec.is_empty() {
        return bad("empty; expected a lock id (64 hex digits, or at least 12) or a git revision");
    }
    if spec.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains whitespace or control characters");
    }
    if spec.starts_with('-') {
        return bad("must not start with `-`");
    }
    if spec.len() > 256 {
        return bad("longer than 256 characters");
    }
    if spec.starts_with("sha256-") {
        return bad("hostctl writes lock ids as 64 hex digits (the SHA-256 of flake.lock), as `history` prints them");
    }
    if spec.bytes().all(|b| b.is_ascii_hexdigit()) {
        let lower = spec.to_ascii_lowercase();
        return Ok(match spec.len() {
            64 => match lower.parse() {
                Ok(lock) => LockSpec::Lock(lock),
                Err(e) => return Err(format!("--to-lock: {e}")),
            },
            n if (MIN_PREFIX..64).contains(&n) => LockSpec::Prefix(lower),
            _ => LockSpec::Rev(spec.to_owned()),
        });
    }
    Ok(LockSpec::Rev(spec.to_owned()))
}

/// Lookups in the flake's git history; a trait so the resolution is testable without
/// a repository.
pub trait GitHistory {
    /// A revision (anything git resolves) to a full commit id.
    fn resolve(&self, spec: &str) -> Result<Option<String>, GitLockError>;
    /// The lock id of the flake's `flake.lock` at a commit.
    fn lock_at(&self, rev: &str) -> Result<Option<LockId>, GitLockError>;
    /// The commit that had `lock`, `hint` first.
    fn find_lock(&self, lock: &LockId, hint: Option<&str>) -> Result<LockSearch, GitLockError>;
    /// Where the search looked, for messages.
    fn describe(&self) -> String;
}

impl GitHistory for FlakeRepo {
    fn resolve(&self, spec: &str) -> Result<Option<String>, GitLockError> {
        FlakeRepo::resolve(self, spec)
    }
    fn lock_at(&self, rev: &str) -> Result<Option<LockId>, GitLockError> {
        FlakeRepo::lock_at(self, rev)
    }
    fn find_lock(&self, lock: &LockId, hint: Option<&str>) -> Result<LockSearch, GitLockError> {
        FlakeRepo::find_lock(self, lock, hint, hostctl_nix::flake::gitlock::DEFAULT_SEARCH_LIMIT)
    }
    fn describe(&self) -> String {
        format!("the git repository {} ({})", self.workdir().display(), self.subdir().join("flake.lock").display())
    }
}

/// One host's rollback, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// What `POST /v1/rollback` is asked for.
    pub to: RollbackTarget,
    /// The lock to rebuild from git if the agent no longer has that system.
    pub lock: Option<LockId>,
    /// Where to look for that lock first: the commit the user named, or the revision
    /// recorded with the host's deployment of that lock.
    pub rev_hint: Option<String>,
    /// `lock 0123456789ab`, `the previous lock (0123456789ab)`, `generation 3`.
    pub describe: String,
}

/// Git for [`resolve`]: a repository, or why there is none.
pub type Git<'a> = Result<&'a dyn GitHistory, String>;

/// Resolves what `host` returns to. `Error::Target` (exit 2) when it names nothing.
pub fn resolve(
    host: &HostName,
    wanted: &Wanted,
    history: &GenerationsResponse,
    git: Git<'_>,
) -> Result<Resolved, Error> {
    match wanted {
        Wanted::Previous => {
            nothing_before(history).map_err(|why| Error::Target(format!("{host}: nothing to roll back to: {why}")))?;
            let previous = previous_lock(history);
            let describe = match &previous {
                Some(lock) => format!("the previous lock ({})", lock.short()),
                None => "the previous system".to_owned(),
            };
            let rev_hint = previous.as_ref().and_then(|l| recorded_rev(history, l));
            Ok(Resolved { to: RollbackTarget::Previous(Previous::Previous), lock: previous, rev_hint, describe })
        }
        Wanted::Generation(n) => {
            if !history.generations.iter().any(|g| g.number == *n) {
                let known: Vec<String> = history.generations.iter().map(|g| g.number.to_string()).collect();
                let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
                return Err(Error::Target(format!("{host} has no generation {n} (its generations: {known})")));
            }
            Ok(Resolved {
                to: RollbackTarget::Generation { generation: *n },
                lock: None,
                rev_hint: None,
                describe: format!("generation {n}"),
            })
        }
        Wanted::Lock(LockSpec::Lock(lock)) => resolve_lock(host, lock.clone(), history, git),
        Wanted::Lock(LockSpec::Prefix(prefix)) => resolve_prefix(host, prefix, history, git),
        Wanted::Lock(LockSpec::Rev(rev)) => match resolve_rev(rev, git)? {
            Ok(found) => Ok(found),
            Err(searched) => Err(Error::Target(format!("--to-lock `{rev}`: not a revision of {searched}"))),
        },
    }
}

/// A full lock id: known from the host's history, or found in git.
fn resolve_lock(host: &HostName, lock: LockId, history: &GenerationsResponse, git: Git<'_>) -> Result<Resolved, Error> {
    let describe = format!("lock {}", lock.short());
    let to = RollbackTarget::Lock { lock: lock.clone() };
    if locks_seen(history).any(|l| *l == lock) {
        let rev_hint = recorded_rev(history, &lock);
        return Ok(Resolved { to, lock: Some(lock), rev_hint, describe });
    }
    let n = plural(history.deployments.len(), "deployment", "deployments");
    let unknown = |where_: String| {
        Error::Target(format!(
            "lock {lock}: not in {host}'s deployment history ({n}) and {where_}; nothing was changed"
        ))
    };
    let git = git.map_err(|why| unknown(format!("no git history to search: {why}")))?;
    let search = git.find_lock(&lock, None)?;
    match search.commit {
        Some(commit) => Ok(Resolved { to, lock: Some(lock), rev_hint: Some(commit), describe }),
        None => Err(unknown(format!(
            "no commit of {} has it ({} searched, HEAD and its first parents)",
            git.describe(),
            plural(search.searched, "commit", "commits")
        ))),
    }
}

/// 12-63 hex digits: a unique prefix of a lock the host had, else a commit id prefix.
fn resolve_prefix(
    host: &HostName,
    prefix: &str,
    history: &GenerationsResponse,
    git: Git<'_>,
) -> Result<Resolved, Error> {
    let mut matches: Vec<&LockId> = locks_seen(history).filter(|l| l.as_str().starts_with(prefix)).collect();
    matches.sort();
    matches.dedup();
    match matches.as_slice() {
        [lock] => return resolve_lock(host, (*lock).clone(), history, git),
        [] => {}
        many => {
            let list: Vec<&str> = many.iter().map(|l| l.as_str()).collect();
            return Err(Error::Target(format!(
                "--to-lock `{prefix}` matches {} locks in {host}'s history: {}; give more digits",
                many.len(),
                list.join(", ")
            )));
        }
    }
    match resolve_rev(prefix, git)? {
        Ok(found) => Ok(found),
        Err(searched) => Err(Error::Target(format!(
            "--to-lock `{prefix}`: no lock in {host}'s deployment history ({}) starts with it, \
             and it is not a revision of {searched}; nothing was changed",
            plural(history.deployments.len(), "deployment", "deployments")
        ))),
    }
}

/// A git revision: its commit and the lock its `flake.lock` has. The inner `Err` says
/// where it was looked for, when git does not know it.
fn resolve_rev(spec: &str, git: Git<'_>) -> Result<Result<Resolved, String>, Error> {
    let git = match git {
        Ok(git) => git,
        Err(why) => return Ok(Err(format!("any git repository ({why})"))),
    };
    let Some(commit) = git.resolve(spec)? else { return Ok(Err(git.describe())) };
    let Some(lock) = git.lock_at(&commit)? else {
        return Err(Error::Target(format!(
            "--to-lock `{spec}`: commit {commit} of {} has no flake.lock there",
            git.describe()
        )));
    };
    let describe = format!("lock {} (revision {spec} = {})", lock.short(), &commit[..commit.len().min(12)]);
    Ok(Ok(Resolved {
        to: RollbackTarget::Lock { lock: lock.clone() },
        lock: Some(lock),
        rev_hint: Some(commit),
        describe,
    }))
}

/// Every lock the host's journal and profile mention.
fn locks_seen(history: &GenerationsResponse) -> impl Iterator<Item = &LockId> {
    let deployed = history.deployments.iter().filter_map(|d| d.lock.as_ref());
    deployed.chain(history.generations.iter().filter_map(|g| g.lock.as_ref()))
}

/// The lock `"previous"` means, as the agent documents it: the newest earlier confirmed
/// deployment whose lock differs from the current one. `None` if there is none.
pub fn previous_lock(history: &GenerationsResponse) -> Option<LockId> {
    let confirmed = || history.deployments.iter().filter(|d| d.state == DeploymentState::Confirmed);
    let current = history
        .generations
        .iter()
        .find(|g| g.current)
        .and_then(|g| g.lock.clone())
        .or_else(|| confirmed().next().and_then(|d| d.lock.clone()));
    confirmed().filter_map(|d| d.lock.clone()).find(|l| Some(l) != current.as_ref())
}

/// Why `"previous"` names nothing on a host, judged as the agent will judge it: it needs
/// a confirmed deployment, and before it either a confirmed deployment with another lock
/// or the system it replaced. Checked here so the command stops (exit 2) before any host
/// is asked to change.
fn nothing_before(history: &GenerationsResponse) -> Result<(), String> {
    let mut confirmed = history.deployments.iter().filter(|d| d.state == DeploymentState::Confirmed);
    let Some(current) = confirmed.next() else {
        return Err("the host has no confirmed deployment".to_owned());
    };
    if confirmed.any(|d| d.lock != current.lock) || current.previous_toplevel.is_some() {
        return Ok(());
    }
    Err(format!(
        "deployment `{}` was the host's first system and no earlier confirmed deployment has another lock",
        current.id
    ))
}

/// The revision recorded with the newest deployment of `lock` (confirmed ones first).
fn recorded_rev(history: &GenerationsResponse, lock: &LockId) -> Option<String> {
    let with_lock = |d: &&Deployment| d.lock.as_ref() == Some(lock) && d.rev.is_some();
    let confirmed = history.deployments.iter().filter(|d| d.state == DeploymentState::Confirmed).find(with_lock);
    confirmed.or_else(|| history.deployments.iter().find(with_lock)).and_then(|d| d.rev.clone())
}

#[cfg(test)]
#[path = "rollback_target_tests.rs"]
mod tests;
