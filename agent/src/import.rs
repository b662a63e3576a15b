//! Imports a zstd-compressed `nix-store --export` stream into the store, all or nothing
//! (for `POST /v1/paths/import`, `crate::http::paths_import`, and bundles).
//!
//! Steps: the HTTP layer validates the `x-hostctl-paths` header, streams the body to a
//! [`Importer::spool_file`] in `<state_dir>/tmp` while hashing it and checks the hash
//! against the signed one; then [`Importer::import`] decompresses it to a second file while
//! validating the export format completely
//! ([`hostctl_nix::export_stream`]) and checking it carries exactly the header's paths with every
//! outside reference already valid; only then run `nix-store --import`. Should Nix still
//! fail half-way, the paths it added in this request are deleted again.
//!
//! Invariant: nothing reaches `nix-store --import` before the whole stream was received,
//! authenticated and validated; imports run one at a time and to completion even if the
//! client goes away (a killed `nix-store --import` would leave a partial closure).

use std::io::{BufReader, BufWriter, Read, Seek as _, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use hostctl_nix::export_stream::{check_against_header, validate_export, ExportError};
use hostctl_nix::{Nix, NixError};
use hostctl_schemas::ids::StorePath;

use crate::host::invalid_paths;
use crate::import_roots::ImportRoots;

/// In the import directory while `nix-store --import` registers paths and until their
/// files are synced: the paths the import adds, one a line. A power cut in between leaves
/// registered paths whose files were lost (found by the VM lane's power cuts,
/// tests/vm_power.rs: `nix store verify` "was modified!"); the next start deletes them
/// ([`Importer::recover_interrupted`]). No deployment can have used them: the import had
/// not answered.
const REGISTERING: &str = "registering";

/// Why an import failed; nothing it added stays in the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The stream is not what it must be (compression, export format, the paths it
    /// carries, references outside the store).
    #[error("{0}")]
    Invalid(String),
    /// The agent failed (temporary files, Nix); the message keeps the cause.
    #[error("{0}")]
    Internal(String),
}

impl From<NixError> for ImportError {
    fn from(e: NixError) -> Self {
        Self::Internal(e.to_string())
    }
}

/// Imports streams into the store, one at a time.
#[derive(Debug)]
pub struct Importer {
    nix: Arc<Nix>,
    pub(crate) tmp_dir: PathBuf,
    /// Serialises imports: the clean-up after a failed import deletes paths that were
    /// missing before it, which must not race another import adding the same paths.
    lock: tokio::sync::Mutex<()>,
    roots: Option<Arc<ImportRoots>>,
    /// The store's directory on the file system: its file system is synced after an import.
    store_dir: PathBuf,
}

