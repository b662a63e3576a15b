//! How Nix will see a flake directory: its git repository, HEAD revision, dirty and
//! untracked files (flakes silently ignore files that are not `git add`ed), and its lock.

pub mod diff;
pub mod gitlock;
pub mod lock;

use std::path::{Path, PathBuf};

use git2::{Repository, Status, StatusOptions};

pub use diff::{blob_id, DiffError, Entry, EntryKind, RepoTrees, TreeId};
pub use gitlock::{FlakeRepo, GitLockError, LockSearch};
pub use lock::{lock_id, FlakeLock, InputTarget, LockError, LockNode, NixpkgsDuplicate};

/// Why a flake directory could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum FlakeError {
    #[error("{dir}: cannot open the flake directory: {source}")]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir}: no flake.nix here")]
    NoFlakeNix { dir: PathBuf },
    #[error("{dir}: reading its git repository failed: {source}")]
    Git {
        dir: PathBuf,
        #[source]
        source: git2::Error,
    },
}

/// A flake directory and, if it lives in a git work tree, that tree's state.
#[derive(Debug, Clone)]
pub struct FlakeSource {
    /// Canonical path of the directory holding `flake.nix`.
    pub dir: PathBuf,
    pub git: Option<GitState>,
}

/// The state of the git work tree a flake lives in, restricted to the flake directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitState {
    pub workdir: PathBuf,
    /// HEAD's commit id (40 hex); `None` before the first commit.
    pub rev: Option<String>,
    /// Tracked files anywhere in the repository that differ from HEAD, relative to
    /// `workdir`. Repository-wide because Nix copies the whole repository for a flake in
    /// a subdirectory, and treats it as dirty (no `self.rev`) if anything changed.
    pub dirty: Vec<PathBuf>,
    /// Files in the flake directory Nix will not see because git does not track them,
    /// relative to the flake directory.
    pub untracked: Vec<PathBuf>,
}

impl GitState {
    /// A clean tree is one where the evaluated source is exactly HEAD.
    pub fn is_clean(&self) -> bool {
        self.rev.is_some() && self.dirty.is_empty()
    }
}

impl FlakeSource {
    /// Inspects `dir`, which must hold a `flake.nix`.
    pub fn inspect(dir: &Path) -> Result<Self, FlakeError> {
        let dir = dir.canonicalize().map_err(|source| FlakeError::Dir { dir: dir.to_path_buf(), source })?;
        if !dir.join("flake.nix").is_file() {
            return Err(FlakeError::NoFlakeNix { dir });
        }
        let git_err = |source| FlakeError::Git { dir: dir.clone(), source };
        let repo = match Repository::discover(&dir) {
            Ok(repo) => repo,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(Self { dir, git: None }),
            Err(e) => return Err(git_err(e)),
        };
        let git = git_state(&repo, &dir).map_err(git_err)?;
        Ok(Self { dir, git })
    }

    /// Where `flake.lock` is (it may not exist yet).
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("flake.lock")
    }

    /// The revision being evaluated, if the tree is clean.
    pub fn clean_rev(&self) -> Option<&str> {
        self.git.as_ref().filter(|g| g.is_clean()).and_then(|g| g.rev.as_deref())
    }
}

fn git_state(repo: &Repository, dir: &Path) -> Result<Option<GitState>, git2::Error> {
    let Some(workdir) = repo.workdir() else {
        return Ok(None); // a bare repository: Nix does not use it as a work tree either
    };
    let workdir = workdir.canonicalize().unwrap_or_else(|_| workdir.to_path_buf());
    let prefix = dir.strip_prefix(&workdir).unwrap_or(Path::new("")).to_path_buf();
    let rev = match repo.head() {
        Ok(head) => Some(head.peel_to_commit()?.id().to_string()),
        Err(e) if matches!(e.code(), git2::ErrorCode::UnbornBranch | git2::ErrorCode::NotFound) => None,
        Err(e) => return Err(e),
    };
    let mut opts = StatusOptions::new();
    opts.include_untracked(true).recurse_untracked_dirs(true).include_ignored(false).exclude_submodules(true);
    let statuses = repo.statuses(Some(&mut opts))?;
    let (mut dirty, mut untracked) = (Vec::new(), Vec::new());
    for entry in statuses.iter() {
        let Ok(path) = entry.path() else { continue };
        let status = entry.status();
        if status.contains(Status::WT_NEW) && !status.intersects(Status::INDEX_NEW) {
            if let Ok(rel) = Path::new(path).strip_prefix(&prefix) {
                untracked.push(rel.to_path_buf());
            }
        } else if !status.is_empty() && !status.contains(Status::IGNORED) {
            dirty.push(PathBuf::from(path));
        }
    }
    dirty.sort();
    untracked.sort();
    Ok(Some(GitState { workdir, rev, dirty, untracked }))
}

