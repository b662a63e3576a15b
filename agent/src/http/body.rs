//! Request bodies read within a size limit and a stall timeout: buffered in memory (JSON
//! endpoints, parsed by [`parse_json`]) or streamed to a file while hashing (imports). Both
//! hash what they read, so the caller can check the signed `x-hostctl-content-sha256`
//! before using a byte of it. A declared `Content-Length` over the limit is refused
//! before anything is read ([`check_declared_length`]).

use std::future::poll_fn;
use std::pin::Pin;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use serde::de::DeserializeOwned;

use super::error::ApiFailure;

/// The largest compressed import body accepted (`POST /v1/paths/import`, `POST
/// /v1/bundles`), in bytes.
pub const IMPORT_BODY_LIMIT: u64 = 64 * 1024 * 1024 * 1024;

/// The longest a request body may send nothing: the next bytes of a body (an import can
/// run for an hour) must come within it, or the request fails and its connection, file
/// descriptor and spool file are freed. As long as the kernel's dead-link timeout
/// (`TCP_USER_TIMEOUT`, `super::server`), so a live client that stopped sending is cut
/// off like a dead one.
pub const BODY_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than this endpoint's limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("cannot read the request body: {0}")]
    Read(String),
    #[error("the request body sent nothing for {} s", BODY_STALL_TIMEOUT.as_secs())]
    Stalled,
    #[error("cannot write the request body to {file}: {source}")]
    Write {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<BodyError> for ApiFailure {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge { limit } => ApiFailure::too_large(limit),
            BodyError::Read(_) | BodyError::Stalled => ApiFailure::bad_request(e.to_string()),
            BodyError::Write { .. } => ApiFailure::internal(e.to_string()),
        }
    }
}

/// Parses a JSON body; errors name the field (`paths[2]: invalid store path ...`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiFailure> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // `?`: the error is not inside any field (e.g. the body ends early).
        if path.is_empty() || path == "." || path == "?" {
            ApiFailure::bad_request(format!("invalid request body: {inner}"))
        } else {
            ApiFailure::bad_request(format!("{path}: {inner}"))
        }
    })
}

/// Refuses early when the declared `Content-Length` is already over the limit.
pub fn check_declared_length(headers: &HeaderMap, limit: u64) -> Result<(), BodyError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit => Err(BodyError::TooLarge { limit }),
        _ => Ok(()),
    }
}

/// The next data chunk of `body` (trailers are skipped), `None` at its end; fails when
/// nothing arrives for [`BODY_STALL_TIMEOUT`].
pub async fn next_chunk(body: &mut Body) -> Option<Result<Bytes, BodyError>> {
    next_chunk_within(body, BODY_STALL_TIMEOUT).await
}

async fn next_chunk_within(body: &mut Body, stall: std::time::Duration) -> Option<Result<Bytes, BodyError>> {
    loop {
        let frame = match tokio::time::timeout(stall, poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))).await {
            Ok(frame) => frame?,
            Err(_) => return Some(Err(BodyError::Stalled)),
        };
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(e) => return Some(Err(BodyError::Read(e.to_string()))),
        }
    }
}

/// Reads the whole body into memory, failing as soon as it exceeds `limit`. Returns it
/// with its SHA-256 (lowercase hex).
pub async fn read_limited(mut body: Body, limit: u64) -> Result<(Bytes, String), BodyError> {
    let mut buf = Vec::new();
    let mut hasher = Sha256::new();
    while let Some(chunk) = next_chunk(&mut body).await {
        let chunk = chunk?;
        if buf.len() as u64 + chunk.len() as u64 > limit {
            return Err(BodyError::TooLarge { limit });
        }
        hasher.update(&chunk);
        buf.extend_from_slice(&chunk);
    }
    Ok((Bytes::from(buf), hex::encode(hasher.finalize())))
}

/// Streams the body into `file` (flushed and synced at the end), failing as soon as it
/// exceeds `limit`. Returns the byte count and the SHA-256 (lowercase hex).
pub async fn stream_to_file(
    mut body: Body,
    file: &mut tokio::fs::File,
    file_name: &str,
    limit: u64,
) -> Result<(u64, String), BodyError> {
    let write_err = |source| BodyError::Write { file: file_name.to_owned(), source };
    let mut hasher = Sha256::new();
    let mut len: u64 = 0;
    while let Some(chunk) = next_chunk(&mut body).await {
        let chunk = chunk?;
        len += chunk.len() as u64;
        if len > limit {
            return Err(BodyError::TooLarge { limit });
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(write_err)?;
        crate::pause::point("upload:mid-stream");
    }
    file.flush().await.map_err(write_err)?;
    file.sync_all().await.map_err(write_err)?;
    Ok((len, hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limits_and_hashes() {
        let (bytes, hash) = read_limited(Body::from("abc"), 3).await.unwrap();
        assert_eq!(&bytes[..], b"abc");
        assert_eq!(hash, hostctl_schemas::signing::body_sha256(b"abc"));
        assert!(matches!(read_limited(Body::from("abcd"), 3).await, Err(BodyError::TooLarge { limit: 3 })));
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "10".parse().unwrap());
        assert!(check_declared_length(&headers, 10).is_ok());
        assert!(check_declared_length(&headers, 9).is_err());
    }

    #[tokio::test]
    async fn a_stalled_body_fails() {
        /// Sends its bytes, then nothing, without ending.
        struct Stalling(Option<Bytes>);
        impl HttpBody for Stalling {
            type Data = Bytes;
            type Error = std::convert::Infallible;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
                match self.0.take() {
                    Some(bytes) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(bytes)))),
                    None => std::task::Poll::Pending,
                }
            }
        }
        let mut body = Body::new(Stalling(Some(Bytes::from_static(b"abc"))));
        let stall = std::time::Duration::from_millis(50);
        assert_eq!(&next_chunk_within(&mut body, stall).await.unwrap().unwrap()[..], b"abc");
        assert!(matches!(next_chunk_within(&mut body, stall).await, Some(Err(BodyError::Stalled))));
    }

    #[tokio::test]
    async fn streams_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("body");
        let mut file = tokio::fs::File::create(&path).await.unwrap();
        let (len, hash) = stream_to_file(Body::from("hello"), &mut file, "body", 100).await.unwrap();
        assert_eq!((len, hash), (5, hostctl_schemas::signing::body_sha256(b"hello")));
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        let mut file = tokio::fs::File::create(&path).await.unwrap();
        assert!(stream_to_file(Body::from("hello"), &mut file, "body", 4).await.is_err());
    }
}
