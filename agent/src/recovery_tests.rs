//! Recovery tests: the journal state a crash in each phase leaves behind (written by
//! hand), then a fresh deployer's `recover()`, against real Nix on a private store.

use hostctl_schemas::api::deployments::{Deployment, DeploymentState};
use hostctl_schemas::duration::Duration;
use hostctl_schemas::ids::StorePath;
use hostctl_schemas::inventory::Mode;

use super::*;
use crate::activation::{ActivationSpec, DetachedChild, ServiceManager as _};
use crate::deploy::tests::{ended, request, settled, TestHost};
use crate::host::StoreFs;
use crate::journal::{Journal, RollbackRun, RollbackStep};

/// A host that ran `old` (deployment `d0`, generation 1) and has `new` in its store.
struct Crashed {
    host: TestHost,
    old: StorePath,
    new: StorePath,
}

impl Crashed {
    async fn new(new_code: i32, new_sleep: &str) -> Self {
        let host = TestHost::new();
        let old = host.system("old", 0).await;
        let new = host.system_with("new", new_code, new_sleep).await;
        let deployer = host.deployer();
        deployer.create(request("d0", &old, Mode::Switch, 0)).await.unwrap();
        assert_eq!(settled(&deployer, "d0").await.state, DeploymentState::Confirmed);
        Self { host, old, new }
    }

    /// Journals deployment `d1` of `new` (switch, 30 s window) as a crash in `phase` left
    /// it, after `change`; then starts a fresh deployer and recovers.
    async fn restart(&self, phase: Phase, state: DeploymentState, change: impl FnOnce(&mut Record)) -> Arc<Deployer> {
        let deployment = Deployment::queued(&request("d1", &self.new, Mode::Switch, 30), Some(self.old.clone()), 1);
        let mut record = Record::new(deployment, Duration::from_secs(30));
        record.phase = phase;
        record.deployment.state = state;
        change(&mut record);
        self.host.recovered_with(record).await
    }

    /// Starts `new`'s real activation detached, as the crashed agent did.
    async fn start_activation(&self) -> crate::activation::ActivationHandle {
        let journal = Journal::open(&self.host.journal_dir()).unwrap();
        let program = StoreFs::from_store_url(Some(&self.host.store)).real_path(&self.new);
        let spec = ActivationSpec {
            program: program.join("bin/switch-to-configuration"),
            mode: Mode::Switch,
            log: journal.log_path("d1"),
            exit_file: journal.exit_path("d1"),
        };
        DetachedChild.prepare(&spec).unwrap().launch().await.unwrap()
    }

    async fn set_profile_to_new(&self) {
        self.host.nix.set_profile(&self.host.profile(), &self.new).await.unwrap();
    }
}

#[tokio::test]
async fn before_activation_the_profile_is_restored_and_nothing_switched() {
    // Killed after `nix-env --set` (the marker says `setting-profile`): the profile is back.
    let c = Crashed::new(0, "0").await;
    c.set_profile_to_new().await;
    let deployer = c.restart(Phase::SettingProfile, DeploymentState::Activating, |_| {}).await;
    let d = deployer.get("d1").unwrap();
    assert_eq!(d.state, DeploymentState::Failed);
    assert_eq!(
        d.error.clone().unwrap(),
        format!("agent stopped before activation; the profile points at the previous system {} again", c.old)
    );
    assert_eq!(c.host.current(), Some((3, Some(c.old.clone()))));
    assert_eq!(d.generation, Some(2), "the generation its `nix-env --set` made");
    assert_eq!(c.host.ran(), ["old switch"], "no switch-to-configuration ran");

    // Killed before `nix-env --set` ran: nothing to restore.
    let c = Crashed::new(0, "0").await;
    let deployer = c.restart(Phase::SettingProfile, DeploymentState::Activating, |_| {}).await;
    let d = deployer.get("d1").unwrap();
    assert_eq!((d.state, d.error.as_deref()), (DeploymentState::Failed, Some("agent stopped before activation")));
    assert_eq!(c.host.current(), Some((1, Some(c.old.clone()))));

    // Killed between journaling the handle and letting the activation go: it cancels itself.
    let c = Crashed::new(0, "0").await;
    c.set_profile_to_new().await;
    let journal = Journal::open(&c.host.journal_dir()).unwrap();
    std::fs::write(journal.exit_path("d1"), "cancelled\n").unwrap();
    let handle = crate::activation::ActivationHandle {
        manager: "detached-child".into(),
        pid: u32::MAX - 1,
        start_time: Some(1),
        log: journal.log_path("d1"),
        exit_file: journal.exit_path("d1"),
        unit: None,
    };
    let deployer = c.restart(Phase::Activating, DeploymentState::Activating, |r| r.activation = Some(handle)).await;
    assert_eq!(deployer.get("d1").unwrap().state, DeploymentState::Failed);
    assert_eq!(c.host.current(), Some((3, Some(c.old.clone()))));
    assert_eq!(c.host.ran(), ["old switch"]);

    // Never started at all.
    let c = Crashed::new(0, "0").await;
    let deployer = c.restart(Phase::Accepted, DeploymentState::Queued, |_| {}).await;
    let d = deployer.get("d1").unwrap();
    assert_eq!(d.error.as_deref(), Some("the agent restarted before the activation started"));
}

