//! Generation retention and `hostctl gc`: real agents on simulated hosts, real Nix in
//! each host's own store. After each confirmed deployment the agent keeps what the
//! policy says plus the protected generations (running, booted, in flight, last
//! confirmed); `gc --dry-run` changes nothing and reports exactly what `gc` then deletes;
//! bad policies are refused with file:line and exit 2.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code throughout (helpers too): a failed step must fail the test"
)]

use std::time::{Duration, Instant};

use hostctl_tests::http::Request;
use hostctl_tests::livefleet::LiveFleet;
use serde_json::Value;

/// The agent's GC journal (`state_dir/gc.json`).
fn gc_journal(live: &LiveFleet) -> Vec<Value> {
    let file = live.host("web1").root.join("state/agent/gc.json");
    match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
        Err(_) => Vec::new(),
    }
}

/// Waits until the journal holds `n` runs (the run after a confirmation is asynchronous).
fn wait_for_runs(live: &LiveFleet, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = gc_journal(live);
        if runs.len() >= n {
            return runs;
        }
        assert!(Instant::now() < deadline, "{} GC runs journaled, expected {n}", runs.len());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Changes web1's system and applies it; returns the new toplevel.
fn apply_change(live: &LiveFleet, motd: &str) -> String {
    live.change_host("web1", motd);
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(0);
    run.json()["hosts"]["web1"]["toplevel"].as_str().unwrap().to_owned()
}

fn numbers(generations: &Value) -> Vec<u64> {
    generations.as_array().unwrap().iter().map(|g| g["number"].as_u64().unwrap()).collect()
}

fn on_disk(live: &LiveFleet) -> Vec<u64> {
    live.host("web1").profile_generations().into_iter().map(|(n, _)| n).collect()
}

#[test]
fn after_each_confirmed_deployment_the_policy_keeps_the_newest_n() {
    let live = LiveFleet::start(&["web1"]);
    live.write_inventory("tag_retention: {}\n");
    // fleet.yaml's policy travels with each deployment.
    let text = live
        .fleet
        .read("fleet.yaml")
        .replace("  confirm_timeout: 30s\n", "  confirm_timeout: 30s\n  retention:\n    keep_last: 2\n");
    live.fleet.write("fleet.yaml", &text);
    live.fleet.commit("retention: keep 2");
    let mut systems = Vec::new();
    for i in 0..4 {
        systems.push(apply_change(&live, &format!("web1 v{i}")));
        wait_for_runs(&live, i + 1);
    }
    assert_eq!(on_disk(&live), [3, 4], "N = 2 of N + 2 generations kept");
    let host = live.host("web1");
    assert!(host.is_valid(&systems[3]) && host.is_valid(&systems[2]));
    assert!(!host.is_valid(&systems[0]) && !host.is_valid(&systems[1]), "the old systems were collected");
    let last = gc_journal(&live).pop().unwrap();
    assert!(last["policy_source"].as_str().unwrap().starts_with("deployment "), "{last}");
    assert_eq!(numbers(&last["kept_generations"]), [3, 4], "{last}");
    let runs = gc_journal(&live);
    let deleted: Vec<u64> = runs.iter().flat_map(|r| numbers(&r["deleted_generations"])).collect();
    assert_eq!(deleted, [1, 2], "each generation deleted once, when it fell out: {runs:?}");
    assert!(runs.iter().map(|r| r["bytes_freed"].as_u64().unwrap()).sum::<u64>() > 0);
    let metrics =
        Request::new("GET", "/metrics", b"").send_plain(&live.metrics_addr("web1"), Duration::from_secs(10)).unwrap();
    let bytes = format!("hostctl_gc_last_bytes_freed {}", runs[3]["bytes_freed"]);
    assert!(metrics.body.lines().any(|l| l == bytes), "{bytes} in:\n{}", metrics.body);
    assert!(metrics.body.lines().any(|l| l == "hostctl_gc_last_generations_deleted 1"), "{}", metrics.body);
}

#[test]
fn dry_run_changes_nothing_and_reports_what_gc_deletes() {
    let live = LiveFleet::start(&["web1"]);
    let systems: Vec<String> = (0..3).map(|i| apply_change(&live, &format!("web1 d{i}"))).collect();
    assert_eq!(on_disk(&live), [1, 2, 3], "no policy anywhere: nothing is deleted");
    assert!(gc_journal(&live).is_empty());

    let dry = live.hostctl(&["--json", "gc", "web1", "--dry-run", "--keep-last", "1"]);
    dry.expect_code(0);
    let dry = dry.json()["hosts"]["web1"]["gc"].clone();
    assert_eq!(numbers(&dry["deleted_generations"]), [1, 2], "{dry}");
    let paths: Vec<String> =
        dry["store_paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
    assert!(paths.contains(&systems[0]) && paths.contains(&systems[1]), "{paths:?}");
    assert!(!paths.contains(&systems[2]));
    assert_eq!(on_disk(&live), [1, 2, 3], "a dry run deletes no generation");
    assert!(paths.iter().all(|p| live.host("web1").is_valid(p)), "a dry run deletes no path");
    assert!(gc_journal(&live).is_empty(), "a dry run is not journaled");

    let real = live.hostctl(&["--json", "gc", "web1", "--keep-last", "1"]);
    real.expect_code(0);
    let real = real.json()["hosts"]["web1"]["gc"].clone();
    assert_eq!(real["deleted_generations"], dry["deleted_generations"]);
    assert_eq!(real["store_paths"], dry["store_paths"], "the same set");
    assert_eq!(real["bytes_freed"], dry["bytes_freed"]);
    assert_eq!(on_disk(&live), [3]);
    assert!(paths.iter().all(|p| !live.host("web1").is_valid(p)), "every reported path was deleted");
    assert!(live.host("web1").is_valid(&systems[2]));
    assert_eq!(gc_journal(&live).len(), 1);

    let human = live.hostctl(&["gc", "web1", "--dry-run", "--keep-last", "1"]);
    human.expect_code(0);
    assert!(
        human.stderr.contains("would delete 0 generations") || human.stdout.contains("would delete 0 generations"),
        "{}{}",
        human.stdout,
        human.stderr
    );
}

/// Restarts web1's agent with `/run/booted-system` (in its own mount namespace) naming
/// `booted`: a script named like the agent mounts a tmpfs on `/run`, makes the link and
/// execs the agent.
fn restart_booted_from(live: &mut LiveFleet, booted: &str) {
    let host = live.host_mut("web1");
    host.stop_agent();
    let dir = host.root.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("hostctl-agent");
    let agent = hostctl_tests::binary("hostctl-agent");
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let text = format!(
        "#!/bin/sh\nmount -t tmpfs tmpfs /run && ln -s {} /run/booted-system && exec {} \"$@\"\n",
        quote(booted),
        quote(&agent.to_string_lossy())
    );
    std::fs::write(&script, text).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = host.root.join("etc/agent.yaml").to_string_lossy().into_owned();
    host.start_process(&[&script.to_string_lossy(), "serve", "--config", &config]);
}

#[test]
fn the_booted_and_pending_systems_are_never_deleted() {
    let mut live = LiveFleet::start(&["web1"]);
    let systems: Vec<String> = (0..3).map(|i| apply_change(&live, &format!("web1 b{i}"))).collect();
    restart_booted_from(&mut live, &systems[0]);
    let status = live.agent_status("web1");
    assert_eq!(status["booted_system"].as_str(), Some(systems[0].as_str()), "{status}");

    let run = live.hostctl(&["--json", "gc", "web1", "--keep-last", "1"]);
    run.expect_code(0);
    let gc = run.json()["hosts"]["web1"]["gc"].clone();
    assert_eq!(numbers(&gc["deleted_generations"]), [2], "{gc}");
    let kept = gc["kept_generations"].as_array().unwrap();
    assert_eq!(kept[0]["number"], 1);
    assert_eq!(kept[0]["kept_because"], serde_json::json!(["booted"]), "the old booted system stays: {gc}");
    assert_eq!(kept[1]["kept_because"], serde_json::json!(["current", "running", "deployment", "keep-last"]));
    assert!(live.host("web1").is_valid(&systems[0]));
    assert!(!live.host("web1").is_valid(&systems[1]));

    // A deployment in flight: refused (409), nothing deleted.
    live.change_host("web1", "web1 pending");
    let (mut gate, mut apply, _id) = live.apply_held_at_switch("web1");
    let busy = live.hostctl(&["--json", "gc", "web1", "--keep-last", "1"]);
    busy.expect_code(1);
    let entry = &busy.json()["hosts"]["web1"];
    assert!(entry["error"].as_str().unwrap().contains("HTTP 409"), "{entry}");
    assert!(entry["error"].as_str().unwrap().contains("in progress"), "{entry}");
    assert_eq!(on_disk(&live), [1, 3, 4], "nothing deleted while a deployment is in flight");
    gate.release();
    apply.wait_timeout(Duration::from_secs(120)).expect("apply finishes").expect_code(0);
}

#[test]
fn bad_policies_are_refused_with_their_place() {
    let live = LiveFleet::start(&["web1"]);
    for (policy, says) in [
        ("keep_last: 0", "keep_last: 0 generations: expected 1 or more"),
        ("keep_last: -3", "keep_last: -3 generations"),
        ("keep_younger_than: 0s", "0s keeps nothing"),
        ("keep_younger_than: 3 days", "invalid duration `3 days`"),
    ] {
        live.write_inventory_with("30s", |_| format!("    retention:\n      {policy}\n"), "");
        let run = live.hostctl(&["gc", "web1"]);
        run.expect_code(2);
        let line = live.fleet.read("fleet.yaml").lines().position(|l| l.trim() == policy).unwrap() + 1;
        assert!(run.stderr.contains(&format!("fleet.yaml:{line}:")), "{policy} is on line {line}: {}", run.stderr);
        assert!(run.stderr.contains("hosts.web1.retention.keep_"), "{policy}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{policy}: {}", run.stderr);
    }
    live.write_inventory_with("30s", |_| String::new(), "");
    for (args, says) in [
        (&["--keep-last", "0"][..], "expected 1 or more"),
        (&["--keep-last", "-1"][..], "keep_last: -1"),
        (&["--keep-younger-than", "soon"][..], "invalid duration `soon`"),
        (&["--keep-younger-than", "0s"][..], "0s keeps nothing"),
    ] {
        let mut all = vec!["gc", "web1"];
        all.extend_from_slice(args);
        let run = live.hostctl(&all);
        run.expect_code(2);
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
    assert!(gc_journal(&live).is_empty(), "nothing ran");

    // agent.yaml: `hostctl-agent check-config` names the file and line.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yaml");
    let base = std::fs::read_to_string(live.host("web1").root.join("etc/agent.yaml")).unwrap();
    std::fs::write(&config, format!("{base}retention:\n  keep_last: 0\n")).unwrap();
    let out = std::process::Command::new(hostctl_tests::binary("hostctl-agent"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = base.lines().count() + 2;
    assert!(stderr.contains(&format!("agent.yaml:{line}:")), "keep_last is on line {line}: {stderr}");
    assert!(stderr.contains("retention.keep_last") || stderr.contains("keep_last: 0 generations"), "{stderr}");
}

#[test]
fn without_a_fleet_policy_the_agents_own_applies() {
    let mut live = LiveFleet::start(&["web1"]);
    let host = live.host_mut("web1");
    let config = std::fs::read_to_string(host.root.join("etc/agent.yaml")).unwrap();
    host.stop_agent();
    host.start_agent(&format!("{config}retention:\n  keep_last: 1\n"));
    let a = apply_change(&live, "web1 own A");
    let b = apply_change(&live, "web1 own B");
    let runs = wait_for_runs(&live, 2);
    assert_eq!(runs[1]["policy_source"], "agent.yaml", "{runs:?}");
    assert_eq!(on_disk(&live), [2]);
    assert!(!live.host("web1").is_valid(&a) && live.host("web1").is_valid(&b));
}
