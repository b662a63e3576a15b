//! Locks in the flake repository's history (git2): which `flake.lock` a commit has, and
//! which commit had a given lock id. A rollback to a lock whose system was garbage
//! collected on the host rebuilds the host from such a commit.
//!
//! Only the committed trees are read; the work tree and the index are never touched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use git2::{ErrorCode, ObjectType, Oid, Repository};
use hostctl_schemas::ids::LockId;

use super::lock::lock_id;
use super::FlakeSource;

/// How many commits a search walks back from HEAD by default: enough for years of a
/// busy fleet repository, and bounded so a huge repository cannot stall a rollback.
pub const DEFAULT_SEARCH_LIMIT: usize = 10_000;

/// Why the repository could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GitLockError {
    #[error("{dir}: the flake is not in a git work tree, so its history cannot be searched")]
    NotInGit { dir: PathBuf },
    #[error("{dir}: reading git history failed: {source}")]
    Git {
        dir: PathBuf,
        #[source]
        source: git2::Error,
    },
}

/// The flake's repository and where the flake lives in it.
pub struct FlakeRepo {
    repo: Repository,
    workdir: PathBuf,
    /// The flake directory relative to `workdir` (empty at the root).
    subdir: PathBuf,
}

impl std::fmt::Debug for FlakeRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlakeRepo").field("workdir", &self.workdir).field("subdir", &self.subdir).finish()
    }
}

/// The result of a search: the commit found (if any) and how many were looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockSearch {
    pub commit: Option<String>,
    pub searched: usize,
}

impl FlakeRepo {
    /// Opens the repository `source` lives in.
    pub fn open(source: &FlakeSource) -> Result<Self, GitLockError> {
        let Some(git) = &source.git else { return Err(GitLockError::NotInGit { dir: source.dir.clone() }) };
        let repo =
            Repository::open(&git.workdir).map_err(|source| GitLockError::Git { dir: git.workdir.clone(), source })?;
        let subdir = source.dir.strip_prefix(&git.workdir).unwrap_or(Path::new("")).to_path_buf();
        Ok(Self { repo, workdir: git.workdir.clone(), subdir })
    }

    /// The work tree's root (what a `git+file` flake reference names).
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// The flake's directory relative to [`Self::workdir`]; empty at the root.
    pub fn subdir(&self) -> &Path {
        &self.subdir
    }

    fn err(&self, source: git2::Error) -> GitLockError {
        GitLockError::Git { dir: self.workdir.clone(), source }
    }

