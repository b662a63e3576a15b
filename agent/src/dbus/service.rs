//! The `org.hostctl.Agent1` interface served at `/org/hostctl/Agent1`: read-only
//! properties (values kept by [`super::publish`], which emits `PropertiesChanged`), the
//! deployment signals, and the methods. `Pull` and `Rollback` change the host, so they
//! ask the bus for the caller's uid (`GetConnectionUnixUser` of the message's sender,
//! never anything the message claims) and refuse anyone but root.
//!
//! The doc comments of the members below are part of the introspection data, checked in
//! as `schemas/dbus/org.hostctl.Agent1.xml`.

use std::sync::{Arc, Mutex, MutexGuard};

use hostctl_schemas::api::rollback::{Previous, RollbackRequest, RollbackTarget};
use hostctl_schemas::ids::LockId;
use zbus::fdo::DBusProxy;
use zbus::message::{Header, Message};
use zbus::names::ErrorName;
use zbus::object_server::SignalEmitter;
use zbus::proxy::CacheProperties;
use zbus::{interface, Connection, DBusError};

use super::props::Props;
use crate::deploy_error::DeployError;
use crate::handles::Handles;

/// Error names (the `org.freedesktop.DBus.Error` ones where one fits).
pub const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
pub const INVALID_ARGS: &str = "org.freedesktop.DBus.Error.InvalidArgs";
pub const FAILED: &str = "org.freedesktop.DBus.Error.Failed";
pub const NOT_FOUND: &str = "org.hostctl.Agent1.Error.NotFound";
pub const CONFLICT: &str = "org.hostctl.Agent1.Error.Conflict";
pub const NOT_PULL_MODE: &str = "org.hostctl.Agent1.Error.NotPullMode";

/// A D-Bus error reply: a name and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {message}")]
pub struct MethodError {
    pub name: &'static str,
    pub message: String,
}

impl MethodError {
    fn new(name: &'static str, message: impl Into<String>) -> Self {
        Self { name, message: message.into() }
    }
}

impl DBusError for MethodError {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        Message::error(call, self.name)?.build(&(self.message.as_str(),))
    }

    fn name(&self) -> ErrorName<'_> {
        ErrorName::from_static_str_unchecked(self.name)
    }

    fn description(&self) -> Option<&str> {
        Some(&self.message)
    }
}

impl From<zbus::Error> for MethodError {
    fn from(e: zbus::Error) -> Self {
        Self::new(FAILED, e.to_string())
    }
}

impl From<zbus::fdo::Error> for MethodError {
    fn from(e: zbus::fdo::Error) -> Self {
        Self::new(FAILED, e.to_string())
    }
}

/// The deployer's errors keep the meaning they have in the HTTP API (400 -> InvalidArgs,
/// 404 -> NotFound, 409 -> Conflict, anything else -> Failed); the message is the same.
impl From<DeployError> for MethodError {
    fn from(e: DeployError) -> Self {
        let name = match &e {
            DeployError::Invalid(_) => INVALID_ARGS,
            DeployError::NotFound(_) => NOT_FOUND,
            DeployError::Conflict(_) => CONFLICT,
            DeployError::Internal(_) => FAILED,
        };
        Self::new(name, e.to_string())
    }
}

/// The object behind `/org/hostctl/Agent1`.
#[derive(Debug)]
pub struct AgentService {
    app: Handles,
    props: Arc<Mutex<Props>>,
}

impl AgentService {
    /// `props` is shared with the publisher, which updates it before it signals changes.
    pub fn new(app: Handles, props: Arc<Mutex<Props>>) -> Self {
        Self { app, props }
    }

    fn props(&self) -> MutexGuard<'_, Props> {
        // Plain values, each replaced whole: still consistent after a panic elsewhere.
        self.props.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[interface(name = "org.hostctl.Agent1")]
impl AgentService {
    /// Status: the agent's full status as a JSON document, the same one `GET /v1/status`
    /// answers (hostname, system, state, generation, toplevel, rev, lock, deployment,
    /// pinned_lock, booted_system, current_system, emulated_systems, version, pull).
    /// Nulls stay nulls there. Allowed for everyone.
    #[zbus(out_args("status"))]
    async fn status(&self) -> Result<String, MethodError> {
        let status = crate::status::snapshot(&self.app).map_err(|e| MethodError::new(FAILED, e))?;
        serde_json::to_string(&status).map_err(|e| MethodError::new(FAILED, e.to_string()))
    }

