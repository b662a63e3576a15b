//! The agent's connection to the bus systemd listens on, behind synchronous calls.
//!
//! [`crate::activation::ServiceManager`] is synchronous and is called from the agent's
//! runtime (deployment tasks poll `status`, `launch` runs inside a task). zbus here runs on
//! tokio, and its blocking API would start a runtime inside the agent's, so the connection
//! lives on a thread of its own with a current-thread runtime: a call is spawned there and
//! the caller waits on a channel. The caller's thread (possibly a worker of the agent's
//! runtime) is held for one D-Bus round trip at most [`CALL_TIMEOUT`], never waiting on
//! work that needs the runtime it blocks. Dropping the [`Bridge`] ends the thread.
//!
//! The connection is made on first use and made again after a failure that was not an
//! error reply (systemd or the bus daemon may restart during a switch).

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

/// The thread with the connection; see the module documentation.
pub struct Bridge {
    runtime: tokio::runtime::Handle,
    /// Dropping it lets the thread's `block_on` return, which ends the thread.
    _stop: tokio::sync::oneshot::Sender<()>,
    connection: Arc<Mutex<Option<Connection>>>,
    bus: Bus,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").field("bus", &self.bus).finish_non_exhaustive()
    }
}

impl Bridge {
    /// Starts the thread (not the connection: that is made by the first call).
    pub fn start(bus: Bus) -> Result<Self, CallError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("hostctl-systemd-bus".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => return drop(ready_tx.send(Err(e.to_string()))),
                };
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                if ready_tx.send(Ok((runtime.handle().clone(), stop))).is_ok() {
                    // Runs the spawned calls until the Bridge is dropped.
                    let _ = runtime.block_on(stopped);
                }
            })
            .map_err(|e| CallError::NoAnswer(format!("cannot start the D-Bus thread: {e}")))?;
        let (runtime, stop) = ready_rx
            .recv()
            .map_err(|_| CallError::NoAnswer("the D-Bus thread ended at once".into()))?
            .map_err(|e| CallError::NoAnswer(format!("cannot start the D-Bus thread's runtime: {e}")))?;
        Ok(Self { runtime, _stop: stop, connection: Arc::new(Mutex::new(None)), bus })
    }

    /// Runs `call` with the connection on the bridge's thread and waits for its result.
    pub fn call<T, F, Fut>(&self, call: F) -> Result<T, CallError>
    where
        T: Send + 'static,
        F: FnOnce(Connection) -> Fut + Send + 'static,
        Fut: Future<Output = zbus::Result<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let slot = Arc::clone(&self.connection);
        let bus = self.bus.clone();
        self.runtime.spawn(async move {
            let result = match connection(&slot, &bus).await {
                Ok(conn) => tokio::time::timeout(CALL_TIMEOUT, call(conn))
                    .await
                    .unwrap_or_else(|_| Err(zbus::Error::Failure(format!("no answer within {CALL_TIMEOUT:?}"))))
                    .map_err(CallError::from),
                Err(e) => Err(e),
            };
            if let Err(CallError::NoAnswer(_) | CallError::NotConnected(_)) = &result {
                // Made again by the next call.
                slot.lock().await.take();
            }
            let _ = tx.send(result);
        });
        rx.recv_timeout(CALL_TIMEOUT * 2)
            .unwrap_or_else(|_| Err(CallError::NoAnswer("the D-Bus thread did not answer".into())))
    }
}

/// The connection, made if there is none.
async fn connection(slot: &Mutex<Option<Connection>>, bus: &Bus) -> Result<Connection, CallError> {
    let mut slot = slot.lock().await;
    if let Some(conn) = slot.as_ref() {
        return Ok(conn.clone());
    }
    let conn = tokio::time::timeout(CALL_TIMEOUT, connect(bus))
        .await
        .map_err(|_| {
            CallError::NotConnected(format!("connecting to the {} bus took over {CALL_TIMEOUT:?}", describe(bus)))
        })?
        .map_err(|e| CallError::NotConnected(format!("cannot connect to the {} bus: {e}", describe(bus))))?;
    *slot = Some(conn.clone());
    Ok(conn)
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
