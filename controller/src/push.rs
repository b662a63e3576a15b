//! Closure transfer without SSH: the toplevel's closure (references first), the subset
//! the host lacks (`POST /v1/paths/missing`), and a zstd-compressed `nix-store --export`
//! of only those paths (`POST /v1/paths/import`).
//!
//! The request signature covers the body's SHA-256, so the hash must be known before
//! the first byte is sent: each body is assembled in a temporary file from per-path
//! compressed pieces ([`crate::pieces`]) while hashed, then the file is streamed. Memory
//! stays bounded by one read buffer; disk use by the run's pieces plus one body per
//! host being pushed.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use hostctl_nix::Nix;
use hostctl_schemas::boot_config::DEFAULT_ESP;
use hostctl_schemas::ids::StorePath;
use hostctl_schemas::text::plural;
use tokio::sync::OnceCell;

use crate::host::{ExportBody, Host, HostError};
use crate::pieces::Pieces;
use crate::progress;

/// Paths per `POST /v1/paths/missing` request: keeps the body far below the agent's
/// 4 MiB limit even for long path names.
const MISSING_CHUNK: usize = 10_000;
/// Bytes of store paths per import's `x-hostctl-paths` header: HTTP servers limit the
/// header block (hyper: ~400 KiB, nginx: 8 KiB per line by default), so large closures
/// go in several imports. Each chunk holds references before referrers, so every
/// import leaves the host's store consistent.
const HEADER_BUDGET: usize = 32 * 1024;
/// NAR bytes per import: bounds the temporary file here and the agent's work per request.
const NAR_BUDGET: u64 = 1024 * 1024 * 1024;

/// The controller's own store, as the push needs it. [`NixStore`] is the real one; unit
/// tests of the orchestration use a fake.
pub trait LocalStore: Send + Sync {
    /// The closure of `toplevel`, references before referrers.
    fn closure(&self, toplevel: &StorePath) -> impl Future<Output = Result<Vec<StorePath>, String>> + Send;
    /// The NAR size of each of `paths`.
    fn nar_sizes(&self, paths: &[StorePath]) -> impl Future<Output = Result<BTreeMap<String, u64>, String>> + Send;
    /// A compressed export of `paths`, ready to send.
    fn export(&self, paths: &[StorePath]) -> impl Future<Output = Result<ExportBody, String>> + Send;
    /// The files `toplevel`'s `kernel` and `initrd` links name (what a boot loader copies
    /// to `/boot`), each as the store path holding it and the file's size; none for a
    /// system without them.
    fn boot_files(&self, toplevel: &StorePath) -> impl Future<Output = Result<Vec<(StorePath, u64)>, String>> + Send {
        let _ = toplevel;
        async { Ok(Vec::new()) }
    }
}

/// The local Nix store, through `hostctl-nix`. Clones share what was already asked: the
/// hosts of a fleet share most of their closures, so each toplevel's closure and each
/// path's NAR size is queried once per run, and each path exported and compressed once
/// ([`crate::pieces`]), however many hosts need it.
#[derive(Debug, Clone)]
pub struct NixStore {
    pub nix: Arc<Nix>,
    memo: Arc<StoreMemo>,
}

#[derive(Debug, Default)]
struct StoreMemo {
    pieces: Pieces,
    closures: std::sync::Mutex<HashMap<StorePath, Arc<OnceCell<Vec<StorePath>>>>>,
    sizes: std::sync::Mutex<HashMap<String, u64>>,
}

impl NixStore {
    pub fn new(nix: Arc<Nix>) -> Self {
        Self { nix, memo: Arc::default() }
    }
}

/// A poisoned memo only means a panic elsewhere while it was held; its data is whole.
fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LocalStore for NixStore {
    async fn closure(&self, toplevel: &StorePath) -> Result<Vec<StorePath>, String> {
        let cell = locked(&self.memo.closures).entry(toplevel.clone()).or_default().clone();
        // Concurrent callers for the same toplevel wait for the one query.
        let closure = cell
            .get_or_try_init(|| async {
                self.nix.requisites(std::slice::from_ref(toplevel)).await.map_err(|e| e.to_string())
            })
            .await?;
        Ok(closure.clone())
    }

    async fn nar_sizes(&self, paths: &[StorePath]) -> Result<BTreeMap<String, u64>, String> {
        let unknown: Vec<StorePath> = {
            let known = locked(&self.memo.sizes);
            paths.iter().filter(|p| !known.contains_key(p.as_str())).cloned().collect()
        };
        if !unknown.is_empty() {
            let infos = self.nix.path_info(&unknown, false).await.map_err(|e| e.to_string())?;
            locked(&self.memo.sizes).extend(infos.into_iter().map(|i| (i.path, i.nar_size)));
        }
        let known = locked(&self.memo.sizes);
        Ok(paths.iter().filter_map(|p| Some((p.to_string(), *known.get(p.as_str())?))).collect())
    }

    async fn export(&self, paths: &[StorePath]) -> Result<ExportBody, String> {
        self.memo.pieces.body(&self.nix, paths).await
    }

    async fn boot_files(&self, toplevel: &StorePath) -> Result<Vec<(StorePath, u64)>, String> {
        let toplevel = toplevel.as_path();
        let store_dir = toplevel.parent().unwrap_or(toplevel);
        let mut files = Vec::new();
        for link in ["kernel", "initrd"] {
            // A system without one (a container, the example fleet) has nothing for /boot.
            let Ok(file) = std::fs::canonicalize(toplevel.join(link)) else { continue };
            let size = std::fs::metadata(&file).map_err(|e| format!("{}: {e}", file.display()))?.len();
            let holder = file.strip_prefix(store_dir).ok().and_then(|rel| rel.components().next());
            let Some(holder) = holder else { continue };
            let path = store_dir.join(holder);
            let path = path.to_str().and_then(|p| p.parse::<StorePath>().ok());
            files.extend(path.map(|p| (p, size)));
        }
        Ok(files)
    }
}

