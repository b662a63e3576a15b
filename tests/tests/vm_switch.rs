//! VM lane (tests/vm/run.sh), scenarios 1 and 2: `hostctl apply` in mode `switch` to two
//! Debian guests with systemd as PID 1. The test systems' switch-to-configuration (a
//! fixture, tests/vm/fleet) drives the guests' real systemd; what it did is checked with
//! `systemctl` in the guests. Skips unless run by tests/vm/run.sh.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code throughout: a failed step must fail the test")]

use hostctl_tests::vm::fleet::VmFleet;
use hostctl_tests::vm::guest::Guest;
use hostctl_tests::vm::Lane;
use serde_json::Value;

/// Generation 1: three long-running services.
const FIRST: &str = r#"{
  services = {
    vm-kept = { exec = "/bin/sleep infinity"; };
    vm-changed = { exec = "/bin/sleep infinity"; version = "1"; };
    vm-removed = { exec = "/bin/sleep infinity"; };
  };
}
"#;

/// Generation 2: vm-kept as it was, vm-changed changed, vm-removed gone, vm-new new, and
/// the agent's own unit changed (it is marked X-RestartIfChanged=false).
const SECOND: &str = r#"{
  agentTag = "2";
  services = {
    vm-kept = { exec = "/bin/sleep infinity"; };
    vm-changed = { exec = "/bin/sleep infinity"; version = "2"; };
    vm-new = { exec = "/bin/sleep infinity"; };
  };
}
"#;

fn result(v: &Value, host: &str) -> String {
    v["hosts"][host]["result"].as_str().unwrap_or("").to_owned()
}

fn active(guest: &Guest, unit: &str) -> String {
    guest.unit_property(unit, "ActiveState")
}

fn main_pid(guest: &Guest, unit: &str) -> String {
    let pid = guest.unit_property(unit, "MainPID");
    assert!(pid != "0" && !pid.is_empty(), "{}: {unit} has no main process", guest.name);
    pid
}

#[test]
fn switch_starts_new_units_restarts_changed_ones_stops_removed_ones_and_leaves_the_agent_running() {
    let Some(lane) = Lane::from_env() else { return };
    let names = ["web1", "web2"];
    let vm = VmFleet::start_resumed(&lane, &names, FIRST, "", &[]);

    let first = vm.hostctl(&["--json", "apply"]);
    first.expect_code(0);
    let v = first.json();
    let mut before = Vec::new();
    for name in names {
        assert_eq!(result(&v, name), "activated", "{name}: {}", v["hosts"][name]);
        let guest = vm.guest(name);
        assert_eq!(guest.resolve("/run/current-system"), vm.toplevel(name), "{name}");
        for unit in ["vm-kept", "vm-changed", "vm-removed"] {
            assert_eq!(active(guest, unit), "active", "{name}: {unit}");
        }
        before.push((main_pid(guest, "vm-kept"), main_pid(guest, "vm-changed"), main_pid(guest, "hostctl-agent")));
    }

    for name in names {
        vm.set_host(name, SECOND);
    }
    let second = vm.hostctl(&["--json", "apply"]);
    second.expect_code(0);
    let v = second.json();
    for (name, (kept, changed, agent)) in names.into_iter().zip(before) {
        assert_eq!(result(&v, name), "activated", "{name}: {}", v["hosts"][name]);
        let guest = vm.guest(name);
        assert_eq!(guest.resolve("/run/current-system"), vm.toplevel(name), "{name}");
        assert_eq!(active(guest, "vm-new"), "active", "{name}: a new unit starts");
        assert_eq!(active(guest, "vm-removed"), "inactive", "{name}: a removed unit stops");
        assert_eq!(active(guest, "vm-changed"), "active", "{name}");
        assert_ne!(main_pid(guest, "vm-changed"), changed, "{name}: a changed unit restarts");
        assert!(guest.unit_property("vm-changed", "Description").ends_with(" 2"), "{name}: the new unit runs");
        assert_eq!(main_pid(guest, "vm-kept"), kept, "{name}: an unchanged unit is left alone");
        // The agent's unit did change (the new text is what systemd has loaded), yet the
        // agent that ran the deployment is the one still running.
        let unit = guest.sh("cat /etc/systemd/system/hostctl-agent.service");
        assert!(unit.contains("# system tag: 2"), "{name}: {unit}");
        assert_eq!(main_pid(guest, "hostctl-agent"), agent, "{name}: the agent keeps its PID");
    }

    let status = vm.hostctl(&["--json", "status"]);
    status.expect_code(0);
    let s = status.json();
    for name in names {
        assert_eq!(s["hosts"][name]["toplevel"], v["hosts"][name]["toplevel"], "{name}");
        assert_eq!(s["hosts"][name]["drift"], "in-sync", "{name}: {}", s["hosts"][name]);
    }
}

/// Generation 2 of the rollback test: vm-changed changed, vm-removed gone, and vm-broken,
/// which fails to start (a oneshot running /bin/false).
const BROKEN: &str = r#"{
  services = {
    vm-kept = { exec = "/bin/sleep infinity"; };
    vm-changed = { exec = "/bin/sleep infinity"; version = "broken"; };
    vm-broken = { exec = "/bin/false"; type = "oneshot"; };
  };
}
"#;

#[test]
fn a_unit_that_fails_to_start_exits_4_and_the_previous_system_and_its_units_come_back() {
    let Some(lane) = Lane::from_env() else { return };
    let vm = VmFleet::start_resumed(&lane, &["web1"], FIRST, "", &[]);
    vm.hostctl(&["--json", "apply"]).expect_code(0);
    let good = vm.toplevel("web1");
    let guest = vm.guest("web1");
    assert_eq!(guest.resolve("/run/current-system"), good);

    vm.set_host("web1", BROKEN);
    let broken = vm.toplevel("web1");
    let run = vm.hostctl(&["--json", "apply"]);
    run.expect_code(1);
    let v = run.json();
    let entry = &v["hosts"]["web1"];
    assert_eq!(result(&v, "web1"), "failed", "{entry}");
    let error = entry["error"].as_str().unwrap_or("");
    assert!(error.contains("exited with 4"), "switch-to-configuration's exit 4: {entry}");
    assert!(error.contains(&format!("re-activated the previous system {good}")), "{entry}");

    // The previous system runs again, with its units: the removed one is back, the
    // changed one is the old text again, the broken one is gone.
    assert_eq!(guest.resolve("/run/current-system"), good);
    assert_eq!(guest.resolve("/nix/var/nix/profiles/system"), good, "the profile's newest generation");
    assert_eq!(guest.resolve("/nix/var/nix/hostctl-vm/next-boot"), good, "the next boot's system");
    assert_eq!(active(guest, "vm-removed"), "active");
    assert!(guest.unit_property("vm-changed", "Description").ends_with(" 1"), "the old unit is back");
    assert_eq!(active(guest, "vm-changed"), "active");
    assert_eq!(guest.unit_property("vm-broken", "LoadState"), "not-found", "the broken unit is gone");
    let status = vm.status("web1");
    assert_eq!(status["toplevel"].as_str(), Some(good.as_str()), "{status}");
    assert_ne!(good, broken);
}
