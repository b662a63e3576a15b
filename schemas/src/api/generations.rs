//! `GET /v1/generations` — signed; read-only. The system profile's generations, with
//! the deployment that made each, newest first; and the agent's deployments (including
//! failed ones and rollbacks, which may have no generation), newest first: what
//! `hostctl history` shows.

use serde::{Deserialize, Serialize};

use crate::api::deployments::{Deployment, DeploymentState};
use crate::ids::{LockId, StorePath};
use crate::inventory::Mode;

/// Path of this endpoint.
pub const PATH: &str = "/v1/generations";

/// One generation of the system profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Generation {
    pub number: u64,
    pub toplevel: StorePath,
    /// Unix time in seconds when the generation was created.
    pub time: u64,
    pub current: bool,
    /// The deployment that created it, if the agent's journal knows it.
    pub deployment: Option<String>,
    pub rev: Option<String>,
    pub lock: Option<LockId>,
    pub result: Option<DeploymentState>,
    #[serde(default)]
    pub mode: Option<Mode>,
}

/// Response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GenerationsResponse {
    pub generations: Vec<Generation>,
    /// Every deployment in the agent's journal, newest first.
    #[serde(default)]
    pub deployments: Vec<Deployment>,
}