/// What one push moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushStats {
    pub paths: u64,
    /// Sum of the copied paths' NAR sizes (what `nix copy` would move).
    pub nar_bytes: u64,
    /// Compressed bytes sent.
    pub wire_bytes: u64,
}

/// Why a push failed: the agent's answer, or a local problem (Nix, disk).
#[derive(Debug, Clone, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("{0}")]
    Local(String),
}

/// The paths of `toplevel`'s closure that `host` lacks, references first.
pub async fn missing_paths<H: Host, S: LocalStore>(
    host: &H,
    store: &S,
    toplevel: &StorePath,
) -> Result<Vec<StorePath>, PushError> {
    let closure = store.closure(toplevel).await.map_err(PushError::Local)?;
    let mut missing = Vec::new();
    for chunk in closure.chunks(MISSING_CHUNK) {
        missing.extend(host.missing(chunk).await?);
    }
    Ok(missing)
}

/// Sum of the NAR sizes of `paths`.
pub async fn nar_total<S: LocalStore>(store: &S, paths: &[StorePath]) -> Result<u64, PushError> {
    let sizes = store.nar_sizes(paths).await.map_err(PushError::Local)?;
    Ok(paths.iter().filter_map(|p| sizes.get(p.as_str())).sum())
}

/// Free bytes on the host, as its agent reported them (`None`: not known, not checked).
#[derive(Debug, Clone, Copy, Default)]
pub struct FreeSpace {
    /// On its Nix store's file system.
    pub store: Option<u64>,
    /// On its boot partition, when that is another file system.
    pub boot: Option<u64>,
}

/// Copies what `host` lacks of `toplevel`'s closure to it; refuses, before sending
/// anything, when the NAR size of what it lacks exceeds the free space of its store, or
/// when the system brings a kernel and initrd the host lacks and they exceed the free
/// space of its boot partition.
pub async fn push_closure<H: Host, S: LocalStore>(
    host: &H,
    store: &S,
    toplevel: &StorePath,
    free: FreeSpace,
) -> Result<PushStats, PushError> {
    let missing = missing_paths(host, store, toplevel).await?;
    if missing.is_empty() {
        progress::step(host.name(), "nothing to copy");
        return Ok(PushStats::default());
    }
    let sizes = store.nar_sizes(&missing).await.map_err(PushError::Local)?;
    let nar_bytes: u64 = missing.iter().filter_map(|p| sizes.get(p.as_str())).sum();
    check_space(store, toplevel, &missing, nar_bytes, free).await?;
    progress::step(
        host.name(),
        format!("pushing {} ({})", plural(missing.len(), "path", "paths"), progress::bytes(nar_bytes)),
    );
    let mut stats = PushStats { paths: missing.len() as u64, nar_bytes, wire_bytes: 0 };
    let chunks = import_chunks(&missing, &sizes);
    let (total, mut sent) = (chunks.len(), 0usize);
    for chunk in chunks {
        sent += chunk.len();
        if total > 1 {
            progress::step(host.name(), format!("pushing {sent}/{} paths", missing.len()));
        }
        let body = store.export(chunk).await.map_err(PushError::Local)?;
        stats.wire_bytes += body.len;
        host.import(chunk, body).await?;
    }
    tracing::info!(host = %host.name(), paths = stats.paths, nar = stats.nar_bytes, wire = stats.wire_bytes, "pushed");
    Ok(stats)
}

