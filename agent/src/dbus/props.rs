//! What the `org.hostctl.Agent1` object publishes, derived from the status snapshot: the
//! property values ([`Props`]), which of them changed between two snapshots, and which
//! deployment signal a journaled deployment change calls for ([`DeploymentSignal`]).
//!
//! D-Bus has no null: a missing string is `""`, a missing generation `0`.

use hostctl_schemas::api::deployments::{Deployment, DeploymentState};
use hostctl_schemas::api::status::{AgentState, StatusResponse};
use zbus::zvariant::Value;

use crate::deploy::state_name;

/// The properties' values, as published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    pub hostname: String,
    /// `idle`, `activating` or `awaiting-confirmation` (the status' `state`).
    pub state: String,
    /// The system profile's current generation; 0 when it has none.
    pub current_generation: u64,
    /// The toplevel of the profile's current generation (the status' `toplevel`, not
    /// `/run/current-system`, which `Status()` reports as `current_system`).
    pub current_system: String,
    /// Revision and lock id of the deployment that produced `current_system`.
    pub revision: String,
    pub lock_hash: String,
    pub pinned_lock: String,
    pub emulated_systems: Vec<String>,
    /// Id of the newest deployment in the journal, whatever its state.
    pub last_deployment: String,
    /// Pull mode: the lock of a commit held pending for approval.
    pub pending_lock: String,
    /// The status' `reboot_required` (`false` also when it cannot be told).
    pub reboot_required: bool,
}

impl Props {
    /// The values for `status`; `last_deployment` is the newest journaled deployment's id.
    pub fn from_status(status: &StatusResponse, last_deployment: Option<&str>) -> Self {
        let text = |s: &Option<String>| s.clone().unwrap_or_default();
        Self {
            hostname: status.hostname.clone(),
            state: agent_state_name(status.state).to_owned(),
            current_generation: status.generation.unwrap_or(0),
            current_system: text(&status.toplevel),
            revision: text(&status.rev),
            lock_hash: text(&status.lock),
            pinned_lock: text(&status.pinned_lock),
            emulated_systems: status.emulated_systems.clone(),
            last_deployment: last_deployment.unwrap_or_default().to_owned(),
            pending_lock: status
                .pull
                .as_ref()
                .and_then(|p| p.pending_lock.as_ref())
                .map(ToString::to_string)
                .unwrap_or_default(),
            reboot_required: status.reboot_required == Some(true),
        }
    }

    /// The D-Bus names and new values of the properties that differ from `self` in `new`.
    pub fn changes(&self, new: &Props) -> Vec<(&'static str, Value<'static>)> {
        let mut out = Vec::new();
        let mut text = |name: &'static str, old: &String, new: &String| {
            if old != new {
                out.push((name, Value::from(new.clone())));
            }
        };
        text("Hostname", &self.hostname, &new.hostname);
        text("State", &self.state, &new.state);
        text("CurrentSystem", &self.current_system, &new.current_system);
        text("Revision", &self.revision, &new.revision);
        text("LockHash", &self.lock_hash, &new.lock_hash);
        text("PinnedLock", &self.pinned_lock, &new.pinned_lock);
        text("LastDeployment", &self.last_deployment, &new.last_deployment);
        text("PendingLock", &self.pending_lock, &new.pending_lock);
        if self.current_generation != new.current_generation {
            out.push(("CurrentGeneration", Value::from(new.current_generation)));
        }
        if self.emulated_systems != new.emulated_systems {
            out.push(("EmulatedSystems", Value::from(new.emulated_systems.clone())));
        }
        if self.reboot_required != new.reboot_required {
            out.push(("RebootRequired", Value::from(new.reboot_required)));
        }
        out
    }
}

/// The API name of an agent state.
pub fn agent_state_name(state: AgentState) -> &'static str {
    match state {
        AgentState::Idle => "idle",
        AgentState::Activating => "activating",
        AgentState::AwaitingConfirmation => "awaiting-confirmation",
    }
}

/// A deployment signal to emit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeploymentSignal {
    Started { id: String, toplevel: String, rev: String, lock: String, mode: String },
    Finished { id: String, result: String, error: String },
}

