//! Deployment tests against real Nix on a private `local?root=` store: fake systems whose
//! `switch-to-configuration` records each run in `ran` and exits with a chosen code, a
//! private profile and journal.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use hostctl_schemas::duration::Duration;
use hostctl_schemas::ids::StorePath;
use hostctl_schemas::inventory::HealthKind;

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
        self.deployer_with(DeployerOptions::default())
    }

    /// Journals `record` as a crashed agent left it, then starts a fresh deployer on that
    /// journal and lets it recover.
    pub async fn recovered_with(&self, record: crate::journal::Record) -> Arc<Deployer> {
        let mut journal = Journal::open(&self.journal_dir()).unwrap();
        journal.insert_record(record).unwrap();
        drop(journal);
        let deployer = self.deployer();
        deployer.recover().await;
        deployer
    }

    pub fn deployer_with(&self, options: DeployerOptions) -> Arc<Deployer> {
        let journal = Journal::open(&self.journal_dir()).unwrap();
        let store_fs = StoreFs::from_store_url(Some(&self.store));
        let services = Arc::new(DetachedChild);
        Arc::new(Deployer::new(journal, Arc::clone(&self.nix), self.profile(), store_fs, services, options))
    }

    /// A system whose `switch-to-configuration` prints its mode, appends `NAME MODE` to
    /// [`TestHost::ran`], sleeps `sleep` seconds and exits with `code`.
    pub async fn system_with(&self, name: &str, code: i32, sleep: &str) -> StorePath {
        let src = self.dir.path().join("src").join(name);
        std::fs::create_dir_all(src.join("bin")).unwrap();
        let script = src.join("bin/switch-to-configuration");
        let ran = self.dir.path().join("ran");
        let body = format!(
            "#!/bin/sh\necho \"{name}: $1\"\necho \"{name} $1\" >> {}\nsleep {sleep}\nexit {code}\n",
            ran.display()
        );
        std::fs::write(&script, body).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        self.nix.add_to_store(&src).await.unwrap()
    }

    pub async fn system(&self, name: &str, code: i32) -> StorePath {
        self.system_with(name, code, "0").await
    }

    /// Every `switch-to-configuration` run so far: `NAME MODE`, oldest first.
    pub fn ran(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.path().join("ran")).unwrap_or_default();
        text.lines().map(str::to_owned).collect()
    }

    /// The profile's newest generation and what it points at.
    pub fn current(&self) -> Option<(u64, Option<StorePath>)> {
        self.profile().current().unwrap()
    }
}

pub(crate) fn request(id: &str, toplevel: &StorePath, mode: Mode, confirm_secs: u64) -> DeploymentRequest {
    DeploymentRequest {
        id: id.to_owned(),
        toplevel: toplevel.clone(),
        rev: Some("rev1".into()),
        lock: None,
        mode,
        confirm_timeout: Duration::from_secs(confirm_secs),
        health: Vec::new(),
        cache: None,
        commit_signature: None,
        retention: None,
        reboot: false,
    }
}

pub(crate) fn command_check(argv: &[&str], timeout_ms: u64) -> HealthCheck {
    HealthCheck {
        kind: HealthKind::Command(argv.iter().map(|a| (*a).to_owned()).collect()),
        timeout: Duration::from(std::time::Duration::from_millis(timeout_ms)),
        retries: 0,
        interval: Duration::from_secs(0),
    }
}

