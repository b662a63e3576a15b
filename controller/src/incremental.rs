//! Incremental evaluation: on a new clean commit, a host whose last recorded evaluation
//! read nothing that differs between that commit and this one gets the recorded result,
//! and no evaluator runs for it.
//!
//! Every evaluation of a clean commit runs under strace ([`crate::evaltrace`]); the files
//! of the flake's source it opened and the directories it listed are checked against the
//! commit with git2 and filed beside the evaluation cache as a record (`<key>.reads.json`,
//! keyed like a cache entry minus the revision). A later commit with the same lock, flake
//! directory, attribute, Nix and store reuses the result if [`decide`] allows it.
//!
//! Why that is sound. In pure mode an evaluation is a function of (1) the flake's source
//! (the whole repository, also for a flake in a subdirectory), (2) its inputs, pinned by
//! the lock in the key, (3) the source's identity, (4) Nix, settings, store: in the key.
//! (1): Nix learns a file's content only by opening it, which the trace sees; lookups
//! (existence, type, link targets) are not traced, and listings see names and types. So a
//! commit that adds, deletes or renames a path or changes a type, mode, symlink, submodule
//! or `.gitattributes` evaluates every host; a content change of regular files changes no
//! lookup or listing, and a host that opened none of them is reused. Records are refused
//! where Nix's copy differs from git's tree, an opened path is or passes a link, or Nix's
//! `flake.nix` was not read. (3): refused when the `.drv` closure holds the identity as text
//! (rev[..7], store hash, narHash, lastModified(Date)) or a file read mentions `revCount`;
//! an evaluation using the identity only after transforming it (hashing it) is unseen.
//!
//! Anything uncertain (no record, an unreadable or foreign one, a commit git cannot find,
//! strace missing or failing, a `.drv` no longer in the store) means a full evaluation.
//! `--no-eval-cache` and dirty trees use none of this.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hostctl_nix::flake::{blob_id, DiffError, EntryKind, RepoTrees};
use hostctl_nix::{FlakeMetadata, FlakeRef, Nix, NixError, Toplevel};
use hostctl_schemas::ids::{AttrName, HostName, StorePath};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::context::FleetContext;
use crate::evalcache::{write_file, EvalCache};
use crate::evaltrace::{self, SourceAccess, Tracer};
use crate::pool::EvalJob;

/// Bumped when what a record means changes (2: no lookups recorded; a format-1 record is
/// not used, its host is evaluated once more).
const FORMAT: u32 = 2;

/// At most this much of a result's closure is searched for the commit's identity; a
/// larger closure is not recorded.
const SCAN_BUDGET: u64 = 1 << 30;

/// What one host's evaluation read, and what it evaluated to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub format: u32,
    /// The key it is filed under (`EvalCache::reads_file`): lock, flake directory, Nix,
    /// store, attribute.
    pub key: String,
    /// The commit the result holds for.
    pub rev: String,
    /// The commit whose evaluation was traced (`rev` or an ancestor it was carried from).
    pub traced_rev: String,
    pub drv: StorePath,
    pub out: StorePath,
    pub system: Option<String>,
    /// Files opened, relative to the repository root (the flake's source is the whole
    /// repository).
    pub read: BTreeSet<String>,
    /// Directories listed: checked against git when recorded; [`decide`] needs them not
    /// (a commit that could change a listing evaluates every host).
    pub listed: BTreeSet<String>,
}

impl Record {
    pub fn toplevel(&self) -> Toplevel {
        Toplevel { drv_path: self.drv.clone(), out_path: self.out.clone(), system: self.system.clone() }
    }
}

/// Whether a record's result holds at another commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Reuse,
    /// Evaluate, and why.
    Evaluate(String),
}

/// Whether `record`'s result holds at `rev`: only if every path that differs between
/// the two commits is a regular file changed in content alone, and `record` opened none.
pub fn decide(trees: &RepoTrees, record: &Record, rev: &str) -> Decision {
    decide_trees(trees, record, rev)
        .unwrap_or_else(|e| Decision::Evaluate(format!("cannot compare {} with {rev}: {e}", record.rev)))
}

