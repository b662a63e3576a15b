//! Nix profiles (the system profile's generations): the [`Profile`] path type, how Nix lays
//! a profile out on disk, and `nix-env --list-generations` parsed into [`GenerationLine`]s.
//!
//! Layout (every Nix version): `PROFILE -> PROFILE-<n>-link` (a relative symlink naming the
//! current generation) and `PROFILE-<n>-link -> /nix/store/...` (what generation n is).

use std::fmt;
use std::path::{Path, PathBuf};

use hostctl_schemas::ids::StorePath;

use crate::command::NixCommand;
use crate::runner::{Nix, NixError};

/// A profile path such as `/nix/var/nix/profiles/system`: absolute, UTF-8, normalised,
/// so it can be passed to `nix-env --profile` as one argv element and never read as an
/// option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile(String);

/// A path that cannot be a profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{path}` is not usable as a Nix profile: {reason}")]
pub struct ProfileError {
    pub path: String,
    pub reason: &'static str,
}

impl Profile {
    /// Checks `path`: absolute, UTF-8, no `.`/`..` components, a file name at the end.
    pub fn new(path: &Path) -> Result<Self, ProfileError> {
        let fail = |reason| ProfileError { path: path.display().to_string(), reason };
        let text = path.to_str().ok_or_else(|| fail("it is not UTF-8"))?;
        if !path.is_absolute() {
            return Err(fail("it must be absolute"));
        }
        if text.ends_with('/') || path.file_name().is_none() {
            return Err(fail("it must name a file, not end with `/`"));
        }
        // Checked on the text: `Path::components` silently drops `.` and doubled `/`.
        if text[1..].split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(fail("it must be normalised (no `.`, `..` or `//`)"));
        }
        if text.chars().any(char::is_control) {
            return Err(fail("it must not contain control characters"));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }

    /// `PROFILE-<n>-link`, the symlink naming generation `n`'s store path.
    pub fn generation_link(&self, n: u64) -> PathBuf {
        PathBuf::from(format!("{}-{n}-link", self.0))
    }

    /// The current generation: the number in the name `PROFILE` points at. `None` when the
    /// profile does not exist yet (a host never deployed to).
    pub fn current_generation(&self) -> std::io::Result<Option<u64>> {
        let target = match std::fs::read_link(self.as_path()) {
            Ok(target) => target,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let prefix = format!("{}-", self.base_name());
        let number = target
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.strip_suffix("-link"))
            .and_then(|n| n.parse::<u64>().ok());
        Ok(number)
    }