/// Waits until deployment `id` leaves `queued`/`activating`.
pub(crate) async fn settled(deployer: &Deployer, id: &str) -> Deployment {
    for _ in 0..400 {
        let d = deployer.get(id).unwrap();
        if !matches!(d.state, DeploymentState::Queued | DeploymentState::Activating) {
            return d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("deployment {id} did not settle: {:?}", deployer.get(id));
}

/// Waits until deployment `id` is final.
pub(crate) async fn ended(deployer: &Deployer, id: &str) -> Deployment {
    for _ in 0..400 {
        let d = deployer.get(id).unwrap();
        if d.state.is_final() {
            return d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("deployment {id} did not end: {:?}", deployer.get(id));
}

#[test]
fn exit_codes_become_reasons() {
    assert_eq!(failure_reason(Mode::Switch, 0), None);
    assert_eq!(failure_reason(Mode::Switch, 100), None, "reboot required is a success");
    for (code, words) in [
        (1, "checks or the bootloader"),
        (2, "the activation script failed"),
        (4, "some units failed"),
        (3, "unexpected exit status"),
    ] {
        let reason = failure_reason(Mode::Switch, code).unwrap();
        assert!(reason.starts_with(&format!("switch-to-configuration switch exited with {code}: {words}")), "{reason}");
    }
    assert!(awaits_confirmation(Mode::Switch, Duration::from_secs(30)));
    assert!(awaits_confirmation(Mode::Test, Duration::from_secs(30)));
    assert!(!awaits_confirmation(Mode::Boot, Duration::from_secs(30)), "boot does not touch the running system");
    assert!(!awaits_confirmation(Mode::DryActivate, Duration::from_secs(30)));
    assert!(!awaits_confirmation(Mode::Switch, Duration::from_secs(0)));
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
    assert_eq!(host.current(), Some((2, Some(second.clone()))));

    // `test` activates without a new generation.
    deployer.create(request("d3", &first, Mode::Test, 0)).await.unwrap();
    let d = settled(&deployer, "d3").await;
    assert_eq!((d.state, d.generation, d.log_tail.as_str()), (DeploymentState::Confirmed, None, "one: test"));
    assert_eq!(host.profile().current_generation().unwrap(), Some(2));
    assert_eq!(host.ran(), ["one switch", "two switch", "one test"]);

    // The journal survives a restart.
    let reloaded = host.deployer();
    assert_eq!(reloaded.records().len(), 3);
    assert_eq!(reloaded.get("d2").unwrap(), deployer.get("d2").unwrap());
    assert!(reloaded.records().iter().all(|r| r.phase == Phase::Done));
}

#[tokio::test]
async fn a_failing_first_switch_fails_with_nothing_to_return_to() {
    let host = TestHost::new();
    let deployer = host.deployer();
    let broken = host.system("broken", 4).await;
    deployer.create(request("bad", &broken, Mode::Switch, 30)).await.unwrap();
    let d = settled(&deployer, "bad").await;
    assert_eq!(
        (d.state, d.exit_code, d.outcome),
        (DeploymentState::Failed, Some(4), Some(ActivationOutcome::UnitsFailed))
    );
    assert_eq!(d.end_reason, Some(EndReason::ActivationFailed));
    let error = d.error.unwrap();
    assert!(error.starts_with("switch-to-configuration switch exited with 4: some units failed"), "{error}");
    assert!(error.contains("nothing to roll back to"), "{error}");
    assert_eq!(d.log_tail, "broken: switch");
    assert_eq!(host.current(), Some((1, Some(broken))), "left as it is");
    assert_eq!(host.ran(), ["broken switch"]);
}

#[tokio::test]
async fn a_failed_activation_re_activates_the_previous_system() {
    let host = TestHost::new();
    let deployer = host.deployer();
    let good = host.system("good", 0).await;
    let broken = host.system("broken", 4).await;
    deployer.create(request("d1", &good, Mode::Switch, 0)).await.unwrap();
    settled(&deployer, "d1").await;
    deployer.create(request("d2", &broken, Mode::Switch, 30)).await.unwrap();
    let d = settled(&deployer, "d2").await;
    assert_eq!((d.state, d.exit_code, d.generation), (DeploymentState::Failed, Some(4), Some(2)), "{d:?}");
    let error = d.error.unwrap();
    assert_eq!(
        error,
        format!("switch-to-configuration switch exited with 4: some units failed to start; re-activated the previous system {good}")
    );
    assert_eq!(d.log_tail, "broken: switch", "the failed activation's output");
    assert_eq!(host.ran(), ["good switch", "broken switch", "good switch"]);
    assert_eq!(host.current(), Some((3, Some(good.clone()))), "a new generation of the previous system");
    let record = deployer.records().into_iter().find(|r| r.deployment.id == "d2").unwrap();
    assert_eq!(record.rollback.map(|r| r.generation), Some(Some(3)));
    assert_eq!(host.profile().generation_target(2).unwrap(), Some(broken));
}

/// Systems `old` (switched to as deployment `d1`, generation 1) and `new` (only built).
async fn old_running_new_ready(host: &TestHost, deployer: &Arc<Deployer>) -> (StorePath, StorePath) {
    let old = host.system("old", 0).await;
    let new = host.system("new", 0).await;
    deployer.create(request("d1", &old, Mode::Switch, 0)).await.unwrap();
    settled(deployer, "d1").await;
    (old, new)
}

#[tokio::test]
async fn an_unconfirmed_switch_is_rolled_back_after_its_window() {
    let host = TestHost::new();
    let deployer = host.deployer();
    let (old, new) = old_running_new_ready(&host, &deployer).await;

    deployer.create(request("d2", &new, Mode::Switch, 1)).await.unwrap();
    let d = settled(&deployer, "d2").await;
    assert_eq!(d.state, DeploymentState::AwaitingConfirmation);
    let deadline = d.confirm_deadline.unwrap();
    assert!(deadline > crate::unix_now() && deadline <= crate::unix_now() + 2, "{deadline}");
    assert!(deployer.records()[1].armed);

    let d = ended(&deployer, "d2").await;
    assert_eq!((d.state, d.end_reason), (DeploymentState::RolledBack, Some(EndReason::NotConfirmed)), "{d:?}");
    assert_eq!(d.error, Some(format!("not confirmed within 1s; re-activated the previous system {old}")));
    assert!(crate::unix_now() >= deadline);
    assert_eq!(host.current(), Some((3, Some(old))), "the newest generation is the previous system");
    assert_eq!(host.ran(), ["old switch", "new switch", "old switch"]);
    assert!(matches!(deployer.confirm("d2").unwrap_err(), DeployError::Conflict(_)));
}

#[tokio::test]
async fn a_confirmed_switch_stays_after_its_window() {
    let host = TestHost::new();
    let deployer = host.deployer();
    let (_old, new) = old_running_new_ready(&host, &deployer).await;
    deployer.create(request("d2", &new, Mode::Switch, 1)).await.unwrap();
    assert_eq!(settled(&deployer, "d2").await.state, DeploymentState::AwaitingConfirmation);
    assert_eq!(deployer.confirm("d2").unwrap().state, DeploymentState::Confirmed);
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    let d = deployer.get("d2").unwrap();
    assert_eq!((d.state, d.error), (DeploymentState::Confirmed, None));
    assert_eq!(host.current(), Some((2, Some(new))));
    assert_eq!(host.ran(), ["old switch", "new switch"]);
}

#[tokio::test]
async fn an_unconfirmed_test_activation_re_tests_the_previous_system() {
    let host = TestHost::new();
    let deployer = host.deployer();
    let (old, new) = old_running_new_ready(&host, &deployer).await;
    deployer.create(request("d2", &new, Mode::Test, 1)).await.unwrap();
    let d = ended(&deployer, "d2").await;
    assert_eq!(d.state, DeploymentState::RolledBack, "{d:?}");
    assert_eq!(host.ran(), ["old switch", "new test", "old test"]);
    assert_eq!(host.current(), Some((1, Some(old))), "test mode adds no generation, also when rolled back");
}

#[tokio::test]
async fn failing_health_checks_roll_back() {
    let host = TestHost::new();
    // The agent's own check passes; the request's fail.
    let options = DeployerOptions { health: vec![command_check(&["true"], 2000)], ..DeployerOptions::default() };
    let deployer = host.deployer_with(options);
    let (old, new) = old_running_new_ready(&host, &deployer).await;

    let mut req = request("d2", &new, Mode::Switch, 30);
    req.health = vec![command_check(&["sh", "-c", "echo degraded; exit 1"], 2000)];
    deployer.create(req).await.unwrap();
    let d = ended(&deployer, "d2").await;
    assert_eq!((d.state, d.end_reason), (DeploymentState::RolledBack, Some(EndReason::HealthCheckFailed)), "{d:?}");
    let failure = d.health_failure.clone().unwrap();
    assert_eq!(failure.check, "sh -c 'echo degraded; exit 1'", "{d:?}");
    assert!(failure.error.starts_with("exit status 1 (1 attempt)"), "{d:?}");
    assert_eq!(
        d.error.unwrap(),
        format!(
            "health check `sh -c 'echo degraded; exit 1'` failed: exit status 1 (1 attempt); output:\ndegraded; \
             re-activated the previous system {old}"
        )
    );
    assert_eq!(host.current(), Some((3, Some(old.clone()))));

    // A check without confirmation window gates too; a slow one is killed at its timeout.
    let mut req = request("d3", &new, Mode::Switch, 0);
    req.health = vec![command_check(&["sleep", "5"], 500)];
    let started = std::time::Instant::now();
    deployer.create(req).await.unwrap();
    let d = ended(&deployer, "d3").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "{:?}", started.elapsed());
    assert_eq!(d.state, DeploymentState::RolledBack, "{d:?}");
    let error = d.error.unwrap();
    assert!(error.starts_with("health check `sleep 5` failed: timed out after 500ms (process "), "{error}");
    let pid = error.split("(process ").nth(1).unwrap().split(' ').next().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "sleep {pid} was not killed");
    assert_eq!(host.ran(), ["old switch", "new switch", "old switch", "new switch", "old switch"]);
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
    assert!(matches!(err, DeployError::Conflict(_)));
    let err = deployer.create(request("c2", &other, Mode::Switch, 0)).await.unwrap_err();
    assert!(err.to_string().contains("`c1` is awaiting-confirmation"), "{err:?}");

    assert_eq!(deployer.confirm("c1").unwrap().state, DeploymentState::Confirmed);
    assert_eq!(deployer.confirm("c1").unwrap().state, DeploymentState::Confirmed, "idempotent");
    assert!(matches!(deployer.confirm("nope").unwrap_err(), DeployError::NotFound(_)));

    deployer.create(request("c2", &other, Mode::Switch, 0)).await.unwrap();
    settled(&deployer, "c2").await;

    let missing: StorePath = "/nix/store/00000000000000000000000000000000-nixos-system-x".parse().unwrap();
    let err = deployer.create(request("c3", &missing, Mode::Switch, 0)).await.unwrap_err();
    assert!(err.to_string().contains("is not in this host's store"), "{err:?}");
    let not_a_system = host.nix.add_to_store(&host.journal_dir()).await.unwrap();
    let err = deployer.create(request("c4", &not_a_system, Mode::Switch, 0)).await.unwrap_err();
    assert!(err.to_string().contains("has no bin/switch-to-configuration"), "{err:?}");
    let err = deployer.create(request("bad/id", &sys, Mode::Switch, 0)).await.unwrap_err();
    assert!(err.to_string().starts_with("id: "), "{err:?}");
    let mut http = request("c5", &sys, Mode::Switch, 0);
    http.health = vec![command_check(&["true"], 100), HealthCheck::new(HealthKind::Http("http://x/".into()))];
    let err = deployer.create(http).await.unwrap_err();
    assert!(matches!(err, DeployError::Invalid(_)));
    assert!(err.to_string().starts_with("health[1]: `http` health checks run on the controller"), "{err:?}");
}
