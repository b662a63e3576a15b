//! The agent's configuration, `agent.yaml`. Every path the agent touches is here, so
//! tests can run an agent against a private root.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use schemars::JsonSchema;
use serde::de::value::SeqAccessDeserializer;
use serde::{Deserialize, Deserializer, Serialize};

use crate::duration::Duration;
use crate::git_url::{parse_git_url, GitRemote};
use crate::ids::{HostName, System};
use crate::inventory::{HealthCheck, DEFAULT_PORT};
use crate::yaml::{load_yaml, parse_yaml, YamlError};

pub use crate::key::{PublicKey, PublicKeyError, PUBLIC_KEY_LEN};

/// Errors loading `agent.yaml`; they read `file:line:column: key.path: message`.
pub type AgentConfigError = YamlError;

/// The whole agent configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "an agent configuration mapping with `hostname` and `trusted_keys`")]
#[schemars(title = "hostctl agent configuration (agent.yaml)")]
pub struct AgentConfig {
    /// This host's name in the fleet; also the `nixosConfigurations` attribute in pull mode.
    /// Requests must be signed for this name: the controller signs for the host's name
    /// in fleet.yaml, so the two must be equal (otherwise 401 `request is for host …`).
    pub hostname: HostName,
    /// Address and port of the HTTP API.
    #[serde(default = "default_listen", deserialize_with = "deserialize_listen")]
    pub listen: SocketAddr,
    /// Connections the API keeps open at once; one more is closed as soon as it is
    /// accepted. Keep it well below the agent's open-file limit (the NixOS module sets
    /// `LimitNOFILE=65536`; a plain systemd service gets 1024), which imports, the
    /// journal and Nix also draw on.
    #[serde(default = "default_max_connections")]
    pub max_connections: NonZeroUsize,
    /// Connections one peer address keeps open at once; one more from it is closed as
    /// soon as it is accepted, so one client cannot take every connection slot.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: NonZeroUsize,
    /// Controller keys whose signed requests are accepted; at least one is required.
    #[serde(deserialize_with = "deserialize_trusted_keys")]
    #[schemars(extend("minItems" = 1))]
    pub trusted_keys: Vec<PublicKey>,
    /// Where the agent keeps its journal and deployment records.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The system profile whose generations the agent manages.
    #[serde(default = "default_profile")]
    pub profile: PathBuf,
    /// Nix store URL (e.g. `local?root=/tmp/root`); default: the system store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// How long to wait for confirmation before rolling back.
    #[serde(default = "default_confirm_timeout")]
    pub confirm_timeout: Duration,
    /// How long one activation (`switch-to-configuration`, also a rollback's) may run;
    /// past it the agent kills the activation's process group and rolls back.
    #[serde(default = "default_activation_timeout")]
    pub activation_timeout: Duration,
    /// D-Bus bus to publish state on.
    #[serde(default)]
    pub bus: Bus,
    /// What runs activations detached from the agent: a systemd transient unit over
    /// D-Bus (`systemd`), a child in its own process group (`detached`), or `auto`
    /// (systemd when `/run/systemd/system` exists).
    #[serde(default)]
    pub service_manager: ServiceManagerKind,
    /// Checks that must pass after activation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<HealthCheck>,
    /// GitOps mode: pull the flake repository and apply its commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<PullConfig>,
    /// binfmt_misc emulation of other systems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binfmt: Option<BinfmtConfig>,
    /// Binary caches a deployment request may name (`hostctl apply --via-cache`) to
    /// fetch its system from; exact URLs. Paths fetched must be signed by a key of
    /// `trusted_keys` or `pull.trusted_public_keys`. Empty: requests naming a cache are
    /// refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caches: Vec<crate::inventory::CacheUrl>,
    /// The agent's ed25519 identity key (Nix secret key format, mode 0600), which its TLS
    /// certificate is made from and the controller pins. A file named here must exist;
    /// default: `state_dir/identity.key`, generated at first start. The public key is
    /// written to `state_dir/identity.pub` either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_key_file: Option<PathBuf>,
    /// Address and port of a plain-HTTP listener serving only `GET /metrics` (read-only).
    /// Unset: metrics are not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Address and port of a plain-HTTP listener serving only the webhook (HMAC still
    /// required), behind a TLS-terminating proxy. Unset: TLS API listener only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_listen: Option<SocketAddr>,
    /// Which system generations to keep when collecting garbage after each confirmed
    /// deployment (pull mode's too) and on `hostctl gc`, unless the controller sends a
    /// policy (fleet.yaml `retention`). Unset, and none sent: nothing is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::retention::Retention>,
    /// Reboots (issue 16): the boot loader and how the agent reboots the host.
    #[serde(default, skip_serializing_if = "crate::boot_config::BootConfig::is_default")]
    pub boot: crate::boot_config::BootConfig,
}

