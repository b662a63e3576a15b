//! Unit tests of one host's deployment over the fake transport (`host::fake`).

use super::*;
use crate::host::fake::{FakeHost, Script};
use crate::push::tests_support::FakeStore;
use hostctl_schemas::api::deployments::{valid_id, ActivationOutcome};

fn settings() -> DeploySettings {
    let mut s = DeploySettings::new(Mode::Switch, hostctl_schemas::duration::Duration::from_secs(30));
    s.poll_interval = Duration::from_millis(1);
    s
}

#[test]
fn deployment_ids_are_valid_and_unique() {
    let host: HostName = "web-1".parse().unwrap();
    let a = deployment_id(&host);
    let b = deployment_id(&host);
    assert!(valid_id(&a), "{a}");
    assert_ne!(a, b);
    let parts: Vec<&str> = a.rsplitn(3, '-').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[2], "web-1");
    assert!(parts[1].parse::<u64>().unwrap() > 1_600_000_000);
    assert!(parts[0].len() == 8 && parts[0].bytes().all(|b| b.is_ascii_hexdigit()), "{a}");
}

#[test]
fn unchanged_only_for_switch_and_boot() {
    let t = FakeStore::toplevel();
    assert!(is_unchanged(Mode::Switch, Some(t.as_str()), &t));
    assert!(is_unchanged(Mode::Boot, Some(t.as_str()), &t));
    assert!(!is_unchanged(Mode::Test, Some(t.as_str()), &t));
    assert!(!is_unchanged(Mode::DryActivate, Some(t.as_str()), &t));
    assert!(!is_unchanged(Mode::Switch, None, &t));
}

// These drive the flow with the fake transport (`host::fake`) and a fake store; the
// HTTP client against a real agent is covered by the end-to-end tests.

#[tokio::test]
async fn activates_with_confirmation_over_the_fake_transport() {
    let store = FakeStore;
    let script = Script { lacks: store.closure_paths(), needs_confirmation: true, ..Script::default() };
    let host = FakeHost::new("web1", script);
    let outcome = deploy_host(&host, &store, &FakeStore::toplevel(), &[], &settings()).await;
    assert_eq!(outcome.result, HostResult::Activated, "{outcome:?}");
    assert_eq!(outcome.pushed.paths, 2);
    assert_eq!(outcome.pushed.nar_bytes, 300);
    assert_eq!(outcome.generation, Some(2));
    let calls = host.calls();
    assert_eq!(&calls[..4], ["status", "missing", "import", "deploy"]);
    assert!(calls.contains(&"confirm".to_owned()), "{calls:?}");
}

#[tokio::test]
async fn a_closure_larger_than_the_free_store_space_is_refused_at_push() {
    let store = FakeStore;
    // The two missing paths are 300 NAR bytes.
    let script = Script { lacks: store.closure_paths(), store_free: Some(299), ..Script::default() };
    let host = FakeHost::new("web1", script);
    let outcome = deploy_host(&host, &store, &FakeStore::toplevel(), &[], &settings()).await;
    assert_eq!((outcome.result, outcome.step), (HostResult::Failed, Some(Step::Push)), "{outcome:?}");
    let error = outcome.error.unwrap();
    assert!(error.starts_with("web1: not enough space for the closure: "), "{error}");
    assert!(error.contains("(300 bytes of NAR in 2 paths)") && error.contains("(299 bytes)"), "both numbers: {error}");
    assert_eq!(host.calls(), ["status", "missing"], "nothing sent, nothing deployed");

    let script = Script { lacks: store.closure_paths(), store_free: Some(300), ..Script::default() };
    let host = FakeHost::new("web1", script);
    let outcome = deploy_host(&host, &store, &FakeStore::toplevel(), &[], &settings()).await;
    assert_eq!(outcome.result, HostResult::Activated, "exactly enough room: {outcome:?}");
}

