//! Unit tests of one host's rollback over the fake transport (`host::fake`, no HTTP)
//! and a fake rebuild (no git, no Nix); real agents are covered end to end.

use std::sync::Mutex;

use super::*;
use crate::host::fake::{FakeHost, Script};
use crate::push::tests_support::FakeStore;
use crate::rebuild::Rebuilt;
use hostctl_schemas::api::rollback::{Previous, RollbackTarget};
use hostctl_schemas::ids::LockId;
use hostctl_schemas::inventory::{HealthKind, Mode};

const OLD: &str = "/nix/store/33333333333333333333333333333333-nixos-system-web";

fn settings() -> DeploySettings {
    let mut s = DeploySettings::new(Mode::Switch, hostctl_schemas::duration::Duration::from_secs(30));
    s.poll_interval = std::time::Duration::from_millis(1);
    s
}

fn lock() -> LockId {
    "b".repeat(64).parse().unwrap()
}

fn previous(lock: Option<LockId>) -> Resolved {
    Resolved {
        to: RollbackTarget::Previous(Previous::Previous),
        lock,
        rev_hint: Some("1111111111111111111111111111111111111111-dirty".into()),
        describe: "the previous lock".into(),
    }
}

/// Records what it was asked to rebuild and "activates" it.
#[derive(Debug, Default)]
struct FakeRebuild {
    asked: Mutex<Vec<(LockId, Option<String>)>>,
}

impl Rebuild for FakeRebuild {
    async fn rebuild<H: Host>(
        &self,
        _host: &H,
        lock: &LockId,
        rev_hint: Option<&str>,
        _checks: &[HealthCheck],
        _settings: &DeploySettings,
    ) -> Rebuilt {
        self.asked.lock().unwrap().push((lock.clone(), rev_hint.map(str::to_owned)));
        let mut outcome = Outcome::new(HostResult::Activated);
        outcome.generation = Some(7);
        Rebuilt { outcome, commit: Some("1".repeat(40)), toplevel: Some(FakeStore::toplevel()) }
    }
}

#[tokio::test]
async fn the_agent_switches_back_and_the_rollback_is_confirmed() {
    let script = Script { rollback_to: Some(OLD.parse().unwrap()), needs_confirmation: true, ..Script::default() };
    let host = FakeHost::new("web1", script);
    let rebuild = FakeRebuild::default();
    let r = run_host(&host, &previous(Some(lock())), &[], &settings(), &rebuild).await;
    assert_eq!(r.outcome.result, HostResult::Activated, "{r:?}");
    assert!(!r.rebuilt && rebuild.asked.lock().unwrap().is_empty());
    let landed = r.landed.unwrap();
    assert_eq!(landed.toplevel, OLD);
    assert_eq!(landed.lock, Some("a".repeat(64)), "the lock the agent's rollback deployment records");
    assert_eq!(host.calls(), ["rollback", "deployment", "confirm"]);
    let sent = host.rollbacks.lock().unwrap()[0].clone();
    assert_eq!(sent.to, RollbackTarget::Previous(Previous::Previous));
    assert_eq!(sent.confirm_timeout, Some(hostctl_schemas::duration::Duration::from_secs(30)));
    assert!(sent.id.is_some_and(|id| id.starts_with("web1-")));
}

#[tokio::test]
async fn a_system_gone_from_the_host_is_rebuilt_from_git() {
    let host = FakeHost::new("web1", Script { rollback_not_found: true, ..Script::default() });
    let rebuild = FakeRebuild::default();
    let r = run_host(&host, &previous(Some(lock())), &[], &settings(), &rebuild).await;
    assert_eq!((r.outcome.result, r.rebuilt), (HostResult::Activated, true), "{r:?}");
    let asked = rebuild.asked.lock().unwrap().clone();
    assert_eq!(asked, [(lock(), Some("1111111111111111111111111111111111111111-dirty".to_owned()))]);
    let landed = r.landed.unwrap();
    assert_eq!((landed.lock, landed.rev), (Some(lock().to_string()), Some("1".repeat(40))));
}

#[tokio::test]
async fn without_a_lock_to_rebuild_a_404_is_a_failure() {
    let host = FakeHost::new("web1", Script { rollback_not_found: true, ..Script::default() });
    let rebuild = FakeRebuild::default();
    let r = run_host(&host, &previous(None), &[], &settings(), &rebuild).await;
    assert_eq!((r.outcome.result, r.outcome.step), (HostResult::Failed, Some(Step::Rollback)));
    assert!(r.outcome.error.unwrap().contains("HTTP 404 (not-found)"));
    assert!(rebuild.asked.lock().unwrap().is_empty() && r.landed.is_none());
}

#[tokio::test]
async fn a_rollback_goes_through_the_health_gate_too() {
    let script = Script {
        rollback_to: Some(OLD.parse().unwrap()),
        needs_confirmation: true,
        probes: [Ok(500)].into_iter().collect(),
        ..Script::default()
    };
    let host = FakeHost::new("web1", script);
    let mut check = HealthCheck::new(HealthKind::Http("http://web1/healthz".into()));
    check.retries = 0;
    let r = run_host(&host, &previous(None), &[check], &settings(), &FakeRebuild::default()).await;
    assert_eq!((r.outcome.result, r.outcome.step), (HostResult::RolledBack, Some(Step::Health)), "{r:?}");
    assert!(r.landed.is_none());
    assert_eq!(host.calls(), ["rollback", "deployment", "probe", "rollback", "deployment"], "no confirm");
}