impl Importer {
    /// `tmp_dir` holds the streams while they are checked; leftovers of a crash are removed.
    pub fn new(nix: Arc<Nix>, tmp_dir: PathBuf, store_dir: PathBuf) -> std::io::Result<Self> {
        if let Ok(entries) = std::fs::read_dir(&tmp_dir) {
            for entry in entries.flatten().filter(|e| e.file_name() != REGISTERING) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        crate::journal::create_private_dir(&tmp_dir).map_err(std::io::Error::other)?;
        Ok(Self { nix, tmp_dir, lock: tokio::sync::Mutex::new(()), roots: None, store_dir })
    }

    /// Imported paths get GC roots in `roots` until a deployment ends (`import_roots.rs`).
    pub fn with_roots(mut self, roots: Arc<ImportRoots>) -> Self {
        self.roots = Some(roots);
        self
    }

    /// A new temporary file in the import directory for a compressed stream being
    /// received (removed when dropped), and a handle to write it with.
    pub fn spool_file(&self) -> Result<(tempfile::NamedTempFile, std::fs::File), ImportError> {
        let tmp_err = |e| self.tmp_error(e);
        let file =
            tempfile::Builder::new().prefix("import-").suffix(".zst").tempfile_in(&self.tmp_dir).map_err(tmp_err)?;
        let writer = file.reopen().map_err(tmp_err)?;
        Ok((file, writer))
    }

    fn tmp_error(&self, e: std::io::Error) -> ImportError {
        ImportError::Internal(format!("cannot create a temporary file in {}: {e}", self.tmp_dir.display()))
    }
}

impl Importer {
    /// Imports the zstd export in `compressed` carrying exactly `paths`, all or nothing.
    pub async fn import(
        &self,
        compressed: tempfile::NamedTempFile,
        paths: Vec<StorePath>,
    ) -> Result<Vec<StorePath>, ImportError> {
        let _one_at_a_time = self.lock.lock().await;
        let tmp_err = |e: std::io::Error| self.tmp_error(e);
        let plain =
            tempfile::Builder::new().prefix("import-").suffix(".nar").tempfile_in(&self.tmp_dir).map_err(tmp_err)?;
        let (source, sink) = (compressed.reopen().map_err(tmp_err)?, plain.reopen().map_err(tmp_err)?);
        let exported = tokio::task::spawn_blocking(move || decompress_and_validate(source, sink))
            .await
            .map_err(|e| ImportError::Internal(format!("the validation task failed: {e}")))??;
        drop(compressed);
        let external = check_against_header(&exported, &paths).map_err(ImportError::Invalid)?;
        let external_invalid = invalid_paths(&self.nix, &external).await?;
        let absent: Vec<&StorePath> = external.iter().filter(|p| external_invalid.contains(*p)).collect();
        if let Some(first) = absent.first() {
            return Err(ImportError::Invalid(format!(
                "the stream's paths refer to {first} (and {} more), which is neither in the stream nor in this host's store",
                absent.len() - 1
            )));
        }
        let order: Vec<StorePath> = exported.iter().map(|e| e.path.clone()).collect();
        let missing_before = invalid_paths(&self.nix, &order).await?;
        let new: Vec<StorePath> = order.iter().filter(|p| missing_before.contains(*p)).cloned().collect();
        crate::pause::point("import:validated");
        let mut stream = plain.reopen().map_err(tmp_err)?;
        stream.seek(SeekFrom::Start(0)).map_err(tmp_err)?;
        let registering = self.tmp_dir.join(REGISTERING);
        let listed: String = new.iter().map(|p| format!("{p}\n")).collect();
        crate::journal::write_atomically(&registering, listed.as_bytes()).map_err(tmp_err)?;
        let registered = self.register(stream, &new, &order).await;
        if let Err(e) = std::fs::remove_file(&registering) {
            tracing::error!(file = %registering.display(), error = %e, "cannot remove the import's path list");
        }
        registered?;
        crate::pause::point("import:synced");
        tracing::info!(paths = order.len(), new = new.len(), "import done");
        if let Some(roots) = &self.roots {
            // The paths are whole either way; unrooted they only risk a collection before
            // their deployment, which then fails naming them.
            if let Err(e) = roots.hold(&exported).await {
                tracing::error!(error = %e, "cannot protect the imported paths from garbage collection");
            }
        }
        Ok(order)
    }

    /// `nix-store --import` of `stream`, checks that all of `order` is valid, then syncs
    /// the store's file system; on a failure the `new` paths are deleted again.
    async fn register(&self, stream: std::fs::File, new: &[StorePath], order: &[StorePath]) -> Result<(), ImportError> {
        if let Err(e) = self.nix.import_file(stream).await {
            self.undo(new).await;
            return Err(e.into());
        }
        let still_invalid = invalid_paths(&self.nix, order).await?;
        if !still_invalid.is_empty() {
            self.undo(new).await;
            let list: Vec<&str> = still_invalid.iter().map(StorePath::as_str).collect();
            return Err(ImportError::Internal(format!(
                "nix-store --import succeeded but these paths are not valid: {}",
                list.join(" ")
            )));
        }
        crate::pause::point("import:registered");
        // Nix registers a path in its database (which it syncs) without syncing the path's
        // files: a power cut soon after leaves a valid path whose contents are lost (found
        // by the VM lane, tests/vm_power.rs). Nothing may rely on the import before its
        // files are on disk; until then `REGISTERING` names them.
        // The store's file system only (syncfs), not every file system of the host.
        let store_dir = self.store_dir.clone();
        tokio::task::spawn_blocking(move || crate::host::sync_file_system_of(&store_dir))
            .await
            .map_err(|e| e.to_string())
            .and_then(|synced| synced)
            .map_err(|e| ImportError::Internal(format!("syncing the imported paths failed: {e}")))
    }