/// Deploys to a host lacking `lacks`, with room in its store and `boot_free` on /boot.
async fn deploy_lacking(lacks: Vec<StorePath>, boot_free: Option<u64>) -> (Outcome, Vec<String>) {
    let host = FakeHost::new("web1", Script { lacks, store_free: Some(1000), boot_free, ..Script::default() });
    let outcome = deploy_host(&host, &FakeStore, &FakeStore::toplevel(), &[], &settings()).await;
    (outcome, host.calls())
}

#[tokio::test]
async fn a_new_kernel_larger_than_the_free_boot_space_is_refused_at_push() {
    let store = FakeStore;
    // The host lacks the kernel and initrd (150 bytes) and has 149 free on /boot.
    let (outcome, calls) = deploy_lacking(store.closure_paths(), Some(149)).await;
    assert_eq!((outcome.result, outcome.step), (HostResult::Failed, Some(Step::Push)), "{outcome:?}");
    let error = outcome.error.unwrap();
    assert!(
        error.starts_with("web1: not enough space on the boot partition for the new kernel and initrd: "),
        "{error}"
    );
    assert!(
        error.contains("(150 bytes)") && error.contains("/boot has 149 B free (149 bytes)"),
        "both numbers: {error}"
    );
    assert_eq!(calls, ["status", "missing"], "nothing sent, nothing deployed");

    assert_eq!(
        deploy_lacking(store.closure_paths(), Some(150)).await.0.result,
        HostResult::Activated,
        "exactly enough room"
    );
    assert_eq!(
        deploy_lacking(store.closure_paths(), None).await.0.result,
        HostResult::Activated,
        "/boot on the store's fs"
    );
    // The kernel is already on the host: nothing new goes to /boot.
    let lacks = vec![FakeStore::toplevel()];
    assert_eq!(deploy_lacking(lacks, Some(0)).await.0.result, HostResult::Activated, "the kernel did not change");
}

fn final_deployment(state: DeploymentState, outcome: Option<ActivationOutcome>) -> Deployment {
    let request = DeploymentRequest {
        id: "web1-1-00000000".into(),
        toplevel: FakeStore::toplevel(),
        rev: None,
        lock: None,
        mode: Mode::Switch,
        confirm_timeout: hostctl_schemas::duration::Duration::from_secs(0),
        health: Vec::new(),
        cache: None,
        commit_signature: None,
        retention: None,
        reboot: false,
    };
    Deployment {
        state,
        generation: Some(3),
        outcome,
        finished: Some(1),
        log_tail: "last line\n".into(),
        ..Deployment::queued(&request, None, 0)
    }
}

#[test]
fn final_states_map_to_results() {
    let host: HostName = "web1".parse().unwrap();
    let end = |state, outcome| {
        finish(&host, Outcome::new(HostResult::Activated), final_deployment(state, outcome), Gate::default())
    };
    let o = end(DeploymentState::Confirmed, Some(ActivationOutcome::Ok));
    assert_eq!((o.result, o.step, o.generation), (HostResult::Activated, None, Some(3)));
    let o = end(DeploymentState::RolledBack, Some(ActivationOutcome::Ok));
    assert_eq!((o.result, o.step), (HostResult::RolledBack, Some(Step::Confirm)));
    assert_eq!(o.error.as_deref(), Some("web1: rolled back: the deployment was not confirmed in time"));
    let mut d = final_deployment(DeploymentState::RolledBack, Some(ActivationOutcome::Ok));
    d.error = Some("health check `false` failed: exit status 1 (1 attempt)".into());
    d.end_reason = Some(EndReason::HealthCheckFailed);
    let o = finish(&host, Outcome::new(HostResult::Activated), d, Gate::default());
    assert_eq!((o.result, o.step), (HostResult::RolledBack, Some(Step::Health)), "the agent's command check");
    let o = end(DeploymentState::RolledBack, Some(ActivationOutcome::UnitsFailed));
    assert_eq!((o.result, o.step), (HostResult::Failed, Some(Step::Activate)));
    assert!(o.error.unwrap().ends_with("(the previous system was restored)"));
    let o = end(DeploymentState::Failed, Some(ActivationOutcome::UnitsFailed));
    assert_eq!((o.result, o.step), (HostResult::Failed, Some(Step::Activate)));
    assert_eq!(o.error.as_deref(), Some("web1: activation failed (units-failed)"));
    assert_eq!(o.log_tail.as_deref(), Some("last line\n"));
    let mut d = final_deployment(DeploymentState::Failed, Some(ActivationOutcome::UnitsFailed));
    d.exit_code = Some(4);
    let o = finish(&host, Outcome::new(HostResult::Activated), d.clone(), Gate::default());
    assert_eq!(
        o.error.as_deref(),
        Some("web1: activation failed: switch-to-configuration exited with 4 (units-failed)")
    );
    d.error = Some("foo.service failed".into());
    let o = finish(&host, Outcome::new(HostResult::Activated), d, Gate::default());
    assert_eq!(o.error.as_deref(), Some("web1: activation failed: foo.service failed"));
}

