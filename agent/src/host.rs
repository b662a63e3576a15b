//! What the host is and runs, read without spawning anything: its Nix system, the store
//! as files (a `local?root=` store lives under its root), `/run/current-system` and
//! `/run/booted-system`; and which store paths it has. Also where written files are
//! synced to disk (`sync_file_system_of`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use hostctl_nix::{Nix, NixError};
use hostctl_schemas::boot_config::DEFAULT_ESP;
use hostctl_schemas::ids::StorePath;

/// The Nix system this agent was built for, e.g. `x86_64-linux` (the agent runs natively,
/// so it is the host's).
pub fn nix_system() -> String {
    let arch = match std::env::consts::ARCH {
        "x86" => "i686",
        "arm" => "armv7l",
        other => other,
    };
    format!("{arch}-{}", std::env::consts::OS)
}

/// Where store paths are on the file system: `/nix/store/...` itself, or below the root of
/// a `local?root=DIR` store (used by tests that run an agent against a private store).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreFs {
    root: Option<PathBuf>,
}

impl StoreFs {
    /// From the agent's `store` setting: only a local store's `root=` moves files.
    pub fn from_store_url(store: Option<&str>) -> Self {
        let root = store
            .and_then(|url| url.strip_prefix("local?"))
            .and_then(|query| query.split('&').find_map(|kv| kv.strip_prefix("root=")))
            .filter(|root| !root.is_empty())
            .map(PathBuf::from);
        Self { root }
    }

    /// The store directory on the file system (`ROOT/nix/store` for a `root=` store).
    pub fn store_dir(&self) -> PathBuf {
        let store = Path::new(hostctl_schemas::ids::DEFAULT_STORE_DIR);
        match &self.root {
            Some(root) => root.join(store.strip_prefix("/").unwrap_or(store)),
            None => store.to_path_buf(),
        }
    }

    /// Bytes an unprivileged writer may still use on the store's file system, if readable.
    pub fn store_free_bytes(&self) -> Option<u64> {
        free_bytes(&self.store_dir())
    }

    /// Bytes free on [`DEFAULT_ESP`]'s file system (where boot loaders install kernels and
    /// initrds, the path the controller's boot-space message names) when it is another
    /// than the store's (a boot partition, e.g. the EFI system partition); `None` when it
    /// is the same one (the store's free space counts then) or cannot be read.
    pub fn boot_free_bytes(&self) -> Option<u64> {
        use std::os::unix::fs::MetadataExt as _;
        let boot = std::fs::metadata(DEFAULT_ESP).ok()?;
        let store = std::fs::metadata(self.store_dir()).ok()?;
        (boot.dev() != store.dev()).then(|| free_bytes(Path::new(DEFAULT_ESP))).flatten()
    }

    /// The file system path of `path`.
    pub fn real_path(&self, path: &StorePath) -> PathBuf {
        match &self.root {
            Some(root) => root.join(path.as_str().trim_start_matches('/')),
            None => path.as_path().to_path_buf(),
        }
    }
}

/// Bytes an unprivileged writer may still use on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let fs = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(fs.blocks_available().saturating_mul(fs.fragment_size()))
}

/// `/run/current-system`: the system running now.
pub const CURRENT_SYSTEM: &str = "/run/current-system";
/// `/run/booted-system`: the system the host booted.
pub const BOOTED_SYSTEM: &str = "/run/booted-system";

/// Where a symlink points, if it exists and is readable.
pub fn read_link_text(path: &Path) -> Option<String> {
    std::fs::read_link(path).ok().map(|target| target.to_string_lossy().into_owned())
}

/// How many paths one `nix-store --check-validity` gets: a 4 MiB request of paths would
/// exceed the kernel's argv limit in one command.
const VALIDITY_CHUNK: usize = 1000;

/// Which of `paths` are not valid in the store, asked in chunks.
pub async fn invalid_paths(nix: &Nix, paths: &[StorePath]) -> Result<HashSet<StorePath>, NixError> {
    let mut invalid = HashSet::new();
    for chunk in paths.chunks(VALIDITY_CHUNK) {
        let printed = nix.invalid_paths(chunk).await?;
        invalid.extend(chunk.iter().filter(|p| printed.iter().any(|i| i == p.as_str())).cloned());
    }
    Ok(invalid)
}

/// `syncfs(2)` on the file system holding `dir`: what an import or a pull fetch wrote
/// reaches the disk before anything relies on it (a power cut loses unsynced files).
pub(crate) fn sync_file_system_of(dir: &Path) -> Result<(), String> {
    let dir = std::fs::File::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    nix::unistd::syncfs(&dir).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_files_follow_the_store_root() {
        let p: StorePath = "/nix/store/zr2knphxg8yyy2mkq8akf2hfknjvdiz7-x".parse().unwrap();
        assert_eq!(StoreFs::from_store_url(None).real_path(&p), Path::new(p.as_str()));
        assert_eq!(StoreFs::from_store_url(Some("daemon")).real_path(&p), Path::new(p.as_str()));
        assert_eq!(
            StoreFs::from_store_url(Some("local?root=/tmp/r")).real_path(&p),
            Path::new("/tmp/r/nix/store/zr2knphxg8yyy2mkq8akf2hfknjvdiz7-x")
        );
        assert_eq!(
            StoreFs::from_store_url(Some("local?state=/s&root=/tmp/r")).real_path(&p),
            Path::new("/tmp/r/nix/store/zr2knphxg8yyy2mkq8akf2hfknjvdiz7-x")
        );
        assert!(nix_system().ends_with("-linux"));
    }
}
