//! Imported paths survive a garbage collection on the host until a deployment uses them:
//! the agent roots each import (`<state_dir>/gcroots/imports`) and releases the roots
//! when a deployment ends or, for an import no deployment came for, when it restarts.
//! Real agents on simulated hosts, real `nix-store --gc` inside the host.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code throughout (helpers too): a failed step must fail the test"
)]

use std::path::PathBuf;

use hostctl_tests::livefleet::LiveFleet;

fn roots_dir(live: &LiveFleet) -> PathBuf {
    live.host("web1").root.join("state/agent/gcroots/imports")
}

fn roots(live: &LiveFleet) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(roots_dir(live))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn collect_garbage(live: &LiveFleet) {
    let out = live.host("web1").run_in(&["nix-store", "--gc"]);
    assert!(out.status.success(), "nix-store --gc: {}", String::from_utf8_lossy(&out.stderr));
}

/// Builds web1's changed system on the controller; returns its toplevel.
fn build_changed(live: &LiveFleet, motd: &str) -> String {
    live.change_host("web1", motd);
    live.hostctl(&["build", "--on", "web1"]).expect_code(0);
    live.fleet.toplevel("web1")
}

#[test]
fn imported_paths_are_rooted_until_a_deployment_ends_or_the_agent_restarts() {
    let mut live = LiveFleet::start(&["web1"]);
    live.hostctl(&["--json", "apply"]).expect_code(0);
    assert!(roots(&live).is_empty(), "the deployment ended: its import's roots are released: {:?}", roots(&live));

    // Imported, not deployed: a collection keeps it.
    let b = build_changed(&live, "web1 B");
    live.import_closure("web1", &b);
    let held = roots(&live);
    assert_eq!(held.len(), 1, "one root, the import's top path: {held:?}");
    assert!(held[0].ends_with(b.rsplit('/').next().unwrap().split_once('-').unwrap().1), "{held:?}");
    collect_garbage(&live);
    assert!(live.host("web1").is_valid(&b), "a collection between import and deployment keeps {b}");

    // Deployed: the deployment's end releases the roots (the profile holds the system now).
    live.hostctl(&["--json", "apply"]).expect_code(0);
    assert!(roots(&live).is_empty(), "{:?}", roots(&live));
    assert!(live.host("web1").is_valid(&b));

    // Imported and abandoned: released when the agent starts again, then collected.
    let c = build_changed(&live, "web1 C");
    live.import_closure("web1", &c);
    assert_eq!(roots(&live).len(), 1);
    let host = live.host_mut("web1");
    host.stop_agent();
    host.restart_agent();
    assert!(roots(&live).is_empty(), "an agent start releases abandoned imports: {:?}", roots(&live));
    collect_garbage(&live);
    assert!(!live.host("web1").is_valid(&c), "{c} was collected once nothing held it");
    assert!(live.host("web1").is_valid(&b), "the deployed system stays");
}

/// The controller's root for `host` (`<HOSTCTL_CACHE_DIR>/gcroots/<fleet>/<host>`), if any.
fn controller_root(live: &LiveFleet, host: &str) -> Option<PathBuf> {
    let dir = live.fleet.tmp.path().join("cache/gcroots");
    let fleet = std::fs::read_dir(&dir).ok()?.next()?.ok()?.path();
    let link = fleet.join(host);
    link.symlink_metadata().is_ok().then_some(link)
}

#[test]
fn the_controller_keeps_what_it_last_deployed_to_each_host() {
    let live = LiveFleet::start(&["web1"]);
    assert_eq!(controller_root(&live, "web1"), None);
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(0);
    let a = run.json()["hosts"]["web1"]["toplevel"].as_str().unwrap().to_owned();
    let link = controller_root(&live, "web1").expect("a root for web1");
    assert_eq!(std::fs::read_link(&link).unwrap().to_string_lossy(), a, "{}", link.display());
    let delete = std::process::Command::new("nix-store").args(["--delete", &a]).output().unwrap();
    assert!(!delete.status.success(), "a local collection cannot take what web1 runs");
    assert!(String::from_utf8_lossy(&delete.stderr).contains("alive"), "{}", String::from_utf8_lossy(&delete.stderr));

    let b = build_changed(&live, "web1 B");
    live.hostctl(&["--json", "apply"]).expect_code(0);
    assert_eq!(std::fs::read_link(&link).unwrap().to_string_lossy(), b, "only the last deployment is kept");
}