fn decide_trees(trees: &RepoTrees, record: &Record, rev: &str) -> Result<Decision, DiffError> {
    let evaluate = |why: String| Ok(Decision::Evaluate(why));
    if record.rev == rev {
        return Ok(Decision::Reuse);
    }
    let (old, new) = (trees.tree_of(&record.rev)?, trees.tree_of(rev)?);
    let changed = trees.changed_paths(old, new)?;
    if changed.is_empty() {
        return Ok(Decision::Reuse);
    }
    if let Some(p) = changed.iter().find(|p| p.rsplit('/').next() == Some(".gitattributes")) {
        return evaluate(format!("{p} changed (git attributes shape Nix's copy of the source)"));
    }
    for p in &changed {
        let (a, b) = (trees.entry(old, p)?.kind, trees.entry(new, p)?.kind);
        if a != b || !matches!(a, EntryKind::File | EntryKind::Executable) {
            // Lookups are not traced: any evaluation may have looked for this path.
            let what = match (a, b) {
                (EntryKind::Missing, _) => "was added".to_owned(),
                (_, EntryKind::Missing) => "was deleted".to_owned(),
                _ => format!("was {a:?}, is {b:?}"),
            };
            return evaluate(format!(
                "{} {what} (paths added, deleted or changed in type evaluate every host)",
                shown(p)
            ));
        }
    }
    let link = |p: &str| format!("{} is or lies behind a symlink or submodule", shown(p));
    for p in &record.read {
        let (a, b) = (trees.entry(old, p)?, trees.entry(new, p)?);
        if a.kind.is_link() || b.kind.is_link() {
            return evaluate(link(p));
        }
        if a != b {
            return evaluate(format!("{} changed", shown(p)));
        }
    }
    Ok(Decision::Reuse)
}

/// A relative path for messages (`.` for the root).
fn shown(p: &str) -> &str {
    if p.is_empty() {
        "."
    } else {
        p
    }
}

/// The record in `file`, if it is one of this `key` and format.
pub fn load(file: &Path, key: &str) -> Result<Record, String> {
    let bytes = std::fs::read(file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no earlier evaluation was recorded".to_owned(),
        _ => format!("cannot read {}: {e}", file.display()),
    })?;
    let record: Record =
        serde_json::from_slice(&bytes).map_err(|e| format!("{} is not a usable record: {e}", file.display()))?;
    if record.format != FORMAT {
        return Err(format!("{} was recorded by another version of hostctl", file.display()));
    }
    if record.key != key {
        return Err(format!("{} was recorded under another key", file.display()));
    }
    Ok(record)
}

/// Incremental evaluation for one run: the records of this fleet's clean commit.
#[derive(Debug)]
pub struct Incremental {
    cache: EvalCache,
    rev: String,
    workdir: PathBuf,
    /// The flake directory in the repository, `/`-separated (empty at the root).
    subdir: String,
    setup: OnceCell<Option<Arc<Setup>>>,
    /// Store paths found free of this commit's identity (closures overlap across hosts).
    scanned: Arc<Mutex<HashSet<String>>>,
}

/// What tracing needs, found once per run when the first host is evaluated.
#[derive(Debug)]
struct Setup {
    tracer: Tracer,
    meta: FlakeMetadata,
    needles: Vec<(&'static str, Vec<u8>)>,
}

impl Incremental {
    /// Incremental evaluation for `ctx`, if `cache` is in use (a clean git tree, no
    /// `--no-eval-cache`).
    pub fn new(ctx: &FleetContext, cache: &EvalCache) -> Option<Self> {
        let rev = cache.rev()?.to_owned();
        let source = ctx.source.as_ref()?;
        let git = source.git.as_ref().filter(|g| g.is_clean())?;
        let sub = source.dir.strip_prefix(&git.workdir).ok()?;
        let parts: Option<Vec<&str>> = sub.components().map(|c| c.as_os_str().to_str()).collect();
        Some(Self {
            cache: cache.clone(),
            rev,
            workdir: git.workdir.clone(),
            subdir: parts?.join("/"),
            setup: OnceCell::new(),
            scanned: Arc::default(),
        })
    }

