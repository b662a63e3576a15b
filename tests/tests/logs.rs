//! `hostctl logs HOST [DEPLOYMENT] [--follow]` against a real agent on a simulated host:
//! the whole activation log as the agent captured it (in several pieces when it is
//! large), the newest deployment's by default, `--json` with the same text, `--follow`
//! that waits for a held switch and ends with the deployment; bad input exits 2.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code throughout (helpers too): a failed step must fail the test"
)]

use std::time::Duration;

use hostctl_tests::livefleet::LiveFleet;

fn log_file(live: &LiveFleet, id: &str) -> std::path::PathBuf {
    live.host("web1").root.join(format!("state/agent/deployments/{id}.log"))
}

#[test]
fn logs_prints_the_whole_activation_log_and_follows_a_running_deployment() {
    let live = LiveFleet::start(&["web1"]);
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(0);
    let id = run.json()["hosts"]["web1"]["deployment"].as_str().unwrap().to_owned();
    let captured = std::fs::read_to_string(log_file(&live, &id)).unwrap();
    assert!(!captured.is_empty(), "the activation printed something");
    let logs = live.hostctl(&["logs", "web1"]);
    logs.expect_code(0);
    assert_eq!(logs.stdout, captured, "the newest deployment's whole log");

    // A log far larger than one piece (256 KiB) and than the tail a deployment carries.
    let long: String = (0..20_000).map(|i| format!("line {i} of the activation, é\n")).collect();
    std::fs::write(log_file(&live, &id), &long).unwrap();
    let logs = live.hostctl(&["logs", "web1", &id]);
    logs.expect_code(0);
    assert!(logs.stdout == long, "{} bytes printed of {}", logs.stdout.len(), long.len());
    let json = live.hostctl(&["--json", "logs", "web1", &id]);
    json.expect_code(0);
    let entry = &json.json()["hosts"]["web1"];
    assert_eq!((entry["deployment"].as_str(), entry["complete"].as_bool()), (Some(id.as_str()), Some(true)));
    assert!(entry["log"].as_str() == Some(long.as_str()), "the same text under --json");

    live.hostctl(&["logs", "web1", "no-such-deployment"]).expect_code(1);
    live.hostctl(&["logs", "web1", "bad/id"]).expect_code(2);
    live.hostctl(&["logs", "ghost"]).expect_code(2);

    // --follow: waits while the switch is held, ends when the deployment does.
    live.change_host("web1", "web1 B");
    let (mut gate, mut apply, id) = live.apply_held_at_switch("web1");
    let mut follow = live.spawn_hostctl(&["logs", "web1", &id, "--follow"]);
    assert!(follow.wait_timeout(Duration::from_secs(2)).is_none(), "still following a held switch");
    gate.release();
    let followed = follow.wait_timeout(Duration::from_secs(60)).expect("--follow ends with the deployment");
    followed.expect_code(0);
    apply.wait_timeout(Duration::from_secs(60)).expect("apply ends").expect_code(0);
    let captured = std::fs::read_to_string(log_file(&live, &id)).unwrap();
    assert!(!captured.is_empty());
    assert_eq!(followed.stdout, captured, "everything the switch printed, once");
}
