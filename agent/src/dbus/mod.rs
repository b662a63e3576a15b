//! The agent on D-Bus: owns `org.hostctl.Agent1` on the configured bus and serves
//! `/org/hostctl/Agent1` ([`service`]), publishing the status snapshot as properties and
//! signals ([`publish`], [`props`]); [`client`] is the other side (`hostctl-agent status`).
//!
//! The bus is optional for the agent: when it cannot connect (no daemon, name refused by
//! the policy, name taken) it keeps serving HTTP and activating, and retries with a
//! backoff of 0.5 s doubling to 30 s, warning once per streak of failures; a lost
//! connection is re-established the same way.
//!
//! Invariant: only this module knows the `org.hostctl.Agent1` interface; it reads state
//! only through [`crate::status::snapshot`] (plus the journal's newest deployment id) and
//! acts only through the [`crate::deploy::Deployer`] and the [`crate::pull::Puller`].

pub mod client;
pub mod props;
mod publish;
pub mod service;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hostctl_schemas::agent_config::Bus;
use zbus::connection::Builder;
use zbus::{Address, Connection};

use crate::handles::Handles;
use props::Props;
use publish::{Ended, Publisher};
use service::AgentService;

/// The well-known name, object path and interface (DESIGN.md).
pub const NAME: &str = "org.hostctl.Agent1";
pub const PATH: &str = "/org/hostctl/Agent1";
pub const INTERFACE: &str = "org.hostctl.Agent1";

/// The first retry delay and the longest one.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The address `bus` stands for (`system`: `DBUS_SYSTEM_BUS_ADDRESS` or the standard
/// socket; `session`: `DBUS_SESSION_BUS_ADDRESS` or `$XDG_RUNTIME_DIR/bus`).
pub fn address(bus: &Bus) -> zbus::Result<Address> {
    match bus {
        Bus::System => Address::system(),
        Bus::Session => Address::session(),
        Bus::Address(text) => text.parse(),
    }
}

/// `bus` for messages: which bus and its address, e.g.
/// `the system bus (unix:path=/var/run/dbus/system_bus_socket)`.
pub fn describe(bus: &Bus) -> String {
    let which = match bus {
        Bus::System => "the system bus",
        Bus::Session => "the session bus",
        Bus::Address(_) => "the bus",
    };
    match address(bus) {
        Ok(address) => format!("{which} ({address})"),
        Err(e) => format!("{which} ({}: not a usable address: {e})", bus.as_str()),
    }
}

/// A connection builder for `bus`.
pub(crate) fn builder(bus: &Bus) -> zbus::Result<Builder<'static>> {
    Builder::address(address(bus)?)
}

/// Starts the D-Bus task for the agent (see the module documentation).
pub fn spawn(app: Handles) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(app))
}

/// Connects, serves until the connection is lost, reconnects; forever, or until the
/// agent's event channel closes (the agent is going away).
pub async fn run(app: Handles) {
    let bus = app.config.bus.clone();
    let bus_text = describe(&bus);
    let mut delay = BACKOFF_START;
    let mut failures: u32 = 0;
    loop {
        match connect(&app, &bus).await {
            Ok((connection, publisher)) => {
                tracing::info!(bus = %bus_text, failed_attempts = failures, "D-Bus: serving {NAME} at {PATH}");
                failures = 0;
                delay = BACKOFF_START;
                match publisher.run(&connection).await {
                    Ended::Stopped => return,
                    Ended::Closed => tracing::warn!(bus = %bus_text, "D-Bus: the connection was lost; reconnecting"),
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(
                        bus = %bus_text,
                        error = %e,
                        "D-Bus: cannot serve {NAME}; the agent works on without it and retries \
                         (every {BACKOFF_START:?} doubling to {BACKOFF_MAX:?}; logged again once it connects)"
                    );
                } else {
                    tracing::debug!(bus = %bus_text, error = %e, attempt = failures, "D-Bus: still unavailable");
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// One connection with the name owned and the object served, and its publisher (which
/// subscribed to the agent's events before the first snapshot, so it misses nothing).
async fn connect(app: &Handles, bus: &Bus) -> zbus::Result<(Connection, Publisher)> {
    let props = Arc::new(Mutex::new(Props::default()));
    let publisher = Publisher::new(app.clone(), Arc::clone(&props));
    let service = AgentService::new(app.clone(), props);
    let connection = builder(bus)?.serve_at(PATH, service)?.name(NAME)?.build().await?;
    Ok((connection, publisher))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_name_the_address() {
        let bus: Bus = "unix:path=/tmp/x/bus".parse().unwrap();
        assert_eq!(describe(&bus), "the bus (unix:path=/tmp/x/bus)");
        assert!(describe(&Bus::System).starts_with("the system bus (unix:path="), "{}", describe(&Bus::System));
        let odd = Bus::Address("nosuch:x=1".into());
        assert!(describe(&odd).contains("nosuch:x=1: not a usable address"), "{}", describe(&odd));
    }
}
