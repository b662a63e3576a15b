//! [`Handles`]: the running agent's long-lived parts, built once by `crate::serve` and
//! shared by its front ends: the HTTP API (`crate::http`), D-Bus (`crate::dbus`) and the
//! status snapshot (`crate::status`). Cloning is cheap (every field is shared).

use std::sync::Arc;

use hostctl_nix::Nix;
use hostctl_schemas::agent_config::AgentConfig;

use crate::deploy::Deployer;
use crate::import::Importer;
use crate::pull::Puller;

/// What the agent's front ends reach.
#[derive(Debug, Clone)]
pub struct Handles {
    pub config: Arc<AgentConfig>,
    pub nix: Arc<Nix>,
    pub deployer: Arc<Deployer>,
    pub importer: Arc<Importer>,
    /// Garbage collection under the retention policy (`POST /v1/gc`, after confirmations).
    pub gc: Arc<crate::gc::Collector>,
    /// The pull-mode task's handle; `None` in push mode.
    pub pull: Option<Arc<Puller>>,
}
