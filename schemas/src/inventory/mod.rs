//! The fleet inventory, `fleet.yaml`: which hosts exist, how to reach them, and how
//! to roll out to them.

mod cache;
mod health;
mod port;
mod reboot;
mod rollout;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::duration::Duration;
use crate::ids::{Address, AttrName, HostName, System, Tag};
use crate::yaml::{load_yaml, parse_yaml, YamlError};

pub use cache::{CacheUrl, CacheUrlError, FleetCache, CACHE_SCHEMES};
pub use health::{HealthCheck, HealthKind};
pub use reboot::RebootPolicy;
pub use rollout::{Batch, BatchError, Rollout};

/// Errors loading `fleet.yaml`; they read `file:line:column: key.path: message`.
pub type InventoryError = YamlError;

/// The whole inventory. hostctl reads `--fleet FILE`, else `$HOSTCTL_FLEET`, else the first
/// `fleet.yaml` in the working directory or a directory above it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a fleet inventory mapping with `hosts`")]
#[schemars(title = "hostctl fleet inventory (fleet.yaml)")]
pub struct Fleet {
    /// Path or flake reference of the fleet's flake; default: the directory of this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flake: Option<String>,
    /// Nix-format ed25519 secret key file that signs requests to agents, relative to this
    /// file; `--key FILE` or `$HOSTCTL_KEY` take its place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<PathBuf>,
    /// Settings for every host.
    #[serde(default)]
    pub defaults: Defaults,
    /// The hosts, by name; at least one.
    #[serde(deserialize_with = "deserialize_hosts")]
    #[schemars(extend("minProperties" = 1))]
    pub hosts: BTreeMap<HostName, Host>,
    /// How the fleet rolls forward.
    #[serde(default)]
    pub rollout: Rollout,
    /// A binary cache `apply` pushes the closures to once, for the agents to fetch from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<FleetCache>,
    /// Which commits `apply` (and `rollback` when it rebuilds) may deploy: signature
    /// policy for every host; `tag_commits` and a host's own `commits` replace it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commits: Option<crate::commits::CommitPolicy>,
    /// Signature policies for the hosts with a tag, replacing `commits` for them; a host
    /// whose tags name two different policies must set its own `commits`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_commits: BTreeMap<Tag, crate::commits::CommitPolicy>,
    /// Generation retention for the hosts with a tag, replacing `defaults.retention` for
    /// them; a host whose tags name two different policies must set its own `retention`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_retention: BTreeMap<Tag, crate::retention::Retention>,
    /// Reboot policies for the hosts with a tag, replacing `defaults.reboot` for them; a
    /// host whose tags name two different policies must set its own `reboot`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_reboot: BTreeMap<Tag, RebootPolicy>,
}

/// Settings that apply to every host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping of `port`, `mode`, `confirm_timeout`, `retention` and `reboot`"
)]
pub struct Defaults {
    /// Port the agents listen on, 1 to 65535.
    #[serde(deserialize_with = "port::deserialize_port")]
    #[schemars(range(min = 1))]
    pub port: u16,
    /// How a new configuration is activated.
    pub mode: Mode,
    /// How long an agent waits for confirmation before rolling back.
    pub confirm_timeout: Duration,
    /// Which system generations the agents keep when they collect garbage (after each
    /// confirmed deployment, and on `hostctl gc`); unset: each agent's own `retention`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::retention::Retention>,
    /// Whether `apply` reboots hosts into a new system (`never`, `if-needed`, `always`);
    /// unset: `never`, or `if-needed` with `apply --reboot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<RebootPolicy>,
}

/// The agent port unless configured otherwise.
pub const DEFAULT_PORT: u16 = 7420;

impl Default for Defaults {
    fn default() -> Self {
        Self {
            port: DEFAULT_PORT,
            mode: Mode::Switch,
            confirm_timeout: Duration::from_secs(30),
            retention: None,
            reboot: None,
        }
    }
}

/// The `switch-to-configuration` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Activate now and make it the boot default.
    #[default]
    Switch,
    /// Make it the boot default without activating.
    Boot,
    /// Activate now without making it the boot default.
    Test,
    /// Show what activation would do.
    DryActivate,
}

