//! What a rollback returns to when the profile and the running system differ (after
//! `boot` and `test` deployments), and the activation time limit.

use super::tests::{ended, request, settled, TestHost};
use super::*;

#[tokio::test]
async fn after_a_test_deployment_a_rollback_returns_to_the_tested_system() {
    let host = TestHost::new();
    let deployer = host.deployer();
    let (a, b, c) = (host.system("a", 0).await, host.system("b", 0).await, host.system("c", 4).await);
    deployer.create(request("d1", &a, Mode::Switch, 0)).await.unwrap();
    settled(&deployer, "d1").await;
    deployer.create(request("d2", &b, Mode::Test, 0)).await.unwrap();
    settled(&deployer, "d2").await;
    let d = deployer.create(request("d3", &c, Mode::Test, 30)).await.unwrap();
    assert_eq!(d.previous_toplevel, Some(b.clone()), "what runs, not the profile's {a}");
    let d = settled(&deployer, "d3").await;
    assert_eq!(d.state, DeploymentState::Failed, "{d:?}");
    assert_eq!(host.ran(), ["a switch", "b test", "c test", "b test"]);
    assert_eq!(host.current(), Some((1, Some(a))), "the profile was never changed");
}

#[tokio::test]
async fn after_a_boot_deployment_a_failed_switch_never_switches_to_the_boot_only_system() {
    let host = TestHost::new();
    let deployer = host.deployer();
    let (a, b, c) = (host.system("a", 0).await, host.system("b", 0).await, host.system("c", 4).await);
    deployer.create(request("d1", &a, Mode::Switch, 0)).await.unwrap();
    settled(&deployer, "d1").await;
    deployer.create(request("d2", &b, Mode::Boot, 0)).await.unwrap();
    settled(&deployer, "d2").await;
    let d = deployer.create(request("d3", &c, Mode::Switch, 30)).await.unwrap();
    assert_eq!(d.previous_toplevel, Some(a.clone()), "A runs; B is only set for the next boot");
    let d = ended(&deployer, "d3").await;
    assert_eq!(d.state, DeploymentState::Failed, "{d:?}");
    let error = d.error.unwrap();
    assert!(
        error.ends_with(&format!("re-activated the previous system {a} (test) and the boot entry of {b}")),
        "{error}"
    );
    // A runs again without being installed as the boot entry; B is the boot entry again.
    assert_eq!(host.ran(), ["a switch", "b boot", "c switch", "a test", "b boot"]);
    assert_eq!(host.current().and_then(|(_, t)| t), Some(b.clone()), "the profile points at B as before");

    // What runs is still A: the next deployment records it as its previous system.
    let d = deployer.create(request("d4", &a, Mode::Switch, 0)).await.unwrap();
    assert_eq!(d.previous_toplevel, Some(a));
    settled(&deployer, "d4").await;
}

#[tokio::test]
async fn a_hung_activation_is_killed_after_the_time_limit_and_rolled_back() {
    let host = TestHost::new();
    let options = DeployerOptions {
        activation_timeout: Some(std::time::Duration::from_millis(600)),
        ..DeployerOptions::default()
    };
    let deployer = host.deployer_with(options);
    let good = host.system("good", 0).await;
    let hung = host.system_with("hung", 0, "600").await;
    deployer.create(request("d1", &good, Mode::Switch, 0)).await.unwrap();
    settled(&deployer, "d1").await;
    deployer.create(request("d2", &hung, Mode::Switch, 30)).await.unwrap();
    let d = ended(&deployer, "d2").await;
    assert_eq!(d.state, DeploymentState::Failed, "{d:?}");
    let error = d.error.unwrap();
    assert!(error.contains("timed out"), "{error}");
    assert!(error.ends_with(&format!("re-activated the previous system {good}")), "{error}");
    assert_eq!(host.ran(), ["good switch", "hung switch", "good switch"]);
    assert_eq!(host.current().and_then(|(_, t)| t), Some(good.clone()));
    let record = deployer.records().into_iter().find(|r| r.deployment.id == "d2").unwrap();
    let handle = record.activation.unwrap();
    let wrapper = crate::orphan::ChildProcess { pid: handle.pid, start_time: handle.start_time };
    assert!(!wrapper.is_alive(), "the hung activation is gone");
    // The host takes the next deployment.
    deployer.create(request("d3", &good, Mode::Test, 0)).await.unwrap();
    assert_eq!(settled(&deployer, "d3").await.state, DeploymentState::Confirmed);
}
