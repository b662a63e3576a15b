//! Deployment tests against real Nix on a private `local?root=` store: fake systems whose
//! `switch-to-configuration` exits with a chosen code, a private profile and journal.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use hostctl_schemas::duration::Duration;
use hostctl_schemas::ids::StorePath;

use super::*;
use crate::activation::DetachedChild;

/// A private host: store root, profile and journal in one temporary directory.
pub(crate) struct TestHost {
    pub dir: tempfile::TempDir,
    pub nix: Arc<Nix>,
    pub store: String,
}

impl TestHost {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("local?root={}", dir.path().join("root").display());
        let nix = Arc::new(Nix::new().with_store(store.clone()));
        std::fs::create_dir_all(dir.path().join("profiles")).unwrap();
        Self { dir, nix, store }
    }

    pub fn profile(&self) -> Profile {
        Profile::new(&self.dir.path().join("profiles/system")).unwrap()
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.dir.path().join("state/deployments")
    }

    pub fn deployer(&self) -> Arc<Deployer> {
        let journal = Journal::open(&self.journal_dir()).unwrap();
        let store_fs = StoreFs::from_store_url(Some(&self.store));
        Arc::new(Deployer::new(journal, Arc::clone(&self.nix), self.profile(), store_fs, Arc::new(DetachedChild)))
    }

    /// A system whose `switch-to-configuration` prints its mode and exits with `code`.
    pub async fn system(&self, name: &str, code: i32) -> StorePath {
        let src = self.dir.path().join("src").join(name);
        std::fs::create_dir_all(src.join("bin")).unwrap();
        let script = src.join("bin/switch-to-configuration");
        std::fs::write(&script, format!("#!/bin/sh\necho \"{name}: $1\"\nexit {code}\n")).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        self.nix.add_to_store(&src).await.unwrap()
    }
}

fn request(id: &str, toplevel: &StorePath, mode: Mode, confirm_secs: u64) -> DeploymentRequest {
    DeploymentRequest {
        id: id.to_owned(),
        toplevel: toplevel.clone(),
        rev: Some("rev1".into()),
        lock: None,
        mode,
        confirm_timeout: Duration::from_secs(confirm_secs),
        health: Vec::new(),
    }
}

