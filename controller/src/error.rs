//! The controller's error type, and the one place errors become exit codes.

use hostctl_nix::command::FlakeRefError;
use hostctl_nix::flake::{FlakeError, LockError};
use hostctl_nix::NixError;
use hostctl_schemas::inventory::InventoryError;
use hostctl_schemas::signing::SecretKeyError;

use crate::select::SelectError;

/// `2`: bad invocation or bad input; nothing was changed.
pub const EXIT_BAD_INPUT: u8 = 2;
/// `1`: at least one host failed (or hostctl itself could not do its work).
pub const EXIT_FAILED: u8 = 1;

/// Everything that stops a command before per-host results exist.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error(transparent)]
    Flake(#[from] FlakeError),
    #[error("{fleet}: flake: {source}")]
    FlakeRef {
        fleet: String,
        #[source]
        source: FlakeRefError,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Nix(#[from] NixError),
    /// The signing key file is missing or not a Nix ed25519 secret key.
    #[error(transparent)]
    Key(#[from] SecretKeyError),
    #[error(
        "{fleet}: no signing key to authenticate to the agents: set `signing_key` (a file written by \
         `nix key generate-secret`, relative to this file) or pass --key FILE"
    )]
    NoSigningKey { fleet: String },
    #[error("no host `{host}` in {fleet}; its hosts: {known}")]
    UnknownHost { host: String, fleet: String, known: String },
    /// A rollback target that names nothing (unknown lock or revision, bad syntax).
    #[error("{0}")]
    Target(String),
    /// The flake repository's history could not be read.
    #[error(transparent)]
    GitHistory(#[from] hostctl_nix::flake::GitLockError),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// `--via-cache` / `cache:` cannot be used as given.
    #[error(transparent)]
    Cache(#[from] crate::cache::KeyPathError),
    /// `apply --diff` was not confirmed: nothing was changed.
    #[error("not applied: {0}; nothing was changed")]
    Declined(String),
    /// The `known_agents` file beside the fleet file has a bad line (file:line).
    #[error(transparent)]
    KnownAgents(#[from] hostctl_schemas::known_agents::KnownAgentsError),
    /// `known_agents` could not be written (`hostctl enroll`).
    #[error("cannot write {file}: {source}")]
    WritePins {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Inventory(_)
            | Error::Select(_)
            | Error::Flake(_)
            | Error::FlakeRef { .. }
            | Error::Lock(_)
            | Error::Key(_)
            | Error::NoSigningKey { .. }
            | Error::UnknownHost { .. }
            | Error::Target(_)
            | Error::Cache(_)
            | Error::Declined(_)
            | Error::KnownAgents(_) => EXIT_BAD_INPUT,
            Error::Nix(_) | Error::Output(_) | Error::GitHistory(_) | Error::WritePins { .. } => EXIT_FAILED,
        }
    }
}