/// The identity key under `state_dir` when `identity_key_file` is unset, and the
/// world-readable public identity beside it (`<hostname>:<base64>`).
pub const IDENTITY_KEY_FILE: &str = "identity.key";
pub const IDENTITY_PUB_FILE: &str = "identity.pub";

/// Default agent state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/hostctl-agent";
/// Default system profile.
pub const DEFAULT_PROFILE: &str = "/nix/var/nix/profiles/system";

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))
}
/// Default of `max_connections`: half the 1024 open files a systemd service gets by default.
pub const DEFAULT_MAX_CONNECTIONS: NonZeroUsize = nonzero(512);
/// Default of `max_connections_per_peer`: room for a controller's burst (the load test
/// sends 200 requests at once from one address) while one address can hold at most half
/// of `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: NonZeroUsize = nonzero(256);

const fn nonzero(n: usize) -> NonZeroUsize {
    match NonZeroUsize::new(n) {
        Some(n) => n,
        None => NonZeroUsize::MIN,
    }
}
fn default_max_connections() -> NonZeroUsize {
    DEFAULT_MAX_CONNECTIONS
}
fn default_max_connections_per_peer() -> NonZeroUsize {
    DEFAULT_MAX_CONNECTIONS_PER_PEER
}
fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}
fn default_profile() -> PathBuf {
    PathBuf::from(DEFAULT_PROFILE)
}
fn default_confirm_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_activation_timeout() -> Duration {
    Duration::from_secs(600)
}

/// How `listen` is written, for messages.
const LISTEN_FORM: &str = "expected IP:PORT such as 0.0.0.0:7420 or [::]:7420";

/// Names the value and the expected form, where serde's `SocketAddr` says only
/// "invalid socket address syntax".
fn deserialize_listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    struct ListenVisitor;

    impl serde::de::Visitor<'_> for ListenVisitor {
        type Value = SocketAddr;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("IP:PORT such as 0.0.0.0:7420 or [::]:7420")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SocketAddr, E> {
            v.parse().map_err(|_| E::custom(format_args!("{v:?} is not a socket address; {LISTEN_FORM}")))
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SocketAddr, E> {
            Err(E::custom(format_args!("\"{v}\" is not a socket address; {LISTEN_FORM}")))
        }
    }

    d.deserialize_str(ListenVisitor)
}

/// Checks inside `visit_seq` so an empty list is reported at its own location.
fn deserialize_trusted_keys<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PublicKey>, D::Error> {
    struct KeysVisitor;

    impl<'de> serde::de::Visitor<'de> for KeysVisitor {
        type Value = Vec<PublicKey>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of `name:base64` public keys")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            let keys = Vec::<PublicKey>::deserialize(SeqAccessDeserializer::new(seq))?;
            if keys.is_empty() {
                return Err(serde::de::Error::custom(
                    "at least one trusted key is required: the agent refuses to start without a trusted key",
                ));
            }
            Ok(keys)
        }
    }

    d.deserialize_seq(KeysVisitor)
}

/// Which D-Bus bus the agent connects to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Bus {
    /// The system bus (production).
    #[default]
    System,
    /// The session bus of the user running the agent.
    Session,
    /// An explicit bus address such as `unix:path=/tmp/bus` (tests).
    Address(String),
}

/// Text that is not a bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bus `{input}`: {problem}; expected `system`, `session` or a D-Bus address like `unix:path=/run/dbus/system_bus_socket`")]
pub struct BusError {
    /// The rejected text.
    pub input: String,
    /// What was wrong.
    pub problem: String,
}

/// Checks the D-Bus address grammar: `transport:key=value,...` entries joined by ';'.
fn check_dbus_address(s: &str) -> Result<(), String> {
    let is_value_char = |c: char| c.is_ascii_alphanumeric() || "-_/.\\*%".contains(c);
    let entries: Vec<&str> = s.split(';').filter(|e| !e.is_empty()).collect();
    if entries.is_empty() {
        return Err("it is empty".into());
    }
    for entry in entries {
        let Some((transport, params)) = entry.split_once(':') else {
            return Err(format!("`{entry}` has no `transport:` prefix"));
        };
        if transport.is_empty() || !transport.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!("`{transport}` is not a transport name"));
        }
        if params.is_empty() {
            continue;
        }
        for pair in params.split(',') {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(format!("`{pair}` is not `key=value`"));
            };
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(format!("`{key}` is not a key name"));
            }
            if !value.chars().all(is_value_char) {
                return Err(format!("the value of `{key}` has characters that must be %-escaped"));
            }
        }
    }
    Ok(())
}

