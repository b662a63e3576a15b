//! `POST /v1/paths/import`: a zstd-compressed `nix-store --export` stream, imported all or
//! nothing.
//!
//! Steps: validate the `x-hostctl-paths` header; stream the body to a temporary file in
//! `<state_dir>/tmp` while hashing it; check the hash against the signed one; decompress
//! it to a second file while validating the export format completely
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

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use hostctl_nix::Nix;
use hostctl_schemas::api::paths::{ImportResponse, IMPORT_PATHS_HEADER};
use hostctl_schemas::ids::StorePath;

use crate::auth::Authenticated;
use crate::body::{check_declared_length, stream_to_file};
use crate::error::ApiFailure;
use crate::host::invalid_paths;
use crate::server::AppState;
use hostctl_nix::export_stream::{check_against_header, validate_export, ExportError};

/// The largest compressed import body accepted, in bytes.
pub const IMPORT_BODY_LIMIT: u64 = 64 * 1024 * 1024 * 1024;

/// Imports streams into the store, one at a time.
#[derive(Debug)]
pub struct Importer {
    nix: Arc<Nix>,
    pub(crate) tmp_dir: PathBuf,
    /// Serialises imports: the clean-up after a failed import deletes paths that were
    /// missing before it, which must not race another import adding the same paths.
    lock: tokio::sync::Mutex<()>,
}

impl Importer {
    /// `tmp_dir` holds the streams while they are checked; leftovers of a crash are removed.
    pub fn new(nix: Arc<Nix>, tmp_dir: PathBuf) -> std::io::Result<Self> {
        if let Ok(entries) = std::fs::read_dir(&tmp_dir) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        crate::journal::create_private_dir(&tmp_dir).map_err(std::io::Error::other)?;
        Ok(Self { nix, tmp_dir, lock: tokio::sync::Mutex::new(()) })
    }
}

/// The paths named by the `x-hostctl-paths` header, each validated.
pub fn header_paths(headers: &HeaderMap) -> Result<Vec<StorePath>, ApiFailure> {
    let value = headers
        .get(IMPORT_PATHS_HEADER)
        .ok_or_else(|| ApiFailure::bad_request(format!("missing header {IMPORT_PATHS_HEADER}")))?;
    let text = value
        .to_str()
        .map_err(|_| ApiFailure::bad_request(format!("header {IMPORT_PATHS_HEADER} is not ASCII text")))?;
    let mut paths: Vec<StorePath> = Vec::new();
    for item in text.split_ascii_whitespace() {
        let path =
            item.parse::<StorePath>().map_err(|e| ApiFailure::bad_request(format!("{IMPORT_PATHS_HEADER}: {e}")))?;
        if paths.contains(&path) {
            return Err(ApiFailure::bad_request(format!("{IMPORT_PATHS_HEADER}: {path} is listed twice")));
        }
        paths.push(path);
    }
    if paths.is_empty() {
        return Err(ApiFailure::bad_request(format!("{IMPORT_PATHS_HEADER} lists no store path")));
    }
    Ok(paths)
}

