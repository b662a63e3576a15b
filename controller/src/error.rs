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
    #[error("no host `{host}` in {fleet}{hint}; its hosts: {known}")]
    UnknownHost { host: String, fleet: String, hint: String, known: String },
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
    #[error("--nix-option: {0}")]
    NixOption(#[from] hostctl_nix::command::NixOptionError),
    /// No `--fleet`, no `HOSTCTL_FLEET`, and no `fleet.yaml` up from the working directory.
    #[error("no fleet.yaml in {dir} or a directory above it; pass --fleet FILE or set HOSTCTL_FLEET")]
    NoFleet { dir: String },
    /// Nix cannot be run at all: said once for the run, not once per host.
    #[error("cannot run Nix (`{argv}`): {source}; hostctl needs `nix` on PATH (Debian: `apt-get install nix-bin`)")]
    NixMissing {
        argv: String,
        #[source]
        source: std::io::Error,
    },
    /// `flake.lock` does not match `flake.nix`'s inputs: said once for the run, with Nix's
    /// message, not once per host.
    #[error(
        "{lock}: does not match the inputs of flake.nix (run `nix flake lock` in {dir} and commit flake.lock); Nix said:\n{message}"
    )]
    StaleLock { lock: String, dir: String, message: String },
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
    /// The commit fails a host's signature policy (`commits`), without `--allow-unsigned`.
    #[error("{0}")]
    CommitRefused(String),
    /// A signature policy that cannot be used (key file unreadable, no repository).
    #[error("{0}")]
    CommitPolicy(String),
}

/// What `--json` prints on stdout when the whole run failed (no per-host results):
/// `{"error": {"kind", "message", "exit_code"}}`.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct ErrorDocument {
    pub error: ErrorBody,
}

#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct ErrorBody {
    /// What kind of error, stable for scripts: `inventory`, `select`, `no-fleet`, `nix-failed`,
    /// `signing-key`, `stale-lock`, `nix-missing`, ...
    pub kind: &'static str,
    /// The message hostctl prints on stderr (without `error: `).
    pub message: String,
    /// The process's exit code: 2 bad input (nothing was changed), 1 otherwise.
    pub exit_code: u8,
}

impl Error {
    /// The `--json` document for this error.
    pub fn document(&self) -> ErrorDocument {
        ErrorDocument { error: ErrorBody { kind: self.kind(), message: self.to_string(), exit_code: self.exit_code() } }
    }

    fn kind(&self) -> &'static str {
        match self {
            Error::Inventory(_) => "inventory",
            Error::Select(_) | Error::UnknownHost { .. } => "select",
            Error::Flake(_) | Error::FlakeRef { .. } => "flake",
            Error::Lock(_) => "lock",
            Error::Nix(_) => "nix-failed",
            Error::Key(_) | Error::NoSigningKey { .. } => "signing-key",
            Error::Target(_) => "rollback-target",
            Error::GitHistory(_) => "git-history",
            Error::Output(_) => "output",
            Error::Cache(_) => "cache",
            Error::NixMissing { .. } => "nix-missing",
            Error::StaleLock { .. } => "stale-lock",
            Error::NixOption(_) => "nix-option",
            Error::NoFleet { .. } => "no-fleet",
            Error::Declined(_) => "declined",
            Error::CommitRefused(_) => "commit-refused",
            Error::CommitPolicy(_) => "commit-policy",
            Error::KnownAgents(_) => "known-agents",
            Error::WritePins { .. } => "write-pins",
        }
    }

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
            | Error::StaleLock { .. }
            | Error::NoFleet { .. }
            | Error::NixOption(_)
            | Error::Declined(_)
            | Error::CommitRefused(_)
            | Error::CommitPolicy(_)
            | Error::KnownAgents(_) => EXIT_BAD_INPUT,
            Error::Nix(_) | Error::NixMissing { .. } | Error::Output(_) | Error::GitHistory(_) | Error::WritePins { .. } => EXIT_FAILED,
        }
    }
}
