//! VM lane (tests/vm/run.sh), the first points of scenario 8: power cuts (qemu killed with
//! SIGKILL, so the guest loses every write it had not flushed), then a boot, then the
//! guest-side invariants of `tests/src/vm/checks.rs`. Points: right after `hostctl apply`
//! reported a deployment (it must have been durable), between the profile switch and
//! switch-to-configuration, and in the middle of an activation (a new unit still
//! starting). Skips unless run by tests/vm/run.sh.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code throughout: a failed step must fail the test")]

use std::time::{Duration, Instant};

use hostctl_tests::vm::checks::check;
use hostctl_tests::vm::fleet::VmFleet;
use hostctl_tests::vm::Lane;

const FIRST: &str = "{ services = { vm-web = { exec = \"/bin/sleep infinity\"; version = \"1\"; }; }; }\n";
const SECOND: &str = "{ services = { vm-web = { exec = \"/bin/sleep infinity\"; version = \"2\"; }; }; }\n";
const THIRD: &str = "{ services = { vm-web = { exec = \"/bin/sleep infinity\"; version = \"3\"; }; }; }\n";
const SLOW: &str = r#"{
  services = {
    vm-web = { exec = "/bin/sleep infinity"; version = "2"; };
    vm-slow = { exec = "/bin/sleep 60"; type = "oneshot"; };
  };
}
"#;

#[test]
fn power_cuts_after_an_acknowledged_deployment_and_during_an_activation_leave_the_guest_consistent() {
    let Some(lane) = Lane::from_env() else { return };
    let mut vm = VmFleet::start(&lane, &["web1"], FIRST, "");
    vm.hostctl(&["--json", "apply"]).expect_code(0);

    // Point 1: the controller was told the deployment is done; then the power goes.
    vm.set_host("web1", SECOND);
    let second = vm.toplevel("web1");
    let run = vm.hostctl(&["--json", "apply"]);
    run.expect_code(0);
    let acknowledged = run.json()["hosts"]["web1"]["deployment"].as_str().unwrap().to_owned();
    vm.guest_mut("web1").power_cut();
    vm.guest_mut("web1").boot();
    let running = check(&vm, "web1", &[&acknowledged]);
    assert_eq!(running, second, "an acknowledged deployment survives a power cut");

    // Point 2: the profile names the new system, switch-to-configuration has not started
    // (held by the fixture's hold file) when the power goes.
    vm.set_host("web1", THIRD);
    let third = vm.toplevel("web1");
    vm.guest("web1").sh("touch /run/hostctl-vm-hold-switch");
    let mut apply = vm.spawn_hostctl(&["--json", "apply"]);
    let deadline = Instant::now() + Duration::from_secs(240);
    while vm.guest("web1").resolve("/nix/var/nix/profiles/system") != third
        || !vm.guest("web1").ssh("pgrep -f 'bin/switch-to-configuratio[n]'").status.success()
    {
        assert!(Instant::now() < deadline, "never held at the switch: {}", apply.output(None).stderr);
        std::thread::sleep(Duration::from_millis(500));
    }
    vm.guest_mut("web1").power_cut();
    let _ = apply.kill();
    vm.guest_mut("web1").boot();
    let running = check(&vm, "web1", &[&acknowledged]);
    assert_eq!(running, second, "the next boot was never switched: the old system runs and is reported");

    // Point 3: a new unit is still starting when the power goes.
    vm.set_host("web1", SLOW);
    let slow = vm.toplevel("web1");
    let mut apply = vm.spawn_hostctl(&["--json", "apply"]);
    let deadline = Instant::now() + Duration::from_secs(240);
    while vm.guest("web1").unit_property("vm-slow", "ActiveState") != "activating" {
        assert!(Instant::now() < deadline, "vm-slow never started: {}", apply.output(None).stderr);
        std::thread::sleep(Duration::from_millis(500));
    }
    vm.guest_mut("web1").power_cut();
    let _ = apply.kill();
    vm.guest_mut("web1").boot();
    let running = check(&vm, "web1", &[&acknowledged]);
    assert!(running == second || running == slow, "runs the old or the new system: {running}");
}
