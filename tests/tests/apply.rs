//! `hostctl apply` and `hostctl status` against real agents on simulated hosts: real
//! Nix, real git, real HTTP, each host with its own store.

use hostctl_tests::livefleet::{nix_stdout, LiveFleet};
use hostctl_tests::{run, HostctlRun};
use serde_json::Value;

fn result(v: &Value, host: &str) -> String {
    v["hosts"][host]["result"].as_str().unwrap_or("").to_owned()
}

fn toplevel_valid_on(live: &LiveFleet, host: &str, path: &str) -> bool {
    let out = live.host(host).run_in(&["nix-store", "--check-validity", path]);
    out.status.success()
}

#[test]
fn apply_activates_then_is_unchanged_then_changes_only_what_changed() {
    let live = LiveFleet::start(&["web1", "web2", "db1"]);

    let first = live.hostctl(&["--json", "apply"]);
    first.expect_code(0);
    let v = first.json();
    for host in ["web1", "web2", "db1"] {
        assert_eq!(result(&v, host), "activated", "{host}: {}", v["hosts"][host]);
        let toplevel = v["hosts"][host]["toplevel"].as_str().unwrap();
        assert!(toplevel_valid_on(&live, host, toplevel), "{host} has its closure");
        assert!(live.switch_log(host).contains(&format!("switch {host} {toplevel}")), "{}", live.switch_log(host));
        assert!(v["hosts"][host]["paths_copied"].as_u64().unwrap() >= 3, "toplevel, etc, role");
    }

    let second = live.hostctl(&["--json", "apply"]);
    second.expect_code(0);
    let v2 = second.json();
    for host in ["web1", "web2", "db1"] {
        assert_eq!(result(&v2, host), "unchanged", "{host}: {}", v2["hosts"][host]);
        assert_eq!(v2["hosts"][host]["paths_copied"].as_u64().unwrap_or(0), 0);
    }
    let human = live.hostctl(&["apply"]);
    human.expect_code(0);
    assert_eq!(human.stderr.lines().last(), Some("3 unchanged"), "a final tally: {}", human.stderr);

    live.change_host("web2", "web2 after a change");
    let third = live.hostctl(&["--json", "apply"]);
    third.expect_code(0);
    let v3 = third.json();
    assert_eq!(result(&v3, "web2"), "activated");
    assert_eq!(result(&v3, "web1"), "unchanged");
    assert_eq!(result(&v3, "db1"), "unchanged");
    let copied = v3["hosts"]["web2"]["paths_copied"].as_u64().unwrap();
    assert!(copied >= 1 && copied < v["hosts"]["web2"]["paths_copied"].as_u64().unwrap(), "only new paths: {copied}");

    let status = live.hostctl(&["--json", "status"]);
    status.expect_code(0);
    let s = status.json();
    for host in ["web1", "web2", "db1"] {
        assert_eq!(s["hosts"][host]["toplevel"], v3["hosts"][host]["toplevel"], "{host}");
        assert_eq!(s["hosts"][host]["drift"], "in-sync", "{host}: {}", s["hosts"][host]);
    }
}

#[test]
fn a_failing_activation_fails_that_host_only() {
    let live = LiveFleet::start(&["web1", "web2", "db1"]);
    std::fs::create_dir_all(live.host("db1").root.join("state")).unwrap();
    std::fs::write(live.host("db1").root.join("state/fail-switch-db1"), "4").unwrap();
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(1);
    let v = run.json();
    assert_eq!(result(&v, "web1"), "activated");
    assert_eq!(result(&v, "web2"), "activated");
    let db1 = &v["hosts"]["db1"];
    assert_eq!(result(&v, "db1"), "failed", "{db1}");
    let error = db1["error"].as_str().unwrap();
    assert!(error.contains("activat"), "names the step: {error}");
    assert!(error.contains('4') || db1["log_tail"].as_str().unwrap_or("").contains("exit=4"), "{db1}");
}