impl Bus {
    /// `system`, `session`, or the address.
    pub fn as_str(&self) -> &str {
        match self {
            Self::System => "system",
            Self::Session => "session",
            Self::Address(address) => address,
        }
    }
}

impl FromStr for Bus {
    type Err = BusError;
    fn from_str(s: &str) -> Result<Self, BusError> {
        match s {
            "system" => Ok(Self::System),
            "session" => Ok(Self::Session),
            _ => match check_dbus_address(s) {
                Ok(()) => Ok(Self::Address(s.to_owned())),
                Err(problem) => Err(BusError { input: s.to_owned(), problem }),
            },
        }
    }
}

impl fmt::Display for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

crate::ids::serde_via_str!(Bus, "bus");

impl JsonSchema for Bus {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Bus".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "`system`, `session`, or a D-Bus address such as `unix:path=/tmp/bus`.",
            "type": "string",
            "anyOf": [
                {"enum": ["system", "session"]},
                {"pattern": "^[a-z0-9-]+:"}
            ]
        })
    }
}

/// GitOps mode settings (`pull:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a pull mapping with `url`")]
pub struct PullConfig {
    /// Git URL of the fleet repository.
    #[serde(deserialize_with = "deserialize_git_url")]
    #[schemars(length(min = 1))]
    pub url: String,
    /// Branch to follow.
    #[serde(default = "default_branch", deserialize_with = "deserialize_branch")]
    pub branch: String,
    /// Poll interval; a verified webhook triggers a fetch at once.
    #[serde(default = "default_pull_interval")]
    pub interval: Duration,
    /// File holding the webhook HMAC secret; no webhook without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Whether commits that change flake.lock are applied or held as pending.
    #[serde(default)]
    pub lock: LockPolicy,
    /// Extra binary caches to build with (binary cache URLs, as in `caches`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub substituters: Vec<crate::inventory::CacheUrl>,
    /// Keys those caches sign with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_public_keys: Vec<PublicKey>,
    /// Whether a branch that was force-pushed (its new commit does not descend from the
    /// last fetched one) is followed anyway; refused and reported by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_force_push: bool,
    /// The private key (OpenSSH format, no passphrase) for an ssh URL
    /// (`ssh://user@host[:port]/path` or `user@host:path`); required with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key_file: Option<PathBuf>,
    /// The `known_hosts` file the ssh server's host key must be listed in (OpenSSH
    /// format; hashed names and `[host]:port` entries work); an unknown or different key
    /// is refused. Default: `/etc/ssh/ssh_known_hosts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_known_hosts_file: Option<PathBuf>,
    /// Which fetched commits may be built: signature policy (DESIGN.md, "Commit signatures").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commits: Option<crate::commits::CommitPolicy>,
}

/// Where ssh host keys are looked up when `pull.ssh_known_hosts_file` is not set (NixOS
/// writes `programs.ssh.knownHosts` there).
pub const DEFAULT_SSH_KNOWN_HOSTS: &str = "/etc/ssh/ssh_known_hosts";

impl PullConfig {
    /// How the agent reaches `url` (checked when the configuration was read).
    pub fn remote(&self) -> GitRemote {
        parse_git_url(&self.url).unwrap_or(GitRemote::Other)
    }

