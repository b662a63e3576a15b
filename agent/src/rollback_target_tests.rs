//! `POST /v1/rollback` at the deployer: targets by lock, generation and "previous",
//! unknown and garbage-collected targets, and the pending deployment rolled back at once.

use crate::deploy_error::DeployError;
use hostctl_schemas::api::deployments::DeploymentState;
use hostctl_schemas::api::rollback::{Previous, RollbackRequest, RollbackTarget};
use hostctl_schemas::duration::Duration;
use hostctl_schemas::ids::LockId;

use super::*;
use crate::deploy::tests::{ended, request, settled, TestHost};
use crate::deploy::{Deployer, DeployerOptions};
use std::sync::Arc;

fn lock(c: char) -> LockId {
    c.to_string().repeat(64).parse().unwrap()
}

fn to(target: RollbackTarget, id: &str, confirm_secs: Option<u64>) -> RollbackRequest {
    RollbackRequest {
        to: target,
        id: Some(id.to_owned()),
        confirm_timeout: confirm_secs.map(Duration::from_secs),
        health_failure: None,
    }
}

const PREVIOUS: RollbackTarget = RollbackTarget::Previous(Previous::Previous);

/// Deploys `toplevel` with `lock`, confirmed at once.
async fn deploy(deployer: &Arc<Deployer>, id: &str, toplevel: &StorePath, l: char) {
    let mut req = request(id, toplevel, Mode::Switch, 0);
    req.lock = Some(lock(l));
    req.rev = Some(format!("rev-{l}"));
    deployer.create(req).await.unwrap();
    assert_eq!(settled(deployer, id).await.state, DeploymentState::Confirmed);
}

#[tokio::test]
async fn rollback_to_previous_lock_generation_and_lock() {
    let host = TestHost::new();
    let deployer = host.deployer();
    let a = host.system("a", 0).await;
    let b = host.system("b", 0).await;
    deploy(&deployer, "d1", &a, 'a').await;
    deploy(&deployer, "d2", &b, 'b').await;

    // "previous": the newest earlier deployment with another lock.
    let r = deployer.rollback(to(PREVIOUS, "r1", Some(0))).await.unwrap();
    assert_eq!((r.state, r.mode, &r.toplevel), (DeploymentState::Queued, Mode::Switch, &a));
    assert_eq!((r.rev.as_deref(), r.lock.clone()), (Some("rev-a"), Some(lock('a'))));
    assert_eq!(r.rollback_of.as_deref(), Some("lock aaaaaaaaaaaa/deployment d1"));
    assert_eq!(r.previous_toplevel.as_ref(), Some(&b));
    let r = settled(&deployer, "r1").await;
    assert_eq!((r.state, r.generation), (DeploymentState::Confirmed, Some(3)));
    assert_eq!(host.current(), Some((3, Some(a.clone()))));

    // Again: the current lock is now a's, so "previous" is b's.
    let r = deployer.rollback(to(PREVIOUS, "r2", Some(0))).await.unwrap();
    assert_eq!((&r.toplevel, r.rollback_of.as_deref()), (&b, Some("lock bbbbbbbbbbbb/deployment d2")));
    settled(&deployer, "r2").await;

    let r = deployer.rollback(to(RollbackTarget::Lock { lock: lock('a') }, "r3", Some(0))).await.unwrap();
    assert_eq!((&r.toplevel, r.rollback_of.as_deref()), (&a, Some("lock aaaaaaaaaaaa/deployment r1")));
    settled(&deployer, "r3").await;

    let r = deployer.rollback(to(RollbackTarget::Generation { generation: 2 }, "r4", Some(0))).await.unwrap();
    assert_eq!((&r.toplevel, r.lock.clone()), (&b, Some(lock('b'))));
    assert_eq!(r.rollback_of.as_deref(), Some("generation 2/deployment r2"));
    assert_eq!(settled(&deployer, "r4").await.generation, Some(6));
    assert_eq!(host.ran(), ["a switch", "b switch", "a switch", "b switch", "a switch", "b switch"]);

    // A retry with the same id and target gets the same deployment; another target is a 409.
    assert_eq!(deployer.rollback(to(RollbackTarget::Generation { generation: 2 }, "r4", None)).await.unwrap().id, "r4");
    let err = deployer.rollback(to(PREVIOUS, "r4", None)).await.unwrap_err();
    assert!(matches!(err, DeployError::Conflict(_)));
    let err = deployer.rollback(to(PREVIOUS, "d1", None)).await.unwrap_err();
    assert!(matches!(err, DeployError::Conflict(_)), "a deployment's id is taken");

    // Unknown targets are 404s, and nothing was started.
    let err = deployer.rollback(to(RollbackTarget::Lock { lock: lock('c') }, "r5", None)).await.unwrap_err();
    assert!(matches!(err, DeployError::NotFound(_)));
    assert!(err.to_string().contains(&format!("no confirmed deployment with lock {}", lock('c'))), "{err:?}");
    let err = deployer.rollback(to(RollbackTarget::Generation { generation: 99 }, "r5", None)).await.unwrap_err();
    assert!(matches!(err, DeployError::NotFound(_)));
    assert!(err.to_string().contains("generation 99 of the profile"), "{err:?}");
    let err = deployer.rollback(to(PREVIOUS, "bad/id", None)).await.unwrap_err();
    assert!(matches!(err, DeployError::Invalid(_)));
    assert_eq!(deployer.records().len(), 6);
}

