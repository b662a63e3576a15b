//! The start-up rule for secrets (0600) and private state (0700): a file other users can
//! read, or another user could replace, is refused with the `chmod` that fixes it. The
//! rule only decides; the `stat` and the effective uid come from the caller (the agent's
//! `serve`/`check-config` for its paths, [`crate::signing::SecretKey::load`] for the key
//! file it reads), so nothing here touches the file system.
//!
//! Both the controller (its signing key) and the agent (webhook secret, ssh key, state
//! directory) refuse rather than repair: silently tightening a mode would hide that the
//! secret may already have been read.

use std::fmt;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// What a checked path holds; names it in the refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Private {
    /// A secret file: at most 0600, owned by whoever runs us.
    File,
    /// A private directory: at most 0700, owned by whoever runs us.
    Dir,
}

impl Private {
    fn wanted(self) -> u32 {
        match self {
            Self::File => 0o600,
            Self::Dir => 0o700,
        }
    }
}

/// A secret file or private directory that others could read or replace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PermError {
    /// The configuration key or flag that named the path, e.g. `pull.webhook_secret_file`.
    pub what: String,
    /// The path as configured.
    pub path: String,
    /// What is wrong, with the command that fixes it.
    pub problem: String,
}

impl fmt::Display for PermError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.what, self.path, self.problem)
    }
}

/// Decides whether `path` (named by `what`) is a `kind` that only the user `euid` can read
/// and change, from `stat` (`std::fs::metadata(path)`, done by the caller: this crate does
/// no I/O of its own). A missing path is not an error here: callers report it when they
/// open it.
pub fn judge(
    path: &Path,
    what: &str,
    kind: Private,
    stat: std::io::Result<std::fs::Metadata>,
    euid: u32,
) -> Result<(), PermError> {
    let refuse = |problem: String| PermError { what: what.to_owned(), path: path.display().to_string(), problem };
    let meta = match stat {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(refuse(format!("cannot check its permissions: {e}"))),
    };
    match kind {
        Private::File if !meta.is_file() => return Err(refuse("is not a regular file".into())),
        Private::Dir if !meta.is_dir() => return Err(refuse("is not a directory".into())),
        _ => {}
    }
    let mode = meta.mode() & 0o7777;
    let shown = path.display();
    if mode & 0o077 != 0 {
        let wanted = kind.wanted();
        return Err(refuse(format!(
            "mode {mode:04o} lets other users {} it; it must be {wanted:04o} or stricter (run `chmod {wanted:o} {shown}`)",
            if mode & 0o044 != 0 || mode & 0o011 != 0 { "read" } else { "change" },
        )));
    }
    if meta.uid() != euid {
        return Err(refuse(format!(
            "it is owned by uid {}, not by uid {euid} that runs this program, who alone may change it \
             (run `chown {euid} {shown}`)",
            meta.uid()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn with_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// The rule applied to `path` as it is now, for the user owning it.
    fn check(path: &Path, what: &str, kind: Private) -> Result<(), PermError> {
        let owner = std::fs::metadata(path).map_or(0, |m| m.uid());
        judge(path, what, kind, std::fs::metadata(path), owner)
    }

    #[test]
    fn private_files_and_dirs_pass_and_missing_ones_are_left_to_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "s").unwrap();
        for mode in [0o600, 0o400] {
            with_mode(&key, mode);
            check(&key, "--key", Private::File).unwrap();
        }
        with_mode(dir.path(), 0o700);
        check(dir.path(), "state_dir", Private::Dir).unwrap();
        check(&dir.path().join("absent"), "state_dir", Private::Dir).unwrap();
    }

    #[test]
    fn readable_or_writable_by_others_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("fleet.sec");
        std::fs::write(&key, "s").unwrap();
        with_mode(&key, 0o644);
        let err = check(&key, "pull.webhook_secret_file", Private::File).unwrap_err().to_string();
        let shown = key.display();
        assert_eq!(
            err,
            format!(
                "pull.webhook_secret_file {shown}: mode 0644 lets other users read it; it must be 0600 or \
                 stricter (run `chmod 600 {shown}`)"
            )
        );
        with_mode(&key, 0o620);
        let err = check(&key, "--key", Private::File).unwrap_err().to_string();
        assert!(err.contains("mode 0620 lets other users change it"), "{err}");
        with_mode(dir.path(), 0o755);
        let err = check(dir.path(), "state_dir", Private::Dir).unwrap_err().to_string();
        assert!(err.contains("mode 0755") && err.contains("chmod 700"), "{err}");
    }

    #[test]
    fn a_file_owned_by_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "s").unwrap();
        with_mode(&key, 0o600);
        let owner = std::fs::metadata(&key).unwrap().uid();
        let other = if owner == 0 { 65534 } else { 0 };
        let err = judge(&key, "pull.ssh_key_file", Private::File, std::fs::metadata(&key), other).unwrap_err();
        let err = err.to_string();
        assert!(err.contains(&format!("owned by uid {owner}, not by uid {other}")), "{err}");
        assert!(err.ends_with(&format!("(run `chown {other} {}`)", key.display())), "{err}");
    }

    #[test]
    fn the_wrong_kind_of_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = check(dir.path(), "--key", Private::File).unwrap_err().to_string();
        assert!(err.ends_with("is not a regular file"), "{err}");
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        with_mode(&file, 0o600);
        let err = check(&file, "state_dir", Private::Dir).unwrap_err().to_string();
        assert!(err.ends_with("is not a directory"), "{err}");
    }

    #[test]
    fn a_stat_that_fails_otherwise_is_refused() {
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let err = judge(Path::new("/k"), "--key", Private::File, Err(denied), 0).unwrap_err().to_string();
        assert!(err.starts_with("--key /k: cannot check its permissions: "), "{err}");
    }
}