#[test]
fn an_unreachable_agent_fails_only_its_host_and_dry_run_changes_nothing() {
    let live = LiveFleet::start(&["web1", "web2", "db1"]);
    live.host("web1").set_link(false);
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(1);
    let v = run.json();
    assert_eq!(result(&v, "web1"), "failed", "{}", v["hosts"]["web1"]);
    assert_eq!(result(&v, "web2"), "activated");
    assert_eq!(result(&v, "db1"), "activated");
    live.host("web1").set_link(true);

    live.change_host("db1", "db1 in a dry run");
    let before = live.switch_log("db1");
    let dry = live.hostctl(&["--json", "apply", "--dry-run"]);
    dry.expect_code(0);
    let d = dry.json();
    let new_toplevel = d["hosts"]["db1"]["toplevel"].as_str().unwrap().to_owned();
    assert_eq!(live.switch_log("db1"), before, "nothing was activated");
    assert!(!toplevel_valid_on(&live, "db1", &new_toplevel), "nothing was copied");
    assert!(
        d["hosts"]["db1"]["paths_to_copy"].as_u64().unwrap_or(0) >= 1
            || d["hosts"]["db1"].to_string().contains("would"),
        "{d}"
    );
}

#[test]
fn modes_test_and_boot_do_what_nixos_rebuild_does() {
    let live = LiveFleet::start(&["web1"]);
    let state = live.host("web1").root.join("state");
    let read = |f: &str| std::fs::read_to_string(state.join(f)).unwrap_or_default().trim().to_owned();
    let generations = || {
        let out = live.host("web1").run_in(&["nix-env", "-p", "/nix/var/nix/profiles/system", "--list-generations"]);
        String::from_utf8_lossy(&out.stdout).lines().count()
    };

    let run = live.hostctl(&["--json", "apply", "--mode", "test"]);
    run.expect_code(0);
    let tested = run.json()["hosts"]["web1"]["toplevel"].as_str().unwrap().to_owned();
    assert_eq!(read("current-system"), tested, "test switches the running system");
    assert_eq!(read("boot-system"), "", "test leaves the boot entry alone");
    assert_eq!(generations(), 0, "test adds no generation");

    live.change_host("web1", "web1 for the next boot");
    let run = live.hostctl(&["--json", "apply", "--mode", "boot"]);
    run.expect_code(0);
    let booted = run.json()["hosts"]["web1"]["toplevel"].as_str().unwrap().to_owned();
    assert_eq!(read("boot-system"), booted, "boot sets the boot entry");
    assert_eq!(read("current-system"), tested, "boot does not switch the running system");
    assert_eq!(generations(), 1, "boot adds a generation");
    assert!(live.switch_log("web1").contains(&format!("boot web1 {booted}")), "{}", live.switch_log("web1"));
}

/// A proxy in the operator's environment is for the operator's own traffic: agent
/// connections go straight to the host (issue 14). The proxy here refuses every
/// connection, so a client that used it could not reach the agent at all.
#[test]
fn agent_traffic_ignores_the_operators_proxy() {
    let live = LiveFleet::start(&["web1"]);
    let mut cmd = live.hostctl_command(&["--json", "status", "--on", "web1"]);
    for var in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
        cmd.env(var, "http://127.0.0.1:9");
    }
    cmd.env_remove("no_proxy").env_remove("NO_PROXY");
    let status = HostctlRun::from(run(&mut cmd));
    status.expect_code(0);
    assert_eq!(result(&status.json(), "web1"), "ok", "{}", status.json());
}