    fn in_flake(&self, name: &str) -> String {
        if self.subdir.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.subdir)
        }
    }

    /// The records whose results hold at this commit, for the hosts of `jobs` that have
    /// one. Callers still check each `.drv` is in the store, then [`Incremental::adopt`].
    pub async fn reuse(&self, jobs: &[EvalJob]) -> BTreeMap<HostName, Record> {
        if jobs.is_empty() {
            return BTreeMap::new();
        }
        let wanted: Vec<(HostName, Option<(PathBuf, String)>)> =
            jobs.iter().map(|j| (j.host.clone(), self.cache.reads_file(&j.attr))).collect();
        let (workdir, rev) = (self.workdir.clone(), self.rev.clone());
        let task = tokio::task::spawn_blocking(move || {
            let trees = RepoTrees::open(&workdir).map_err(|e| e.to_string());
            let mut reusable = BTreeMap::new();
            for (host, file) in wanted {
                let record = file.ok_or_else(|| "no cache directory".to_owned()).and_then(|(f, k)| load(&f, &k));
                let decision = match (record, &trees) {
                    (Err(why), _) => Decision::Evaluate(why),
                    (_, Err(why)) => Decision::Evaluate(why.clone()),
                    (Ok(record), Ok(trees)) => match decide(trees, &record, &rev) {
                        Decision::Reuse => {
                            tracing::info!(host = %host, from = %record.rev, "evaluation reused: nothing it read changed");
                            reusable.insert(host, record);
                            continue;
                        }
                        evaluate => evaluate,
                    },
                };
                if let Decision::Evaluate(why) = decision {
                    tracing::info!(host = %host, "incremental evaluation: evaluating, since {why}");
                }
            }
            reusable
        });
        task.await.unwrap_or_default()
    }

    /// Takes a reused record's result for this commit: a cache entry, and the record
    /// carried forward to this commit (the next commit is compared with this one).
    pub fn adopt(&self, attr: &AttrName, mut record: Record) {
        self.cache.put(attr, &record.toplevel());
        record.rev.clone_from(&self.rev);
        self.write(attr, &record);
    }

    fn write(&self, attr: &AttrName, record: &Record) {
        let Some((file, _)) = self.cache.reads_file(attr) else { return };
        let written = serde_json::to_vec(record).map_err(std::io::Error::other).and_then(|b| write_file(&file, &b));
        if let Err(e) = written {
            tracing::warn!(file = %file.display(), error = %e, "cannot write an incremental evaluation record");
        }
    }

    /// Evaluates `job` under strace and records what it read; a plain evaluation when
    /// tracing is not possible. The result is the evaluation's either way.
    pub async fn evaluate(&self, nix: Arc<Nix>, flake: FlakeRef, job: EvalJob) -> Result<Toplevel, NixError> {
        let Some(setup) = self.setup(&nix, &flake).await else {
            return nix.eval_toplevel(&flake, &job.attr).await;
        };
        let trace = match tempfile::Builder::new().prefix("hostctl-eval-").suffix(".trace").tempfile() {
            Ok(file) => file,
            Err(e) => {
                tracing::info!(host = %job.host, error = %e, "no file for the trace: evaluating untraced");
                return nix.eval_toplevel(&flake, &job.attr).await;
            }
        };
        let wrapper = setup.tracer.wrapper(trace.path());
        let toplevel = match nix.eval_toplevel_wrapped(&wrapper, &flake, &job.attr).await {
            Ok(toplevel) => toplevel,
            Err(e) if tracer_failed(&e) => {
                tracing::warn!(host = %job.host, error = %e, "strace failed: evaluating untraced");
                return nix.eval_toplevel(&flake, &job.attr).await;
            }
            Err(e) => return Err(e),
        };
        match self.record(&nix, &setup, &job, &toplevel, trace).await {
            Ok(()) => tracing::debug!(host = %job.host, "evaluation recorded for incremental evaluation"),
            Err(why) => {
                tracing::info!(host = %job.host, "evaluation not recorded for incremental evaluation: {why}");
                // An older record would still be sound, but "the latest evaluation's
                // record or none" is easier to reason about.
                if let Some((file, _)) = self.cache.reads_file(&job.attr) {
                    let _ = std::fs::remove_file(file);
                }
            }
        }
        Ok(toplevel)
    }

    async fn setup(&self, nix: &Nix, flake: &FlakeRef) -> Option<Arc<Setup>> {
        let init = || async {
            let tracer = Tracer::probe().await?;
            let meta = nix
                .flake_metadata(flake)
                .await
                .inspect_err(|e| tracing::info!(error = %e, "no incremental evaluation: flake metadata failed"))
                .ok()?;
            if meta.rev.as_deref() != Some(self.rev.as_str()) {
                tracing::info!(nix = ?meta.rev, hostctl = %self.rev, "no incremental evaluation: Nix sees another revision");
                return None;
            }
            let needles = needles(&meta).inspect_err(|why| tracing::info!("no incremental evaluation: {why}")).ok()?;
            Some(Arc::new(Setup { tracer, meta, needles }))
        };
        self.setup.get_or_init(init).await.clone()
    }

    /// Reads the trace, checks it against git and the result against the commit's
    /// identity, and files the record.
    async fn record(
        &self,
        nix: &Nix,
        setup: &Setup,
        job: &EvalJob,
        toplevel: &Toplevel,
        trace: tempfile::NamedTempFile,
    ) -> Result<(), String> {
        let (_, key) = self.cache.reads_file(&job.attr).ok_or("no cache directory")?;
        let source = setup.meta.path.to_string();
        let (workdir, rev) = (self.workdir.clone(), self.rev.clone());
        let (flake_nix, flake_lock) = (self.in_flake("flake.nix"), self.in_flake("flake.lock"));
        let access = tokio::task::spawn_blocking(move || {
            let text = std::fs::read_to_string(trace.path()).map_err(|e| format!("cannot read the trace: {e}"))?;
            let access = evaltrace::source_access(&text, &source).map_err(|e| e.to_string())?;
            if !access.read.contains(&flake_nix) {
                return Err(evaltrace::Uncertain::NotThisSource { file: flake_nix }.to_string());
            }
            check_against_git(&workdir, &rev, &access, &flake_lock)?;
            Ok(access)
        })
        .await
        .map_err(|e| format!("the trace check failed: {e}"))??;
        self.check_identity(nix, setup, &access, toplevel).await?;
        let record = Record {
            format: FORMAT,
            key,
            rev: self.rev.clone(),
            traced_rev: self.rev.clone(),
            drv: toplevel.drv_path.clone(),
            out: toplevel.out_path.clone(),
            system: toplevel.system.clone(),
            read: access.read,
            listed: access.listed,
        };
        self.write(&job.attr, &record);
        Ok(())
    }

    /// Refuses a result that holds the commit's identity anywhere in its `.drv` closure
    /// (`self.rev`, `toString ./.` and the like end up there as text).
    async fn check_identity(
        &self,
        nix: &Nix,
        setup: &Setup,
        access: &SourceAccess,
        toplevel: &Toplevel,
    ) -> Result<(), String> {
        let closure = nix
            .requisites(std::slice::from_ref(&toplevel.drv_path))
            .await
            .map_err(|e| format!("cannot list the closure: {e}"))?;
        let closure: Vec<String> = closure.iter().map(ToString::to_string).collect();
        let source = setup.meta.path.as_str();
        if closure.iter().any(|p| p == source) {
            return Err(format!("the system holds the whole source {source} (`self` or `./.` as a path)"));
        }
        let root = access.root.to_string_lossy();
        let prefix = root.strip_suffix(source).ok_or("the source root is not the store path")?.to_owned();
        let (needles, scanned) = (setup.needles.clone(), self.scanned.clone());
        tokio::task::spawn_blocking(move || scan_closure(&closure, &prefix, &needles, &scanned))
            .await
            .map_err(|e| format!("the closure scan failed: {e}"))?
    }
}

