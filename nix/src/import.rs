//! Adding `nix-store --export` streams to the store, and removing paths again.
//!
//! `nix-store --import` is not atomic (Nix 2.8 and later alike): it registers each path as
//! soon as it has read it, so a stream that breaks after the first path leaves that path
//! valid. Callers that need all-or-nothing validate the stream completely first (the agent
//! does) and undo a failed import with [`Nix::delete_paths`].

use hostctl_schemas::ids::StorePath;

use crate::command::NixCommand;
use crate::runner::{Nix, NixError};

impl Nix {
    /// Imports the export stream in `stream` (read from the start); returns the paths Nix
    /// printed as imported. Run it to completion: dropping the future kills `nix-store`
    /// in the middle of the stream.
    pub async fn import_file(&self, stream: std::fs::File) -> Result<Vec<String>, NixError> {
        let out = self.run_with_stdin_file(&NixCommand::import(), stream).await?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
    }

    /// Adds the file or directory at `path` (absolute) to the store; returns its store path.
    pub async fn add_to_store(&self, path: &std::path::Path) -> Result<StorePath, NixError> {
        let cmd = NixCommand::add_to_store(path);
        if !path.is_absolute() {
            return Err(self.bad_output(&cmd, "the path to add must be absolute".into(), b""));
        }
        let out = self.run(&cmd).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim().parse::<StorePath>().map_err(|e| self.bad_output(&cmd, e.to_string(), &out.stdout))
    }

    /// Deletes `paths` from the store (`nix-store --delete`); fails if something outside
    /// the set still needs one of them.
    pub async fn delete_paths(&self, paths: &[StorePath]) -> Result<(), NixError> {
        if paths.is_empty() {
            return Ok(());
        }
        self.run(&NixCommand::delete(paths)).await.map(|_| ())
    }
}