/// An agent that does not trust the controller's key answers HTTP 401: `status` reports
/// it as `refused` (reachable, with the agent's reason), not as `unreachable`.
#[test]
fn status_tells_a_refusing_agent_from_an_unreachable_one() {
    let live = LiveFleet::start(&["web1", "web2"]);
    let other = live.fleet.tmp.path().join("other.sec");
    let secret = nix_stdout(&live.fleet, &["key", "generate-secret", "--key-name", "other"], None);
    hostctl_tests::write_secret(&other, &secret);
    let other = other.display().to_string();
    live.host("web2").set_link(false);
    let status = |json: bool| {
        let mut args = vec!["--key", other.as_str(), "status"];
        if json {
            args.insert(2, "--json");
        }
        HostctlRun::from(run(&mut live.fleet.hostctl_command(&args, &[])))
    };

    let json = status(true);
    json.expect_code(1);
    let v = json.json();
    let web1 = &v["hosts"]["web1"];
    assert_eq!((result(&v, "web1").as_str(), web1["refused"].as_bool()), ("failed", Some(true)), "{web1}");
    assert_eq!(web1["reachable"].as_bool(), Some(true), "{web1}");
    assert!(web1["error"].as_str().unwrap_or("").contains("HTTP 401"), "{web1}");
    let web2 = &v["hosts"]["web2"];
    assert_eq!((web2["reachable"].as_bool(), web2["refused"].as_bool()), (Some(false), Some(false)), "{web2}");

    let human = status(false);
    human.expect_code(1);
    assert!(human.stdout.contains("web1  failed     refused\n"), "{}", human.stdout);
    assert!(human.stdout.contains("web2  failed     unreachable\n"), "{}", human.stdout);
    assert_eq!(human.stderr.lines().last(), Some("2 failed"), "{}", human.stderr);
}

/// `apply` from a tree with uncommitted changes says so first, in `check`'s words: what
/// it deploys has no exact revision.
#[test]
fn apply_warns_about_a_dirty_tree_before_evaluating() {
    let live = LiveFleet::start(&["web1"]);
    let web1 = live.fleet.read("hosts/web1.nix").replace("web frontend", "edited frontend");
    live.fleet.write("hosts/web1.nix", &web1);
    let run = live.hostctl(&["apply", "--dry-run"]);
    run.expect_code(0);
    let warning = "warning: uncommitted changes in hosts/web1.nix: a deployment from here has no exact revision";
    assert_eq!(run.stderr.lines().next(), Some(warning), "first, before evaluating: {}", run.stderr);
    assert_eq!(run.stderr.matches("uncommitted changes").count(), 1, "once: {}", run.stderr);
}

/// `status --no-drift` only asks the agents: no `nix eval` runs, and the flake's side
/// (drift, lock drift, what it evaluates to) is unknown. A missing key stops `status`
/// before it evaluates anything.
#[test]
fn status_no_drift_asks_the_agents_without_evaluating() {
    let live = LiveFleet::start(&["web1"]);
    let (path, log) = hostctl_tests::watching_nix(live.fleet.tmp.path());
    let status = |args: &[&str]| {
        let mut cmd = live.hostctl_command(args);
        cmd.env("PATH", &path);
        HostctlRun::from(run(&mut cmd))
    };
    let evaluated = || std::fs::read_to_string(&log).unwrap_or_default();

    let quick = status(&["--json", "status", "--no-drift"]);
    quick.expect_code(0);
    let web1 = &quick.json()["hosts"]["web1"];
    assert_eq!((web1["result"].as_str(), web1["reachable"].as_bool()), (Some("ok"), Some(true)), "{web1}");
    assert_eq!(web1["drift"], "unknown", "{web1}");
    for field in ["expected_toplevel", "expected_lock", "lock_drift", "drift_error"] {
        assert!(web1[field].is_null(), "{field}: {web1}");
    }
    assert_eq!(evaluated(), "", "nothing evaluated");

    // A key that is not there is named before the fleet is evaluated (issue 17).
    let missing = live.fleet.tmp.path().join("no-such.sec").display().to_string();
    let mut keyless = live.fleet.hostctl_command(&["--key", &missing, "status"], &[]);
    let keyless = HostctlRun::from(run(keyless.env("PATH", &path)));
    keyless.expect_code(2);
    assert!(keyless.stderr.contains(&missing), "{}", keyless.stderr);
    assert_eq!(evaluated(), "", "the key is checked before evaluating");

    let full = status(&["--json", "status"]);
    full.expect_code(0);
    assert!(evaluated().lines().any(|h| h == "web1"), "the wrapper sees evaluations: {}", evaluated());
    assert!(full.json()["hosts"]["web1"]["expected_toplevel"].is_string(), "{}", full.json());
}