/// The free-space gate of [`push_closure`]: the store first, then the boot partition,
/// which only a new kernel or initrd (one the host lacks) needs room on.
async fn check_space<S: LocalStore>(
    store: &S,
    toplevel: &StorePath,
    missing: &[StorePath],
    nar_bytes: u64,
    free: FreeSpace,
) -> Result<(), PushError> {
    if let Some(free) = free.store.filter(|free| nar_bytes > *free) {
        return Err(PushError::Local(format!(
            "not enough space for the closure: {} to copy ({nar_bytes} bytes of NAR in {}), but the file system \
             of the host's Nix store has {} free ({free} bytes); nothing was sent",
            progress::bytes(nar_bytes),
            plural(missing.len(), "path", "paths"),
            progress::bytes(free),
        )));
    }
    let Some(boot_free) = free.boot else { return Ok(()) };
    let boot_files = store.boot_files(toplevel).await.map_err(PushError::Local)?;
    let boot_bytes: u64 = boot_files.iter().filter(|(path, _)| missing.contains(path)).map(|(_, size)| size).sum();
    if boot_bytes > boot_free {
        return Err(PushError::Local(format!(
            "not enough space on the boot partition for the new kernel and initrd: {} to install ({boot_bytes} \
             bytes), but the host's {DEFAULT_ESP} has {} free ({boot_free} bytes); nothing was sent",
            progress::bytes(boot_bytes),
            progress::bytes(boot_free),
        )));
    }
    Ok(())
}

/// Splits `paths` (in order) into imports within [`HEADER_BUDGET`] and [`NAR_BUDGET`];
/// every chunk has at least one path.
fn import_chunks<'a>(paths: &'a [StorePath], sizes: &BTreeMap<String, u64>) -> Vec<&'a [StorePath]> {
    let mut chunks = Vec::new();
    let (mut start, mut header, mut nar) = (0, 0usize, 0u64);
    for (i, p) in paths.iter().enumerate() {
        let (h, n) = (p.as_str().len() + 1, sizes.get(p.as_str()).copied().unwrap_or(0));
        if i > start && (header + h > HEADER_BUDGET || nar + n > NAR_BUDGET) {
            chunks.push(&paths[start..i]);
            (start, header, nar) = (i, 0, 0);
        }
        header += h;
        nar += n;
    }
    if start < paths.len() {
        chunks.push(&paths[start..]);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(i: usize) -> StorePath {
        format!("/nix/store/{i:032}-p{i}").parse().unwrap()
    }

    #[test]
    fn imports_are_chunked_in_order_within_budgets() {
        let paths: Vec<StorePath> = (0..2000).map(path).collect();
        let none = BTreeMap::new();
        let chunks = import_chunks(&paths, &none);
        assert!(chunks.len() > 1, "2000 paths exceed one header");
        assert!(chunks.iter().all(|c| c.iter().map(|p| p.as_str().len() + 1).sum::<usize>() <= HEADER_BUDGET));
        assert_eq!(chunks.concat(), paths, "order and content preserved");

        let sizes: BTreeMap<String, u64> = paths[..3].iter().map(|p| (p.to_string(), NAR_BUDGET / 2 + 1)).collect();
        let chunks = import_chunks(&paths[..3], &sizes);
        assert_eq!(chunks.iter().map(|c| c.len()).collect::<Vec<_>>(), [1, 1, 1]);
        let huge: BTreeMap<String, u64> = [(paths[0].to_string(), NAR_BUDGET * 3)].into();
        assert_eq!(import_chunks(&paths[..1], &huge).len(), 1, "a path larger than the budget still goes");
        assert!(import_chunks(&[], &none).is_empty());
    }
}

/// A fake local store for unit tests of the orchestration: a fixed two-path closure
/// and empty exports, no Nix involved.
#[cfg(test)]
pub mod tests_support {
    use super::*;

    #[derive(Debug, Default)]
    pub struct FakeStore;

    impl FakeStore {
        pub fn toplevel() -> StorePath {
            "/nix/store/22222222222222222222222222222222-nixos-system-web".parse().unwrap()
        }

        fn dependency() -> StorePath {
            "/nix/store/11111111111111111111111111111111-etc".parse().unwrap()
        }

        /// The closure, references first.
        pub fn closure_paths(&self) -> Vec<StorePath> {
            vec![Self::dependency(), Self::toplevel()]
        }
    }

    impl LocalStore for FakeStore {
        async fn closure(&self, _toplevel: &StorePath) -> Result<Vec<StorePath>, String> {
            Ok(self.closure_paths())
        }

        async fn nar_sizes(&self, paths: &[StorePath]) -> Result<BTreeMap<String, u64>, String> {
            let size = |p: &StorePath| if *p == Self::toplevel() { 200 } else { 100 };
            Ok(paths.iter().map(|p| (p.to_string(), size(p))).collect())
        }

        async fn export(&self, _paths: &[StorePath]) -> Result<ExportBody, String> {
            let file = tokio::fs::File::from_std(tempfile::tempfile().map_err(|e| e.to_string())?);
            Ok(ExportBody { file, sha256: hostctl_schemas::signing::body_sha256(b""), len: 0 })
        }

        /// The dependency holds the system's kernel and initrd: 150 bytes together.
        async fn boot_files(&self, _toplevel: &StorePath) -> Result<Vec<(StorePath, u64)>, String> {
            Ok(vec![(Self::dependency(), 100), (Self::dependency(), 50)])
        }
    }
}
