//! VM lane (tests/vm/run.sh), scenario 4: a system that ships a new agent. The switch
//! leaves the running agent alone (its unit is `restartIfChanged = false`); once the
//! deployment is confirmed and the agent idle, it exits 75 and systemd starts the unit as
//! the switch left it: the new program, which reports its version to `hostctl status`.
//! The new agent is this checkout's binary with another version stamped into it
//! (tests/src/vm/upgrade.rs). Skips unless run by tests/vm/run.sh.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code throughout: a failed step must fail the test")]

use std::time::{Duration, Instant};

use hostctl_tests::vm::fleet::VmFleet;
use hostctl_tests::vm::upgrade::stamped_agent;
use hostctl_tests::vm::Lane;

const FIRST: &str = "{ services = { vm-app = { exec = \"/bin/sleep infinity\"; }; }; }\n";
/// The same service, and the agent's unit starting the agent the fleet ships.
const SECOND: &str =
    "{ agentProgram = ../next-agent/hostctl-agent; services = { vm-app = { exec = \"/bin/sleep infinity\"; }; }; }\n";
const NEW_VERSION: &str = "9.9.9-vm-upgrade";

/// The version the guest's agent reports, or `None` while it does not answer (restarting).
fn version(vm: &VmFleet, name: &str) -> Option<String> {
    let key = hostctl_tests::livefleet::load_key(&vm.key_file);
    let r = hostctl_tests::http::Request::new("GET", "/v1/status", b"")
        .signed(&key, name)
        .send_with_timeout(&vm.guest(name).agent_addr(), Duration::from_secs(10))
        .ok()
        .filter(|r| r.status == 200)?;
    let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
    v["version"].as_str().map(str::to_owned)
}

#[test]
fn a_system_shipping_a_new_agent_keeps_the_old_one_through_the_switch_and_restarts_into_the_new_one_when_idle() {
    let Some(lane) = Lane::from_env() else { return };
    let vm = VmFleet::start_resumed(&lane, &["up1"], FIRST, "", &[]);
    vm.hostctl(&["--json", "apply"]).expect_code(0);
    let guest = vm.guest("up1");
    let old_pid = guest.unit_property("hostctl-agent", "MainPID");
    let old_version = vm.status("up1")["version"].as_str().unwrap().to_owned();
    assert_eq!(old_version, env!("CARGO_PKG_VERSION"));

    stamped_agent(&vm.fleet.path("next-agent/hostctl-agent"), NEW_VERSION);
    vm.set_host("up1", SECOND);
    let run = vm.hostctl(&["--json", "apply"]);
    run.expect_code(0);
    assert_eq!(run.json()["hosts"]["up1"]["result"], "activated", "{}", run.stdout);
    let toplevel = vm.toplevel("up1");
    let shipped = guest
        .sh(&format!("sed -n 's|^ExecStart=\\([^ ]*\\) .*|\\1|p' {toplevel}/etc/systemd/system/hostctl-agent.service"));
    assert!(shipped.starts_with("/nix/store/"), "the new system's unit starts {shipped:?}");

    // The new agent answers with its version, in a new process running the shipped program.
    let start = Instant::now();
    let new_pid = loop {
        let pid = guest.unit_property("hostctl-agent", "MainPID");
        let active = guest.unit_property("hostctl-agent", "ActiveState") == "active";
        if active && pid != old_pid && pid != "0" && version(&vm, "up1").as_deref() == Some(NEW_VERSION) {
            break pid;
        }
        assert!(start.elapsed() < Duration::from_secs(180), "no restart into the new agent: pid {pid}");
        std::thread::sleep(Duration::from_secs(2));
    };
    assert_eq!(guest.sh(&format!("readlink /proc/{new_pid}/exe")), shipped);
    // The old process lived through the switch to the confirmation, then restarted itself:
    // a clean exit (75) systemd restarted, not a failure.
    let old_log = guest.sh(&format!("journalctl -o cat _PID={old_pid}"));
    let confirmed = old_log.rfind("deployment confirmed").unwrap_or_else(|| panic!("old agent: {old_log}"));
    let restarting = old_log.find("restarting into it").unwrap_or_else(|| panic!("old agent: {old_log}"));
    assert!(confirmed < restarting, "restarted only once idle: {old_log}");
    assert_eq!(guest.unit_property("hostctl-agent", "NRestarts"), "1");
    let unit_log = guest.sh("journalctl -o cat -u hostctl-agent");
    assert!(!unit_log.contains("Failed with result"), "{unit_log}");

    let status = vm.hostctl(&["--json", "status"]);
    status.expect_code(0);
    let entry = &status.json()["hosts"]["up1"];
    assert_eq!(entry["agent_version"], NEW_VERSION, "{entry}");
    assert_eq!(entry["drift"], "in-sync", "{entry}");
    let text = vm.hostctl(&["status"]);
    assert!(
        text.stdout.contains(&format!("the agent is hostctl-agent {NEW_VERSION}")),
        "hostctl status names the new version: {}",
        text.stdout
    );

    // The new agent deploys: back to the seed disk's agent, which it restarts into in turn.
    vm.set_host("up1", FIRST);
    vm.hostctl(&["--json", "apply"]).expect_code(0);
    let start = Instant::now();
    while version(&vm, "up1").as_deref() != Some(old_version.as_str()) {
        assert!(start.elapsed() < Duration::from_secs(180), "no restart back into the seed disk's agent");
        std::thread::sleep(Duration::from_secs(2));
    }
    let exe = guest.sh("readlink /proc/$(systemctl show -p MainPID --value hostctl-agent)/exe");
    assert_eq!(exe, "/opt/hostctl/bin/hostctl-agent");
}
