//! API failures: every error the HTTP API answers with (the domain modules' errors map to
//! it here), as [`ApiError`] JSON
//! (`{"error": "<code>", "message": "..."}`) and the status its [`ErrorCode`] maps to.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hostctl_nix::NixError;
use hostctl_schemas::api::{ApiError, ErrorCode};

use crate::bundle::BundleFailure;
use crate::deploy_error::DeployError;
use crate::import::ImportError;

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

/// 400, 404, 409 or 500, as the deployer says; its message unchanged.
impl From<DeployError> for ApiFailure {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::Invalid(m) => Self::bad_request(m),
            DeployError::NotFound(m) => Self::not_found(m),
            DeployError::Conflict(m) => Self::conflict(m),
            DeployError::Internal(m) => Self::internal(m),
        }
    }
}

/// A stream that is not what it must be is the client's fault (400), the rest the agent's.
impl From<ImportError> for ApiFailure {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::Invalid(m) => Self::bad_request(m),
            ImportError::Internal(m) => Self::internal(m),
        }
    }
}

/// An untrusted bundle is a 401, an outdated one a 409.
impl From<BundleFailure> for ApiFailure {
    fn from(e: BundleFailure) -> Self {
        match e {
            BundleFailure::Untrusted(m) => Self::unauthorized(m),
            BundleFailure::Invalid(m) => Self::bad_request(m),
            BundleFailure::Outdated(m) => Self::conflict(m),
            BundleFailure::Internal(m) => Self::internal(m),
            BundleFailure::Import(e) => e.into(),
            BundleFailure::Deploy(e) => e.into(),
        }
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

/// 409 while a deployment is open, 500 otherwise (Nix's own words kept).
impl From<crate::gc::GcError> for ApiFailure {
    fn from(e: crate::gc::GcError) -> Self {
        match e {
            crate::gc::GcError::Busy(_) => Self::conflict(e.to_string()),
            crate::gc::GcError::Nix(_) | crate::gc::GcError::Read(_) => Self::internal(e.to_string()),
        }
    }
}