#[tokio::test]
async fn a_first_deployment_cut_short_keeps_its_profile_and_says_so() {
    let host = TestHost::new();
    let new = host.system("new", 0).await;
    host.nix.set_profile(&host.profile(), &new).await.unwrap();
    let mut record =
        Record::new(Deployment::queued(&request("d1", &new, Mode::Switch, 30), None, 1), Duration::from_secs(30));
    record.phase = Phase::ProfileSet;
    record.deployment.state = DeploymentState::Activating;
    let deployer = host.recovered_with(record).await;
    let d = deployer.get("d1").unwrap();
    assert_eq!(d.state, DeploymentState::Failed);
    assert_eq!(
        d.error.unwrap(),
        format!(
            "agent stopped before activation; the profile still points at {new}: there was no previous system to restore (first deployment)"
        )
    );
}

#[tokio::test]
async fn a_running_activation_is_followed_into_the_confirmation_window() {
    let c = Crashed::new(0, "1").await;
    c.set_profile_to_new().await;
    let handle = c.start_activation().await;
    let deployer = c
        .restart(Phase::Activating, DeploymentState::Activating, |r| {
            r.activation = Some(handle);
            r.armed = true;
            r.deployment.generation = Some(2);
        })
        .await;
    assert_eq!(deployer.get("d1").unwrap().state, DeploymentState::Activating, "still running");
    let d = settled(&deployer, "d1").await;
    assert_eq!(d.state, DeploymentState::AwaitingConfirmation, "{d:?}");
    assert!(d.confirm_deadline.unwrap() >= crate::unix_now() + 29);
    assert_eq!(deployer.confirm("d1").unwrap().state, DeploymentState::Confirmed);
    assert_eq!(c.host.current(), Some((2, Some(c.new.clone()))));
    assert_eq!(c.host.ran(), ["old switch", "new switch"]);
}

#[tokio::test]
async fn a_failed_or_lost_activation_found_after_a_restart_rolls_back() {
    // It finished with exit 4 while the agent was away.
    let c = Crashed::new(4, "0").await;
    c.set_profile_to_new().await;
    let handle = c.start_activation().await;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let deployer = c.restart(Phase::Activating, DeploymentState::Activating, |r| r.activation = Some(handle)).await;
    let d = ended(&deployer, "d1").await;
    assert_eq!((d.state, d.exit_code), (DeploymentState::Failed, Some(4)), "{d:?}");
    assert!(d.error.unwrap().ends_with(&format!("re-activated the previous system {}", c.old)));
    assert_eq!(c.host.ran(), ["old switch", "new switch", "old switch"]);
    assert_eq!(c.host.current(), Some((3, Some(c.old.clone()))));

    // It vanished without an exit status (killed with the machine).
    let c = Crashed::new(0, "0").await;
    c.set_profile_to_new().await;
    let journal = Journal::open(&c.host.journal_dir()).unwrap();
    let handle = crate::activation::ActivationHandle {
        manager: "detached-child".into(),
        pid: u32::MAX - 1,
        start_time: Some(1),
        log: journal.log_path("d1"),
        exit_file: journal.exit_path("d1"),
        unit: None,
    };
    let deployer = c.restart(Phase::Activating, DeploymentState::Activating, |r| r.activation = Some(handle)).await;
    let d = ended(&deployer, "d1").await;
    assert_eq!(d.state, DeploymentState::Failed);
    assert!(d
        .error
        .unwrap()
        .starts_with("agent restarted; the activation ended without an exit status (result unknown)"));
    assert_eq!(c.host.ran(), ["old switch", "old switch"]);
    assert_eq!(c.host.current(), Some((3, Some(c.old.clone()))));
}