impl Mode {
    /// Every mode, in documentation order.
    pub const ALL: [Mode; 4] = [Mode::Switch, Mode::Boot, Mode::Test, Mode::DryActivate];

    /// The name used in YAML, on the command line and by `switch-to-configuration`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Switch => "switch",
            Self::Boot => "boot",
            Self::Test => "test",
            Self::DryActivate => "dry-activate",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that is not a mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mode `{0}`: expected switch, boot, test or dry-activate")]
pub struct ModeError(pub String);

impl FromStr for Mode {
    type Err = ModeError;
    fn from_str(s: &str) -> Result<Self, ModeError> {
        Self::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| ModeError(s.to_owned()))
    }
}

/// One host of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a host mapping with `address`")]
pub struct Host {
    /// Where its agent listens: an IP address or DNS name.
    pub address: Address,
    /// Tags for `@tag` selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    /// `nixosConfigurations` attribute; default: the host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<AttrName>,
    /// Expected system (e.g. x86_64-linux), checked against the evaluated config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<System>,
    /// Checks that must pass after activation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<HealthCheck>,
    /// Port its agent listens on, 1 to 65535; default: `defaults.port`.
    #[serde(default, deserialize_with = "port::deserialize_some_port", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
    /// This host's signature policy, replacing the fleet's `commits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commits: Option<crate::commits::CommitPolicy>,
    /// The agent's identity public key (`hostctl-agent identity`, or the NixOS module's
    /// `identity.pub`), pinned: a connection to an agent showing any other key fails at
    /// step `connect` and nothing is sent. Unset: the pin in `known_agents` beside this
    /// file (`hostctl enroll`), else the host is refused until enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_key: Option<crate::key::PublicKey>,
    /// This host's generation retention, replacing `tag_retention` and `defaults.retention`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::retention::Retention>,
    /// This host's reboot policy, replacing `tag_reboot` and `defaults.reboot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<RebootPolicy>,
}

impl Host {
    /// The port its agent listens on: its own `port`, or the fleet's `defaults.port`.
    pub fn agent_port(&self, defaults: &Defaults) -> u16 {
        self.port.unwrap_or(defaults.port)
    }

    /// The `nixosConfigurations` attribute to build: `configuration`, or the host name.
    pub fn configuration_attr(&self, name: &HostName) -> AttrName {
        self.configuration.clone().unwrap_or_else(|| AttrName::from(name))
    }
}

/// Reads the hosts mapping, rejecting an empty one and duplicate names. Checks run
/// inside `visit_map` so errors carry the location of the `hosts` mapping.
fn deserialize_hosts<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<HostName, Host>, D::Error> {
    struct HostsVisitor;

    impl<'de> serde::de::Visitor<'de> for HostsVisitor {
        type Value = BTreeMap<HostName, Host>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping from host names to hosts")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut hosts = BTreeMap::new();
            while let Some(name) = map.next_key::<HostName>()? {
                if hosts.contains_key(&name) {
                    return Err(serde::de::Error::custom(format!("host `{name}` is listed twice")));
                }
                let host = map.next_value()?;
                hosts.insert(name, host);
            }
            if hosts.is_empty() {
                return Err(serde::de::Error::custom("a fleet needs at least one host"));
            }
            Ok(hosts)
        }
    }

    d.deserialize_map(HostsVisitor)
}

