//! VM lane (tests/vm/run.sh), scenario 3: the activation runs as a real transient unit of
//! the guest's systemd (`service_manager: systemd`), so `systemctl restart hostctl-agent`
//! in the middle of it kills neither the activation nor the deployment: the new agent
//! follows the unit to its end and the deployment finishes. Skips unless run by
//! tests/vm/run.sh.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code throughout: a failed step must fail the test")]

use std::time::{Duration, Instant};

use hostctl_tests::vm::fleet::VmFleet;
use hostctl_tests::vm::Lane;

const FIRST: &str = "{ services = { vm-web = { exec = \"/bin/sleep infinity\"; }; }; }\n";
/// A new unit whose start takes 90 s: switch-to-configuration waits for it. 40 s was not
/// enough on a loaded machine: the agent's restart and the `systemctl` calls around it, each
/// an ssh round trip into a TCG guest, outlasted it once (the unit was `inactive` when checked).
const SLOW: &str = r#"{
  services = {
    vm-web = { exec = "/bin/sleep infinity"; };
    vm-slow = { exec = "/bin/sleep 90"; type = "oneshot"; };
  };
}
"#;

#[test]
fn restarting_the_agent_during_an_activation_leaves_the_transient_unit_running_and_the_deployment_finishes() {
    let Some(lane) = Lane::from_env() else { return };
    let vm = VmFleet::start_resumed(&lane, &["web1"], FIRST, "", &[]);
    vm.hostctl(&["--json", "apply"]).expect_code(0);
    vm.set_host("web1", SLOW);
    let new = vm.toplevel("web1");
    let mut apply = vm.spawn_hostctl(&["--json", "apply"]);
    let guest = vm.guest("web1");

    // The activation is a transient unit of the guest's systemd, and it is running.
    let deadline = Instant::now() + Duration::from_secs(240);
    let unit = loop {
        let units = guest.sh("systemctl list-units --no-legend --plain --all 'hostctl-activate-*' | cut -d' ' -f1");
        if let Some(unit) = units.lines().next().filter(|u| !u.is_empty()) {
            if guest.unit_property("vm-slow", "ActiveState") == "activating" {
                break unit.to_owned();
            }
        }
        assert!(Instant::now() < deadline, "no activation unit running: {}", apply.output(None).stderr);
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(guest.unit_property(&unit, "Transient"), "yes", "{unit}");
    let before = guest.unit_property("hostctl-agent", "MainPID");
    guest.sh("systemctl restart hostctl-agent");
    let after = guest.unit_property("hostctl-agent", "MainPID");
    assert_ne!(before, after, "the agent restarted");
    assert_eq!(guest.unit_property(&unit, "ActiveState"), "active", "{unit} survives the agent's restart");

    let run = apply.wait_timeout(Duration::from_secs(300)).expect("hostctl apply did not finish");
    run.expect_code(0);
    let v = run.json();
    assert_eq!(v["hosts"]["web1"]["result"], "activated", "{}", v["hosts"]["web1"]);
    assert_eq!(guest.resolve("/run/current-system"), new);
    assert_eq!(guest.unit_property("vm-slow", "ActiveState"), "active", "the activation ran to its end");
    assert_eq!(guest.unit_property(&unit, "LoadState"), "not-found", "the finished unit was collected");
    let status = vm.status("web1");
    assert_eq!((status["state"].as_str(), status["toplevel"].as_str()), (Some("idle"), Some(new.as_str())), "{status}");
    let journal = guest.sh("journalctl -u hostctl-agent --no-pager -o cat");
    assert_eq!(guest.unit_property("hostctl-agent", "MainPID"), after, "no further restart: {journal}");
}