#[tokio::test]
async fn a_collected_target_is_a_404_that_says_so() {
    let host = TestHost::new();
    let deployer = host.deployer();
    let a = host.system("a", 0).await;
    deploy(&deployer, "d1", &a, 'a').await;
    // The journal remembers lock z's system, the store no longer has it.
    let gone: StorePath = "/nix/store/00000000000000000000000000000000-nixos-system-gone".parse().unwrap();
    let mut old = crate::journal::Record::new(
        hostctl_schemas::api::deployments::Deployment::queued(&request("d0", &gone, Mode::Switch, 0), None, 1),
        Duration::from_secs(0),
    );
    old.deployment.state = DeploymentState::Confirmed;
    old.deployment.lock = Some(lock('f'));
    deployer.journal().insert_record(old).unwrap();

    let err = deployer.rollback(to(RollbackTarget::Lock { lock: lock('f') }, "r1", None)).await.unwrap_err();
    assert!(matches!(err, DeployError::NotFound(_)));
    assert!(err.to_string().contains(&format!("({gone}) is no longer in this host's store")), "{err:?}");
    assert!(err.to_string().contains("rebuild it"), "{err:?}");
    assert!(deployer.get("r1").is_none());
}

#[tokio::test]
async fn previous_rolls_a_pending_deployment_back_at_once() {
    let host = TestHost::new();
    let options = DeployerOptions { confirm_timeout: Duration::from_secs(30), ..DeployerOptions::default() };
    let deployer = host.deployer_with(options);
    let a = host.system("a", 0).await;
    let b = host.system("b", 0).await;
    deploy(&deployer, "d1", &a, 'a').await;
    let mut req = request("d2", &b, Mode::Switch, 30);
    req.lock = Some(lock('b'));
    deployer.create(req).await.unwrap();
    assert_eq!(settled(&deployer, "d2").await.state, DeploymentState::AwaitingConfirmation);

    let err = deployer.rollback(to(RollbackTarget::Lock { lock: lock('a') }, "r1", None)).await.unwrap_err();
    assert!(matches!(err, DeployError::Conflict(_)));
    assert!(err.to_string().contains("`d2` is awaiting-confirmation"), "{err:?}");

    let started = std::time::Instant::now();
    let r = deployer.rollback(to(PREVIOUS, "r1", None)).await.unwrap();
    assert_eq!((r.id.as_str(), r.state), ("d2", DeploymentState::Activating));
    let d = ended(&deployer, "d2").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(d.state, DeploymentState::RolledBack);
    assert_eq!(d.error.unwrap(), format!("rolled back on request; re-activated the previous system {a}"));
    assert_eq!(host.current(), Some((3, Some(a.clone()))));
    assert!(deployer.get("r1").is_none(), "no new deployment");

    // A rollback deployment gets the agent's window when the request names none.
    let r = deployer
        .rollback(RollbackRequest {
            to: RollbackTarget::Generation { generation: 2 },
            id: None,
            confirm_timeout: None,
            health_failure: None,
        })
        .await
        .unwrap();
    assert!(r.id.starts_with("rollback-"), "{}", r.id);
    let r = settled(&deployer, &r.id).await;
    assert_eq!((r.state, &r.toplevel), (DeploymentState::AwaitingConfirmation, &b));
    assert!(r.confirm_deadline.unwrap() >= crate::unix_now() + 29);
}

#[tokio::test]
async fn a_controller_health_failure_is_the_pending_deployments_cause_and_requesters_are_journaled() {
    use hostctl_schemas::api::deployments::{EndReason, HealthFailure, Requester};
    let host = TestHost::new();
    let deployer = host.deployer();
    let a = host.system("a", 0).await;
    let b = host.system("b", 0).await;
    let by = |key: &str| Some(Requester { key: key.into(), address: Some("198.51.100.1".into()) });
    let mut req = request("d1", &a, Mode::Switch, 0);
    req.lock = Some(lock('a'));
    deployer.create_by(req, by("fleet-1")).await.unwrap();
    assert_eq!(settled(&deployer, "d1").await.requested_by, by("fleet-1"));
    let mut req = request("d2", &b, Mode::Switch, 30);
    req.lock = Some(lock('b'));
    deployer.create(req).await.unwrap();
    assert_eq!(settled(&deployer, "d2").await.state, DeploymentState::AwaitingConfirmation);

    let failure = HealthFailure::new("GET http://web1/healthz", "HTTP 503 (2 attempts)");
    let request = RollbackRequest { health_failure: Some(failure.clone()), ..to(PREVIOUS, "r1", None) };
    deployer.rollback_by(request, by("ops")).await.unwrap();
    let d = ended(&deployer, "d2").await;
    assert_eq!((d.state, d.end_reason), (DeploymentState::RolledBack, Some(EndReason::HealthCheckFailed)), "{d:?}");
    assert_eq!(d.health_failure, Some(failure), "which check and what it said");
    assert!(
        d.error.as_deref().unwrap().starts_with("health check `GET http://web1/healthz` failed: HTTP 503 (2 attempts); "),
        "{d:?}"
    );
    assert_eq!(d.requested_by, None, "asked by the agent's own caller (no key)");

    // A later rollback deployment records who asked for it.
    let r = deployer.rollback_by(to(RollbackTarget::Generation { generation: 2 }, "r2", Some(0)), by("ops")).await;
    let r = r.unwrap();
    assert_eq!(r.requested_by, by("ops"));
    assert_eq!(r.health_failure, None);
    let reloaded = crate::journal::Journal::open(deployer.journal().dir()).unwrap();
    assert_eq!(reloaded.get("d1").unwrap().deployment.requested_by, by("fleet-1"), "journaled");
}