#[tokio::test]
async fn via_a_cache_nothing_is_pushed_and_the_request_names_it() {
    let store = FakeStore;
    let host = FakeHost::new("web1", Script { lacks: store.closure_paths(), ..Script::default() });
    let mut s = settings();
    let url: hostctl_schemas::inventory::CacheUrl = "file:///var/cache/fleet".parse().unwrap();
    s.cache = Some(Arc::new(ViaCache::prepared(url.clone())));
    let outcome = deploy_host(&host, &store, &FakeStore::toplevel(), &[], &s).await;
    assert_eq!(outcome.result, HostResult::Activated, "{outcome:?}");
    assert_eq!(outcome.pushed, PushStats::default());
    assert_eq!(&host.calls()[..2], ["status", "deploy"], "no missing/import");
    assert_eq!(host.deploys.lock().unwrap()[0].cache, Some(url));

    let error = "cache file:///var/cache/fleet: fetching /nix/store/x failed: lacks a valid signature";
    let host = FakeHost::new(
        "web2",
        Script {
            activation_fails: Some((error.into(), String::new())),
            end_reason: Some(EndReason::CacheFetchFailed),
            ..Script::default()
        },
    );
    let outcome = deploy_host(&host, &store, &FakeStore::toplevel(), &[], &s).await;
    assert_eq!((outcome.result, outcome.step), (HostResult::Failed, Some(Step::Push)));
    assert_eq!(outcome.error, Some(format!("web2: {error}")));
}

#[tokio::test]
async fn unchanged_host_gets_no_transfer_and_no_deployment() {
    let script = Script { current: Some(FakeStore::toplevel()), ..Script::default() };
    let host = FakeHost::new("web1", script);
    let outcome = deploy_host(&host, &FakeStore, &FakeStore::toplevel(), &[], &settings()).await;
    assert_eq!(outcome.result, HostResult::Unchanged);
    assert_eq!(host.calls(), ["status"]);
}

fn http_check(retries: u32) -> HealthCheck {
    let mut check = HealthCheck::new(hostctl_schemas::inventory::HealthKind::Http("http://web1/healthz".into()));
    (check.retries, check.interval) = (retries, hostctl_schemas::duration::Duration::from_millis(1));
    check
}

