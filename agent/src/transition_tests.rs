//! Every legal transition of the deployment state machine, and refused ones.

use hostctl_schemas::api::deployments::{DeploymentState, EndReason};
use hostctl_schemas::duration::Duration;

use super::*;
use crate::journal::tests::deployment;

fn record_at(path: &[Transition]) -> Record {
    let mut r = Record::new(deployment("d1"), Duration::from_secs(30));
    for t in path {
        r.apply(t.clone()).unwrap_or_else(|e| panic!("{t:?}: {e}"));
    }
    r
}

fn handle() -> ActivationHandle {
    ActivationHandle {
        manager: "detached-child".into(),
        pid: 1,
        start_time: Some(1),
        log: "/x.log".into(),
        exit_file: "/x.exit".into(),
        unit: None,
    }
}

fn run() -> RollbackRun {
    RollbackRun {
        reason: "not confirmed within 30s".into(),
        end_state: DeploymentState::RolledBack,
        end_reason: Some(EndReason::NotConfirmed),
        step: RollbackStep::Decided,
        generation: None,
        activation: None,
        activation_index: 0,
        done: false,
    }
}

fn end(state: DeploymentState, reason: EndReason) -> Transition {
    Transition::End(Ending { state, reason, error: "why".into() })
}

fn activate(armed: bool) -> Transition {
    Transition::Activate { handle: handle(), armed }
}

/// The path to each open phase from `accepted`.
fn path_to(phase: Phase) -> Vec<Transition> {
    use Transition::*;
    let profile_set = vec![SetProfile, ProfileSet { generation: Some(2) }];
    let activating = [profile_set.clone(), vec![activate(true)]].concat();
    match phase {
        Phase::Accepted => vec![],
        Phase::Substituting => vec![Substitute],
        Phase::SettingProfile => vec![SetProfile],
        Phase::ProfileSet => profile_set,
        Phase::Activating => activating,
        Phase::Checking => [activating, vec![Check]].concat(),
        Phase::AwaitingConfirmation => [activating, vec![Activated { deadline: 99 }]].concat(),
        Phase::RollingBack => [activating, vec![RollBack(run())]].concat(),
        Phase::Rebooting => [activating, vec![Reboot(progress())]].concat(),
        Phase::Done => [activating, vec![end(DeploymentState::Failed, EndReason::ActivationFailed)]].concat(),
    }
}

fn progress() -> hostctl_schemas::api::deployments::RebootProgress {
    hostctl_schemas::api::deployments::RebootProgress {
        boot_id_before: "b1".into(),
        boot_id_after: None,
        previous_entry: "nixos-generation-1.conf".into(),
        new_entry: "nixos-generation-2.conf".into(),
        booted: None,
    }
}

const OPEN: [Phase; 9] = [
    Phase::Accepted,
    Phase::Substituting,
    Phase::SettingProfile,
    Phase::ProfileSet,
    Phase::Activating,
    Phase::Checking,
    Phase::AwaitingConfirmation,
    Phase::RollingBack,
    Phase::Rebooting,
];

#[test]
fn a_reboot_deployment_is_rebooting_until_it_is_back_then_waits_or_rolls_back() {
    let mut r = record_at(&path_to(Phase::Rebooting));
    assert_eq!((r.phase, r.deployment.state), (Phase::Rebooting, DeploymentState::Rebooting));
    assert_eq!(r.deployment.reboot.as_ref().map(|p| p.new_entry.as_str()), Some("nixos-generation-2.conf"));
    assert!(r.clone().apply(Transition::Confirm).is_err(), "no confirmation before it is back");
    assert!(r.clone().apply(Transition::RollBack(run())).is_ok());
    r.apply(Transition::Check).unwrap();
    r.apply(Transition::Activated { deadline: 9 }).unwrap();
    assert_eq!((r.phase, r.deployment.state), (Phase::AwaitingConfirmation, DeploymentState::AwaitingConfirmation));
    let mut checking = record_at(&path_to(Phase::Checking));
    assert!(checking.apply(Transition::Reboot(progress())).is_err(), "only from activating");
}

#[test]
fn the_happy_path_derives_each_state_from_its_phase() {
    let mut r = record_at(&[]);
    assert_eq!((r.phase, r.deployment.state), (Phase::Accepted, DeploymentState::Queued));
    let steps = [
        (Transition::Substitute, Phase::Substituting, DeploymentState::Queued),
        (Transition::SetProfile, Phase::SettingProfile, DeploymentState::Activating),
        (Transition::ProfileSet { generation: Some(4) }, Phase::ProfileSet, DeploymentState::Activating),
        (activate(true), Phase::Activating, DeploymentState::Activating),
        (Transition::Check, Phase::Checking, DeploymentState::Activating),
        (Transition::Activated { deadline: 77 }, Phase::AwaitingConfirmation, DeploymentState::AwaitingConfirmation),
        (Transition::Confirm, Phase::Done, DeploymentState::Confirmed),
    ];
    for (t, phase, state) in steps {
        r.apply(t.clone()).unwrap();
        assert_eq!((r.phase, r.deployment.state), (phase, state), "after {t:?}");
    }
    let d = &r.deployment;
    assert_eq!((d.generation, d.confirm_deadline, r.armed), (Some(4), Some(77), true));
    assert!(r.activation.is_some() && d.finished.is_some() && d.end_reason.is_none() && d.error.is_none());
}