/// The signal a journal write of `deployment` (whose state was `previous`, `None` for a new
/// record) calls for: `Started` once, when it leaves `queued` for `activating` (a later
/// rollback of the same deployment, which is `activating` again, is not a new start);
/// `Finished` once, when it first reaches a final state (also when it never activated).
pub fn deployment_signal(previous: Option<DeploymentState>, deployment: &Deployment) -> Option<DeploymentSignal> {
    let state = deployment.state;
    let fresh = matches!(previous, None | Some(DeploymentState::Queued));
    if state == DeploymentState::Activating && fresh {
        return Some(DeploymentSignal::Started {
            id: deployment.id.clone(),
            toplevel: deployment.toplevel.to_string(),
            rev: deployment.rev.clone().unwrap_or_default(),
            lock: deployment.lock.as_ref().map(ToString::to_string).unwrap_or_default(),
            mode: deployment.mode.as_str().to_owned(),
        });
    }
    if state.is_final() && !previous.is_some_and(DeploymentState::is_final) {
        return Some(DeploymentSignal::Finished {
            id: deployment.id.clone(),
            result: state_name(state).to_owned(),
            error: deployment.error.clone().unwrap_or_default(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use hostctl_schemas::api::deployments::DeploymentRequest;
    use hostctl_schemas::api::status::PullStatus;
    use hostctl_schemas::inventory::Mode;

    use super::*;

    const TOP: &str = "/nix/store/00000000000000000000000000000000-nixos-system-web1";

    fn status() -> StatusResponse {
        StatusResponse { version: "0".into(), ..StatusResponse::idle("web1") }
    }

    fn deployment(state: DeploymentState) -> Deployment {
        let request = DeploymentRequest {
            id: "d1".into(),
            toplevel: TOP.parse().unwrap(),
            rev: Some("abc".into()),
            lock: None,
            mode: Mode::Switch,
            confirm_timeout: std::time::Duration::ZERO.into(),
            health: Vec::new(),
            cache: None,
            commit_signature: None,
            retention: None,
            reboot: false,
        };
        Deployment { state, ..Deployment::queued(&request, None, 0) }
    }

    #[test]
    fn nulls_become_empty_and_zero() {
        let p = Props::from_status(&status(), None);
        assert_eq!((p.current_generation, p.current_system.as_str(), p.pending_lock.as_str()), (0, "", ""));
        assert_eq!(p.state, "idle");
    }

    #[test]
    fn only_changed_properties_are_reported() {
        let old = Props::from_status(&status(), None);
        assert!(old.changes(&old.clone()).is_empty());
        let lock = "a".repeat(64);
        let mut s = status();
        s.state = AgentState::AwaitingConfirmation;
        s.generation = Some(3);
        s.toplevel = Some(TOP.into());
        s.emulated_systems = vec!["aarch64-linux".into()];
        s.pull = Some(PullStatus {
            url: "u".into(),
            branch: "main".into(),
            lock_policy: "pinned".into(),
            fetched_commit: None,
            applied_commit: None,
            pending_commit: Some("c".into()),
            pending_lock: Some(lock.parse().unwrap()),
            last_fetch: None,
            last_error: None,
            refused: None,
        });
        s.reboot_required = Some(true);
        let new = Props::from_status(&s, Some("d1"));
        let names: Vec<&str> = old.changes(&new).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "State",
                "CurrentSystem",
                "LastDeployment",
                "PendingLock",
                "CurrentGeneration",
                "EmulatedSystems",
                "RebootRequired"
            ]
        );
        s.reboot_required = None;
        assert!(!Props::from_status(&s, None).reboot_required, "not known is published as false");
        let changes = old.changes(&new);
        assert_eq!(changes[0].1, Value::from("awaiting-confirmation"));
        assert_eq!(changes[3].1, Value::from(lock));
        assert_eq!(changes[4].1, Value::from(3u64));
    }

    #[test]
    fn started_once_and_finished_once() {
        use DeploymentState::*;
        let started = deployment_signal(Some(Queued), &deployment(Activating));
        assert!(
            matches!(started, Some(DeploymentSignal::Started { ref mode, ref rev, .. }) if mode == "switch" && rev == "abc")
        );
        assert_eq!(
            deployment_signal(Some(Activating), &deployment(Activating)),
            None,
            "another write while activating"
        );
        assert_eq!(deployment_signal(Some(AwaitingConfirmation), &deployment(Activating)), None, "its rollback");
        assert_eq!(deployment_signal(None, &deployment(Queued)), None);
        let finished = deployment_signal(Some(Activating), &deployment(RolledBack));
        assert_eq!(
            finished,
            Some(DeploymentSignal::Finished { id: "d1".into(), result: "rolled-back".into(), error: String::new() })
        );
        assert!(matches!(
            deployment_signal(Some(Queued), &deployment(Failed)),
            Some(DeploymentSignal::Finished { .. })
        ));
        assert_eq!(deployment_signal(Some(Confirmed), &deployment(Confirmed)), None);
    }
}
