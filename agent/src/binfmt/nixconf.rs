//! The Nix configuration file the agent owns (`binfmt.nix_conf`): `extra-platforms` for the
//! emulated systems that are registered, and their interpreters in `extra-sandbox-paths`,
//! so Nix on the host builds derivations of those systems. The host's `nix.conf` includes
//! it (`!include /etc/nix/hostctl-binfmt.conf`); a running nix-daemon reads it when it
//! (re)starts.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Store objects live here: an interpreter inside one needs the whole object (and Nix adds
/// its closure) in the sandbox, not just the file.
const STORE_DIR: &str = "/nix/store/";

/// The file's text for `(system, interpreter)` pairs, in order. With none, only the header:
/// the file stays includable.
pub fn render(entries: &[(&str, &Path)]) -> String {
    let mut text = String::from(
        "# Written by hostctl-agent from binfmt.emulated_systems (the systems whose binfmt_misc\n\
         # entry is registered). Do not edit: the agent rewrites it when they change.\n",
    );
    if entries.is_empty() {
        return text;
    }
    let platforms: Vec<&str> = entries.iter().map(|(s, _)| *s).collect();
    let mut paths: Vec<String> = Vec::new();
    for (_, interpreter) in entries {
        for path in sandbox_paths(interpreter) {
            let path = path.display().to_string();
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
    }
    text.push_str(&format!("extra-platforms = {}\n", platforms.join(" ")));
    text.push_str(&format!("extra-sandbox-paths = {}\n", paths.join(" ")));
    text
}

/// The interpreter, and when it resolves into the Nix store (`qemu-aarch64` on a NixOS
/// `PATH`), the store object holding it.
fn sandbox_paths(interpreter: &Path) -> Vec<PathBuf> {
    let mut paths = vec![interpreter.to_path_buf()];
    if let Ok(real) = std::fs::canonicalize(interpreter) {
        if let Some(rest) = real.to_str().and_then(|r| r.strip_prefix(STORE_DIR)) {
            let object = rest.split('/').next().unwrap_or_default();
            // A store path's base name has no whitespace, so nix.conf can hold it.
            if !object.is_empty() && !object.contains(char::is_whitespace) {
                paths.push(Path::new(STORE_DIR).join(object));
            }
        }
    }
    paths
}

/// Why the file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct NixConfError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

/// Writes `text` to `path` unless it already holds exactly that (`Ok(false)`): the
/// content goes to a temporary file beside it, is synced, then renamed over it, so Nix
/// never reads half a file.
pub fn write_if_changed(path: &Path, text: &str) -> Result<bool, NixConfError> {
    if std::fs::read_to_string(path).is_ok_and(|current| current == text) {
        return Ok(false);
    }
    let err = |source| NixConfError { path: path.display().to_string(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut tmp = tempfile::Builder::new().prefix(".hostctl-binfmt-").tempfile_in(dir).map_err(err)?;
    tmp.write_all(text.as_bytes()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    // Readable by every Nix client, as /etc/nix/nix.conf is.
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644)).map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        // The rename is durable once the directory is; a failure here loses nothing now.
        let _ = d.sync_all();
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_platforms_and_sandbox_paths() {
        let text = render(&[
            ("aarch64-linux", Path::new("/usr/bin/qemu-aarch64-static")),
            ("armv7l-linux", Path::new("/usr/bin/qemu-arm-static")),
            ("armv6l-linux", Path::new("/usr/bin/qemu-arm-static")),
        ]);
        assert!(text.starts_with("# Written by hostctl-agent"));
        assert!(text.contains("\nextra-platforms = aarch64-linux armv7l-linux armv6l-linux\n"), "{text}");
        assert!(
            text.contains("\nextra-sandbox-paths = /usr/bin/qemu-aarch64-static /usr/bin/qemu-arm-static\n"),
            "{text}"
        );
        let empty = render(&[]);
        assert!(!empty.contains("extra-"), "{empty}");
        assert!(empty.lines().all(|l| l.starts_with('#')));
    }

    #[test]
    fn an_interpreter_in_the_store_brings_its_store_object() {
        let root = tempfile::tempdir().unwrap();
        // Only a real /nix/store path qualifies; a symlink elsewhere adds nothing.
        let link = root.path().join("qemu-aarch64");
        std::os::unix::fs::symlink("/usr/bin/qemu-aarch64-static", &link).unwrap();
        assert_eq!(sandbox_paths(&link), [link]);
    }

    #[test]
    fn writes_only_when_the_text_differs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/nix/hostctl-binfmt.conf");
        assert!(write_if_changed(&path, "a\n").unwrap());
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
        assert!(!write_if_changed(&path, "a\n").unwrap());
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap()), inode);
        assert!(write_if_changed(&path, "b\n").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b\n");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o644);
        // Nothing else left in the directory.
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        let err = write_if_changed(Path::new("/proc/hostctl-nope/x.conf"), "a").unwrap_err().to_string();
        assert!(err.starts_with("cannot write /proc/hostctl-nope/x.conf"), "{err}");
    }
}