#[test]
fn test_mode_skips_the_profile_and_an_unarmed_deployment_is_confirmed_at_once() {
    let mut r = record_at(&[Transition::ProfileSet { generation: None }, activate(false)]);
    assert!(!r.armed);
    r.apply(Transition::Activated { deadline: 5 }).unwrap();
    assert_eq!((r.phase, r.deployment.state), (Phase::Done, DeploymentState::Confirmed));
    assert_eq!(r.deployment.confirm_deadline, None, "no window");
    let mut r = record_at(&[Transition::Substitute, Transition::ProfileSet { generation: None }]);
    assert_eq!(r.phase, Phase::ProfileSet);
    r.apply(activate(false)).unwrap();
    r.apply(Transition::Check).unwrap();
    r.apply(Transition::Activated { deadline: 5 }).unwrap();
    assert_eq!(r.deployment.state, DeploymentState::Confirmed);
}

#[test]
fn a_rollback_runs_its_steps_and_ends_as_decided() {
    for from in [Phase::Activating, Phase::Checking, Phase::AwaitingConfirmation] {
        let mut r = record_at(&path_to(from));
        r.apply(Transition::RollBack(run())).unwrap();
        assert_eq!((r.phase, r.deployment.state), (Phase::RollingBack, DeploymentState::Activating), "from {from:?}");
    }
    let mut r = record_at(&path_to(Phase::RollingBack));
    r.apply(Transition::RollbackStep { step: RollbackStep::SettingProfile, generation: None }).unwrap();
    r.apply(Transition::RollbackStep { step: RollbackStep::ProfileSet, generation: Some(5) }).unwrap();
    r.apply(Transition::RollbackActivation { handle: handle(), index: 1 }).unwrap();
    r.apply(Transition::RollbackDone).unwrap();
    let rollback = r.rollback.clone().unwrap();
    assert_eq!((rollback.step, rollback.generation, rollback.activation_index), (RollbackStep::Activating, Some(5), 1));
    assert!(rollback.done && rollback.activation.is_some());
    assert_eq!(r.deployment.state, DeploymentState::Activating, "still open until it ends");
    r.apply(end(DeploymentState::RolledBack, EndReason::NotConfirmed)).unwrap();
    let d = &r.deployment;
    assert_eq!(
        (r.phase, d.state, d.end_reason),
        (Phase::Done, DeploymentState::RolledBack, Some(EndReason::NotConfirmed))
    );
    assert_eq!(d.error.as_deref(), Some("why"));
}

#[test]
fn every_open_phase_can_end() {
    for phase in OPEN {
        let mut r = record_at(&path_to(phase));
        assert_eq!(r.phase, phase);
        assert_eq!(Some(r.deployment.state), phase.open_state());
        r.apply(end(DeploymentState::Failed, EndReason::AgentRestarted)).unwrap();
        let d = &r.deployment;
        assert_eq!(
            (r.phase, d.state, d.end_reason),
            (Phase::Done, DeploymentState::Failed, Some(EndReason::AgentRestarted))
        );
        assert!(d.finished.is_some());
    }
    // A record some earlier agent left `done` but open can still be closed.
    let mut r = record_at(&[]);
    r.phase = Phase::Done;
    r.apply(end(DeploymentState::Failed, EndReason::AgentRestarted)).unwrap();
    assert_eq!(r.deployment.state, DeploymentState::Failed);
}

#[test]
fn illegal_transitions_are_refused_and_change_nothing() {
    use Transition::*;
    let refused = [
        (Phase::Accepted, activate(true)),
        (Phase::Accepted, Check),
        (Phase::Accepted, Confirm),
        (Phase::Accepted, RollBack(run())),
        (Phase::Substituting, Substitute),
        (Phase::ProfileSet, SetProfile),
        (Phase::Activating, ProfileSet { generation: None }),
        (Phase::Activating, Confirm),
        (Phase::Checking, Check),
        (Phase::AwaitingConfirmation, Activated { deadline: 1 }),
        (Phase::RollingBack, RollBack(run())),
        (Phase::RollingBack, Confirm),
        (Phase::Activating, RollbackDone),
        (Phase::Checking, RollbackStep { step: crate::journal::RollbackStep::ProfileSet, generation: None }),
        (Phase::Done, end(DeploymentState::Failed, EndReason::ActivationFailed)),
        (Phase::Done, Confirm),
        (Phase::Done, Substitute),
    ];
    for (phase, t) in refused {
        let mut r = record_at(&path_to(phase));
        let before = r.clone();
        let err = r.apply(t.clone()).unwrap_err();
        assert_eq!((err.from, err.id.as_str()), (phase, "d1"), "{t:?}");
        assert_eq!(r, before, "{t:?} from {phase:?} changed the record");
    }
    let mut r = record_at(&path_to(Phase::AwaitingConfirmation));
    r.apply(Confirm).unwrap();
    let err = r.apply(Confirm).unwrap_err().to_string();
    assert_eq!(err, "deployment `d1` cannot go from Done (state Confirmed) by confirm");
}