    /// The `known_hosts` file for ssh URLs.
    pub fn known_hosts_file(&self) -> PathBuf {
        self.ssh_known_hosts_file.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_SSH_KNOWN_HOSTS))
    }

    /// What one field cannot check alone: an ssh URL needs `ssh_key_file`. Errors name
    /// `file` and the key path (`pull.ssh_key_file`).
    pub fn check(&self, file: &Path) -> Result<(), AgentConfigError> {
        if let GitRemote::Ssh(remote) = self.remote() {
            if self.ssh_key_file.is_none() {
                return Err(AgentConfigError::invalid(
                    file,
                    "pull.ssh_key_file",
                    format!(
                        "required with the ssh URL `{}`: the private key the agent logs in to {remote} with",
                        self.url
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn default_branch() -> String {
    "main".to_owned()
}
fn default_pull_interval() -> Duration {
    Duration::from_secs(60)
}

/// A string checked by a plain function, inside the visitor so errors are located.
struct CheckedString(&'static str, fn(&str) -> Result<(), &'static str>);

impl serde::de::Visitor<'_> for CheckedString {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {}", self.0)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        (self.1)(v).map_err(|why| E::custom(format!("invalid {} `{v}`: {why}", self.0)))?;
        Ok(v.to_owned())
    }
}

/// URLs and branches reach `git` as arguments: a leading '-' would be an option.
fn check_git_url(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.starts_with('-') || s.chars().any(char::is_whitespace) {
        Err("expected a git URL (no spaces, not starting with '-')")
    } else {
        parse_git_url(s).map(|_| ()).map_err(|e| e.message())
    }
}

fn check_branch(s: &str) -> Result<(), &'static str> {
    let bad = s.is_empty()
        || s.starts_with(['-', '/', '.'])
        || s.ends_with(['/', '.'])
        || s.ends_with(".lock")
        || s.contains("..")
        || s.contains("//")
        || s.contains("@{")
        || s.chars().any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if bad {
        Err("expected a git branch name (see git check-ref-format)")
    } else {
        Ok(())
    }
}

fn deserialize_git_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_str(CheckedString("git URL", check_git_url))
}

fn deserialize_branch<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_str(CheckedString("branch", check_branch))
}

/// What pull mode does with commits that change `flake.lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LockPolicy {
    /// Apply only commits whose lock equals the pinned lock; hold others as pending.
    #[default]
    Pinned,
    /// Apply lock changes too.
    Follow,
}

impl LockPolicy {
    /// The name used in YAML.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pinned => "pinned",
            Self::Follow => "follow",
        }
    }
}

/// How activations are started (`service_manager:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceManagerKind {
    /// systemd when `/run/systemd/system` exists, otherwise `detached`.
    #[default]
    Auto,
    /// A transient unit started through `org.freedesktop.systemd1` on the agent's bus.
    Systemd,
    /// A child process in its own process group.
    Detached,
}

impl ServiceManagerKind {
    /// The name used in YAML.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Systemd => "systemd",
            Self::Detached => "detached",
        }
    }
}

/// binfmt_misc emulation settings (`binfmt:`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a mapping with `emulated_systems`")]
pub struct BinfmtConfig {
    /// Systems to run through qemu user-mode emulation, e.g. aarch64-linux.
    #[serde(default)]
    pub emulated_systems: Vec<System>,
    /// The emulator for a system, when not the default qemu user-mode emulator: the first
    /// of `/usr/bin/qemu-<cpu>-static` (Debian's qemu-user-static), `qemu-<cpu>-static`
    /// and `qemu-<cpu>` (NixOS) on the agent's `PATH`. A static emulator is registered
    /// with the `F` flag (works inside chroots and Nix sandboxes), every one with `P`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub interpreters: BTreeMap<System, PathBuf>,
    /// Where binfmt_misc is mounted.
    #[serde(default = "default_binfmt_mount")]
    pub mount_point: PathBuf,
    /// The Nix configuration file the agent owns and rewrites (`extra-platforms`,
    /// `extra-sandbox-paths`); the host's `nix.conf` includes it.
    #[serde(default = "default_binfmt_nix_conf")]
    pub nix_conf: PathBuf,
}

/// Default binfmt_misc mount point.
pub const DEFAULT_BINFMT_MOUNT: &str = "/proc/sys/fs/binfmt_misc";
/// Default Nix configuration file for emulated systems.
pub const DEFAULT_BINFMT_NIX_CONF: &str = "/etc/nix/hostctl-binfmt.conf";

fn default_binfmt_mount() -> PathBuf {
    PathBuf::from(DEFAULT_BINFMT_MOUNT)
}

fn default_binfmt_nix_conf() -> PathBuf {
    PathBuf::from(DEFAULT_BINFMT_NIX_CONF)
}

/// Reads and validates the agent configuration at `path`.
pub fn load_agent_config(path: &Path) -> Result<AgentConfig, AgentConfigError> {
    load_yaml(path)
}

/// Parses agent configuration `text`; `origin` names the file in error messages.
pub fn parse_agent_config(text: &str, origin: &Path) -> Result<AgentConfig, AgentConfigError> {
    parse_yaml(text, origin)
}

#[cfg(test)]
#[path = "agent_config_tests.rs"]
mod tests;