/// Waits until deployment `id` leaves `queued`/`activating`.
async fn settled(deployer: &Deployer, id: &str) -> Deployment {
    for _ in 0..400 {
        let d = deployer.get(id).unwrap();
        if !matches!(d.state, DeploymentState::Queued | DeploymentState::Activating) {
            return d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("deployment {id} did not settle");
}

#[test]
fn exit_codes_become_states() {
    let none = Duration::from_secs(0);
    let window = Duration::from_secs(30);
    let ok = |code, mode, confirm| finished_state(ActivationOutcome::from_exit_code(Some(code)), code, mode, confirm);
    assert_eq!(ok(0, Mode::Switch, none), (DeploymentState::Confirmed, None));
    assert_eq!(ok(100, Mode::Switch, none), (DeploymentState::Confirmed, None), "reboot required is a success");
    assert_eq!(ok(0, Mode::Switch, window), (DeploymentState::AwaitingConfirmation, None));
    assert_eq!(ok(0, Mode::Test, window), (DeploymentState::AwaitingConfirmation, None));
    assert_eq!(ok(0, Mode::Boot, window), (DeploymentState::Confirmed, None), "boot does not touch the running system");
    assert_eq!(ok(0, Mode::DryActivate, window), (DeploymentState::Confirmed, None));
    for (code, words) in [
        (1, "checks or the bootloader"),
        (2, "the activation script failed"),
        (4, "some units failed"),
        (3, "unexpected exit status"),
    ] {
        let (state, error) = ok(code, Mode::Switch, none);
        assert_eq!(state, DeploymentState::Failed);
        let error = error.unwrap();
        assert!(error.contains(&format!("switch-to-configuration switch exited with {code}: {words}")), "{error}");
    }
}

#[tokio::test]
async fn switch_adds_generations_and_records_the_previous_toplevel() {
    let host = TestHost::new();
    let deployer = host.deployer();
    let first = host.system("one", 0).await;
    let second = host.system("two", 0).await;

    let d = deployer.create(request("d1", &first, Mode::Switch, 0)).await.unwrap();
    assert_eq!((d.state, d.previous_toplevel.clone()), (DeploymentState::Queued, None));
    let d = settled(&deployer, "d1").await;
    assert_eq!(d.state, DeploymentState::Confirmed, "{d:?}");
    assert_eq!((d.generation, d.exit_code, d.outcome), (Some(1), Some(0), Some(ActivationOutcome::Ok)));
    assert_eq!(d.log_tail, "one: switch");
    assert!(d.finished.is_some());

    deployer.create(request("d2", &second, Mode::Switch, 0)).await.unwrap();
    let d = settled(&deployer, "d2").await;
    assert_eq!((d.state, d.generation), (DeploymentState::Confirmed, Some(2)));
    assert_eq!(d.previous_toplevel, Some(first.clone()));
    assert_eq!(host.profile().current().unwrap(), Some((2, Some(second.clone()))));

    // `test` activates without a new generation.
    deployer.create(request("d3", &first, Mode::Test, 0)).await.unwrap();
    let d = settled(&deployer, "d3").await;
    assert_eq!((d.state, d.generation, d.log_tail.as_str()), (DeploymentState::Confirmed, None, "one: test"));
    assert_eq!(host.profile().current_generation().unwrap(), Some(2));

    // The journal survives a restart.
    let reloaded = host.deployer();
    assert_eq!(reloaded.records().len(), 3);
    assert_eq!(reloaded.get("d2").unwrap(), deployer.get("d2").unwrap());
}

#[tokio::test]
async fn a_failing_switch_fails_and_keeps_its_generation() {
    let host = TestHost::new();
    let deployer = host.deployer();
    let broken = host.system("broken", 4).await;
    deployer.create(request("bad", &broken, Mode::Switch, 0)).await.unwrap();
    let d = settled(&deployer, "bad").await;
    assert_eq!(
        (d.state, d.exit_code, d.outcome),
        (DeploymentState::Failed, Some(4), Some(ActivationOutcome::UnitsFailed))
    );
    assert!(d.error.as_deref().unwrap_or_default().contains("exited with 4: some units failed"), "{d:?}");
    assert_eq!(d.log_tail, "broken: switch");
    assert_eq!(host.profile().current_generation().unwrap(), Some(1), "rollback is issue 4");
}

#[tokio::test]
async fn confirmation_conflicts_and_bad_requests() {
    let host = TestHost::new();
    let deployer = host.deployer();
    let sys = host.system("sys", 0).await;
    let other = host.system("other", 0).await;

    deployer.create(request("c1", &sys, Mode::Switch, 30)).await.unwrap();
    assert_eq!(settled(&deployer, "c1").await.state, DeploymentState::AwaitingConfirmation);
    // Same request again (a retry) is fine; other content under the same id is not.
    assert_eq!(deployer.create(request("c1", &sys, Mode::Switch, 30)).await.unwrap().id, "c1");
    let err = deployer.create(request("c1", &other, Mode::Switch, 30)).await.unwrap_err();
    assert_eq!(err.code, hostctl_schemas::api::ErrorCode::Conflict);
    let err = deployer.create(request("c2", &other, Mode::Switch, 0)).await.unwrap_err();
    assert!(err.message.contains("`c1` is awaiting-confirmation"), "{err:?}");

    assert_eq!(deployer.confirm("c1").unwrap().state, DeploymentState::Confirmed);
    assert_eq!(deployer.confirm("c1").unwrap().state, DeploymentState::Confirmed, "idempotent");
    assert_eq!(deployer.confirm("nope").unwrap_err().code, hostctl_schemas::api::ErrorCode::NotFound);

    deployer.create(request("c2", &other, Mode::Switch, 0)).await.unwrap();
    settled(&deployer, "c2").await;

    let missing: StorePath = "/nix/store/00000000000000000000000000000000-nixos-system-x".parse().unwrap();
    let err = deployer.create(request("c3", &missing, Mode::Switch, 0)).await.unwrap_err();
    assert!(err.message.contains("is not in this host's store"), "{err:?}");
    let not_a_system = host.nix.add_to_store(&host.journal_dir()).await.unwrap();
    let err = deployer.create(request("c4", &not_a_system, Mode::Switch, 0)).await.unwrap_err();
    assert!(err.message.contains("has no bin/switch-to-configuration"), "{err:?}");
    let err = deployer.create(request("bad/id", &sys, Mode::Switch, 0)).await.unwrap_err();
    assert!(err.message.starts_with("id: "), "{err:?}");
}

#[tokio::test]
async fn a_restarted_agent_finishes_or_fails_what_was_left_open() {
    let host = TestHost::new();
    let sys = host.system("sys", 0).await;
    let mut journal = Journal::open(&host.journal_dir()).unwrap();
    let mut left = |id: &str, state| {
        let mut d = crate::journal::tests::deployment(id);
        d.toplevel = sys.clone();
        d.state = state;
        journal.insert(d, Duration::from_secs(0)).unwrap();
    };
    left("finished-while-away", DeploymentState::Activating);
    left("lost", DeploymentState::Activating);
    left("never-started", DeploymentState::Queued);
    left("waiting", DeploymentState::AwaitingConfirmation);
    std::fs::write(journal.exit_path("finished-while-away"), "2\n").unwrap();
    std::fs::write(journal.log_path("finished-while-away"), "activation output\n").unwrap();
    drop(journal);

    let deployer = host.deployer();
    deployer.recover();
    let d = deployer.get("finished-while-away").unwrap();
    assert_eq!((d.state, d.exit_code, d.log_tail.as_str()), (DeploymentState::Failed, Some(2), "activation output"));
    let d = deployer.get("lost").unwrap();
    assert_eq!(d.state, DeploymentState::Failed);
    assert_eq!(d.error.as_deref(), Some("agent restarted; activation result unknown"));
    let d = deployer.get("never-started").unwrap();
    assert_eq!(d.error.as_deref(), Some("the agent restarted before the activation started"));
    assert_eq!(deployer.get("waiting").unwrap().state, DeploymentState::AwaitingConfirmation);
}