    /// The store path generation `n` points at, if its link exists and points into the store.
    pub fn generation_target(&self, n: u64) -> std::io::Result<Option<StorePath>> {
        match std::fs::read_link(self.generation_link(n)) {
            Ok(target) => Ok(target.to_str().and_then(|t| t.parse::<StorePath>().ok())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The current generation's number and store path (both `None` with no profile yet).
    pub fn current(&self) -> std::io::Result<Option<(u64, Option<StorePath>)>> {
        match self.current_generation()? {
            Some(n) => Ok(Some((n, self.generation_target(n)?))),
            None => Ok(None),
        }
    }

    fn base_name(&self) -> &str {
        self.as_path().file_name().and_then(|n| n.to_str()).unwrap_or_default()
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One line of `nix-env --list-generations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationLine {
    pub number: u64,
    /// `YYYY-MM-DD HH:MM:SS` in the local time zone of the machine that ran `nix-env`; for
    /// a Unix time read the link's mtime (what Nix itself formats), see [`Profile`].
    pub date: String,
    pub current: bool,
}

/// Parses `nix-env --list-generations` output. Nix 2.8 to current print
/// `"%4u   %s   %s"`: number, local date and time, then `(current)` or nothing; a
/// profile that does not exist prints nothing.
pub fn parse_generations(text: &str) -> Result<Vec<GenerationLine>, String> {
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (number, date, time, rest) = match fields.as_slice() {
            [n, d, t, rest @ ..] => (n, d, t, rest),
            _ => return Err(format!("unexpected generation line {line:?}")),
        };
        let number = number.parse::<u64>().map_err(|_| format!("bad generation number in {line:?}"))?;
        let date_ok = date.len() == 10 && date.bytes().filter(|b| *b == b'-').count() == 2;
        let time_ok = time.len() == 8 && time.bytes().filter(|b| *b == b':').count() == 2;
        if !date_ok || !time_ok {
            return Err(format!("bad date in generation line {line:?}"));
        }
        let current = match rest {
            [] => false,
            ["(current)"] => true,
            _ => return Err(format!("unexpected text after the date in {line:?}")),
        };
        lines.push(GenerationLine { number, date: format!("{date} {time}"), current });
    }
    Ok(lines)
}

impl Nix {
    /// Makes `path` the profile's new current generation (`nix-env --set`). The path
    /// must be valid in the store already: Nix would otherwise try to substitute it.
    pub async fn set_profile(&self, profile: &Profile, path: &StorePath) -> Result<(), NixError> {
        self.run(&NixCommand::set_profile(profile, path)).await.map(|_| ())
    }

    /// [`Nix::set_profile`], handing the `nix-env` process id to `on_spawn` before
    /// waiting on it (see [`Nix::run_observed`]).
    pub async fn set_profile_observed(
        &self,
        profile: &Profile,
        path: &StorePath,
        on_spawn: &mut (dyn FnMut(u32) -> std::io::Result<()> + Send),
    ) -> Result<(), NixError> {
        self.run_observed(&NixCommand::set_profile(profile, path), on_spawn).await.map(|_| ())
    }

    /// The profile's generations, oldest first, as `nix-env --list-generations` prints them.
    pub async fn list_generations(&self, profile: &Profile) -> Result<Vec<GenerationLine>, NixError> {
        let cmd = NixCommand::list_generations(profile);
        let out = self.run(&cmd).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_generations(&text).map_err(|problem| self.bad_output(&cmd, problem, &out.stdout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_checked() {
        assert!(Profile::new(Path::new("/nix/var/nix/profiles/system")).is_ok());
        for bad in ["system", "/a/../b", "/a/./b", "/a//b", "/", "/a/", "-p"] {
            assert!(Profile::new(Path::new(bad)).is_err(), "{bad}");
        }
        let p = Profile::new(Path::new("/x/profiles/system")).unwrap();
        assert_eq!(p.generation_link(3), Path::new("/x/profiles/system-3-link"));
    }

    #[test]
    fn parses_nix_2_8_generations() {
        // Verbatim `nix-env -p ... --list-generations` of Nix 2.8.0 (note the trailing
        // spaces of a non-current line).
        let text = "   1   2026-11-21 09:34:49   \n   2   2026-11-21 09:34:50   (current)\n";
        let gens = parse_generations(text).unwrap();
        assert_eq!(
            gens,
            [
                GenerationLine { number: 1, date: "2026-11-21 09:34:49".into(), current: false },
                GenerationLine { number: 2, date: "2026-11-21 09:34:50".into(), current: true },
            ]
        );
        assert_eq!(parse_generations("").unwrap(), []);
        assert!(parse_generations("x 2026-11-21 09:34:49").is_err());
        assert!(parse_generations("1 2026-11-21").is_err());
        assert!(parse_generations("1 2026-11-21 09:34:49 (old)").is_err());
    }

    #[test]
    fn reads_the_profile_layout() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile::new(&dir.path().join("system")).unwrap();
        assert_eq!(profile.current().unwrap(), None);
        let target = "/nix/store/zr2knphxg8yyy2mkq8akf2hfknjvdiz7-x";
        std::os::unix::fs::symlink(target, dir.path().join("system-7-link")).unwrap();
        std::os::unix::fs::symlink("system-7-link", dir.path().join("system")).unwrap();
        assert_eq!(profile.current().unwrap(), Some((7, Some(target.parse().unwrap()))));
        assert_eq!(profile.generation_target(8).unwrap(), None);
    }
}
