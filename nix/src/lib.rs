//! The typed Nix layer: the one place that runs `nix`, and that knows how Nix sees a flake.
//!
//! - [`command`]: invocations as values (argv inspectable without running Nix);
//! - [`runner`]: the [`Nix`] handle that runs them and the [`NixError`] they fail with;
//! - [`version`]: what differs between Nix releases;
//! - [`output`]: Nix's JSON parsed into types, and typed operations;
//! - [`export_stream`]: the `nix-store --export` format, parsed and checked path by path;
//! - [`import`]: adding `nix-store --export` streams to the store (and undoing that);
//! - [`gc`]: GC roots, dead paths, sizes and deleting generations (garbage collection);
//! - [`profile`]: profiles and their generations (`nix-env`);
//! - [`flake`]: the flake's git state (what Nix will and won't see) and its `flake.lock`.

pub mod boot_parts;
pub mod command;
pub mod export_stream;
pub mod flake;
pub mod gc;
pub mod import;
pub mod output;
pub mod profile;
pub mod runner;
pub mod version;

pub use command::{FlakeRef, NixCommand, NixOption, Program};
pub use output::{BuildResult, Derivation, FlakeMetadata, PathInfo, Toplevel};
pub use runner::{Nix, NixError, NixStdout};
pub use version::NixVersion;
