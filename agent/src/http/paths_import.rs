//! `POST /v1/paths/import` — signed (any trusted key); adds to the store; body streamed
//! (up to [`IMPORT_BODY_LIMIT`]). A zstd-compressed `nix-store --export` stream of the
//! paths the `x-hostctl-paths` header lists: spooled to a file and its hash checked
//! against the signed one before [`crate::import::Importer`] reads a byte of it. Types in
//! `hostctl_schemas::api::paths`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use hostctl_schemas::api::paths::{ImportResponse, IMPORT_PATHS_HEADER};
use hostctl_schemas::ids::StorePath;

use super::auth::Authenticated;
use super::body::{check_declared_length, stream_to_file, IMPORT_BODY_LIMIT};
use super::error::ApiFailure;
use super::state::AppState;

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

pub async fn import(
    State(app): State<AppState>,
    Extension(auth): Extension<Authenticated>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ImportResponse>, ApiFailure> {
    let paths = header_paths(&headers)?;
    check_declared_length(&headers, IMPORT_BODY_LIMIT)?;
    let importer = Arc::clone(&app.agent.importer);
    let (compressed, writer) = importer.spool_file()?;
    let name = compressed.path().display().to_string();
    let mut file = tokio::fs::File::from_std(writer);
    let (len, sha256) = stream_to_file(body, &mut file, &name, IMPORT_BODY_LIMIT).await?;
    drop(file);
    auth.check_body(&sha256)?;
    tracing::info!(paths = paths.len(), bytes = len, "import stream received");
    // Detached from this request: once started, an import runs to its end.
    let task = tokio::spawn(async move { importer.import(compressed, paths).await });
    let imported = task.await.map_err(|e| ApiFailure::internal(format!("the import task failed: {e}")))??;
    Ok(Json(ImportResponse { imported }))
}
