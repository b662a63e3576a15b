//! Pre-flight that tells the truth, on a copy of the example fleet with real Nix and git:
//! a fleet-wide problem (a stale `flake.lock`, no `nix`) is said once, not once per host;
//! a missing `strace` is a visible warning; `check` keeps its git and lock findings when
//! its own evaluation fails; Nix errors name working-tree files; `--show-trace` and
//! `--nix-option` reach Nix.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code throughout (helpers too): a failed step must fail the test"
)]

use std::ffi::OsString;
use std::path::Path;

use hostctl_tests::{HostctlRun, TestFleet};

/// A `PATH` of one directory holding links to every program of the current `PATH`
/// except those `drop` rejects: as on a machine where they are not installed.
fn path_without(dir: &Path, drop: impl Fn(&str) -> bool) -> OsString {
    std::fs::create_dir_all(dir).unwrap();
    let path = std::env::var_os("PATH").unwrap();
    for entry in std::env::split_paths(&path).filter_map(|d| std::fs::read_dir(d).ok()).flatten().flatten() {
        let name = entry.file_name();
        let Some(text) = name.to_str() else { continue };
        if drop(text) || dir.join(&name).symlink_metadata().is_ok() {
            continue;
        }
        std::os::unix::fs::symlink(entry.path(), dir.join(&name)).unwrap();
    }
    dir.as_os_str().to_owned()
}

fn hostctl_with_path(fleet: &TestFleet, path: &OsString, args: &[&str]) -> HostctlRun {
    HostctlRun::from(hostctl_tests::run(fleet.hostctl_command(args, &[]).env("PATH", path)))
}

/// flake.nix with one input flake.lock does not have.
fn add_unlocked_input(fleet: &TestFleet) {
    let flake = fleet.read("flake.nix").replace(
        "  inputs.fleetlib.url = \"path:./lib\";\n",
        "  inputs.fleetlib.url = \"path:./lib\";\n  inputs.extra.url = \"path:./lib\";\n",
    );
    assert!(flake.contains("inputs.extra.url"));
    fleet.write("flake.nix", &flake.replace("{ self, nixpkgs, fleetlib }", "{ self, nixpkgs, fleetlib, extra }"));
}

