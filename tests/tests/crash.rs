//! `kill -9` of the agent in each phase of a deployment, then a restart with the same
//! configuration: importing, setting the profile, switching, the switch finishing while
//! the agent is down, health checks, waiting for confirmation, rolling back. The
//! deployment must end consistently (confirmed, or the exact previous toplevel running
//! again; never stuck `activating`), the store must hold no half-imported path, the
//! profile's generations must point at valid paths, every journal record must be whole,
//! and the host must take the next `hostctl apply`; the fault suite's
//! `hostctl_tests::invariants::check` holds on the system each case expects.
//!
//! Phases are held open from outside the agent: the switch with a FIFO
//! ([`SwitchGate`]: the example's `switch-to-configuration` blocks appending to
//! `switch.log`), imports and profile changes with a simulated running garbage collector
//! ([`GcHold`]: Nix waits to register paths), health checks with a `sleep` check.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code throughout (helpers too): a failed step must fail the test"
)]

use std::time::{Duration, Instant};

use hostctl_tests::invariants::{self, Running};
use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::simhost::{GcHold, SwitchGate};
use hostctl_tests::{HostctlChild, HostctlRun};
use serde_json::Value;

fn is_final(state: &str) -> bool {
    matches!(state, "confirmed" | "failed" | "rolled-back")
}

/// A deployment of web1's system B held mid-switch, with web1 running A before it.
struct Held {
    live: LiveFleet,
    a: String,
    id: String,
    gate: SwitchGate,
    apply: HostctlChild,
}

/// web1 applied once (A) with `window` as confirmation timeout, then changed (B) and
/// `hostctl apply` started in the background; returns once B's switch is held.
fn held_deployment(window: &str) -> Held {
    let (live, a) = applied_then_changed(window);
    let (gate, apply, id) = live.apply_held_at_switch("web1");
    Held { live, a, id, gate, apply }
}

/// Waits for the held deployment to finish activating; it must then await confirmation.
fn awaiting(live: &LiveFleet, id: &str) -> Value {
    let d = live.wait_for_deployment("web1", id, Duration::from_secs(20), |s| s != "queued" && s != "activating");
    assert_eq!(d["state"], "awaiting-confirmation", "{d}");
    d
}

/// `kill -9` of the agent, then a start with the same configuration.
fn crash_and_restart(live: &mut LiveFleet) {
    let host = live.host_mut("web1");
    host.kill_agent();
    host.restart_agent();
}

/// What the restarted agent says right away about the deployment.
fn state_after_restart(live: &LiveFleet, id: &str) -> Value {
    let d = live.deployment("web1", id);
    let state = d["state"].as_str().unwrap_or_default();
    assert!(matches!(state, "activating" | "awaiting-confirmation" | "confirmed" | "rolled-back"), "{d}");
    d
}

/// Everything that says which system web1 runs agrees on `expected`.
fn assert_runs(live: &LiveFleet, expected: &str, why: &str) {
    let h = live.host("web1");
    assert_eq!(h.current_system(), expected, "{why}: running system (switch.log:\n{})", live.switch_log("web1"));
    assert_eq!(h.profile_system().as_deref(), Some(expected), "{why}: the system profile points at the running system");
    let status = live.agent_status("web1");
    assert_eq!(status["toplevel"].as_str(), Some(expected), "{why}: {status}");
}

/// The host's store, profile and journal are consistent and the agent is idle; and the
/// fault suite's invariants hold with web1 running `expected` (A is `a`, B the flake's).
fn assert_consistent(live: &LiveFleet, a: &str, expected: Running) {
    let h = live.host("web1");
    assert_eq!(h.invalid_store_entries(), Vec::<String>::new(), "store objects on disk that Nix does not know");
    let generations = h.profile_generations();
    let (number, newest) = generations.last().unwrap_or_else(|| panic!("no generation at all"));
    assert!(h.is_valid(newest), "the newest generation {number} -> {newest} is a valid path");
    for (n, target) in &generations {
        assert!(h.is_valid(target), "generation {n} -> {target} is a valid path");
    }
    let journal = h.root.join("state/agent/deployments");
    let mut records = 0;
    for entry in std::fs::read_dir(&journal).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !name.starts_with('.') {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            assert!(serde_json::from_str::<Value>(&text).is_ok(), "journal record {name} is whole JSON: {text}");
            records += 1;
        }
    }
    assert!(records >= 1, "the journal in {} has its records", journal.display());
    let status = live.agent_status("web1");
    assert_eq!(status["state"], "idle", "{status}");
    let b = live.fleet.toplevel("web1");
    invariants::check(live, "web1", a, &b).expect(expected, "after the crash");
}

