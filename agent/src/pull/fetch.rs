//! The agent's own copy of the fleet repository: a repository in `state_dir/pull/repo`
//! whose `refs/heads/<branch>` is the newest commit the agent fetched itself (HEAD points
//! at it). Not bare, though nothing is ever checked out: Nix 2.8's `git+file` fetcher
//! treats a path without `.git` as a remote and asks it for `master`, while a repository
//! with `.git` is read in place at the `rev` given (checked by hand with Nix 2.8).
//!
//! A fetch goes to `refs/hostctl/incoming` first; the branch moves only if the new commit
//! descends from the old one (or force pushes are allowed), so a refused force push leaves
//! the last good commit in place. Blocking (git2): callers run it on a blocking thread.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use git2::{FetchOptions, Oid, Repository};
use hostctl_nix::flake::lock::lock_id;
use hostctl_schemas::ids::LockId;

use super::ssh::SshAuth;

/// Where a fetch lands before it is checked.
const INCOMING: &str = "refs/hostctl/incoming";

/// Why a fetch did not advance the branch.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("the remote has no branch `{0}`")]
    NoBranch(String),
    #[error("force push refused: {new} does not descend from the last fetched commit {old}")]
    ForcePush { old: String, new: String },
    /// The ssh login or host key check refused (the message names host and file).
    #[error("{0}")]
    Ssh(String),
    /// The fetched objects and references could not be synced to disk.
    #[error("syncing the mirror failed: {0}")]
    Sync(String),
}

/// What a fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The branch's commit now (full id).
    pub commit: String,
    /// Whether it moved in this fetch.
    pub changed: bool,
    /// Whether it moved by a force push (only when allowed).
    pub forced: bool,
}

/// The local mirror of one branch.
#[derive(Debug, Clone)]
pub struct Mirror {
    path: PathBuf,
    branch: String,
}

impl Mirror {
    /// Opens the mirror at `path`, creating an empty repository if there is none,
    /// and points its HEAD at `refs/heads/<branch>`.
    pub fn open(path: &Path, branch: &str) -> Result<Self, FetchError> {
        let repo = match Repository::open(path) {
            Ok(repo) => repo,
            Err(_) => Repository::init(path)?,
        };
        repo.set_head(&branch_ref(branch))?;
        Ok(Self { path: path.to_owned(), branch: branch.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn repo(&self) -> Result<Repository, FetchError> {
        Ok(Repository::open(&self.path)?)
    }

    /// The newest commit fetched so far, if any.
    pub fn head(&self) -> Result<Option<String>, FetchError> {
        let repo = self.repo()?;
        let oid = repo.refname_to_id(&branch_ref(&self.branch)).ok();
        Ok(oid.map(|o| o.to_string()))
    }

    /// Fetches the branch from `url` and advances the local branch by fast-forward (or
    /// by force when `allow_force`); over ssh with `ssh`'s key and host key check.
    pub fn fetch(&self, url: &str, allow_force: bool, ssh: Option<&SshAuth>) -> Result<Fetched, FetchError> {
        let repo = self.repo()?;
        self.drop_damaged_refs(&repo);
        let mut remote = repo.remote_anonymous(url)?;
        let refspec = format!("+{}:{INCOMING}", branch_ref(&self.branch));
        // Declared before the options whose callbacks borrow it.
        let refused = RefCell::new(None);
        let mut options = FetchOptions::new();
        // Tags and other branches are not the agent's business.
        options.download_tags(git2::AutotagOption::None);
        if let Some(ssh) = ssh {
            ssh.check_key_file().map_err(FetchError::Ssh)?;
            options.remote_callbacks(ssh.callbacks(&refused));
        }
        let fetched = remote.fetch(&[refspec.as_str()], Some(&mut options), None);
        drop(options);
        if let Some(why) = refused.take() {
            return Err(FetchError::Ssh(why));
        }
        fetched?;
        let new = repo.refname_to_id(INCOMING).map_err(|_| FetchError::NoBranch(self.branch.clone()))?;
        crate::pause::point("pull:fetched-objects");
        // A stale incoming ref from an earlier fetch would look like a fetched commit.
        if let Ok(mut incoming) = repo.find_reference(INCOMING) {
            incoming.delete()?;
        }
        let fetched = self.advance(&repo, new, allow_force)?;
        // libgit2 writes objects and loose references without fsync: a power cut soon
        // after leaves them empty (found by the VM lane's power cuts), and what the
        // agent builds and journals next relies on them.
        crate::host::sync_file_system_of(repo.path()).map_err(FetchError::Sync)?;
        Ok(fetched)
    }

    /// Removes the loose references the agent writes (`INCOMING`, the branch) when they
    /// cannot be read: a power cut before they reached the disk leaves them empty, and
    /// every fetch would fail on them for good. The next fetch writes them again; with
    /// the branch gone, that fetch cannot refuse a force push (the journal still names
    /// the commit running).
    fn drop_damaged_refs(&self, repo: &Repository) {
        for name in [INCOMING.to_owned(), branch_ref(&self.branch)] {
            let Err(e) = repo.find_reference(&name) else { continue };
            if e.code() == git2::ErrorCode::NotFound {
                continue;
            }
            tracing::warn!(reference = %name, error = %e, "pull: removing a damaged reference of the mirror");
            if let Err(e) = std::fs::remove_file(repo.path().join(&name)) {
                tracing::error!(reference = %name, error = %e, "pull: cannot remove the damaged reference");
            }
        }
    }

    /// Moves the local branch to `new` if that is allowed.
    fn advance(&self, repo: &Repository, new: Oid, allow_force: bool) -> Result<Fetched, FetchError> {
        let name = branch_ref(&self.branch);
        let old = repo.refname_to_id(&name).ok();
        let forced = match old {
            Some(old) if old == new => {
                return Ok(Fetched { commit: new.to_string(), changed: false, forced: false });
            }
            Some(old) if !repo.graph_descendant_of(new, old)? => {
                if !allow_force {
                    return Err(FetchError::ForcePush { old: old.to_string(), new: new.to_string() });
                }
                true
            }
            _ => false,
        };
        repo.reference(&name, new, true, "hostctl-agent: fetched")?;
        Ok(Fetched { commit: new.to_string(), changed: true, forced })
    }

    /// The lock id of `flake.lock` at the root of `commit`; `None` if it has none.
    pub fn lock_of(&self, commit: &str) -> Result<Option<LockId>, FetchError> {
        let repo = self.repo()?;
        let tree = repo.find_commit(Oid::from_str(commit)?)?.tree()?;
        let Some(entry) = tree.get_name("flake.lock") else { return Ok(None) };
        let blob = repo.find_blob(entry.id())?;
        Ok(Some(lock_id(blob.content())))
    }

    /// Whether `commit` is `ancestor` or descends from it.
    pub fn descends_from(&self, commit: &str, ancestor: &str) -> Result<bool, FetchError> {
        let repo = self.repo()?;
        let (c, a) = (Oid::from_str(commit)?, Oid::from_str(ancestor)?);
        Ok(c == a || repo.graph_descendant_of(c, a)?)
    }
}

fn branch_ref(branch: &str) -> String {
    format!("refs/heads/{branch}")
}
