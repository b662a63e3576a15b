//! Magic rollback and `hostctl rollback` against real agents on simulated hosts (real
//! Nix, real git): an unconfirmed deployment is rolled back when the controller dies or
//! the link is cut during the confirmation window; a confirmed one stays; `hostctl
//! rollback` returns a host to the previous lock, also after that system was garbage-
//! collected on the host (rebuilt from git history); an unknown lock changes nothing.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code throughout (helpers too): a failed step must fail the test"
)]

use std::time::{Duration, Instant};

use hostctl_tests::invariants::{self, Running};
use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::simhost::SwitchGate;
use hostctl_tests::HostctlRun;
use serde_json::Value;

fn host_entry<'a>(v: &'a Value, host: &str) -> &'a Value {
    &v["hosts"][host]
}

fn result(v: &Value, host: &str) -> String {
    host_entry(v, host)["result"].as_str().unwrap_or("").to_owned()
}

fn toplevel(v: &Value, host: &str) -> String {
    host_entry(v, host)["toplevel"].as_str().unwrap_or_else(|| panic!("no toplevel for {host}: {v}")).to_owned()
}

fn is_final(state: &str) -> bool {
    matches!(state, "confirmed" | "failed" | "rolled-back")
}

/// `hostctl --json apply` that must succeed; its JSON.
fn apply_ok(live: &LiveFleet) -> Value {
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(0);
    run.json()
}

/// A fleet of `names` with a `window` confirmation timeout, committed and applied once
/// (every host runs its system "A"); returns the apply's JSON.
fn fleet_applied(names: &[&str], window: &str) -> (LiveFleet, Value) {
    let live = LiveFleet::start(names);
    live.write_inventory_with(window, |_| String::new(), "");
    live.fleet.commit_allow_empty(&format!("confirm_timeout {window}"));
    let first = apply_ok(&live);
    for name in names {
        assert_eq!(result(&first, name), "activated", "{}", host_entry(&first, name));
        assert_eq!(live.host(name).current_system(), toplevel(&first, name));
    }
    (live, first)
}

fn dump(run: &HostctlRun) -> String {
    format!("exit {:?}\nstdout:\n{}\nstderr:\n{}", run.code, run.stdout, run.stderr)
}

/// Seconds since the epoch as the agent reports them.
fn unix(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("`{field}` is not a unix time: {v}"))
}

/// Everything that says which system web1 runs agrees on `expected`.
fn assert_runs(live: &LiveFleet, host: &str, expected: &str, why: &str) {
    let h = live.host(host);
    assert_eq!(h.current_system(), expected, "{why}: running system (switch.log:\n{})", live.switch_log(host));
    assert_eq!(h.profile_system().as_deref(), Some(expected), "{why}: the system profile points at the running system");
    let status = live.agent_status(host);
    assert_eq!(status["toplevel"].as_str(), Some(expected), "{why}: agent status {status}");
}

#[test]
fn controller_killed_after_activation_rolls_back_to_the_previous_toplevel() {
    let (live, first) = fleet_applied(&["web1"], "4s");
    let a = toplevel(&first, "web1");
    live.change_host("web1", "web1 B, never confirmed");

    // Hold the switch so the controller cannot confirm before we freeze it.
    let (mut gate, mut apply, id) = live.apply_held_at_switch("web1");
    apply.freeze();
    let held = gate.release();
    assert!(held.starts_with("switch web1 "), "the held switch: {held:?}");

    let waiting =
        live.wait_for_deployment("web1", &id, Duration::from_secs(20), |s| s != "queued" && s != "activating");
    assert_eq!(waiting["state"], "awaiting-confirmation", "{waiting}");
    let b = waiting["toplevel"].as_str().unwrap().to_owned();
    assert_ne!(a, b);
    assert_eq!(live.host("web1").current_system(), b, "activated before the wait");
    assert_eq!(waiting["previous_toplevel"].as_str(), Some(a.as_str()), "{waiting}");
    let deadline = unix(&waiting, "confirm_deadline");

    // The controller dies after activation, before confirming.
    apply.kill();

    let done = live.wait_for_deployment("web1", &id, Duration::from_secs(25), is_final);
    assert_eq!(done["state"], "rolled-back", "{done}");
    assert!(unix(&done, "finished") + 1 >= deadline, "rolled back only once the window ran out: {done}");
    assert_runs(&live, "web1", &a, "after the rollback");
    let log = live.switch_log("web1");
    assert!(log.trim_end().ends_with(&format!("switch web1 {a} exit=0")), "the rollback re-activated A:\n{log}");
    let on_disk = live.host("web1").profile_generations();
    assert_eq!(on_disk.last().map(|(_, t)| t.as_str()), Some(a.as_str()), "the newest generation is A: {on_disk:?}");
    let generations = live.generations("web1");
    let current: Vec<&Value> = generations.iter().filter(|g| g["current"] == true).collect();
    assert_eq!(current.len(), 1, "{generations:?}");
    assert_eq!(current[0]["toplevel"].as_str(), Some(a.as_str()), "the current generation is A again: {generations:?}");
    invariants::check(&live, "web1", &a, &b).expect(Running::Old, "the controller died before confirming");
}

