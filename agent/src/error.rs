//! API failures: every error the HTTP API answers with, as [`ApiError`] JSON
//! (`{"error": "<code>", "message": "..."}`) and the status its [`ErrorCode`] maps to.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hostctl_nix::NixError;
use hostctl_schemas::api::{ApiError, ErrorCode};

/// An error to answer a request with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiFailure {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiFailure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// 400: the request names something invalid; the message names the field or path.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 401: any authentication failure.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn too_large(limit: u64) -> Self {
        Self::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than this endpoint's limit of {limit} bytes"),
        )
    }

    /// 500: the agent failed; the message keeps the underlying error (Nix's own words).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl From<NixError> for ApiFailure {
    fn from(e: NixError) -> Self {
        Self::internal(e.to_string())
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        if self.code == ErrorCode::Internal {
            tracing::error!(message = %self.message, "request failed");
        } else {
            tracing::debug!(code = ?self.code, message = %self.message, "request refused");
        }
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(ApiError { error: self.code, message: self.message })).into_response()
    }
}
