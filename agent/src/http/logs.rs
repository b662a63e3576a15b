//! `GET /v1/deployments/{id}/log?offset=N` — signed (any trusted key); read-only. A
//! piece of a deployment's whole activation log from byte `offset`; types in
//! `hostctl_schemas::api::logs`.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use hostctl_schemas::api::logs::{LogChunk, LogQuery, CHUNK_LIMIT};

use super::deployments::deployment_id;
use super::error::ApiFailure;
use super::state::AppState;

/// `GET /v1/deployments/{id}/log`.
pub async fn log(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Json<LogChunk>, ApiFailure> {
    let id = deployment_id(id)?;
    let Query(LogQuery { offset }) = query.map_err(|e| ApiFailure::bad_request(e.body_text()))?;
    // The state first: once it is final, the log read after it is whole.
    let deployer = &app.agent.deployer;
    let state = deployer.get(&id).ok_or_else(|| ApiFailure::not_found(format!("no deployment `{id}`")))?.state;
    let file = deployer.journal().log_path(&id);
    let (bytes, len) = tokio::task::spawn_blocking(move || read_piece(&file, offset))
        .await
        .map_err(|e| ApiFailure::internal(format!("reading the log failed: {e}")))?
        .map_err(ApiFailure::internal)?;
    let at_end = offset + bytes.len() as u64 >= len;
    let text = whole_characters(&bytes, at_end);
    let next_offset = offset + text.len() as u64;
    let complete = state.is_final() && next_offset >= len;
    let text = String::from_utf8_lossy(text).into_owned();
    Ok(Json(LogChunk { id, offset, text, next_offset, state, complete }))
}

/// Up to [`CHUNK_LIMIT`] bytes of `file` from `offset`, and the file's length (an absent
/// log, before the activation started, is empty).
fn read_piece(file: &PathBuf, offset: u64) -> Result<(Vec<u8>, u64), String> {
    let mut f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(format!("cannot open {}: {e}", file.display())),
    };
    let err = |e: std::io::Error| format!("cannot read {}: {e}", file.display());
    let len = f.metadata().map_err(err)?.len();
    if offset > len {
        return Ok((Vec::new(), len));
    }
    f.seek(SeekFrom::Start(offset)).map_err(err)?;
    let mut bytes = Vec::new();
    f.take(CHUNK_LIMIT).read_to_end(&mut bytes).map_err(err)?;
    Ok((bytes, len))
}

/// `bytes` without a UTF-8 character cut at its end (kept for the next piece), unless
/// the log ends there.
fn whole_characters(bytes: &[u8], at_end: bool) -> &[u8] {
    match std::str::from_utf8(bytes) {
        Err(e) if e.error_len().is_none() && !at_end => &bytes[..e.valid_up_to()],
        _ => bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_end_on_character_boundaries() {
        let text = "ok é".as_bytes();
        assert_eq!(whole_characters(&text[..4], false), b"ok ", "the é waits for the next piece");
        assert_eq!(whole_characters(&text[..4], true), &text[..4], "the end of the log is the end");
        assert_eq!(whole_characters(text, false), text);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("d.log");
        assert_eq!(read_piece(&file, 0).unwrap(), (Vec::new(), 0), "no log yet");
        std::fs::write(&file, "line 1\nline 2\n").unwrap();
        assert_eq!(read_piece(&file, 7).unwrap(), (b"line 2\n".to_vec(), 14));
        assert_eq!(read_piece(&file, 99).unwrap(), (Vec::new(), 14));
    }
}