    /// Resolves anything git understands (full or short commit id, tag, branch, `HEAD~2`)
    /// to a full commit id; `None` when nothing by that name exists.
    pub fn resolve(&self, spec: &str) -> Result<Option<String>, GitLockError> {
        let object = match self.repo.revparse_single(spec) {
            Ok(object) => object,
            Err(e) if matches!(e.code(), ErrorCode::NotFound | ErrorCode::InvalidSpec) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        match object.peel_to_commit() {
            Ok(commit) => Ok(Some(commit.id().to_string())),
            // A tree or blob id is not a revision of the flake.
            Err(e) if matches!(e.code(), ErrorCode::InvalidSpec | ErrorCode::Peel | ErrorCode::NotFound) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// The lock id of `flake.lock` in the flake directory at commit `rev` (a full id);
    /// `None` when that commit has no such file.
    pub fn lock_at(&self, rev: &str) -> Result<Option<LockId>, GitLockError> {
        let oid = Oid::from_str(rev).map_err(|e| self.err(e))?;
        let commit = self.repo.find_commit(oid).map_err(|e| self.err(e))?;
        let Some(blob) = self.lock_blob(&commit)? else { return Ok(None) };
        self.hash_blob(blob).map(Some)
    }

    /// The newest commit whose `flake.lock` has id `lock`: `hint` first (a recorded
    /// deployment revision; a `-dirty` suffix is ignored, and the hint is used only if
    /// its lock really matches), then HEAD and its first parents, at most `limit`.
    pub fn find_lock(&self, lock: &LockId, hint: Option<&str>, limit: usize) -> Result<LockSearch, GitLockError> {
        if let Some(rev) = hint.map(|h| h.trim_end_matches("-dirty")) {
            let known = Oid::from_str(rev).ok().and_then(|oid| self.repo.find_commit(oid).ok());
            if let Some(commit) = known {
                if self.lock_blob(&commit)?.map(|b| self.hash_blob(b)).transpose()?.as_ref() == Some(lock) {
                    return Ok(LockSearch { commit: Some(commit.id().to_string()), searched: 1 });
                }
            }
        }
        let mut walk = self.repo.revwalk().map_err(|e| self.err(e))?;
        match walk.push_head() {
            Ok(()) => {}
            // No commit yet: nothing to search.
            Err(e) if matches!(e.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => {
                return Ok(LockSearch { commit: None, searched: 0 })
            }
            Err(e) => return Err(self.err(e)),
        }
        walk.simplify_first_parent().map_err(|e| self.err(e))?;
        // Most commits do not touch flake.lock: hash each distinct blob once.
        let mut seen: HashMap<Oid, bool> = HashMap::new();
        let mut searched = 0;
        for oid in walk.take(limit) {
            let commit = self.repo.find_commit(oid.map_err(|e| self.err(e))?).map_err(|e| self.err(e))?;
            searched += 1;
            let Some(blob) = self.lock_blob(&commit)? else { continue };
            let hit = match seen.get(&blob) {
                Some(hit) => *hit,
                None => {
                    let hit = &self.hash_blob(blob)? == lock;
                    seen.insert(blob, hit);
                    hit
                }
            };
            if hit {
                return Ok(LockSearch { commit: Some(commit.id().to_string()), searched });
            }
        }
        Ok(LockSearch { commit: None, searched })
    }

    /// The blob id of the flake's `flake.lock` in `commit`, if it has one.
    fn lock_blob(&self, commit: &git2::Commit<'_>) -> Result<Option<Oid>, GitLockError> {
        let tree = commit.tree().map_err(|e| self.err(e))?;
        match tree.get_path(&self.subdir.join("flake.lock")) {
            Ok(entry) if entry.kind() == Some(ObjectType::Blob) => Ok(Some(entry.id())),
            Ok(_) => Ok(None),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    fn hash_blob(&self, blob: Oid) -> Result<LockId, GitLockError> {
        let blob = self.repo.find_blob(blob).map_err(|e| self.err(e))?;
        Ok(lock_id(blob.content()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    use crate::flake::test_git::commit_all;

    fn lock_text(n: u32) -> String {
        format!("{{\"nodes\":{{\"root\":{{}}}},\"root\":\"root\",\"version\":7,\"n\":{n}}}\n")
    }

    /// A repository with the flake in `infra/` and three commits, each with another lock,
    /// then one commit that leaves the lock alone; returns (dir, repo, commit ids).
    fn history() -> (tempfile::TempDir, FlakeRepo, Vec<String>) {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init(tmp.path()).unwrap();
        let flake = tmp.path().join("infra");
        fs::create_dir_all(&flake).unwrap();
        fs::write(flake.join("flake.nix"), "{ outputs = _: {}; }").unwrap();
        let mut commits = Vec::new();
        for n in 1..=3 {
            fs::write(flake.join("flake.lock"), lock_text(n)).unwrap();
            commits.push(commit_all(&repo, &format!("lock {n}")));
        }
        fs::write(flake.join("flake.nix"), "{ outputs = _: { x = 1; }; }").unwrap();
        commits.push(commit_all(&repo, "config only"));
        let source = FlakeSource::inspect(&flake).unwrap();
        (tmp, FlakeRepo::open(&source).unwrap(), commits)
    }

    fn id(n: u32) -> LockId {
        lock_id(lock_text(n).as_bytes())
    }

    #[test]
    fn finds_the_commit_that_had_a_lock() {
        let (_tmp, repo, commits) = history();
        assert_eq!(repo.subdir(), Path::new("infra"));
        let found = repo.find_lock(&id(2), None, DEFAULT_SEARCH_LIMIT).unwrap();
        assert_eq!(found, LockSearch { commit: Some(commits[1].clone()), searched: 3 });
        // The newest commit with lock 3 is the config-only commit on top of it.
        let found = repo.find_lock(&id(3), None, DEFAULT_SEARCH_LIMIT).unwrap();
        assert_eq!(found.commit.as_deref(), Some(commits[3].as_str()));
        assert_eq!(repo.find_lock(&id(1), None, DEFAULT_SEARCH_LIMIT).unwrap().commit, Some(commits[0].clone()));
    }

    #[test]
    fn a_matching_hint_wins_and_a_wrong_one_is_ignored() {
        let (_tmp, repo, commits) = history();
        let dirty = format!("{}-dirty", commits[2]);
        let found = repo.find_lock(&id(3), Some(&dirty), DEFAULT_SEARCH_LIMIT).unwrap();
        assert_eq!(found, LockSearch { commit: Some(commits[2].clone()), searched: 1 });
        let found = repo.find_lock(&id(1), Some(&commits[2]), DEFAULT_SEARCH_LIMIT).unwrap();
        assert_eq!(found.commit, Some(commits[0].clone()), "the hint has another lock: walk");
        let found = repo.find_lock(&id(1), Some("not-a-commit"), DEFAULT_SEARCH_LIMIT).unwrap();
        assert_eq!(found.commit, Some(commits[0].clone()));
    }

    #[test]
    fn unknown_locks_and_the_search_bound() {
        let (_tmp, repo, _commits) = history();
        let found = repo.find_lock(&id(9), None, DEFAULT_SEARCH_LIMIT).unwrap();
        assert_eq!(found, LockSearch { commit: None, searched: 4 });
        let found = repo.find_lock(&id(1), None, 2).unwrap();
        assert_eq!(found, LockSearch { commit: None, searched: 2 }, "lock 1 is 4 commits back");
    }

    #[test]
    fn resolves_revisions_and_reads_their_lock() {
        let (tmp, repo, commits) = history();
        let git = Repository::open(tmp.path()).unwrap();
        let first = git.find_commit(Oid::from_str(&commits[0]).unwrap()).unwrap();
        git.tag_lightweight("lock-one", first.as_object(), false).unwrap();
        assert_eq!(repo.resolve("lock-one").unwrap().as_deref(), Some(commits[0].as_str()));
        assert_eq!(repo.resolve(&commits[1][..10]).unwrap().as_deref(), Some(commits[1].as_str()));
        assert_eq!(repo.resolve("HEAD~1").unwrap().as_deref(), Some(commits[2].as_str()));
        assert_eq!(repo.resolve("no-such-branch").unwrap(), None);
        assert_eq!(repo.resolve("deadbeefdeadbeef").unwrap(), None);
        assert_eq!(repo.lock_at(&commits[1]).unwrap(), Some(id(2)));
        assert_eq!(repo.lock_at(&commits[3]).unwrap(), Some(id(3)));
    }

    #[test]
    fn a_commit_without_flake_lock_has_no_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let git = Repository::init(tmp.path()).unwrap();
        fs::write(tmp.path().join("flake.nix"), "{}").unwrap();
        let rev = commit_all(&git, "no lock");
        let repo = FlakeRepo::open(&FlakeSource::inspect(tmp.path()).unwrap()).unwrap();
        assert_eq!(repo.subdir(), Path::new(""));
        assert_eq!(repo.lock_at(&rev).unwrap(), None);
        assert_eq!(repo.find_lock(&id(1), None, 10).unwrap(), LockSearch { commit: None, searched: 1 });
    }
}