#[test]
fn a_stale_lock_is_reported_once_for_the_run() {
    let fleet = TestFleet::new();
    add_unlocked_input(&fleet);
    fleet.commit("an input flake.lock lacks");
    let run = fleet.hostctl(&["eval"]);
    run.expect_code(2);
    let lock = fleet.path("flake.lock").canonicalize().unwrap();
    let expected = format!(
        "error: {}: does not match the inputs of flake.nix (run `nix flake lock` in {} and commit flake.lock); \
         Nix said:\n",
        lock.display(),
        lock.parent().unwrap().display()
    );
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert_eq!(run.stderr.matches("requires lock file changes").count(), 1, "{}", run.stderr);
    assert!(!run.stderr.contains("host web1"), "no per-host copy: {}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    // Under --json the same error is the one document on stdout, with the same exit code.
    let json = fleet.hostctl(&["--json", "eval"]);
    json.expect_code(2);
    let v = json.json();
    assert_eq!(v["error"]["kind"], "stale-lock", "{v}");
    assert_eq!(v["error"]["exit_code"], 2, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(expected.strip_prefix("error: ").is_some_and(|e| message.starts_with(e)), "{message}");
    assert_eq!(v.as_object().unwrap().len(), 1, "only `error`: {v}");
}

#[test]
fn a_missing_nix_is_reported_once_for_the_run() {
    let fleet = TestFleet::new();
    let path = path_without(&fleet.tmp.path().join("bin"), |name| name.starts_with("nix"));
    let run = hostctl_with_path(&fleet, &path, &["eval"]);
    run.expect_code(1);
    assert_eq!(
        run.stderr,
        "error: cannot run Nix (`nix --version`): No such file or directory (os error 2); hostctl needs `nix` on \
         PATH (Debian: `apt-get install nix-bin`)\n"
    );
}

#[test]
fn a_missing_strace_is_a_visible_warning() {
    let fleet = TestFleet::new();
    let path = path_without(&fleet.tmp.path().join("bin"), |name| name == "strace");
    let run = hostctl_with_path(&fleet, &path, &["eval", "--on", "web1"]);
    run.expect_code(0);
    let warning = "cannot run strace (No such file or directory (os error 2)): incremental evaluation is off, every \
                   host of a new commit is evaluated in full (install strace to reuse evaluations across commits)";
    assert_eq!(run.stderr.matches(warning).count(), 1, "once, without -v: {}", run.stderr);
    assert!(run.stderr.contains("WARN"), "{}", run.stderr);
    let with_strace = fleet.hostctl(&["eval", "--on", "web2"]);
    with_strace.expect_code(0);
    assert!(!with_strace.stderr.contains("strace"), "{}", with_strace.stderr);
}

#[test]
fn check_keeps_git_and_lock_findings_when_its_evaluation_fails() {
    let fleet = TestFleet::new();
    add_unlocked_input(&fleet);
    fleet.write("notes.txt", "untracked\n");
    let run = fleet.hostctl(&["--json", "check"]);
    run.expect_code(1);
    let v = run.json();
    let findings = v["findings"].as_array().unwrap();
    let kinds: Vec<&str> = findings.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["untracked-files", "dirty-tree", "eval-failed"], "{v}");
    let failed = &findings[2];
    assert_eq!(failed["severity"], "error");
    let message = failed["message"].as_str().unwrap();
    assert!(message.starts_with("cannot list nixosConfigurations of "), "{message}");
    assert!(message.contains(", so no host was checked against it:\n"), "{message}");
    assert!(message.contains("requires lock file changes"), "{message}");
    for host in ["web1", "web2", "db1", "arm1"] {
        assert_eq!(v["hosts"][host]["result"], "failed", "{host}: {v}");
        assert_eq!(
            v["hosts"][host]["error"],
            format!("host {host}: not checked: nixosConfigurations could not be evaluated"),
        );
    }
    let human = fleet.hostctl(&["check"]);
    human.expect_code(1);
    assert!(human.stderr.contains("warning: 1 file in "), "{}", human.stderr);
    assert!(human.stderr.contains("error: cannot list nixosConfigurations"), "{}", human.stderr);
}

#[test]
fn nix_errors_name_working_tree_files_and_nix_flags_pass_through() {
    let fleet = TestFleet::new();
    let web1 = fleet.read("hosts/web1.nix").replace("motd = \"", "motd = undefinedThing + \"");
    fleet.write("hosts/web1.nix", &web1);
    fleet.commit("web1 refers to nothing");
    let run = fleet.hostctl(&["eval", "--on", "web1"]);
    run.expect_code(1);
    let file = fleet.dir.canonicalize().unwrap().join("hosts/web1.nix");
    assert!(run.stdout.contains("undefined variable 'undefinedThing'"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("at {}:6:10:", file.display())), "{}", run.stdout);
    assert!(!run.stdout.contains("-source/hosts"), "{}", run.stdout);
    assert!(!run.stdout.contains("while evaluating"), "{}", run.stdout);
    assert!(!run.stdout.contains("unknown setting"), "{}", run.stdout);

    let run = fleet.hostctl(&["--show-trace", "--nix-option", "hostctl-probe", "1", "eval", "--on", "web1"]);
    run.expect_code(1);
    assert!(run.stdout.contains("unknown setting 'hostctl-probe'"), "--option reached nix: {}", run.stdout);
    assert!(run.stdout.contains("… while evaluating"), "--show-trace reached nix: {}", run.stdout);

    let bad = fleet.hostctl(&["--nix-option", "-x", "y", "eval"]);
    bad.expect_code(2);
    assert_eq!(
        bad.stderr,
        "error: --nix-option: `-x` is not a Nix setting name (letters, digits and `-`, e.g. `max-jobs`)\n"
    );
}

#[test]
fn status_still_asks_the_agents_when_the_lock_is_stale() {
    let fleet = TestFleet::new();
    add_unlocked_input(&fleet);
    // Nothing listens on port 1: refused at once rather than a TEST-NET timeout.
    let yaml = fleet.read("fleet.yaml").replace("    address: 192.0.2.11\n", "    address: 127.0.0.1\n    port: 1\n");
    fleet.write("fleet.yaml", &yaml);
    fleet.commit("stale lock; web1 on loopback");
    let key = fleet.tmp.path().join("fleet.sec");
    let secret = hostctl_tests::livefleet::nix_stdout(&fleet, &["key", "generate-secret", "--key-name", "t"], None);
    hostctl_tests::write_secret(&key, &secret);
    let run = fleet.hostctl(&["--json", "--key", key.to_str().unwrap(), "status", "--on", "web1"]);
    run.expect_code(1);
    let v = run.json();
    assert_eq!(v["hosts"]["web1"]["result"], "failed", "{v}");
    assert_eq!(v["hosts"]["web1"]["reachable"], false, "the agent was asked: {v}");
}