fn rolled_back(live: &LiveFleet, id: &str, a: &str) {
    let done = live.wait_for_deployment("web1", id, Duration::from_secs(30), is_final);
    assert_eq!(done["state"], "rolled-back", "{done}");
    assert_runs(live, a, "after the rollback");
    let log = live.switch_log("web1");
    assert!(log.trim_end().ends_with(&format!("switch web1 {a} exit=0")), "A was re-activated last:\n{log}");
}

#[test]
fn killed_while_awaiting_confirmation_then_the_window_runs_out() {
    let Held { mut live, a, id, mut gate, mut apply } = held_deployment("6s");
    apply.kill();
    gate.release();
    awaiting(&live, &id);

    crash_and_restart(&mut live);
    let after = state_after_restart(&live, &id);
    assert_ne!(after["state"], "activating", "{after}");
    rolled_back(&live, &id, &a);
    assert_consistent(&live, &a, Running::Old);
}

#[test]
fn killed_while_awaiting_confirmation_then_confirmed_after_restart() {
    let Held { mut live, a, id, mut gate, mut apply } = held_deployment("12s");
    apply.kill();
    gate.release();
    let waiting = awaiting(&live, &id);
    let b = waiting["toplevel"].as_str().unwrap().to_owned();
    let deadline = waiting["confirm_deadline"].as_u64().unwrap_or_else(|| panic!("no confirm_deadline: {waiting}"));

    crash_and_restart(&mut live);
    let after = state_after_restart(&live, &id);
    assert_eq!(after["state"], "awaiting-confirmation", "the window is still open: {after}");
    let confirmed = live.agent_json("web1", "POST", &format!("/v1/deployments/{id}/confirm"), b"");
    assert_eq!(confirmed["state"], "confirmed", "{confirmed}");

    // Past the original deadline: the confirmation holds.
    while hostctl_tests::http::now() <= deadline + 2 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let later = live.deployment("web1", &id);
    assert_eq!(later["state"], "confirmed", "{later}");
    assert_runs(&live, &b, "confirmed after the restart");
    assert_consistent(&live, &a, Running::New);
}

#[test]
fn killed_while_switching_without_a_controller_rolls_back() {
    let Held { mut live, a, id, mut gate, mut apply } = held_deployment("5s");
    apply.kill();
    crash_and_restart(&mut live);
    let after = state_after_restart(&live, &id);
    assert_eq!(after["state"], "activating", "the switch still runs (held): {after}");
    let held = gate.release();
    assert!(held.starts_with("switch web1 "), "{held:?}");
    rolled_back(&live, &id, &a);
    assert_consistent(&live, &a, Running::Old);
}

#[test]
fn killed_while_switching_then_the_controller_confirms() {
    let Held { mut live, a, id, mut gate, mut apply } = held_deployment("30s");
    crash_and_restart(&mut live);
    gate.release();
    let run = apply.wait_timeout(Duration::from_secs(60)).unwrap_or_else(|| {
        let out = apply.kill();
        panic!("hostctl apply did not finish:\nstdout:\n{}\nstderr:\n{}", out.stdout, out.stderr)
    });
    run.expect_code(0);
    let v = run.json();
    assert_eq!(v["hosts"]["web1"]["result"], "activated", "{v}");
    let b = v["hosts"]["web1"]["toplevel"].as_str().unwrap().to_owned();
    assert_ne!(a, b);
    let d = live.deployment("web1", &id);
    assert_eq!(d["state"], "confirmed", "{d}");
    assert_runs(&live, &b, "confirmed after the agent's restart");
    assert_consistent(&live, &a, Running::New);
}

