//! A loaded fleet: the inventory, the flake it points at, that flake's git state and lock.
//!
//! Everything here is read-only; loading a fleet never changes a file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use hostctl_nix::flake::{FlakeLock, FlakeSource};
use hostctl_nix::FlakeRef;
use hostctl_schemas::ids::{HostName, LockId};
use hostctl_schemas::inventory::{load_fleet, Fleet, HealthCheck, Host};
use hostctl_schemas::key::PublicKey;
use hostctl_schemas::known_agents::KnownAgents;
use hostctl_schemas::signing::SecretKey;
use hostctl_schemas::text::plural;

use crate::client::{AgentTarget, HttpHost};
use crate::error::Error;
use crate::host::HostError;

/// The inventory plus what the controller knows about its flake before running Nix.
#[derive(Debug)]
pub struct FleetContext {
    pub fleet_file: PathBuf,
    pub fleet: Fleet,
    pub flake: FlakeRef,
    /// The local flake directory's state; `None` for remote flake references.
    pub source: Option<FlakeSource>,
    /// The parsed `flake.lock`; `None` when the flake has no lock (no inputs) or is remote.
    pub lock: Option<FlakeLock>,
    /// `--key FILE`: overrides the fleet file's `signing_key`.
    key_file: Option<PathBuf>,
    /// The signing key, read on first use and then shared by every agent client.
    key: OnceLock<Arc<SecretKey>>,
    /// The store path Nix copied the flake's source to, asked on the first error that
    /// mentions a store path (`None`: Nix could not say).
    source_store: tokio::sync::OnceCell<Option<String>>,
    /// `known_agents` beside the fleet file, read on first use.
    known_agents: OnceLock<KnownAgents>,
}

impl FleetContext {
    /// Loads the fleet; `key_file` is `--key` (the signing key is read only when asked for).
    pub fn load(fleet_file: &Path, key_file: Option<PathBuf>) -> Result<Self, Error> {
        let fleet = load_fleet(fleet_file)?;
        for name in fleet.hosts.keys() {
            // Two tags naming different policies is bad input, found before anything runs.
            hostctl_schemas::retention::host_retention(&fleet, name, fleet_file)?;
            hostctl_schemas::inventory::host_reboot(&fleet, name, fleet_file)?;
        }
        let base = fleet_file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let spec = fleet.flake.clone().unwrap_or_else(|| ".".to_owned());
        let fleet_name = fleet_file.display().to_string();
        let (flake, source) = if is_remote_ref(&spec) {
            let flake = FlakeRef::new(spec).map_err(|source| Error::FlakeRef { fleet: fleet_name, source })?;
            (flake, None)
        } else {
            let dir = base.join(spec.strip_prefix("path:").unwrap_or(&spec));
            let source = FlakeSource::inspect(&dir)?;
            let path = source.dir.to_string_lossy().into_owned();
            let flake = FlakeRef::new(path).map_err(|source| Error::FlakeRef { fleet: fleet_name, source })?;
            (flake, Some(source))
        };
        let lock = match &source {
            Some(src) if src.lock_path().exists() => Some(FlakeLock::read(&src.lock_path())?),
            _ => None,
        };
        Ok(Self {
            fleet_file: fleet_file.to_path_buf(),
            fleet,
            flake,
            source,
            lock,
            key_file,
            key: OnceLock::new(),
            source_store: Default::default(),
            known_agents: OnceLock::new(),
        })
    }

    /// The fleet's signing key: `--key FILE` (relative to the working directory) or
    /// `signing_key` in fleet.yaml (relative to the fleet file's directory), read once.
    /// A missing or unreadable key is bad input, reported with the file's name.
    pub fn signing_key(&self) -> Result<Arc<SecretKey>, Error> {
        if let Some(key) = self.key.get() {
            return Ok(key.clone());
        }
        let key = Arc::new(SecretKey::load(&self.signing_key_path()?)?);
        Ok(self.key.get_or_init(|| key).clone())
    }

    /// Where [`Self::signing_key`] reads the key from.
    pub fn signing_key_path(&self) -> Result<PathBuf, Error> {
        match (&self.key_file, &self.fleet.signing_key) {
            (Some(path), _) => Ok(path.clone()),
            (None, Some(relative)) => Ok(self.fleet_dir().join(relative)),
            (None, None) => Err(Error::NoSigningKey { fleet: self.fleet_file.display().to_string() }),
        }
    }

    /// The client for a host's agent, signing with the fleet key. The outer error
    /// (unknown host, no key) stops the command; the inner one is this host's failure.
    pub fn agent(&self, name: &HostName) -> Result<Result<HttpHost, HostError>, Error> {
        let host = self.host(name)?;
        let target = AgentTarget {
            address: host.address.clone(),
            port: host.agent_port(&self.fleet.defaults),
            pin: self.pin(name)?,
            enroll: format!("{} --expect", self.enroll_command(name)),
        };
        Ok(HttpHost::new(name.clone(), target, self.signing_key()?))
    }