/// What the git-based tests of this module's children share.
#[cfg(test)]
pub(crate) mod test_git {
    use git2::Repository;

    /// Commits the whole work tree (added, changed and deleted files) on HEAD; returns
    /// the commit id.
    pub(crate) fn commit_all(repo: &Repository, msg: &str) -> String {
        let mut index = repo.index().unwrap();
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
        index.update_all(["*"], None).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let parents: Vec<git2::Commit> = repo.head().ok().map(|h| h.peel_to_commit().unwrap()).into_iter().collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, msg, &tree, &parents).unwrap().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    use crate::flake::test_git::commit_all;

    #[test]
    fn reports_rev_dirty_and_untracked_inside_the_flake_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init(tmp.path()).unwrap();
        let flake = tmp.path().join("infra");
        fs::create_dir_all(flake.join("hosts")).unwrap();
        fs::write(flake.join("flake.nix"), "{ outputs = _: {}; }").unwrap();
        fs::write(flake.join("hosts/web1.nix"), "{}").unwrap();
        fs::write(tmp.path().join("outside.txt"), "x").unwrap();
        commit_all(&repo, "init");

        let clean = FlakeSource::inspect(&flake).unwrap();
        let git = clean.git.as_ref().unwrap();
        assert!(git.is_clean());
        assert_eq!(git.rev.as_deref().map(str::len), Some(40));
        assert_eq!(clean.clean_rev(), git.rev.as_deref());

        fs::write(flake.join("hosts/web1.nix"), "{ changed = true; }").unwrap();
        fs::write(flake.join("hosts/web2.nix"), "{}").unwrap();
        fs::write(tmp.path().join("outside-new.txt"), "x").unwrap();
        fs::write(tmp.path().join("outside.txt"), "changed").unwrap();
        let src = FlakeSource::inspect(&flake).unwrap();
        let git = src.git.clone().unwrap();
        assert!(!git.is_clean());
        assert_eq!(git.dirty, [PathBuf::from("infra/hosts/web1.nix"), PathBuf::from("outside.txt")]);
        assert_eq!(
            git.untracked,
            [PathBuf::from("hosts/web2.nix")],
            "untracked files outside the flake dir don't matter"
        );
        assert_eq!(src.clean_rev(), None);
    }

    #[test]
    fn no_git_and_no_flake_nix() {
        let tmp = tempfile::tempdir().unwrap();
        let err = FlakeSource::inspect(tmp.path()).unwrap_err();
        assert!(matches!(err, FlakeError::NoFlakeNix { .. }), "{err}");
        fs::write(tmp.path().join("flake.nix"), "{}").unwrap();
        // tempdirs live under /tmp, which is not inside a git repository here.
        let src = FlakeSource::inspect(tmp.path()).unwrap();
        assert!(src.git.is_none() || src.git.as_ref().is_some_and(|g| g.workdir != src.dir));
    }

    #[test]
    fn unborn_head_is_not_clean() {
        let tmp = tempfile::tempdir().unwrap();
        Repository::init(tmp.path()).unwrap();
        fs::write(tmp.path().join("flake.nix"), "{}").unwrap();
        let git = FlakeSource::inspect(tmp.path()).unwrap().git.unwrap();
        assert_eq!(git.rev, None);
        assert!(!git.is_clean());
        assert_eq!(git.untracked, [PathBuf::from("flake.nix")]);
    }
}
