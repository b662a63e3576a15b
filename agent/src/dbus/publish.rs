//! Keeps the published properties equal to the status snapshot: on every agent event
//! (and every [`POLL`], for changes made outside the agent, e.g. a profile switched by
//! hand), it recomputes the snapshot, stores the new values, emits one
//! `PropertiesChanged` with the properties whose value changed, then the deployment
//! signal the event calls for.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use zbus::fdo::Properties;
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::Connection;

use super::props::{deployment_signal, DeploymentSignal, Props};
use super::service::AgentService;
use super::{INTERFACE, PATH};
use crate::events::AgentEvent;
use crate::handles::Handles;

/// How often the snapshot is recomputed without an event. Every change the agent makes
/// (journal, pull state, binfmt entries) is announced at once; this only catches what
/// others change, so it can be slow and keep an idle agent asleep.
const POLL: Duration = Duration::from_secs(30);

/// Why [`Publisher::run`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The bus connection closed: reconnect.
    Closed,
    /// The agent's event channel closed: the agent is stopping.
    Stopped,
}

/// The publishing side of one connection.
#[derive(Debug)]
pub struct Publisher {
    app: Handles,
    props: Arc<Mutex<Props>>,
    events: Receiver<AgentEvent>,
    /// Whether the last snapshot failed (its error is logged once per streak).
    failing: bool,
}

impl Publisher {
    /// Subscribes to the agent's events, then sets `props` from a first snapshot.
    pub fn new(app: Handles, props: Arc<Mutex<Props>>) -> Self {
        let events = app.deployer.events().subscribe();
        let mut publisher = Self { app, props, events, failing: false };
        if let Some(first) = publisher.compute() {
            *publisher.props() = first;
        }
        publisher
    }

    fn props(&self) -> MutexGuard<'_, Props> {
        self.props.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The values now; `None` (logged once per streak) if the snapshot fails.
    fn compute(&mut self) -> Option<Props> {
        match crate::status::snapshot(&self.app) {
            Ok(status) => {
                self.failing = false;
                let records = self.app.deployer.records();
                let last = records.last().map(|r| r.deployment.id.as_str());
                Some(Props::from_status(&status, last))
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(error = %e, "D-Bus: cannot read the status; the properties keep their values");
                }
                self.failing = true;
                None
            }
        }
    }

    /// Publishes until the connection closes or the agent stops.
    pub async fn run(mut self, connection: &Connection) -> Ended {
        let emitter = match SignalEmitter::new(connection, PATH) {
            Ok(emitter) => emitter,
            Err(e) => {
                tracing::error!(error = %e, "D-Bus: cannot emit signals on {PATH}");
                return Ended::Closed;
            }
        };
        // Whatever changed between the first snapshot and now.
        self.refresh(&emitter).await;
        let mut poll = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                () = connection.closed() => return Ended::Closed,
                event = self.events.recv() => match event {
                    Ok(AgentEvent::Deployment { previous, deployment }) => {
                        self.refresh(&emitter).await;
                        if let Some(signal) = deployment_signal(previous, &deployment) {
                            emit_deployment(&emitter, signal).await;
                        }
                    }
                    // A lagging receiver lost some events; the snapshot is still whole.
                    Ok(AgentEvent::Changed) | Err(RecvError::Lagged(_)) => self.refresh(&emitter).await,
                    Err(RecvError::Closed) => return Ended::Stopped,
                },
                _ = poll.tick() => self.refresh(&emitter).await,
            }
        }
    }

    /// Recomputes the values and signals the ones that changed.
    async fn refresh(&mut self, emitter: &SignalEmitter<'_>) {
        let Some(new) = self.compute() else { return };
        let changes = {
            let mut current = self.props();
            let changes = current.changes(&new);
            *current = new;
            changes
        };
        if changes.is_empty() {
            return;
        }
        let changed: HashMap<&str, _> = changes.into_iter().collect();
        let interface = InterfaceName::from_static_str_unchecked(INTERFACE);
        if let Err(e) = Properties::properties_changed(emitter, interface, changed, Cow::Borrowed(&[])).await {
            tracing::debug!(error = %e, "D-Bus: cannot emit PropertiesChanged");
        }
    }
}

async fn emit_deployment(emitter: &SignalEmitter<'_>, signal: DeploymentSignal) {
    let sent = match &signal {
        DeploymentSignal::Started { id, toplevel, rev, lock, mode } => {
            AgentService::deployment_started(emitter, id, toplevel, rev, lock, mode).await
        }
        DeploymentSignal::Finished { id, result, error } => {
            AgentService::deployment_finished(emitter, id, result, error).await
        }
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, ?signal, "D-Bus: cannot emit a deployment signal");
    }
}
