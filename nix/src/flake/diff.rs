//! Two commits of the flake's repository compared path by path (git2): what a path is in
//! each commit's tree (missing, directory, file, symlink, submodule, with its object id),
//! what a directory lists, and which paths differ between two trees. Incremental
//! evaluation asks whether what an evaluation read at one commit is the same at another.
//!
//! Only committed trees are read; the work tree and the index are never touched. Paths are
//! relative to the repository root, `/`-separated, without `.` or `..` (the empty path is
//! the root itself).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, Tree};

/// Why a commit or a tree could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("{dir}: {what}: {source}")]
    Git {
        dir: PathBuf,
        what: String,
        #[source]
        source: git2::Error,
    },
    #[error("`{path}` is not a plain relative path (no `.`, `..` or empty components)")]
    BadPath { path: String },
}

/// What a path is in a tree. Git has no empty directories, so a directory exists exactly
/// when it holds something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    Missing,
    Dir,
    File,
    Executable,
    Symlink,
    /// A gitlink: a submodule's commit, whose content is not in this repository.
    Submodule,
    /// Reached only through a symlink or a submodule: git cannot say what it is.
    BehindLink,
}

impl EntryKind {
    fn of_mode(mode: i32) -> Self {
        match mode {
            0o040_000 => EntryKind::Dir,
            0o100_755 => EntryKind::Executable,
            0o120_000 => EntryKind::Symlink,
            0o160_000 => EntryKind::Submodule,
            _ => EntryKind::File,
        }
    }

    /// Whether following a path through this needs more than the tree (a link).
    pub fn is_link(self) -> bool {
        matches!(self, EntryKind::Symlink | EntryKind::Submodule | EntryKind::BehindLink)
    }
}

/// A path in a tree: its kind and, unless missing, its object id (blob, tree or commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    pub id: Option<String>,
}

impl Entry {
    const MISSING: Entry = Entry { kind: EntryKind::Missing, id: None };
}

/// A commit's tree, by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeId(Oid);

/// The flake's repository, opened to compare committed trees.
pub struct RepoTrees {
    repo: Repository,
    dir: PathBuf,
}

impl std::fmt::Debug for RepoTrees {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoTrees").field("dir", &self.dir).finish()
    }
}

impl RepoTrees {
    /// Opens the repository whose work tree (or git directory) is `dir`.
    pub fn open(dir: &Path) -> Result<Self, DiffError> {
        let repo = Repository::open(dir).map_err(|source| DiffError::Git {
            dir: dir.to_path_buf(),
            what: "cannot open the repository".into(),
            source,
        })?;
        Ok(Self { repo, dir: dir.to_path_buf() })
    }

    fn err(&self, what: impl Into<String>) -> impl FnOnce(git2::Error) -> DiffError + '_ {
        let what = what.into();
        move |source| DiffError::Git { dir: self.dir.clone(), what, source }
    }

    /// The tree of commit `rev` (a full commit id).
    pub fn tree_of(&self, rev: &str) -> Result<TreeId, DiffError> {
        let what = format!("commit {rev}");
        let oid = Oid::from_str(rev).map_err(self.err(what.clone()))?;
        let commit = self.repo.find_commit(oid).map_err(self.err(what.clone()))?;
        Ok(TreeId(commit.tree_id()))
    }

    fn tree(&self, id: TreeId) -> Result<Tree<'_>, DiffError> {
        self.repo.find_tree(id.0).map_err(self.err(format!("tree {}", id.0)))
    }

    /// What `path` is in `tree`. A path below a symlink or a submodule is
    /// [`EntryKind::BehindLink`]; below a file it is missing.
    pub fn entry(&self, tree: TreeId, path: &str) -> Result<Entry, DiffError> {
        let components = split(path)?;
        let mut current = self.tree(tree)?;
        let mut entry = Entry { kind: EntryKind::Dir, id: Some(tree.0.to_string()) };
        for (i, name) in components.iter().enumerate() {
            let Some((kind, id)) = current.get_name(name).map(|e| (EntryKind::of_mode(e.filemode()), e.id())) else {
                return Ok(Entry::MISSING);
            };
            entry = Entry { kind, id: Some(id.to_string()) };
            let last = i + 1 == components.len();
            if last {
                break;
            }
            match kind {
                EntryKind::Dir => current = self.repo.find_tree(id).map_err(self.err(format!("tree of {path}")))?,
                EntryKind::Symlink | EntryKind::Submodule => {
                    return Ok(Entry { kind: EntryKind::BehindLink, id: None });
                }
                _ => return Ok(Entry::MISSING),
            }
        }
        Ok(entry)
    }

    /// The names in directory `path` of `tree` and what each is; `None` when `path` is
    /// not a directory there.
    pub fn listing(&self, tree: TreeId, path: &str) -> Result<Option<BTreeMap<String, EntryKind>>, DiffError> {
        let entry = self.entry(tree, path)?;
        let (EntryKind::Dir, Some(id)) = (entry.kind, entry.id) else { return Ok(None) };
        let oid = Oid::from_str(&id).map_err(self.err(format!("tree of {path}")))?;
        let dir = self.repo.find_tree(oid).map_err(self.err(format!("tree of {path}")))?;
        let mut names = BTreeMap::new();
        for item in dir.iter() {
            let name = String::from_utf8_lossy(item.name_bytes()).into_owned();
            names.insert(name, EntryKind::of_mode(item.filemode()));
        }
        Ok(Some(names))
    }

    /// Every path that differs between two trees (added, deleted, changed content or
    /// mode), old and new names both for renames (git2 does not detect renames here).
    pub fn changed_paths(&self, old: TreeId, new: TreeId) -> Result<Vec<String>, DiffError> {
        let (a, b) = (self.tree(old)?, self.tree(new)?);
        let diff = self.repo.diff_tree_to_tree(Some(&a), Some(&b), None).map_err(self.err("diff"))?;
        let mut paths = Vec::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(path) = file.path_bytes() {
                    paths.push(String::from_utf8_lossy(path).into_owned());
                }
            }
        }
        paths.sort();
        paths.dedup();
        Ok(paths)
    }
}