    /// The identity pinned for a host: its `agent_key` in fleet.yaml, else its line in
    /// `known_agents` (a bad file is bad input, file:line).
    pub fn pin(&self, name: &HostName) -> Result<Option<PublicKey>, Error> {
        let host = self.host(name)?;
        if let Some(key) = &host.agent_key {
            return Ok(Some(key.clone()));
        }
        Ok(self.known_agents()?.pins.get(name).cloned())
    }

    /// `known_agents` beside the fleet file, read once (empty when there is none).
    pub fn known_agents(&self) -> Result<&KnownAgents, Error> {
        if let Some(known) = self.known_agents.get() {
            return Ok(known);
        }
        let known = KnownAgents::load(&self.known_agents_path())?;
        Ok(self.known_agents.get_or_init(|| known))
    }

    pub fn known_agents_path(&self) -> PathBuf {
        self.fleet_dir().join(hostctl_schemas::known_agents::FILE_NAME)
    }

    /// `hostctl [--fleet FILE] enroll HOST`, as the operator would type it here.
    pub fn enroll_command(&self, name: &HostName) -> String {
        if self.fleet_file == Path::new("fleet.yaml") {
            format!("hostctl enroll {name}")
        } else {
            format!("hostctl --fleet {} enroll {name}", self.fleet_file.display())
        }
    }

    /// The host's generation retention from the inventory (checked at load).
    pub fn retention(&self, name: &HostName) -> Option<hostctl_schemas::retention::Retention> {
        let found = hostctl_schemas::retention::host_retention(&self.fleet, name, &self.fleet_file);
        found.ok().flatten().map(|(policy, _)| policy)
    }

    /// The host's reboot policy from the inventory (checked at load); `None`: unset.
    pub fn reboot_policy(&self, name: &HostName) -> Option<hostctl_schemas::inventory::RebootPolicy> {
        let found = hostctl_schemas::inventory::host_reboot(&self.fleet, name, &self.fleet_file);
        found.ok().flatten().map(|(policy, _)| policy)
    }

    /// The host's `health` checks from the inventory.
    pub fn health_checks(&self, name: &HostName) -> Vec<HealthCheck> {
        self.fleet.hosts.get(name).map(|h| h.health.clone()).unwrap_or_default()
    }

    /// The revision being deployed: HEAD's commit, with `-dirty` when the tree has
    /// uncommitted changes (what Nix evaluates then is not that commit).
    pub fn rev(&self) -> Option<String> {
        let git = self.source.as_ref()?.git.as_ref()?;
        let rev = git.rev.as_deref()?;
        Some(if git.is_clean() { rev.to_owned() } else { format!("{rev}-dirty") })
    }

    /// The directory of the fleet file: relative paths in it are relative to this.
    pub fn fleet_dir(&self) -> &Path {
        self.fleet_file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
    }

    /// The inventory entry of a host named on the command line; an unknown name is bad input.
    pub fn host(&self, name: &HostName) -> Result<&Host, Error> {
        self.fleet.hosts.get(name).ok_or_else(|| {
            let names = self.fleet.hosts.keys().map(HostName::as_str);
            let hint = crate::select::did_you_mean(name.as_str(), names.clone());
            Error::UnknownHost {
                host: name.to_string(),
                fleet: self.fleet_file.display().to_string(),
                hint: hint.map_or_else(String::new, |h| format!(" (did you mean {h}?)")),
                known: names.collect::<Vec<_>>().join(", "),
            }
        })
    }

    pub fn lock_id(&self) -> Option<&LockId> {
        self.lock.as_ref().map(|l| &l.id)
    }

    /// Files in the flake directory that Nix will not see because git does not track them.
    pub fn untracked(&self) -> &[PathBuf] {
        self.source.as_ref().and_then(|s| s.git.as_ref()).map_or(&[], |g| g.untracked.as_slice())
    }

    /// The warning hostctl prints about untracked files, if any.
    pub fn untracked_warning(&self) -> Option<String> {
        let files = self.untracked();
        if files.is_empty() {
            return None;
        }
        let dir = self.source.as_ref().map(|s| s.dir.display().to_string()).unwrap_or_default();
        let list: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        let (verb, them) = if files.len() == 1 { ("is", "it") } else { ("are", "them") };
        Some(format!(
            "{} in {dir} {verb} not tracked by git, so Nix does not see {them}: {}\n  \
             (a flake only contains git-tracked files; run `git add` on {them} if the configuration needs {them})",
            plural(files.len(), "file", "files"),
            list.join(", ")
        ))
    }

    /// The warning about uncommitted changes, if any: `check`'s `dirty-tree` finding, and
    /// what `apply` says before it evaluates.
    pub fn dirty_warning(&self) -> Option<String> {
        let git = self.source.as_ref()?.git.as_ref()?;
        let files: Vec<String> = git.dirty.iter().map(|p| p.display().to_string()).collect();
        (!files.is_empty()).then(|| {
            format!("uncommitted changes in {}: a deployment from here has no exact revision", files.join(", "))
        })
    }

