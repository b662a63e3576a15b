//! [`StoreRoot`]: a private Nix store (`local?root=DIR`) per test, removed on drop.

use std::path::{Path, PathBuf};

use crate::fail;

/// A private Nix store for one test (`--store 'local?root=DIR'`), removed on drop, also
/// when the test fails.
///
/// Nix makes store paths read-only (directories 0555), so a plain [`tempfile::TempDir`]
/// drop would fail for a non-root user (and silently: `TempDir` ignores errors on drop);
/// this guard gives every directory `u+rwx` back first.
#[derive(Debug)]
pub struct StoreRoot {
    tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
}

impl StoreRoot {
    pub fn new() -> Self {
        let tmp = match tempfile::Builder::new().prefix("hostctl-store-").tempdir() {
            Ok(t) => t,
            Err(e) => fail(&format!("cannot create a temp dir for a Nix store: {e}")),
        };
        let dir = tmp.path().to_path_buf();
        Self { tmp: Some(tmp), dir }
    }

    /// The root directory: the store itself is `<root>/nix/store`.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The store URL for `--store`: `local?root=<root>`.
    pub fn url(&self) -> String {
        format!("local?root={}", self.dir.display())
    }

    /// Where the store object `/nix/store/<base>` really lives on disk.
    pub fn physical(&self, store_path: &str) -> PathBuf {
        self.dir.join(store_path.trim_start_matches('/'))
    }
}

impl Default for StoreRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StoreRoot {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            make_dirs_writable(tmp.path());
            if let Err(e) = tmp.close() {
                // Not a test failure: the test's verdict is already decided; say so loudly.
                eprintln!("warning: cannot remove the test store {}: {e}", self.dir.display());
            }
        }
    }
}

/// `chmod -R u+rwx` on directories (files need no permission to be unlinked). Never
/// follows symlinks, so nothing outside `dir` is touched.
pub(crate) fn make_dirs_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else { return };
    if !meta.is_dir() {
        return;
    }
    let mut perms = meta.permissions();
    perms.set_mode(perms.mode() | 0o700);
    let _ = std::fs::set_permissions(dir, perms);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            make_dirs_writable(&entry.path());
        }
    }
}