/// Whether a traced evaluation failed because of strace rather than Nix.
fn tracer_failed(error: &NixError) -> bool {
    match error {
        NixError::Spawn { .. } => true,
        NixError::Failed { stderr_tail, .. } => stderr_tail.lines().any(|l| l.starts_with("strace: ")),
        _ => false,
    }
}

/// Checks that Nix's copy of the source (`access.root`) holds at every recorded path
/// what git's tree of `rev` holds there, so comparing trees later compares what Nix read;
/// and that no file read mentions `revCount` (except the lock, which is Nix's own).
fn check_against_git(workdir: &Path, rev: &str, access: &SourceAccess, flake_lock: &str) -> Result<(), String> {
    let trees = RepoTrees::open(workdir).map_err(|e| e.to_string())?;
    let tree = trees.tree_of(rev).map_err(|e| e.to_string())?;
    let differs = |p: &str, what: &str| Err(format!("{}: {what} in Nix's copy of the source and in git", shown(p)));
    for p in &access.read {
        let entry = trees.entry(tree, p).map_err(|e| e.to_string())?;
        let on_disk = access.root.join(p);
        match entry.kind {
            EntryKind::File | EntryKind::Executable => {
                let bytes = std::fs::read(&on_disk).map_err(|e| format!("{}: {e}", on_disk.display()))?;
                if blob_id(&bytes) != entry.id {
                    return differs(p, "other content");
                }
                if p != flake_lock && memchr::memmem::find(&bytes, b"revCount").is_some() {
                    return Err(format!("{p} mentions revCount, which cannot be traced"));
                }
            }
            EntryKind::Dir if on_disk.is_dir() => {}
            kind => return differs(p, &format!("{kind:?} in git")),
        }
    }
    for d in &access.listed {
        if trees.entry(tree, d).map_err(|e| e.to_string())?.kind != EntryKind::Dir {
            return differs(d, "not a directory");
        }
        if trees.listing(tree, d).map_err(|e| e.to_string())? != disk_listing(&access.root.join(d)) {
            return differs(d, "other entries");
        }
    }
    Ok(())
}