/// The handler.
pub async fn import(
    State(app): State<AppState>,
    Extension(auth): Extension<Authenticated>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ImportResponse>, ApiFailure> {
    let paths = header_paths(&headers)?;
    check_declared_length(&headers, IMPORT_BODY_LIMIT)?;
    let importer = Arc::clone(&app.importer);
    let tmp_err = |e: std::io::Error| {
        ApiFailure::internal(format!("cannot create a temporary file in {}: {e}", importer.tmp_dir.display()))
    };
    let compressed =
        tempfile::Builder::new().prefix("import-").suffix(".zst").tempfile_in(&importer.tmp_dir).map_err(tmp_err)?;
    let name = compressed.path().display().to_string();
    let mut file = tokio::fs::File::from_std(compressed.reopen().map_err(tmp_err)?);
    let (len, sha256) = stream_to_file(body, &mut file, &name, IMPORT_BODY_LIMIT).await?;
    drop(file);
    auth.check_body(&sha256)?;
    tracing::info!(paths = paths.len(), bytes = len, "import stream received");
    // Detached from this request: once started, an import runs to its end.
    let task = tokio::spawn(async move { importer.import(compressed, paths).await });
    let imported = task.await.map_err(|e| ApiFailure::internal(format!("the import task failed: {e}")))??;
    Ok(Json(ImportResponse { imported }))
}

impl Importer {
    /// Imports the zstd export in `compressed` carrying exactly `paths`, all or nothing.
    pub(crate) async fn import(
        &self,
        compressed: tempfile::NamedTempFile,
        paths: Vec<StorePath>,
    ) -> Result<Vec<StorePath>, ApiFailure> {
        let _one_at_a_time = self.lock.lock().await;
        let tmp_err = |e: std::io::Error| {
            ApiFailure::internal(format!("cannot create a temporary file in {}: {e}", self.tmp_dir.display()))
        };
        let plain =
            tempfile::Builder::new().prefix("import-").suffix(".nar").tempfile_in(&self.tmp_dir).map_err(tmp_err)?;
        let (source, sink) = (compressed.reopen().map_err(tmp_err)?, plain.reopen().map_err(tmp_err)?);
        let exported = tokio::task::spawn_blocking(move || decompress_and_validate(source, sink))
            .await
            .map_err(|e| ApiFailure::internal(format!("the validation task failed: {e}")))??;
        drop(compressed);
        let external = check_against_header(&exported, &paths).map_err(ApiFailure::bad_request)?;
        let external_invalid = invalid_paths(&self.nix, &external).await?;
        let absent: Vec<&StorePath> = external.iter().filter(|p| external_invalid.contains(*p)).collect();
        if let Some(first) = absent.first() {
            return Err(ApiFailure::bad_request(format!(
                "the stream's paths refer to {first} (and {} more), which is neither in the stream nor in this host's store",
                absent.len() - 1
            )));
        }
        let order: Vec<StorePath> = exported.into_iter().map(|e| e.path).collect();
        let missing_before = invalid_paths(&self.nix, &order).await?;
        let new: Vec<StorePath> = order.iter().filter(|p| missing_before.contains(*p)).cloned().collect();
        let mut stream = plain.reopen().map_err(tmp_err)?;
        stream.seek(SeekFrom::Start(0)).map_err(tmp_err)?;
        if let Err(e) = self.nix.import_file(stream).await {
            self.undo(&new).await;
            return Err(e.into());
        }
        let still_invalid = invalid_paths(&self.nix, &order).await?;
        if !still_invalid.is_empty() {
            self.undo(&new).await;
            let list: Vec<&str> = still_invalid.iter().map(StorePath::as_str).collect();
            return Err(ApiFailure::internal(format!(
                "nix-store --import succeeded but these paths are not valid: {}",
                list.join(" ")
            )));
        }
        tracing::info!(paths = order.len(), new = new.len(), "import done");
        Ok(order)
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
) -> Result<Vec<hostctl_nix::export_stream::ExportedPath>, ApiFailure> {
    let decoder = zstd::Decoder::new(BufReader::new(source))
        .map_err(|e| ApiFailure::bad_request(format!("the import body is not zstd-compressed: {e}")))?;
    let mut tee = Tee { reader: decoder, copy: BufWriter::new(sink), copy_error: None };
    let exported = validate_export(&mut tee).map_err(|e| match (e, tee.copy_error.take()) {
        (_, Some(io)) => ApiFailure::internal(format!("cannot write the decompressed stream: {io}")),
        (ExportError::Read(io), None) => {
            ApiFailure::bad_request(format!("the import body is not a valid zstd stream: {io}"))
        }
        (other, None) => ApiFailure::bad_request(other.to_string()),
    })?;
    let sink = tee.copy.into_inner().map_err(|e| ApiFailure::internal(format!("cannot write the stream: {e}")))?;
    sink.sync_all().map_err(|e| ApiFailure::internal(format!("cannot write the stream: {e}")))?;
    Ok(exported)
}
