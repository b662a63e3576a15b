//! The agent's connection to the bus systemd listens on, used directly on the agent's
//! tokio runtime.
//!
//! The connection is made on first use and made again after a failure that was not an
//! error reply (systemd or the bus daemon may restart during a switch). Every call, the
//! connect included, is bounded by [`CALL_TIMEOUT`]: a busy systemd delays a deployment
//! task, never a runtime worker.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hostctl_schemas::agent_config::Bus;
use tokio::sync::Mutex;
use zbus::Connection;

/// How long one call may take: systemd answers at once, but a switch can keep it busy.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(25);

/// Why a call has no result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The other side answered with this D-Bus error.
    #[error("{name}: {message}")]
    Refused { name: String, message: String },
    /// No connection could be made, so nothing was sent.
    #[error("{0}")]
    NotConnected(String),
    /// No answer: a broken connection or a timeout (the call may have been carried out).
    #[error("{0}")]
    NoAnswer(String),
}

impl CallError {
    /// Whether the error reply is `name` (e.g. `org.freedesktop.systemd1.NoSuchUnit`).
    pub fn is(&self, error_name: &str) -> bool {
        matches!(self, Self::Refused { name, .. } if name == error_name)
    }
}

impl From<zbus::Error> for CallError {
    fn from(e: zbus::Error) -> Self {
        match e {
            zbus::Error::MethodError(name, message, _) => {
                Self::Refused { name: name.to_string(), message: message.unwrap_or_default() }
            }
            other => Self::NoAnswer(other.to_string()),
        }
    }
}

/// The bus and its connection once made; clones share the connection.
#[derive(Clone)]
pub struct BusConnection {
    bus: Bus,
    slot: Arc<Mutex<Option<Connection>>>,
}

impl std::fmt::Debug for BusConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusConnection").field("bus", &self.bus).finish_non_exhaustive()
    }
}

impl BusConnection {
    /// Talks to `bus` (connected on the first call).
    pub fn new(bus: Bus) -> Self {
        Self { bus, slot: Arc::new(Mutex::new(None)) }
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Runs `call` with the connection, within [`CALL_TIMEOUT`]; a connection that did
    /// not answer is dropped, to be made again by the next call.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, CallError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = zbus::Result<T>>,
    {
        let result = match self.connection().await {
            Ok(conn) => tokio::time::timeout(CALL_TIMEOUT, call(conn))
                .await
                .unwrap_or_else(|_| Err(zbus::Error::Failure(format!("no answer within {CALL_TIMEOUT:?}"))))
                .map_err(CallError::from),
            Err(e) => Err(e),
        };
        if let Err(CallError::NoAnswer(_) | CallError::NotConnected(_)) = &result {
            self.slot.lock().await.take();
        }
        result
    }

    /// The connection, made if there is none.
    async fn connection(&self) -> Result<Connection, CallError> {
        let mut slot = self.slot.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let bus = &self.bus;
        let conn = tokio::time::timeout(CALL_TIMEOUT, connect(bus))
            .await
            .map_err(|_| {
                CallError::NotConnected(format!("connecting to the {} bus took over {CALL_TIMEOUT:?}", describe(bus)))
            })?
            .map_err(|e| CallError::NotConnected(format!("cannot connect to the {} bus: {e}", describe(bus))))?;
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

async fn connect(bus: &Bus) -> zbus::Result<Connection> {
    let builder = match bus {
        Bus::System => zbus::connection::Builder::system()?,
        Bus::Session => zbus::connection::Builder::session()?,
        Bus::Address(address) => zbus::connection::Builder::address(address.as_str())?,
    };
    builder.method_timeout(CALL_TIMEOUT).build().await
}

/// `system`, `session` or the address, for messages.
pub fn describe(bus: &Bus) -> String {
    match bus {
        Bus::System => "system".to_owned(),
        Bus::Session => "session".to_owned(),
        Bus::Address(address) => format!("`{address}`"),
    }
}
