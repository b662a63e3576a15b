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

/// `cmd` run in its own mount namespace with `nix_dir` on `/nix`: a controller with a
/// private store, which a real `nix-collect-garbage` may empty without touching this
/// machine's store (other tests use it).
fn with_private_nix(cmd: &std::process::Command, nix_dir: &std::path::Path) -> std::process::Command {
    let mut wrapped = std::process::Command::new("unshare");
    wrapped
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            r#"mount --bind "$1" /nix && shift && exec "$@""#,
            "sh",
        ])
        .arg(nix_dir)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (name, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(name, value),
            None => wrapped.env_remove(name),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

fn private_run(cmd: &std::process::Command, nix_dir: &std::path::Path) -> hostctl_tests::HostctlRun {
    hostctl_tests::HostctlRun::from(with_private_nix(cmd, nix_dir).output().unwrap())
}

#[test]
fn diff_and_rollback_survive_a_local_nix_collect_garbage() {
    let live = LiveFleet::start(&["web1"]);
    let store = hostctl_tests::StoreRoot::new();
    let nix_dir = store.path().join("nix");
    std::fs::create_dir_all(&nix_dir).unwrap();
    // The flake's inputs (relative `path:` ones, which Nix will not fetch into an empty
    // store), as the machine's store has them.
    let archive = live.fleet.nix(&["flake", "archive", "--to", &store.url()]);
    assert!(archive.status.success(), "nix flake archive: {}", String::from_utf8_lossy(&archive.stderr));
    let hostctl = |args: &[&str]| private_run(&live.hostctl_command(args), &nix_dir);
    let valid = |path: &str| {
        let mut check = std::process::Command::new("nix-store");
        check.args(["--check-validity", path]);
        with_private_nix(&check, &nix_dir).status().unwrap().success()
    };
    let collect = || {
        let out = with_private_nix(&std::process::Command::new("nix-collect-garbage"), &nix_dir).output().unwrap();
        assert!(out.status.success(), "nix-collect-garbage: {}", String::from_utf8_lossy(&out.stderr));
    };
    let toplevel =
        |run: &hostctl_tests::HostctlRun| run.json()["hosts"]["web1"]["toplevel"].as_str().unwrap().to_owned();

    let a = toplevel(hostctl(&["--json", "apply"]).expect_code(0));
    live.change_host("web1", "web1 B");
    let b = toplevel(hostctl(&["--json", "apply"]).expect_code(0));
    let link = controller_root(&live, "web1").unwrap();
    let previous = link.with_file_name("web1.previous");
    assert_eq!(std::fs::read_link(&previous).unwrap().to_string_lossy(), a, "the system before is kept too");
    collect();
    assert!(valid(&a) && valid(&b), "a local collection keeps the running and the previous system");

    // Rolled back to A: A is what web1 runs, B what it ran before; both stay.
    // `hostctl rollback web1` (to the previous lock) must land on `expected`.
    let rollback_to = |expected: &str| {
        let out = hostctl(&["--json", "rollback", "web1"]);
        out.expect_code(0);
        assert_eq!(
            out.json()["hosts"]["web1"]["rolled_back_to"]["toplevel"].as_str(),
            Some(expected),
            "{}",
            out.stdout
        );
    };
    rollback_to(&a);
    assert_eq!(std::fs::read_link(&link).unwrap().to_string_lossy(), a);
    assert_eq!(std::fs::read_link(&previous).unwrap().to_string_lossy(), b);
    collect();
    assert!(valid(&a) && valid(&b));
    // `diff` compares with what web1 runs (A), here after the collection.
    hostctl(&["--json", "diff", "--on", "web1"]).expect_code(0);
    // And forward again to B (the previous lock), from the host's own store.
    rollback_to(&b);
}