#[tokio::test]
async fn health_checks_cut_short_and_closed_windows_roll_back_at_once() {
    let c = Crashed::new(0, "0").await;
    c.set_profile_to_new().await;
    let deployer = c.restart(Phase::Checking, DeploymentState::Activating, |r| r.armed = true).await;
    let d = ended(&deployer, "d1").await;
    assert_eq!(d.state, DeploymentState::RolledBack);
    assert_eq!(
        d.error.unwrap(),
        format!("the agent restarted during the health checks; re-activated the previous system {}", c.old)
    );
    assert_eq!(c.host.current(), Some((3, Some(c.old.clone()))));

    let c = Crashed::new(0, "0").await;
    c.set_profile_to_new().await;
    let started = std::time::Instant::now();
    let deployer = c
        .restart(Phase::AwaitingConfirmation, DeploymentState::AwaitingConfirmation, |r| {
            r.armed = true;
            r.deployment.confirm_deadline = Some(crate::unix_now() - 5);
        })
        .await;
    let d = ended(&deployer, "d1").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(d.state, DeploymentState::RolledBack);
    assert!(d.error.unwrap().starts_with("not confirmed within 30s (the window closed while the agent was down)"));
    assert_eq!(c.host.ran(), ["old switch", "old switch"]);
}

#[tokio::test]
async fn an_open_window_is_resumed_with_its_journaled_deadline() {
    let c = Crashed::new(0, "0").await;
    c.set_profile_to_new().await;
    let deadline = crate::unix_now() + 2;
    let deployer = c
        .restart(Phase::AwaitingConfirmation, DeploymentState::AwaitingConfirmation, |r| {
            r.armed = true;
            r.deployment.confirm_deadline = Some(deadline);
        })
        .await;
    assert_eq!(deployer.get("d1").unwrap().state, DeploymentState::AwaitingConfirmation);
    let d = ended(&deployer, "d1").await;
    assert!(crate::unix_now() >= deadline, "not before the journaled deadline");
    assert_eq!(d.state, DeploymentState::RolledBack);
    assert_eq!(c.host.current(), Some((3, Some(c.old.clone()))));
}

#[tokio::test]
async fn a_rollback_cut_short_is_finished() {
    let c = Crashed::new(0, "0").await;
    // The profile was already set back (generation 3) when the agent died.
    c.set_profile_to_new().await;
    c.host.nix.set_profile(&c.host.profile(), &c.old).await.unwrap();
    let deployer = c
        .restart(Phase::RollingBack, DeploymentState::Activating, |r| {
            r.rollback = Some(RollbackRun {
                reason: "not confirmed within 30s".into(),
                end_state: DeploymentState::RolledBack,
                end_reason: Some(hostctl_schemas::api::deployments::EndReason::NotConfirmed),
                step: RollbackStep::SettingProfile,
                generation: None,
                activation: None,
                activation_index: 0,
                done: false,
            });
        })
        .await;
    let d = ended(&deployer, "d1").await;
    assert_eq!(d.state, DeploymentState::RolledBack, "{d:?}");
    assert_eq!(c.host.current(), Some((3, Some(c.old.clone()))), "no second generation for the same rollback");
    assert_eq!(c.host.ran(), ["old switch", "old switch"]);
}