    /// Deletes the paths an import was registering when the agent (or the host) stopped
    /// before their files were synced (see [`REGISTERING`]); called at start, before
    /// anything is served. A failure is logged and the list kept for the next start.
    pub async fn recover_interrupted(&self) {
        let registering = self.tmp_dir.join(REGISTERING);
        let Ok(text) = std::fs::read_to_string(&registering) else { return };
        let paths: Vec<StorePath> = text.lines().filter_map(|line| line.parse().ok()).collect();
        tracing::warn!(paths = paths.len(), "deleting the paths of an import cut short before they were synced");
        if let Err(e) = self.nix.delete_paths(&paths).await {
            return tracing::error!(error = %e, "cannot delete the paths of an import cut short");
        }
        if let Err(e) = std::fs::remove_file(&registering) {
            tracing::error!(file = %registering.display(), error = %e, "cannot remove the import's path list");
        }
    }

    /// Deletes the paths this import added (all or nothing), and what it left of those it
    /// did not get to register: `nix-store --import` cut short (a full disk) leaves the path
    /// it was writing on disk, invalid but holding the space. `nix-store --delete` takes
    /// valid, invalid and absent paths alike. A failure is only logged, the request fails
    /// either way.
    async fn undo(&self, new: &[StorePath]) {
        if let Err(e) = self.nix.delete_paths(new).await {
            tracing::error!(error = %e, "cannot delete the paths of a failed import");
        }
    }
}

/// A reader that copies what it reads to a writer (the decompressed stream, kept for
/// `nix-store --import`).
struct Tee<R, W> {
    reader: R,
    copy: W,
    /// A failure to write the copy: the agent's problem (disk full), not the stream's.
    copy_error: Option<std::io::Error>,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.reader.read(buf)?;
        if let Err(e) = self.copy.write_all(&buf[..n]) {
            let kind = e.kind();
            self.copy_error = Some(e);
            return Err(std::io::Error::new(kind, "cannot write the decompressed stream"));
        }
        Ok(n)
    }
}

/// Decompresses `source` into `sink` while validating it; `sink` is synced at the end.
fn decompress_and_validate(
    source: std::fs::File,
    sink: std::fs::File,
) -> Result<Vec<hostctl_nix::export_stream::ExportedPath>, ImportError> {
    let decoder = zstd::Decoder::new(BufReader::new(source))
        .map_err(|e| ImportError::Invalid(format!("the import body is not zstd-compressed: {e}")))?;
    let mut tee = Tee { reader: decoder, copy: BufWriter::new(sink), copy_error: None };
    let exported = validate_export(&mut tee).map_err(|e| match (e, tee.copy_error.take()) {
        (_, Some(io)) => ImportError::Internal(format!("cannot write the decompressed stream: {io}")),
        (ExportError::Read(io), None) => {
            ImportError::Invalid(format!("the import body is not a valid zstd stream: {io}"))
        }
        (other, None) => ImportError::Invalid(other.to_string()),
    })?;
    let sink = tee.copy.into_inner().map_err(|e| ImportError::Internal(format!("cannot write the stream: {e}")))?;
    sink.sync_all().map_err(|e| ImportError::Internal(format!("cannot write the stream: {e}")))?;
    Ok(exported)
}
