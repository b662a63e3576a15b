//! `GET /v1/generations` — signed; read-only. The system profile's generations, with
//! the deployment that made each, newest first.

use serde::{Deserialize, Serialize};

use crate::api::deployments::DeploymentState;
use crate::ids::{LockId, StorePath};

/// Path of this endpoint.
pub const PATH: &str = "/v1/generations";

/// One generation of the system profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// Response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationsResponse {
    pub generations: Vec<Generation>,
}