    /// Nix's `message` with the flake's store copy (`/nix/store/…-source`) replaced by the
    /// directory it was copied from (the repository's work tree for a git flake).
    pub async fn local_paths(&self, nix: &hostctl_nix::Nix, message: &str) -> String {
        let Some(source) = self.source.as_ref().filter(|_| message.contains("-source")) else {
            return message.to_owned();
        };
        let store = self
            .source_store
            .get_or_init(|| async { nix.flake_metadata(&self.flake).await.ok().map(|m| m.path.to_string()) })
            .await;
        let root = source.git.as_ref().map_or(source.dir.as_path(), |git| git.workdir.as_path());
        match store {
            Some(store) => crate::source_paths::replace_store_prefix(message, store, root),
            None => message.to_owned(),
        }
    }

    /// A hint for Nix's message when it names a path that is merely untracked: Nix
    /// reports those as "path ... does not exist" (2.8: "getting status of ..."), which
    /// hides the real cause.
    pub fn explain_nix_error(&self, message: &str) -> Option<String> {
        let hits: Vec<String> =
            self.untracked().iter().map(|f| f.display().to_string()).filter(|f| message.contains(f.as_str())).collect();
        let (verb, it) = if hits.len() == 1 { ("is", "it") } else { ("are", "them") };
        (!hits.is_empty()).then(|| {
            format!(
                "hint: {} {verb} on disk but not tracked by git, and flakes only see tracked files (`git add` {it})",
                hits.join(", ")
            )
        })
    }
}

/// The fleet file when neither `--fleet` nor `HOSTCTL_FLEET` names one: the first
/// `fleet.yaml` in the working directory or a directory above it (as git finds `.git`),
/// so hostctl works from anywhere inside the fleet's repository.
pub fn find_fleet_file() -> Result<PathBuf, Error> {
    let cwd = std::env::current_dir().map_err(|e| Error::NoFleet { dir: format!(". ({e})") })?;
    cwd.ancestors()
        .map(|dir| dir.join("fleet.yaml"))
        .find(|file| file.is_file())
        .ok_or_else(|| Error::NoFleet { dir: cwd.display().to_string() })
}

/// A flake reference that is not a local path (`github:o/r`, `git+https://...`).
fn is_remote_ref(spec: &str) -> bool {
    !spec.starts_with("path:") && spec.contains(':') && !spec.starts_with('/') && !spec.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::{is_remote_ref, FleetContext};

    #[test]
    fn remote_vs_local() {
        assert!(is_remote_ref("github:org/infra"));
        assert!(is_remote_ref("git+https://git.example.com/infra.git"));
        assert!(!is_remote_ref("."));
        assert!(!is_remote_ref("./infra"));
        assert!(!is_remote_ref("/srv/infra"));
        assert!(!is_remote_ref("path:./infra"));
        assert!(!is_remote_ref("infra"));
    }

    #[test]
    fn signing_key_comes_from_the_flag_or_the_fleet_file() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = dir.path().join("fleet.yaml");
        std::fs::write(dir.path().join("flake.nix"), "{ outputs = _: {}; }\n").unwrap();
        std::fs::write(&fleet, "hosts:\n  web1:\n    address: 192.0.2.1\n").unwrap();
        let ctx = FleetContext::load(&fleet, None).unwrap();
        let err = ctx.signing_key().unwrap_err();
        assert_eq!(err.exit_code(), crate::error::EXIT_BAD_INPUT);
        assert!(err.to_string().contains("no signing key"), "{err}");

        std::fs::write(&fleet, "signing_key: keys/fleet.sec\nhosts:\n  web1:\n    address: 192.0.2.1\n").unwrap();
        let ctx = FleetContext::load(&fleet, None).unwrap();
        let err = ctx.signing_key().unwrap_err();
        assert_eq!(err.exit_code(), crate::error::EXIT_BAD_INPUT);
        assert!(err.to_string().contains("keys/fleet.sec: cannot read the signing key"), "{err}");
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        let secret = "fleet-1:KDMBMKAqiUJFbD3/iS4MPEYdsma2JqZ8GxXKR5OO2YCcbR9nUt4JMzyUabxepT0hySZ+UlrnUSHuxqIq00nETw==";
        let mode = |path: &std::path::Path, mode| {
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        };
        let private = |path: &std::path::Path| mode(path, 0o600);
        let key = dir.path().join("keys/fleet.sec");
        std::fs::write(&key, secret).unwrap();
        mode(&key, 0o644);
        let err = ctx.signing_key().unwrap_err();
        assert_eq!(err.exit_code(), crate::error::EXIT_BAD_INPUT);
        assert!(err.to_string().contains("keys/fleet.sec: mode 0644 lets other users read it"), "{err}");
        private(&key);
        assert_eq!(ctx.signing_key().unwrap().name, "fleet-1");

        let bad = dir.path().join("bad.sec");
        std::fs::write(&bad, "not a key").unwrap();
        private(&bad);
        let ctx = FleetContext::load(&fleet, Some(bad)).unwrap();
        let err = ctx.signing_key().unwrap_err();
        assert!(err.to_string().contains("bad.sec: not a Nix ed25519 secret key"), "{err}");
    }
}
