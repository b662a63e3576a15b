//! Whether two NixOS toplevels differ in what only a reboot brings into effect: their
//! boot parts (`REBOOT_PARTS`: kernel, initrd, kernel modules, kernel parameters,
//! systemd). Reads links and small files only; used by the agent (against
//! `/run/booted-system`) and by the controller (`reboot: if-needed`).
//!
//! A part is the same when both systems have the same thing there: a link with the same
//! target (NixOS links `kernel`, `initrd`, `kernel-modules` and `systemd` into other store
//! paths), a file with the same text (`kernel-params` is a file of the toplevel itself,
//! so its path always differs), or nothing in both.

use std::path::{Path, PathBuf};

use hostctl_schemas::api::deployments::{RebootReason, REBOOT_PARTS};

/// The most of a file's text that is compared and shown (kernel parameters are a line).
const TEXT_LIMIT: u64 = 4096;

/// The parts that differ between the toplevel directories `booted` and `new` (empty:
/// no reboot needed).
pub fn compare(booted: &Path, new: &Path) -> Vec<RebootReason> {
    REBOOT_PARTS.iter().filter_map(|part| differs(part, booted, new)).collect()
}

/// The reason, if `part` differs between the two toplevel directories.
fn differs(part: &str, booted: &Path, new: &Path) -> Option<RebootReason> {
    let (was, now) = (Content::of(booted.join(part)), Content::of(new.join(part)));
    (was != now).then(|| RebootReason { part: part.to_owned(), booted: was.shown(), new: now.shown() })
}

/// What a system has at one part's path.
#[derive(Debug, PartialEq, Eq)]
enum Content {
    Nothing,
    /// A symbolic link, by its target.
    Link(PathBuf),
    /// A regular file, by its (first [`TEXT_LIMIT`] bytes of) text.
    Text(String),
    /// Anything else (a directory, a file that cannot be read): by its own path, so it
    /// differs between two toplevels.
    Other(PathBuf),
}

impl Content {
    fn of(path: PathBuf) -> Self {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { return Self::Nothing };
        if meta.file_type().is_symlink() {
            return std::fs::read_link(&path).map_or(Self::Other(path), Self::Link);
        }
        if meta.is_file() {
            use std::io::Read as _;
            let mut bytes = Vec::new();
            let read = std::fs::File::open(&path).and_then(|f| f.take(TEXT_LIMIT).read_to_end(&mut bytes));
            if read.is_ok() {
                return Self::Text(String::from_utf8_lossy(&bytes).trim().to_owned());
            }
        }
        Self::Other(path)
    }

    fn shown(&self) -> Option<String> {
        match self {
            Self::Nothing => None,
            Self::Link(p) | Self::Other(p) => Some(p.display().to_string()),
            Self::Text(t) => Some(t.clone()),
        }
    }
}