/// The git blob id of `content`, as `git hash-object` prints it.
pub fn blob_id(content: &[u8]) -> Option<String> {
    Oid::hash_object(ObjectType::Blob, content).ok().map(|oid| oid.to_string())
}

fn split(path: &str) -> Result<Vec<&str>, DiffError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
        return Err(DiffError::BadPath { path: path.to_owned() });
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    use crate::flake::test_git::commit_all;

    #[test]
    fn entries_listings_and_changes_between_commits() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init(tmp.path()).unwrap();
        fs::create_dir_all(tmp.path().join("hosts")).unwrap();
        fs::write(tmp.path().join("flake.nix"), "{}").unwrap();
        fs::write(tmp.path().join("hosts/web1.nix"), "{ a = 1; }").unwrap();
        std::os::unix::fs::symlink("hosts", tmp.path().join("machines")).unwrap();
        let first = commit_all(&repo, "one");
        fs::write(tmp.path().join("hosts/web1.nix"), "{ a = 2; }").unwrap();
        fs::write(tmp.path().join("hosts/web2.nix"), "{ }").unwrap();
        let second = commit_all(&repo, "two");

        let trees = RepoTrees::open(tmp.path()).unwrap();
        let (a, b) = (trees.tree_of(&first).unwrap(), trees.tree_of(&second).unwrap());
        let web1 = |t| trees.entry(t, "hosts/web1.nix").unwrap();
        assert_eq!(web1(a).kind, EntryKind::File);
        assert_eq!(web1(a).id, blob_id(b"{ a = 1; }"));
        assert_ne!(web1(a), web1(b));
        assert_eq!(trees.entry(a, "flake.nix").unwrap(), trees.entry(b, "flake.nix").unwrap());
        assert_eq!(trees.entry(a, "hosts/web2.nix").unwrap().kind, EntryKind::Missing);
        assert_eq!(trees.entry(a, "flake.nix/x").unwrap().kind, EntryKind::Missing, "below a file");
        assert_eq!(trees.entry(a, "").unwrap().kind, EntryKind::Dir, "the root");
        assert_eq!(trees.entry(a, "machines").unwrap().kind, EntryKind::Symlink);
        assert_eq!(trees.entry(a, "machines/web1.nix").unwrap().kind, EntryKind::BehindLink);

        let names = |t| trees.listing(t, "hosts").unwrap().unwrap().into_keys().collect::<Vec<_>>();
        assert_eq!(names(a), ["web1.nix"]);
        assert_eq!(names(b), ["web1.nix", "web2.nix"]);
        assert_eq!(trees.listing(a, "flake.nix").unwrap(), None);
        assert_eq!(trees.changed_paths(a, b).unwrap(), ["hosts/web1.nix", "hosts/web2.nix"]);
        assert!(trees.changed_paths(a, a).unwrap().is_empty());

        assert!(matches!(trees.entry(a, "hosts/../flake.nix"), Err(DiffError::BadPath { .. })));
        let err = trees.tree_of(&"0".repeat(40)).unwrap_err();
        assert!(err.to_string().contains(&format!("commit {}", "0".repeat(40))), "{err}");
    }
}