#[test]
fn link_cut_during_the_window_rolls_back_and_apply_reports_it() {
    let (live, first) = fleet_applied(&["web1"], "5s");
    let a = toplevel(&first, "web1");
    live.change_host("web1", "web1 B cuts its own network");

    let (mut gate, mut apply, id) = live.apply_held_at_switch("web1");
    // The new configuration "cuts the cable" while it is being switched to.
    live.host("web1").set_link(false);
    gate.release();

    // Watched through the host's files: the agent is unreachable now.
    let start = Instant::now();
    let mut saw_b = false;
    loop {
        let running = live.host("web1").current_system();
        if running != a {
            saw_b = true;
        } else if saw_b {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(40), "no rollback to A within 40 s (running {running})");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The rollback "restored" the network.
    live.host("web1").set_link(true);

    let done = live.wait_for_deployment("web1", &id, Duration::from_secs(20), is_final);
    assert_eq!(done["state"], "rolled-back", "{done}");
    assert_runs(&live, "web1", &a, "after the rollback");

    let run = apply.wait_timeout(Duration::from_secs(90)).unwrap_or_else(|| {
        let out = apply.kill();
        panic!("hostctl apply did not finish within 90 s of the link cut:\n{}", dump(&out))
    });
    run.expect_code(1);
    let v = run.json();
    let r = result(&v, "web1");
    assert!(r == "failed" || r == "rolled-back", "{}", host_entry(&v, "web1"));
    let b = done["toplevel"].as_str().unwrap();
    invariants::check(&live, "web1", &a, b).expect(Running::Old, "the link was cut during the window");
}

#[test]
fn a_confirmed_deployment_stays_after_the_window() {
    let (live, _first) = fleet_applied(&["web1"], "3s");
    live.change_host("web1", "web1 B, confirmed");
    let second = apply_ok(&live);
    assert_eq!(result(&second, "web1"), "activated", "{second}");
    let b = toplevel(&second, "web1");
    let newest = live.deployments("web1").into_iter().next().unwrap();
    assert_eq!(newest["toplevel"].as_str(), Some(b.as_str()), "{newest}");
    assert_eq!(newest["state"], "confirmed", "{newest}");
    let log_before = live.switch_log("web1");

    std::thread::sleep(Duration::from_secs(5));
    let id = newest["id"].as_str().unwrap();
    let later = live.deployment("web1", id);
    assert_eq!(later["state"], "confirmed", "{later}");
    assert_runs(&live, "web1", &b, "after the window");
    assert_eq!(live.switch_log("web1"), log_before, "nothing was switched after the confirmation");
}

/// Edits the fake nixpkgs' version and relocks only that input (lock B); commits.
fn bump_nixpkgs(live: &LiveFleet, version: &str) {
    let text = live.fleet.read("nixpkgs/flake.nix");
    let bumped = text.replace("version = \"24.05-example\";", &format!("version = \"{version}\";"));
    assert_ne!(bumped, text, "the example's nixpkgs has `version = \"24.05-example\";`");
    live.fleet.write("nixpkgs/flake.nix", &bumped);
    let lock_before = live.fleet.read("flake.lock");
    let out = live.fleet.nix(&["flake", "lock", "--update-input", "nixpkgs"]);
    assert!(out.status.success(), "nix flake lock: {}", String::from_utf8_lossy(&out.stderr));
    assert_ne!(live.fleet.read("flake.lock"), lock_before, "the bump changed flake.lock");
    live.fleet.commit(&format!("nixpkgs {version}"));
}

/// web1 and web2 on lock A, then both on lock B. Returns (fleet, apply A, apply B).
fn two_locks() -> (LiveFleet, Value, Value) {
    let (live, first) = fleet_applied(&["web1", "web2"], "3s");
    bump_nixpkgs(&live, "24.11-example");
    let second = apply_ok(&live);
    for host in ["web1", "web2"] {
        assert_eq!(result(&second, host), "activated", "{}", host_entry(&second, host));
        assert_ne!(toplevel(&first, host), toplevel(&second, host), "the bump changes {host}'s toplevel");
    }
    assert_ne!(host_entry(&first, "web1")["lock"], host_entry(&second, "web1")["lock"]);
    (live, first, second)
}

fn history(live: &LiveFleet, host: &str) -> Vec<Value> {
    let run = live.hostctl(&["history", host, "--json"]);
    run.expect_code(0);
    let v = run.json();
    v["hosts"][host]["deployments"].as_array().cloned().unwrap_or_else(|| panic!("no deployments in {v}"))
}

fn lock_drift(live: &LiveFleet, host: &str) -> Value {
    let run = live.hostctl(&["--json", "status"]);
    run.expect_code(0);
    run.json()["hosts"][host]["lock_drift"].clone()
}

/// After `hostctl rollback web1`: web1 runs A's system again, history and status say so,
/// web2 is untouched; `hostctl apply` brings web1 back to B.
fn check_rolled_back_to_a(live: &LiveFleet, first: &Value, second: &Value, rollback: &HostctlRun, rebuilt: bool) {
    let (a, b) = (toplevel(first, "web1"), toplevel(second, "web1"));
    let lock_a = host_entry(first, "web1")["lock"].as_str().unwrap().to_owned();
    let rev_a = host_entry(first, "web1")["rev"].as_str().unwrap().to_owned();
    let v = rollback.json();
    let entry = host_entry(&v, "web1");
    assert_eq!(entry["result"], "activated", "{}", dump(rollback));
    assert_eq!(entry["rolled_back_to"]["toplevel"].as_str(), Some(a.as_str()), "{entry}");
    assert_eq!(entry["rolled_back_to"]["lock"].as_str(), Some(lock_a.as_str()), "{entry}");
    assert_eq!(entry["rolled_back_to"]["rev"].as_str(), Some(rev_a.as_str()), "{entry}");
    assert_eq!(entry["rebuilt"], rebuilt, "{entry}");
    assert!(v["hosts"].get("web2").is_none() || result(&v, "web2") != "activated", "only web1 was rolled back: {v}");

    assert_runs(live, "web1", &a, "after hostctl rollback");
    assert_eq!(live.host("web2").current_system(), toplevel(second, "web2"), "web2 is untouched");

    let deployments = history(live, "web1");
    let newest = &deployments[0];
    assert_eq!(newest["toplevel"].as_str(), Some(a.as_str()), "newest first: {deployments:?}");
    assert_eq!(newest["lock"].as_str(), Some(lock_a.as_str()), "{newest}");
    assert_eq!(newest["state"], "confirmed", "the rollback went through confirmation: {newest}");
    assert_eq!(deployments[1]["toplevel"].as_str(), Some(b.as_str()), "then B: {deployments:?}");
    let lock_b = host_entry(second, "web1")["lock"].as_str().unwrap();
    let human = live.hostctl(&["history", "web1"]);
    human.expect_code(0);
    for short in [&lock_a[..12], &lock_b[..12]] {
        assert!(human.stdout.contains(short), "history names lock {short}:\n{}", human.stdout);
    }

    // Give the rollback's confirmation window time to pass: it stays.
    std::thread::sleep(Duration::from_secs(4));
    assert_runs(live, "web1", &a, "after the rollback's window");

    assert_eq!(lock_drift(live, "web1"), true, "web1 is pinned to A while HEAD has B");
    assert_eq!(lock_drift(live, "web2"), false);

    let again = apply_ok(live);
    assert_eq!(result(&again, "web1"), "activated", "{again}");
    assert_eq!(result(&again, "web2"), "unchanged", "{again}");
    assert_runs(live, "web1", &b, "after apply");
    assert_eq!(lock_drift(live, "web1"), false, "apply re-pinned web1 to HEAD's lock");
}

#[test]
fn rollback_returns_to_the_previous_lock_without_a_rebuild() {
    let (live, first, second) = two_locks();
    let rollback = live.hostctl(&["--json", "rollback", "web1"]);
    rollback.expect_code(0);
    check_rolled_back_to_a(&live, &first, &second, &rollback, false);
}

/// Deletes web1's generation of system A (from `first`) and collects garbage: A is gone
/// from web1, which still runs B; returns A.
fn collect_a(live: &LiveFleet, first: &Value, second: &Value) -> String {
    let a = toplevel(first, "web1");
    let h = live.host("web1");
    let generation = h
        .profile_generations()
        .into_iter()
        .find(|(_, target)| *target == a)
        .map(|(n, _)| n)
        .unwrap_or_else(|| panic!("no generation of A: {:?}", h.profile_generations()));
    let delete =
        h.run_in(&["nix-env", "-p", "/nix/var/nix/profiles/system", "--delete-generations", &generation.to_string()]);
    assert!(delete.status.success(), "{}", String::from_utf8_lossy(&delete.stderr));
    let roots = h.run_in(&["nix-store", "--query", "--roots", &a]);
    let gc = h.run_in(&["nix-store", "--gc"]);
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    assert!(
        !h.is_valid(&a),
        "A's toplevel must be gone from web1 after the GC; its roots were:\n{}",
        String::from_utf8_lossy(&roots.stdout)
    );
    assert_runs(live, "web1", &toplevel(second, "web1"), "before the rollback");
    a
}

#[test]
fn rollback_rebuilds_from_git_history_after_garbage_collection() {
    let (live, first, second) = two_locks();
    let a = collect_a(&live, &first, &second);

    let rollback = live.hostctl(&["--json", "rollback", "web1"]);
    rollback.expect_code(0);
    assert!(live.host("web1").is_valid(&a), "A's closure was pushed again");
    check_rolled_back_to_a(&live, &first, &second, &rollback, true);
}

#[test]
fn rollback_to_an_unknown_lock_is_exit_2_and_changes_nothing() {
    let (live, _first, second) = two_locks();
    let h = live.host("web1");
    let snapshot = || {
        (
            h.current_system(),
            h.boot_system(),
            h.profile_generations(),
            live.switch_log("web1"),
            live.deployment_ids("web1"),
        )
    };
    let before = snapshot();
    assert_eq!(before.0, toplevel(&second, "web1"));
    let unknown_lock = "0123456789abcdef".repeat(4);
    let unknown_rev = "fedcba9876543210fedcba9876543210fedcba98";
    let not_in_history = format!("lock {unknown_lock}: not in web1's deployment history");
    let unknown_prefix = format!("--to-lock `{unknown_rev}`: no lock in web1's deployment history");
    for (args, why) in [
        (vec!["--json", "rollback", "web1", "--to-lock", unknown_lock.as_str()], not_in_history.as_str()),
        (vec!["rollback", "web1", "--to-lock", unknown_lock.as_str()], not_in_history.as_str()),
        (vec!["--json", "rollback", "web1", "--to-lock", "nothex"], "--to-lock `nothex`: not a revision of"),
        (vec!["--json", "rollback", "web1", "--to-lock", unknown_rev], unknown_prefix.as_str()),
    ] {
        let run = live.hostctl(&args);
        run.expect_code(2);
        assert!(run.stderr.contains(why), "{args:?}: says why on stderr: {}", dump(&run));
        // Exit 2 from the command itself, not from a CLI that lacks it.
        assert!(!run.stderr.contains("unrecognized subcommand"), "{args:?}: {}", run.stderr);
        assert_eq!(snapshot(), before, "{args:?} changed web1:\n{}", dump(&run));
    }
    assert_eq!(live.host("web2").current_system(), toplevel(&second, "web2"));
}

#[test]
fn rollback_with_nothing_earlier_is_exit_2_and_changes_nothing() {
    let (live, first) = fleet_applied(&["web1"], "30s");
    let h = live.host("web1");
    let snapshot =
        || (h.current_system(), h.profile_generations(), live.switch_log("web1"), live.deployment_ids("web1"));
    let before = snapshot();
    assert_eq!(before.0, toplevel(&first, "web1"));
    let run = live.hostctl(&["rollback", "web1"]);
    run.expect_code(2);
    assert!(run.stderr.contains("web1: nothing to roll back to"), "{}", dump(&run));
    assert_eq!(snapshot(), before, "the refused rollback changed web1:\n{}", dump(&run));
}

#[test]
fn rollback_by_revision_lock_prefix_and_generation_on_several_hosts() {
    let (live, first, second) = two_locks();
    let rev_a = host_entry(&first, "web1")["rev"].as_str().unwrap().to_owned();
    let lock_a = host_entry(&first, "web1")["lock"].as_str().unwrap().to_owned();
    let lock_b = host_entry(&second, "web1")["lock"].as_str().unwrap().to_owned();

    // A commit id: the lock flake.lock had there.
    let run = live.hostctl(&["--json", "rollback", "web1", "web2", "--to-lock", &rev_a]);
    run.expect_code(0);
    let v = run.json();
    for host in ["web1", "web2"] {
        let a = toplevel(&first, host);
        assert_eq!(result(&v, host), "activated", "{}", dump(&run));
        assert_eq!(host_entry(&v, host)["rolled_back_to"]["toplevel"].as_str(), Some(a.as_str()), "{v}");
        assert_eq!(host_entry(&v, host)["rolled_back_to"]["lock"].as_str(), Some(lock_a.as_str()), "{v}");
        assert_runs(&live, host, &a, "rolled back by revision");
    }

    // The short form of lock B, as printed everywhere.
    let run = live.hostctl(&["--json", "rollback", "web2", "--to-lock", &lock_b[..12]]);
    run.expect_code(0);
    assert_eq!(result(&run.json(), "web2"), "activated", "{}", dump(&run));
    assert_runs(&live, "web2", &toplevel(&second, "web2"), "rolled back to lock B's short form");
    assert_runs(&live, "web1", &toplevel(&first, "web1"), "web1 untouched");

    // A generation of web1's profile: B's.
    let b = toplevel(&second, "web1");
    let generation = live
        .host("web1")
        .profile_generations()
        .into_iter()
        .find(|(_, target)| *target == b)
        .map(|(n, _)| n)
        .unwrap_or_else(|| panic!("no generation of B: {:?}", live.host("web1").profile_generations()));
    let run = live.hostctl(&["--json", "rollback", "web1", "--generation", &generation.to_string()]);
    run.expect_code(0);
    let v = run.json();
    assert_eq!(result(&v, "web1"), "activated", "{}", dump(&run));
    assert_eq!(host_entry(&v, "web1")["rolled_back_to"]["toplevel"].as_str(), Some(b.as_str()), "{v}");
    assert_runs(&live, "web1", &b, "rolled back to a generation");

    // A generation that does not exist: bad input, nothing changes.
    let log = live.switch_log("web1");
    let run = live.hostctl(&["--json", "rollback", "web1", "--generation", "999"]);
    run.expect_code(2);
    assert!(run.stderr.contains("web1 has no generation 999 (its generations: "), "{}", dump(&run));
    assert_eq!(live.switch_log("web1"), log);
    assert_runs(&live, "web1", &b, "after a rollback to a missing generation");
}

#[test]
fn a_rollback_goes_through_the_health_gate() {
    let (live, _first, second) = two_locks();
    let b = toplevel(&second, "web1");
    // Nothing listens on web1's port 8099: whatever web1 runs is "unhealthy".
    let url = live.host("web1").health_url(8099);
    live.write_inventory_with(
        "20s",
        |h| {
            if h.name == "web1" {
                format!("    health:\n      - http: {url}\n        timeout: 1s\n        retries: 0\n")
            } else {
                String::new()
            }
        },
        "",
    );
    live.fleet.commit("web1 gets a health check that fails");
    let run = live.hostctl(&["--json", "rollback", "web1"]);
    run.expect_code(1);
    let v = run.json();
    assert_eq!(result(&v, "web1"), "rolled-back", "{}", dump(&run));
    assert_runs(&live, "web1", &b, "the unhealthy rollback was itself rolled back");
    let newest = live.deployments("web1").into_iter().next().unwrap();
    assert_eq!(newest["state"], "rolled-back", "{newest}");
}

#[test]
fn a_switch_slower_than_the_window_is_confirmed_by_a_live_controller() {
    // The window is for the controller to get back in after the switch, so it counts
    // from the end of the activation: a switch that takes longer must not be rolled back
    // while the controller is there to confirm it.
    let (live, first) = fleet_applied(&["web1"], "3s");
    let a = toplevel(&first, "web1");
    live.change_host("web1", "web1 B switches slowly");
    let mut gate = SwitchGate::arm(live.host("web1"));
    let mut apply = live.spawn_hostctl(&["--json", "apply"]);
    gate.wait_blocked();
    std::thread::sleep(Duration::from_secs(5));
    gate.release();
    let run = apply.wait_timeout(Duration::from_secs(60)).unwrap_or_else(|| {
        let out = apply.kill();
        panic!("hostctl apply did not finish:\n{}", dump(&out))
    });
    run.expect_code(0);
    let v = run.json();
    assert_eq!(result(&v, "web1"), "activated", "{v}");
    let b = toplevel(&v, "web1");
    assert_ne!(a, b);
    std::thread::sleep(Duration::from_secs(4));
    assert_runs(&live, "web1", &b, "confirmed, past the window");
}

#[test]
fn a_rebuild_returns_to_the_exact_system_of_the_previous_lock() {
    // Two systems with lock A (the second after a host change), then lock B; both A
    // systems garbage-collected. "The previous lock" is the newest deployment with A:
    // the rebuild must reproduce that system, not the first commit that had lock A.
    let (live, first) = fleet_applied(&["web1"], "3s");
    let a1 = toplevel(&first, "web1");
    live.change_host("web1", "web1 A2: same lock, new motd");
    let second = apply_ok(&live);
    let a2 = toplevel(&second, "web1");
    assert_ne!(a1, a2);
    assert_eq!(host_entry(&first, "web1")["lock"], host_entry(&second, "web1")["lock"]);
    bump_nixpkgs(&live, "24.11-example");
    let third = apply_ok(&live);
    let b = toplevel(&third, "web1");

    let h = live.host("web1");
    for (number, target) in h.profile_generations() {
        if target != b {
            let out = h.run_in(&[
                "nix-env",
                "-p",
                "/nix/var/nix/profiles/system",
                "--delete-generations",
                &number.to_string(),
            ]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    assert!(h.run_in(&["nix-store", "--gc"]).status.success());
    assert!(!h.is_valid(&a1) && !h.is_valid(&a2), "both A systems were collected");

    let rollback = live.hostctl(&["--json", "rollback", "web1"]);
    rollback.expect_code(0);
    let v = rollback.json();
    let entry = host_entry(&v, "web1");
    assert_eq!(entry["rebuilt"], true, "{entry}");
    assert_eq!(entry["rolled_back_to"]["toplevel"].as_str(), Some(a2.as_str()), "A2, not A1: {entry}");
    assert_eq!(entry["rolled_back_to"]["rev"], host_entry(&second, "web1")["rev"], "{entry}");
    assert_runs(&live, "web1", &a2, "rebuilt A2");
}

#[test]
fn a_rollback_returns_to_the_system_that_was_running_not_to_the_profile() {
    // `--mode test` switches the running system without touching the profile. A later
    // deployment that fails its check must return to what was running (DESIGN.md: "the
    // exact previously active toplevel"), not to the profile's older system.
    let (live, first) = fleet_applied(&["web1"], "40s");
    let a = toplevel(&first, "web1");
    live.change_host("web1", "web1 B, tested");
    let tested = live.hostctl(&["--json", "apply", "--mode", "test"]);
    tested.expect_code(0);
    let b = toplevel(&tested.json(), "web1");
    assert_eq!(live.host("web1").current_system(), b);
    assert_eq!(live.host("web1").profile_system(), Some(a.clone()), "test mode leaves the profile");

    live.change_host("web1", "web1 C fails its check");
    live.write_inventory_with(
        "40s",
        |_| "    health:\n      - command: [\"false\"]\n        retries: 0\n".to_owned(),
        "",
    );
    live.fleet.commit("a failing check");
    let run = live.hostctl(&["--json", "apply", "--mode", "test"]);
    run.expect_code(1);
    let v = run.json();
    assert_eq!(result(&v, "web1"), "rolled-back", "{}", v["hosts"]["web1"]);
    assert_eq!(live.host("web1").current_system(), b, "B was running before C: {}", live.switch_log("web1"));
    assert_eq!(live.host("web1").profile_system(), Some(a), "the profile was never changed");
}

#[test]
fn a_rollback_after_a_boot_deployment_does_not_switch_to_the_boot_only_system() {
    // `--mode boot` sets the profile (next boot) and leaves the running system. A later
    // switch that fails its check must bring back what was running, and must not switch
    // to the boot-only system as if it had been running.
    let (live, first) = fleet_applied(&["web1"], "40s");
    let a = toplevel(&first, "web1");
    live.change_host("web1", "web1 B, for the next boot");
    let boot = live.hostctl(&["--json", "apply", "--mode", "boot"]);
    boot.expect_code(0);
    let b = toplevel(&boot.json(), "web1");
    assert_eq!(live.host("web1").current_system(), a);
    assert_eq!(live.host("web1").profile_system(), Some(b.clone()));

    live.change_host("web1", "web1 C fails its check");
    live.write_inventory_with(
        "40s",
        |_| "    health:\n      - command: [\"false\"]\n        retries: 0\n".to_owned(),
        "",
    );
    live.fleet.commit("a failing check");
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(1);
    let v = run.json();
    assert_eq!(result(&v, "web1"), "rolled-back", "{}", v["hosts"]["web1"]);
    let log = live.switch_log("web1");
    assert!(!log.contains(&format!("switch web1 {b}")), "B was never to be switched to:\n{log}");
    assert_eq!(live.host("web1").current_system(), a, "A was running before C:\n{log}");
}

/// A rebuild is checked against fleet.yaml's `commits` policy (issue 19): an unsigned
/// commit fails the host (nothing deployed) unless `--allow-unsigned`, which the host's
/// journal records with the key that asked.
#[test]
fn a_rebuild_of_a_commit_the_signature_policy_refuses_needs_allow_unsigned() {
    let (live, first, second) = two_locks();
    let a = collect_a(&live, &first, &second);
    let alice = hostctl_tests::signed_git::SshKey::generate(live.fleet.tmp.path(), "alice");
    live.fleet.write("allowed_signers", &alice.allowed_line("alice@example.com", ""));
    let policy = "commits:\n  require_signature: true\n  allowed_signers: allowed_signers\n";
    live.write_inventory_with("3s", |_| String::new(), policy);
    let refused = live.hostctl(&["--json", "rollback", "web1"]);
    refused.expect_code(1);
    let error = host_entry(&refused.json(), "web1")["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("refused by the commit-signature policy") && error.contains("not signed"),
        "{}",
        dump(&refused)
    );
    assert_runs(&live, "web1", &toplevel(&second, "web1"), "after the refused rebuild");
    live.hostctl(&["--json", "rollback", "--allow-unsigned", "web1"]).expect_code(0);
    assert_runs(&live, "web1", &a, "after the rebuild with --allow-unsigned");
    assert_eq!(history(&live, "web1")[0]["unsigned_override"]["key"], "hostctl-test");
}