/// A per-host setting resolved the fleet's way, with the key it came from (for messages):
/// the host's own (`hosts.<name>.<own>`), else the one its tags share in `<by_tag>`
/// (two of its tags naming different values is an error at `hosts.<name>` in `file`),
/// else the fleet's default (`fallback`, with its key). Used by `commits` and `retention`.
pub fn host_setting<'a, T: PartialEq>(
    fleet: &'a Fleet,
    name: &HostName,
    file: &Path,
    own: (Option<&'a T>, &str),
    by_tag: (&'a BTreeMap<Tag, T>, &str),
    fallback: Option<(&'a T, &str)>,
) -> Result<Option<(&'a T, String)>, YamlError> {
    let Some(host) = fleet.hosts.get(name) else { return Ok(None) };
    let ((own, own_key), (tagged_values, tag_key)) = (own, by_tag);
    if let Some(own) = own {
        return Ok(Some((own, format!("hosts.{name}.{own_key}"))));
    }
    let mut tagged = host.tags.iter().filter_map(|t| Some((t, tagged_values.get(t)?)));
    if let Some((tag, value)) = tagged.next() {
        if let Some((other, _)) = tagged.find(|(_, v)| *v != value) {
            return Err(YamlError::invalid(
                file,
                format!("hosts.{name}"),
                format!("its tags `{tag}` and `{other}` have different `{tag_key}` policies: set the host's own `{own_key}`"),
            ));
        }
        return Ok(Some((value, format!("{tag_key}.{tag}"))));
    }
    Ok(fallback.map(|(value, key)| (value, key.to_owned())))
}

/// A host's reboot policy (its own, its tags', the fleet's default) and the key it came
/// from; `None` when none is set.
pub fn host_reboot(fleet: &Fleet, name: &HostName, file: &Path) -> Result<Option<(RebootPolicy, String)>, YamlError> {
    let own = fleet.hosts.get(name).and_then(|h| h.reboot.as_ref());
    let fallback = fleet.defaults.reboot.as_ref().map(|p| (p, "defaults.reboot"));
    let found = host_setting(fleet, name, file, (own, "reboot"), (&fleet.tag_reboot, "tag_reboot"), fallback)?;
    Ok(found.map(|(policy, key)| (*policy, key)))
}

/// Reads and validates the inventory file at `path`.
pub fn load_fleet(path: &Path) -> Result<Fleet, InventoryError> {
    load_yaml(path)
}

/// Parses inventory `text`; `origin` names the file in error messages.
pub fn parse_fleet(text: &str, origin: &Path) -> Result<Fleet, InventoryError> {
    parse_yaml(text, origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_fleet_gets_defaults() {
        let fleet = parse_fleet("hosts:\n  web1:\n    address: web1.example.com\n", Path::new("f.yaml")).unwrap();
        assert_eq!(fleet.flake, None);
        assert_eq!(fleet.signing_key, None);
        assert_eq!(fleet.defaults, Defaults::default());
        assert_eq!(fleet.defaults.port, 7420);
        assert_eq!(fleet.defaults.mode, Mode::Switch);
        assert_eq!(fleet.defaults.confirm_timeout, Duration::from_secs(30));
        assert_eq!(fleet.rollout, Rollout::default());
        let name: HostName = "web1".parse().unwrap();
        let host = &fleet.hosts[&name];
        assert!(host.tags.is_empty() && host.health.is_empty());
        assert_eq!(host.configuration_attr(&name).as_str(), "web1");
    }

    #[test]
    fn configuration_attr_prefers_explicit() {
        let fleet =
            parse_fleet("hosts:\n  web1:\n    address: ::1\n    configuration: webServer\n", Path::new("f.yaml"))
                .unwrap();
        let name: HostName = "web1".parse().unwrap();
        assert_eq!(fleet.hosts[&name].configuration_attr(&name).as_str(), "webServer");
    }

    #[test]
    fn modes() {
        for mode in Mode::ALL {
            assert_eq!(mode.as_str().parse::<Mode>().unwrap(), mode);
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(json, format!("\"{mode}\""));
        }
        let err = "dry_activate".parse::<Mode>().unwrap_err();
        assert_eq!(err.to_string(), "invalid mode `dry_activate`: expected switch, boot, test or dry-activate");
    }

    #[test]
    fn fleet_round_trips_through_yaml() {
        let text = "hosts:\n  web1:\n    address: 192.0.2.1\n    health:\n    - command: [true]\n";
        let fleet = parse_fleet(text, Path::new("f.yaml")).unwrap();
        let again = serde_yaml::to_string(&fleet).unwrap();
        assert_eq!(parse_fleet(&again, Path::new("f.yaml")).unwrap(), fleet);
    }
}
