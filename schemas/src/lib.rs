//! Shared vocabulary of hostctl: identities, the fleet inventory, the agent config,
//! and the JSON Schemas generated from them.
//!
//! Every type validates on construction and on deserialization, so a value of one of
//! these types is known good. YAML files are loaded with errors that name the file,
//! line, column and key path, e.g.
//! `fleet.yaml:7:5: hosts.web1.adress: unknown field `adress`, expected one of ...`.

pub mod agent_config;
pub mod api;
pub mod boot_config;
pub mod builders;
pub mod commits;
pub mod duration;
pub mod git_url;
pub mod ids;
pub mod inventory;
pub mod jsonschema;
pub mod key;
pub mod known_agents;
pub mod man;
pub mod perms;
pub mod reference;
pub mod retention;
pub mod signing;
pub mod text;
pub mod yaml;

pub use agent_config::{
    load_agent_config, parse_agent_config, AgentConfig, AgentConfigError, BinfmtConfig, Bus, LockPolicy, PullConfig,
};
pub use builders::{Builders, BuildersError};
pub use duration::{Duration, DurationError};
pub use ids::{Address, AttrName, HostName, InvalidId, LockId, StorePath, System, Tag};
pub use inventory::{
    load_fleet, parse_fleet, Batch, Defaults, Fleet, HealthCheck, HealthKind, Host, InventoryError, Mode, Rollout,
};
pub use jsonschema::{agent_config_schema, fleet_schema};
pub use key::{PublicKey, PublicKeyError};
pub use yaml::YamlError;
