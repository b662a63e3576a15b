//! Which system the host runs now: what a new deployment (or `POST /v1/rollback`)
//! records as its `previous_toplevel`, the system a rollback re-activates (DESIGN.md:
//! "the exact previously active toplevel recorded in the journal").
//!
//! That is not always what the profile points at: `boot` sets the profile and leaves the
//! running system, `test` changes the running system and leaves the profile. In order:
//! 1. `/run/current-system`, when it exists and points at a system in this host's store
//!    (on NixOS it is authoritative, also after a `nixos-rebuild` outside hostctl);
//! 2. the journal: the toplevel the newest deployment that changed the running system
//!    left running ([`left_running`]); if that is not a system in this host's store (a
//!    damaged or hand-written record: nothing could return to it) but the profile's is,
//!    the profile's;
//! 3. the profile, when the journal has nothing (the host's first hostctl deployment).

use hostctl_schemas::api::deployments::DeploymentState;
use hostctl_schemas::ids::StorePath;
use hostctl_schemas::inventory::Mode;

use crate::activator::Activator;
use crate::deploy_error::DeployError;
use crate::journal::Record;

/// What a deployment left running, as far as its record tells: `None` if it did not
/// change the running system (`boot`, `dry-activate`, failed before its activation) or
/// is still changing it.
pub fn left_running(record: &Record) -> Option<&StorePath> {
    let d = &record.deployment;
    if matches!(d.mode, Mode::Boot | Mode::DryActivate) && !crate::boot_once::runs_new(record) {
        return None;
    }
    match d.state {
        DeploymentState::Confirmed | DeploymentState::AwaitingConfirmation => Some(&d.toplevel),
        DeploymentState::Failed | DeploymentState::RolledBack => match &record.rollback {
            // The previous system was re-activated.
            Some(run) if run.done => d.previous_toplevel.as_ref(),
            // The rollback failed part-way: the new system (or part of it) is what ran last.
            Some(_) => Some(&d.toplevel),
            // No rollback: either nothing ran (failed before the activation), or the
            // activation ran and there was nothing to roll back to.
            None => d.exit_code.map(|_| &d.toplevel),
        },
        DeploymentState::Queued | DeploymentState::Activating | DeploymentState::Rebooting => None,
    }
}

/// The system the newest deployment in `records` left running, if any did.
pub fn running_from_journal(records: &[Record]) -> Option<StorePath> {
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by_key(|r| r.seq);
    sorted.into_iter().rev().find_map(left_running).cloned()
}

/// The system running now (see the module documentation).
pub(crate) fn running_toplevel(activator: &Activator, records: &[Record]) -> Result<Option<StorePath>, DeployError> {
    if let Some(current) = activator.current_system_link() {
        return Ok(Some(current));
    }
    if let Some(running) = running_from_journal(records) {
        if activator.switch_program(&running).is_file() {
            return Ok(Some(running));
        }
        // Not a system a rollback could return to; the profile's may be.
        if let Some(profile) = activator.profile_toplevel()?.filter(|p| activator.switch_program(p).is_file()) {
            tracing::warn!(toplevel = %running, "the journal names a running system that is not in the store; using the profile's");
            return Ok(Some(profile));
        }
        return Ok(Some(running));
    }
    activator.profile_toplevel()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::tests::deployment;
    use crate::journal::{RollbackRun, RollbackStep};
    use hostctl_schemas::duration::Duration;

    fn path(name: &str) -> StorePath {
        format!("/nix/store/zr2knphxg8yyy2mkq8akf2hfknjvdiz{name}-x").parse().unwrap()
    }

    fn record(seq: u64, mode: Mode, state: DeploymentState, toplevel: &str, previous: &str) -> Record {
        let mut r = Record::new(deployment(&format!("d{seq}")), Duration::from_secs(0));
        r.seq = seq;
        r.deployment.mode = mode;
        r.deployment.state = state;
        r.deployment.toplevel = path(toplevel);
        r.deployment.previous_toplevel = Some(path(previous));
        r
    }

    fn rollback(done: bool) -> Option<RollbackRun> {
        Some(RollbackRun {
            reason: "x".into(),
            end_state: DeploymentState::RolledBack,
            end_reason: None,
            step: RollbackStep::Activating,
            generation: None,
            activation: None,
            activation_index: 0,
            done,
        })
    }

    #[test]
    fn boot_and_dry_activate_never_change_what_runs() {
        let a = record(0, Mode::Switch, DeploymentState::Confirmed, "a", "0");
        let b = record(1, Mode::Boot, DeploymentState::Confirmed, "b", "a");
        let c = record(2, Mode::DryActivate, DeploymentState::Confirmed, "c", "a");
        assert_eq!(running_from_journal(&[c, b, a]), Some(path("a")));
    }

    #[test]
    fn test_mode_changes_what_runs() {
        let a = record(0, Mode::Switch, DeploymentState::Confirmed, "a", "0");
        let b = record(1, Mode::Test, DeploymentState::AwaitingConfirmation, "b", "a");
        assert_eq!(running_from_journal(&[a, b]), Some(path("b")));
    }

    #[test]
    fn a_rolled_back_deployment_left_its_previous_system_running() {
        let a = record(0, Mode::Test, DeploymentState::Confirmed, "a", "0");
        let mut b = record(1, Mode::Switch, DeploymentState::RolledBack, "b", "a");
        b.rollback = rollback(true);
        assert_eq!(running_from_journal(&[a.clone(), b.clone()]), Some(path("a")));
        b.rollback = rollback(false);
        assert_eq!(running_from_journal(&[a.clone(), b]), Some(path("b")), "the rollback failed");
        // Failed before its activation: the older deployment's system runs.
        let c = record(2, Mode::Switch, DeploymentState::Failed, "c", "a");
        assert_eq!(running_from_journal(&[a.clone(), c.clone()]), Some(path("a")));
        let mut c = c;
        c.deployment.exit_code = Some(2);
        assert_eq!(running_from_journal(&[a, c]), Some(path("c")), "activated, nothing to roll back to");
        assert_eq!(running_from_journal(&[]), None);
    }
}