#[tokio::test]
async fn failing_health_check_rolls_back_without_confirming() {
    use hostctl_schemas::api::rollback::{Previous, RollbackTarget};
    let probes = [Ok(503), Err("cannot connect: refused".to_owned())].into_iter().collect();
    let script = Script { needs_confirmation: true, probes, ..Script::default() };
    let host = FakeHost::new("web1", script);
    let command = HealthCheck::new(hostctl_schemas::inventory::HealthKind::Command(vec!["true".into()]));
    let checks = [http_check(1), command.clone()];
    let outcome = deploy_host(&host, &FakeStore, &FakeStore::toplevel(), &checks, &settings()).await;
    assert_eq!((outcome.result, outcome.step), (HostResult::RolledBack, Some(Step::Health)), "{outcome:?}");
    assert_eq!(
        outcome.error.as_deref(),
        Some(
            "web1: health check GET http://web1/healthz failed after 2 attempts: cannot connect: refused; \
             the agent rolled back"
        )
    );
    assert_eq!(outcome.health.len(), 1);
    assert_eq!((outcome.health[0].ok, outcome.health[0].attempts), (false, 2));
    let calls = host.calls();
    assert!(!calls.contains(&"confirm".to_owned()), "never confirmed: {calls:?}");
    let probes_then_rollback: Vec<&str> =
        calls.iter().map(String::as_str).filter(|c| ["probe", "rollback"].contains(c)).collect();
    assert_eq!(probes_then_rollback, ["probe", "probe", "rollback"]);
    let rollbacks = host.rollbacks.lock().unwrap().clone();
    assert_eq!(rollbacks.len(), 1);
    assert_eq!(rollbacks[0].to, RollbackTarget::Previous(Previous::Previous));
    let failure = rollbacks[0].health_failure.clone().expect("the rollback names the failed check");
    assert_eq!(
        (failure.check.as_str(), failure.error.as_str()),
        ("GET http://web1/healthz", "cannot connect: refused (2 attempts)")
    );
    assert_eq!(host.deploys.lock().unwrap()[0].health, [command], "command checks go to the agent");
}

#[tokio::test]
async fn passing_health_checks_come_before_the_confirmation() {
    let probes = [Ok(500), Ok(200)].into_iter().collect();
    let host = FakeHost::new("web1", Script { needs_confirmation: true, probes, ..Script::default() });
    let outcome = deploy_host(&host, &FakeStore, &FakeStore::toplevel(), &[http_check(3)], &settings()).await;
    assert_eq!(outcome.result, HostResult::Activated, "{outcome:?}");
    assert_eq!((outcome.health[0].ok, outcome.health[0].attempts), (true, 2));
    let calls = host.calls();
    let gate: Vec<&str> =
        calls.iter().map(String::as_str).filter(|c| ["probe", "confirm", "rollback"].contains(c)).collect();
    assert_eq!(gate, ["probe", "probe", "confirm"]);
}

#[tokio::test]
async fn without_a_window_a_failing_check_fails_the_host_but_cannot_roll_back() {
    let host = FakeHost::new("web1", Script { probes: [Ok(500)].into_iter().collect(), ..Script::default() });
    let mut s = settings();
    s.confirm_timeout = hostctl_schemas::duration::Duration::from_secs(0);
    let outcome = deploy_host(&host, &FakeStore, &FakeStore::toplevel(), &[http_check(0)], &s).await;
    assert_eq!((outcome.result, outcome.step), (HostResult::Failed, Some(Step::Health)));
    assert!(outcome.error.unwrap().ends_with("not rolled back: there is no confirmation window (confirm_timeout 0s)"));
    assert!(!host.calls().contains(&"rollback".to_owned()));
}

#[tokio::test]
async fn failures_name_their_step() {
    let host = FakeHost::new("web1", Script { unreachable: true, ..Script::default() });
    let outcome = deploy_host(&host, &FakeStore, &FakeStore::toplevel(), &[], &settings()).await;
    assert_eq!((outcome.result, outcome.step), (HostResult::Failed, Some(Step::Connect)));
    assert!(outcome.error.unwrap().contains("connection refused"));

    let fails = Some(("switch-to-configuration exited with 4".to_owned(), "unit foo.service failed".to_owned()));
    let host = FakeHost::new("web2", Script { activation_fails: fails, ..Script::default() });
    let outcome = deploy_host(&host, &FakeStore, &FakeStore::toplevel(), &[], &settings()).await;
    assert_eq!((outcome.result, outcome.step), (HostResult::Failed, Some(Step::Activate)));
    assert_eq!(outcome.error.as_deref(), Some("web2: activation failed: switch-to-configuration exited with 4"));
    assert_eq!(outcome.log_tail.as_deref(), Some("unit foo.service failed"));
    assert!(outcome.deployment.is_some_and(|id| id.starts_with("web2-")));
}