#[test]
fn a_switch_that_finished_while_the_agent_was_down_is_picked_up() {
    let Held { mut live, a, id, mut gate, mut apply } = held_deployment("8s");
    apply.kill();
    live.host_mut("web1").kill_agent();
    gate.release();
    // The detached activation finishes on its own: wait until nothing runs in the host.
    let start = Instant::now();
    while !live.host("web1").netns_pids().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "the activation did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(live.host("web1").current_system(), a, "B was switched to while the agent was down");

    live.host_mut("web1").restart_agent();
    let after = state_after_restart(&live, &id);
    let state = after["state"].as_str().unwrap();
    assert!(state == "awaiting-confirmation" || state == "rolled-back", "{after}");
    rolled_back(&live, &id, &a);
    assert_consistent(&live, &a, Running::Old);
}

#[test]
fn killed_while_rolling_back_finishes_the_rollback() {
    let Held { mut live, a, id, mut gate, mut apply } = held_deployment("4s");
    apply.kill();
    gate.release();
    awaiting(&live, &id);
    // Hold the rollback's own switch to A when the window runs out.
    let mut rollback_gate = SwitchGate::arm(live.host("web1"));
    rollback_gate.wait_blocked();
    crash_and_restart(&mut live);
    let after = live.deployment("web1", &id);
    assert!(!matches!(after["state"].as_str(), Some("confirmed" | "failed")), "{after}");
    let held = rollback_gate.release();
    assert!(held.starts_with(&format!("switch web1 {a} ")), "the held switch is the rollback to A: {held:?}");
    rolled_back(&live, &id, &a);
    assert_consistent(&live, &a, Running::Old);
}

/// web1 applied once (A) with `window`, then changed (B, committed). Returns (fleet, A).
fn applied_then_changed(window: &str) -> (LiveFleet, String) {
    let live = LiveFleet::start(&["web1"]);
    live.write_inventory_with(window, |_| String::new(), "");
    live.fleet.commit_allow_empty(&format!("confirm_timeout {window}"));
    let first = live.hostctl(&["--json", "apply"]);
    first.expect_code(0);
    let a = first.json()["hosts"]["web1"]["toplevel"].as_str().unwrap().to_owned();
    assert_eq!(live.host("web1").current_system(), a);
    live.change_host("web1", "web1 B");
    (live, a)
}