/// What `path` is on disk, in the terms git uses.
fn disk_kind(path: &Path) -> EntryKind {
    match std::fs::symlink_metadata(path) {
        Err(_) => EntryKind::Missing,
        Ok(m) if m.file_type().is_symlink() => EntryKind::Symlink,
        Ok(m) if m.is_dir() => EntryKind::Dir,
        Ok(m) if std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o100 != 0 => EntryKind::Executable,
        Ok(_) => EntryKind::File,
    }
}

fn disk_listing(dir: &Path) -> Option<BTreeMap<String, EntryKind>> {
    let mut names = BTreeMap::new();
    for entry in std::fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        names.insert(entry.file_name().to_str()?.to_owned(), disk_kind(&entry.path()));
    }
    Some(names)
}

/// The commit's identity as the text it would leave in a derivation.
fn needles(meta: &FlakeMetadata) -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    let base = meta.path.as_str().rsplit('/').next().unwrap_or_default();
    let hash = base.split('-').next().unwrap_or_default();
    let rev = meta.rev.as_deref().filter(|r| r.len() >= 7).ok_or("Nix reports no revision")?;
    let mut needles = vec![("store path", hash.as_bytes().to_vec()), ("revision", rev.as_bytes()[..7].to_vec())];
    if let Some(nar) = &meta.nar_hash {
        needles.push(("narHash", nar.split_once('-').map_or(nar.as_str(), |(_, b)| b).as_bytes().to_vec()));
    }
    let time = meta.last_modified.ok_or("Nix reports no lastModified")?;
    if time < 100_000_000 {
        return Err(format!("lastModified {time} is too short to search for"));
    }
    needles.push(("lastModified", time.to_string().into_bytes()));
    needles.push(("lastModifiedDate", yyyymmdd(time).into_bytes()));
    Ok(needles)
}

/// `YYYYMMDD` (UTC) of a Unix time: the start of `self.lastModifiedDate`.
fn yyyymmdd(time: u64) -> String {
    // `YYYY-MM-DDThh:mm:ssZ` -> `YYYYMMDD`.
    crate::clock::utc_iso8601(time).chars().take(10).filter(char::is_ascii_digit).collect()
}

/// Searches every file of `paths` (store paths, on disk at `prefix` + path) for any of
/// `needles`; paths already found clean in this run are skipped.
fn scan_closure(
    paths: &[String],
    prefix: &str,
    needles: &[(&'static str, Vec<u8>)],
    scanned: &Mutex<HashSet<String>>,
) -> Result<(), String> {
    let finders: Vec<(&str, memchr::memmem::Finder<'_>)> =
        needles.iter().map(|(name, n)| (*name, memchr::memmem::Finder::new(n))).collect();
    let mut budget = SCAN_BUDGET;
    for path in paths {
        if scanned.lock().is_ok_and(|s| s.contains(path)) {
            continue;
        }
        let on_disk = PathBuf::from(format!("{prefix}{path}"));
        scan_path(&on_disk, &finders, &mut budget).map_err(|why| format!("{path}: {why}"))?;
        if let Ok(mut s) = scanned.lock() {
            s.insert(path.clone());
        }
    }
    Ok(())
}

fn scan_path(path: &Path, finders: &[(&str, memchr::memmem::Finder<'_>)], budget: &mut u64) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bytes = if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).map_err(|e| e.to_string())?;
        target.into_os_string().into_encoded_bytes()
    } else if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| e.to_string())? {
            scan_path(&entry.map_err(|e| e.to_string())?.path(), finders, budget)?;
        }
        return Ok(());
    } else {
        *budget = budget.checked_sub(meta.len()).ok_or("the closure is too large to search")?;
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
    };
    match finders.iter().find(|(_, f)| f.find(&bytes).is_some()) {
        Some((name, _)) => Err(format!("holds the commit's {name}: the result depends on the commit itself")),
        None => Ok(()),
    }
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;
