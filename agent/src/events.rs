//! What changed in the agent, broadcast to whoever reports live (the D-Bus service).
//!
//! The journal sends a [`AgentEvent::Deployment`] after every write of a record, so every
//! path that changes a deployment (HTTP, pull mode, rollback, recovery) is covered without
//! calling anything itself. Other state that `GET /v1/status` reports (pull state, binfmt
//! entries) sends [`AgentEvent::Changed`]. Receivers recompute what they publish from the
//! same sources as the HTTP status; events are hints, never the state itself, so a
//! receiver that lags and misses some loses nothing but intermediate values.

use hostctl_schemas::api::deployments::{Deployment, DeploymentState};
use tokio::sync::broadcast;

/// How many events a slow receiver may fall behind before it misses some.
const CAPACITY: usize = 256;

/// One change.
#[derive(Debug, Clone)]
pub enum AgentEvent {
    /// A deployment was journaled: new (`previous` is `None`) or changed.
    Deployment { previous: Option<DeploymentState>, deployment: Box<Deployment> },
    /// Some other part of the status changed.
    Changed,
}

/// The sending side; cheap to clone.
#[derive(Debug, Clone)]
pub struct Events(broadcast::Sender<AgentEvent>);

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    pub fn new() -> Self {
        Self(broadcast::channel(CAPACITY).0)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<AgentEvent> {
        self.0.subscribe()
    }

    /// Sends `event`; having no receiver is normal (no D-Bus), not an error.
    pub fn send(&self, event: AgentEvent) {
        let _ = self.0.send(event);
    }

    /// Sends [`AgentEvent::Changed`].
    pub fn changed(&self) {
        self.send(AgentEvent::Changed);
    }
}