    /// Generations: the system profile's generations and the journaled deployments as a
    /// JSON document, the same one `GET /v1/generations` answers ({"generations": [...],
    /// "deployments": [...]}, newest first). Allowed for everyone.
    #[zbus(out_args("generations"))]
    async fn generations(&self) -> Result<String, MethodError> {
        let response = crate::generations::list(&self.app.nix, &self.app.deployer)
            .await
            .map_err(|e| MethodError::new(FAILED, e.to_string()))?;
        serde_json::to_string(&response).map_err(|e| MethodError::new(FAILED, e.to_string()))
    }

    /// Pull: pull mode only: fetch the tracked branch now (as a verified webhook would)
    /// and apply what the lock policy allows; returns at once, the round runs in the
    /// background. Root only (org.freedesktop.DBus.Error.AccessDenied otherwise);
    /// org.hostctl.Agent1.Error.NotPullMode when the agent has no `pull:` configuration.
    async fn pull(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), MethodError> {
        require_root(connection, &header, "Pull").await?;
        let puller = self.app.pull.as_ref().ok_or_else(|| {
            MethodError::new(NOT_PULL_MODE, "this agent is not in pull mode (no `pull:` in its configuration)")
        })?;
        puller.trigger();
        Ok(())
    }

    /// Rollback: returns the host to an earlier system, as `POST /v1/rollback` does.
    /// target: "previous" (the newest earlier confirmed deployment with another lock, or
    /// the system the current one replaced; while a deployment awaits confirmation, that
    /// one is rolled back at once), a generation number of the system profile ("12"), or
    /// a lock id (64 hex characters). The rollback is activated and checked with the
    /// agent's health checks like any deployment, without a confirmation window (the
    /// caller is on the host). Returns the rollback's deployment id; its end is announced
    /// by DeploymentFinished. Root only (org.freedesktop.DBus.Error.AccessDenied
    /// otherwise). Errors: org.freedesktop.DBus.Error.InvalidArgs (bad target),
    /// org.hostctl.Agent1.Error.NotFound (no such lock or generation, or its system is no
    /// longer in the store), org.hostctl.Agent1.Error.Conflict (a deployment is running).
    #[zbus(out_args("deployment"))]
    async fn rollback(
        &self,
        target: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<String, MethodError> {
        require_root(connection, &header, "Rollback").await?;
        let to = parse_target(&target)?;
        let request = RollbackRequest {
            to,
            id: None,
            confirm_timeout: Some(std::time::Duration::ZERO.into()),
            health_failure: None,
        };
        let deployment = self.app.deployer.rollback(request).await?;
        Ok(deployment.id)
    }

    /// DeploymentStarted: a deployment's activation began (it left `queued`). Emitted once
    /// per deployment, after the PropertiesChanged of the same change; a rollback of that
    /// deployment does not emit it again. rev and lock are "" when the deployment has none.
    #[zbus(signal)]
    pub async fn deployment_started(
        emitter: &SignalEmitter<'_>,
        id: &str,
        toplevel: &str,
        rev: &str,
        lock: &str,
        mode: &str,
    ) -> zbus::Result<()>;

    /// DeploymentFinished: a deployment reached its final state, result "confirmed",
    /// "failed" or "rolled-back"; error says why ("" when confirmed). Emitted once per
    /// deployment (also for one that failed before activating), after the
    /// PropertiesChanged of the same change.
    #[zbus(signal)]
    pub async fn deployment_finished(
        emitter: &SignalEmitter<'_>,
        id: &str,
        result: &str,
        error: &str,
    ) -> zbus::Result<()>;

    /// Hostname: the agent's host name.
    #[zbus(property)]
    fn hostname(&self) -> String {
        self.props().hostname.clone()
    }

    /// State: "idle", "activating" or "awaiting-confirmation".
    #[zbus(property)]
    fn state(&self) -> String {
        self.props().state.clone()
    }

    /// CurrentGeneration: the system profile's current generation; 0 when there is none.
    #[zbus(property)]
    fn current_generation(&self) -> u64 {
        self.props().current_generation
    }

    /// CurrentSystem: the toplevel store path of the profile's current generation
    /// (`toplevel` in Status(); /run/current-system is Status()'s `current_system`);
    /// "" when there is none.
    #[zbus(property)]
    fn current_system(&self) -> String {
        self.props().current_system.clone()
    }

    /// Revision: the git revision of the deployment that produced CurrentSystem; "" if
    /// unknown.
    #[zbus(property)]
    fn revision(&self) -> String {
        self.props().revision.clone()
    }

    /// LockHash: the lock id (SHA-256 of flake.lock, 64 hex) of the deployment that
    /// produced CurrentSystem; "" if unknown.
    #[zbus(property)]
    fn lock_hash(&self) -> String {
        self.props().lock_hash.clone()
    }

    /// PinnedLock: the lock the host is pinned to (the lock of its current deployment);
    /// "" if none.
    #[zbus(property)]
    fn pinned_lock(&self) -> String {
        self.props().pinned_lock.clone()
    }

    /// EmulatedSystems: the Nix systems emulated through binfmt_misc.
    #[zbus(property)]
    fn emulated_systems(&self) -> Vec<String> {
        self.props().emulated_systems.clone()
    }

    /// LastDeployment: the id of the newest deployment in the agent's journal, whatever
    /// its state; "" if none. Its details are in Generations().
    #[zbus(property)]
    fn last_deployment(&self) -> String {
        self.props().last_deployment.clone()
    }

    /// PendingLock: pull mode: the lock id of a fetched commit held pending until an
    /// operator approves its lock change; "" if none (or not in pull mode).
    #[zbus(property)]
    fn pending_lock(&self) -> String {
        self.props().pending_lock.clone()
    }

    /// RebootRequired: whether the system the profile points at needs a reboot to take
    /// full effect (its kernel, initrd, kernel modules, kernel parameters or systemd
    /// differ from the booted system's); false also when that cannot be told. The parts
    /// are Status()'s `reboot_reasons`.
    #[zbus(property)]
    fn reboot_required(&self) -> bool {
        self.props().reboot_required
    }
}

/// Refuses callers other than root: their uid comes from the bus daemon, which knows it
/// from the socket's credentials.
async fn require_root(connection: &Connection, header: &Header<'_>, method: &str) -> Result<(), MethodError> {
    let sender = header
        .sender()
        .ok_or_else(|| MethodError::new(ACCESS_DENIED, format!("{method}: the call has no sender to check")))?;
    let bus = DBusProxy::builder(connection).cache_properties(CacheProperties::No).build().await?;
    let uid = bus.get_connection_unix_user(sender.clone().into()).await?;
    if uid == 0 {
        Ok(())
    } else {
        Err(MethodError::new(
            ACCESS_DENIED,
            format!("{method} changes the host: only root (uid 0) may call it; the caller {sender} is uid {uid}"),
        ))
    }
}

/// `previous`, a generation number, or a lock id.
pub fn parse_target(target: &str) -> Result<RollbackTarget, MethodError> {
    if target == "previous" {
        return Ok(RollbackTarget::Previous(Previous::Previous));
    }
    if target.len() == 64 {
        if let Ok(lock) = target.parse::<LockId>() {
            return Ok(RollbackTarget::Lock { lock });
        }
    }
    if !target.is_empty() && target.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(generation) = target.parse::<u64>() {
            return Ok(RollbackTarget::Generation { generation });
        }
    }
    Err(MethodError::new(
        INVALID_ARGS,
        format!(
            "Rollback target `{target}`: expected \"previous\", a generation number or a lock id (64 hex characters)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(parse_target("previous").unwrap(), RollbackTarget::Previous(Previous::Previous));
        assert_eq!(parse_target("12").unwrap(), RollbackTarget::Generation { generation: 12 });
        let lock = "AB".repeat(32);
        assert_eq!(parse_target(&lock).unwrap(), RollbackTarget::Lock { lock: lock.parse().unwrap() });
        for bad in ["", "latest", "-1", "1.5", &"g".repeat(64), "99999999999999999999999"] {
            let e = parse_target(bad).unwrap_err();
            assert_eq!(e.name, INVALID_ARGS, "{bad}");
            assert!(e.message.contains(&format!("`{bad}`")), "{}", e.message);
        }
    }

    #[test]
    fn deploy_errors_keep_their_meaning() {
        assert_eq!(MethodError::from(DeployError::not_found("x")).name, NOT_FOUND);
        assert_eq!(MethodError::from(DeployError::conflict("x")).name, CONFLICT);
        assert_eq!(MethodError::from(DeployError::invalid("x")).name, INVALID_ARGS);
        assert_eq!(MethodError::from(DeployError::internal("x")), MethodError::new(FAILED, "x"));
    }
}