/// Waits until no process runs in web1 (the agent is down and what it left finished).
fn wait_for_no_processes(live: &LiveFleet, what: &str) {
    let start = Instant::now();
    while !live.host("web1").netns_pids().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "{what} did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `hostctl` to exit (it must not hang on an agent that crashed).
fn finished(apply: &mut HostctlChild) -> HostctlRun {
    apply.wait_timeout(Duration::from_secs(90)).unwrap_or_else(|| {
        let out = apply.kill();
        panic!("hostctl did not finish within 90 s:\nstdout:\n{}\nstderr:\n{}", out.stdout, out.stderr)
    })
}

/// After a crash the fleet can be deployed again: `hostctl apply` activates B.
fn apply_again_activates(live: &LiveFleet, a: &str) {
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(0);
    let v = run.json();
    assert_eq!(v["hosts"]["web1"]["result"], "activated", "{v}");
    let b = v["hosts"]["web1"]["toplevel"].as_str().unwrap().to_owned();
    assert_ne!(a, b);
    assert_runs(live, &b, "after a fresh apply");
    assert_consistent(live, a, Running::New);
}

#[test]
fn killed_while_importing_leaves_no_half_paths() {
    let (mut live, a) = applied_then_changed("5s");
    let known = live.deployment_ids("web1");
    let mut hold = GcHold::hold(live.host("web1"));
    let mut apply = live.spawn_hostctl(&["--json", "apply"]);
    hold.wait_for_waiter();
    assert_eq!(live.deployment_ids("web1"), known, "still importing: no deployment yet");
    live.host_mut("web1").kill_agent();
    hold.release();
    wait_for_no_processes(&live, "the import the agent left behind");
    live.host_mut("web1").restart_agent();

    let run = finished(&mut apply);
    let v = run.json();
    match run.code {
        Some(1) => assert_eq!(v["hosts"]["web1"]["result"], "failed", "{v}"),
        Some(0) => assert_eq!(v["hosts"]["web1"]["result"], "activated", "{v}"),
        other => panic!("exit {other:?}: {v}"),
    }
    if run.code == Some(1) {
        assert_runs(&live, &a, "the failed push changed nothing");
    }
    assert_consistent(&live, &a, if run.code == Some(1) { Running::Old } else { Running::New });
    apply_again_activates(&live, &a);
}

#[test]
fn killed_while_setting_the_profile_keeps_the_previous_system() {
    let (mut live, a) = applied_then_changed("5s");
    let build = live.hostctl(&["--json", "build", "--on", "web1"]);
    build.expect_code(0);
    let b = build.json()["hosts"]["web1"]["toplevel"].as_str().unwrap().to_owned();
    // With the closure already there, the first thing that waits is `nix-env --set`.
    live.import_closure("web1", &b);
    let known = live.deployment_ids("web1");
    let mut hold = GcHold::hold(live.host("web1"));
    let mut apply = live.spawn_hostctl(&["--json", "apply"]);
    hold.wait_for_waiter();
    let d = live.wait_for_new_deployment("web1", &known, Duration::from_secs(10));
    let id = d["id"].as_str().unwrap().to_owned();
    assert_eq!(live.deployment("web1", &id)["state"], "activating", "setting the profile");
    apply.kill();
    live.host_mut("web1").kill_agent();
    // The orphaned `nix-env --set` completes: the profile now points at B, which never ran.
    hold.release();
    wait_for_no_processes(&live, "the profile change the agent left behind");
    live.host_mut("web1").restart_agent();

    let done = live.wait_for_deployment("web1", &id, Duration::from_secs(30), is_final);
    let state = done["state"].as_str().unwrap();
    assert!(state == "failed" || state == "rolled-back", "{done}");
    assert_runs(&live, &a, "after recovering from a crash while setting the profile");
    assert_consistent(&live, &a, Running::Old);
    apply_again_activates(&live, &a);
}

#[test]
fn killed_during_health_checks_rolls_back() {
    let (mut live, a) = applied_then_changed("30s");
    live.write_inventory_with(
        "30s",
        |_| "    health:\n      - command: [\"sleep\", \"60\"]\n        timeout: 90s\n        retries: 0\n".to_owned(),
        "",
    );
    live.fleet.commit("a slow health check");
    let known = live.deployment_ids("web1");
    let mut apply = live.spawn_hostctl(&["--json", "apply"]);
    let id = live.wait_for_new_deployment("web1", &known, Duration::from_secs(30))["id"].as_str().unwrap().to_owned();
    // The check runs once B is switched to.
    let start = Instant::now();
    while !live
        .host("web1")
        .netns_pids()
        .iter()
        .any(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim() == "sleep")
    {
        assert!(start.elapsed() < Duration::from_secs(30), "the health check did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_ne!(live.host("web1").current_system(), a, "B runs while it is checked");
    apply.kill();
    crash_and_restart(&mut live);
    rolled_back(&live, &id, &a);
    assert_consistent(&live, &a, Running::Old);
}

/// Pids of `comm` processes in web1.
fn processes_named(live: &LiveFleet, comm: &str) -> Vec<u32> {
    live.host("web1")
        .netns_pids()
        .into_iter()
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim() == comm)
        .collect()
}

#[test]
fn a_profile_change_outliving_the_killed_agent_does_not_undo_recovery() {
    // The agent is killed while its `nix-env --set B` waits (here on a running garbage
    // collection, which can take minutes), and restarts while that nix-env still waits.
    // Recovery ends the deployment `failed` with the profile at A; the nix-env the dead
    // agent left behind must not move the profile to B (never activated) afterwards.
    let (mut live, a) = applied_then_changed("5s");
    let build = live.hostctl(&["--json", "build", "--on", "web1"]);
    build.expect_code(0);
    let b = build.json()["hosts"]["web1"]["toplevel"].as_str().unwrap().to_owned();
    live.import_closure("web1", &b);
    let known = live.deployment_ids("web1");
    let mut hold = GcHold::hold(live.host("web1"));
    let mut apply = live.spawn_hostctl(&["--json", "apply"]);
    hold.wait_for_waiter();
    let id = live.wait_for_new_deployment("web1", &known, Duration::from_secs(10))["id"].as_str().unwrap().to_owned();
    apply.kill();
    crash_and_restart(&mut live);
    let done = live.wait_for_deployment("web1", &id, Duration::from_secs(30), is_final);
    assert_eq!(done["state"], "failed", "{done}");
    assert_runs(&live, &a, "right after recovery");

    hold.release();
    let start = Instant::now();
    while !processes_named(&live, "nix-env").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "nix-env did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_runs(&live, &a, "once the dead agent's nix-env is gone");
    assert_consistent(&live, &a, Running::Old);
}
