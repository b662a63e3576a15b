//! [`DeployError`]: why the deployer refused or failed a request (create, confirm,
//! rollback). It knows nothing of HTTP; the API (`crate::http::error`) and D-Bus
//! (`crate::dbus::service`) each map its kinds to their own answers.

use hostctl_nix::NixError;

use crate::journal::JournalError;

/// Why a deployment request was refused or failed; the message is for humans and names
/// the field or the deployment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeployError {
    /// The request names something invalid (a field, a system that is not one).
    #[error("{0}")]
    Invalid(String),
    /// What the request names does not exist (a deployment, a generation, a lock).
    #[error("{0}")]
    NotFound(String),
    /// Another deployment is open or in the way, or the id is taken by other content.
    #[error("{0}")]
    Conflict(String),
    /// The agent failed (journal, Nix, the profile); the message keeps the cause.
    #[error("{0}")]
    Internal(String),
}

impl DeployError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(message.into())
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }
}

impl From<NixError> for DeployError {
    fn from(e: NixError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<JournalError> for DeployError {
    fn from(e: JournalError) -> Self {
        Self::Internal(e.to_string())
    }
}
