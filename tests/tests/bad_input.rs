//! The bad-input table of docs/RELIABILITY.md ("Bad input"): the cases no other test
//! covers, against real agents on simulated hosts and the real binaries. Each case checks
//! the exit code or HTTP status, that the message names what was wrong and where (file
//! and line:column, header, field, path, argument), and that nothing changed: the host's
//! profile generations, journal and store, and the fleet's own files.
//!
//! Here: flake.lock, command lines and agent.yaml (the controller and `serve` refuse them
//! before any host is contacted). `api`: signature headers and API bodies; `transfer`:
//! import streams and bundles; `events`: webhook payloads and D-Bus calls.

#![expect(clippy::unwrap_used, reason = "test code throughout (helpers too): a failed step must fail the test")]

// The crate root of a test looks for modules beside it, not in a directory of its name.
#[path = "bad_input/api.rs"]
mod api;
#[path = "bad_input/events.rs"]
mod events;
#[path = "bad_input/support.rs"]
mod support;
#[path = "bad_input/transfer.rs"]
mod transfer;

use std::process::{Command, Output};

use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::{binary, run, HostctlRun};
use support::{expect_bad, fleet_files, host_state, start, text, HOST};

#[test]
fn bad_flake_locks_exit_2_naming_the_file_and_change_nothing() {
    let live = start();
    let good = live.fleet.read("flake.lock");
    let lock_file = live.fleet.path("flake.lock").canonicalize().unwrap().display().to_string();
    let cases: [(&str, String, Vec<String>); 7] = [
        (
            "malformed JSON",
            good.replacen("\"nodes\": {", "\"nodes\": {,", 1),
            vec![format!("{lock_file}:2:13: not a valid flake.lock: key must be a string")],
        ),
        ("empty file", String::new(), vec![format!("{lock_file}:1:0: not a valid flake.lock: EOF")]),
        (
            "root names a missing node",
            good.replace("\"root\": \"root\"", "\"root\": \"main\""),
            vec![format!("{lock_file}:39:11: root node `main` is not among the nodes")],
        ),
        (
            "no root at all",
            good.replace("  \"root\": \"root\",\n", ""),
            vec![format!("{lock_file}:40:1: missing field `root`")],
        ),
        (
            "unsupported version",
            good.replace("\"version\": 7", "\"version\": 8"),
            vec![format!("{lock_file}:40:14: unsupported flake.lock version 8 (hostctl reads version 7)")],
        ),
        (
            "no version",
            good.replace(",\n  \"version\": 7", ""),
            vec![format!("{lock_file}: missing numeric `version`")],
        ),
        (
            "an input points at a missing node",
            good.replace("\"nixpkgs\": \"nixpkgs\"", "\"nixpkgs\": \"nixpkgs_9\""),
            vec![format!("{lock_file}:35:20: node `root` input `nixpkgs` points at missing node `nixpkgs_9`")],
        ),
    ];
    let before = host_state(live.host(HOST));
    for (what, lock, expected) in &cases {
        assert_ne!(lock, &good, "{what}: the case changes the lock");
        live.fleet.write("flake.lock", lock);
        let files = fleet_files(&live);
        for command in [&["--json", "check"][..], &["--json", "eval"], &["--json", "apply"], &["apply", "--dry-run"]] {
            let run = live.hostctl(command);
            let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
            expect_bad(&run, &format!("{what}, {command:?}"), &expected);
            assert_eq!(fleet_files(&live), files, "{what}, {command:?}: the fleet's files changed");
        }
        assert_eq!(host_state(live.host(HOST)), before, "{what}: the host changed");
    }
    assert!(live.deployments(HOST).is_empty(), "no deployment reached the agent");
}

#[test]
fn bad_command_lines_exit_2_naming_the_argument_and_change_nothing() {
    let live = start();
    let missing_fleet = live.fleet.tmp.path().join("nowhere/fleet.yaml").display().to_string();
    let garbage_key = live.fleet.tmp.path().join("garbage.sec");
    std::fs::write(&garbage_key, "not a key\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&garbage_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let garbage_key = garbage_key.display().to_string();
    let fleet_file = live.fleet.path("fleet.yaml").display().to_string();
    let unknown_host = format!("db9: matches no host; hosts in {fleet_file}: web1");
    let typo = format!("Web_1: matches no host (did you mean web1?); hosts in {fleet_file}: web1");
    // (command line, parts the message must have); hostctl runs with `--key` unless the
    // case gives its own.
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["apply", "--on", "db9"], vec!["--on db9: matches no host", "web1"]),
        (vec!["apply", "--on", "@asia"], vec!["--on @asia: no host has this tag"]),
        (vec!["apply", "--parallel", "0"], vec!["invalid value '0' for '--parallel <N>': must be at least 1"]),
        (vec!["apply", "--eval-jobs", "0"], vec!["invalid value '0' for '--eval-jobs <N>': must be at least 1"]),
        (vec!["apply", "--parallel", "many"], vec!["'many'", "--parallel"]),
        (vec!["apply", "--diff", "--dry-run"], vec!["--diff", "cannot be used with", "--dry-run"]),
        (vec!["apply", "--yes"], vec!["--yes", "--diff"]),
        (vec!["apply", "--batch", "0"], vec!["'0'", "--batch"]),
        (vec!["apply", "--batch", "150%"], vec!["'150%'", "--batch", "between 1% and 100%"]),
        (vec!["apply", "--mode", "reboot"], vec!["'reboot'", "--mode"]),
        (
            vec!["apply", "--max-failures", "-1"],
            vec!["invalid value '-1' for '--max-failures <N>': expected a whole number, 0 or more"],
        ),
        (vec!["apply", "--parallel", "-2"], vec!["'-2'", "--parallel"]),
        (vec!["rollback", "db9"], vec![&unknown_host]),
        (vec!["rollback", "Web_1"], vec![&typo]),
        (vec!["history", "@asia"], vec!["@asia: no host has this tag; tags in "]),
        (vec!["rollback", "web1", "--generation", "abc"], vec!["'abc'", "--generation"]),
        (vec!["rollback", "web1", "--generation", "-1"], vec!["'-1'", "--generation"]),
        (vec!["rollback", "web1", "--to-lock", "abc", "--generation", "1"], vec!["--to-lock", "cannot be used with"]),
        (vec!["history", "db9"], vec![&unknown_host]),
        (vec!["bundle", "web1"], vec!["--output"]),
        (vec!["completions", "tcsh"], vec!["'tcsh'", "<SHELL>"]),
        // What Nix would misread in `--builders`: refused before Nix runs.
        (vec!["build", "--builders", "ssh://b x86_64-linux # big"], vec!["--builders", "`#`", "comment"]),
        (vec!["apply", "--builders", "ssh://b\r"], vec!["--builders", "control character"]),
        (vec!["build", "--builders", "ssh://a;;ssh://b"], vec!["--builders", "machine specification 2 is empty"]),
        (vec!["build", "--builders", " "], vec!["--builders", "machine specification 1 is empty", "--builders ''"]),
        (vec!["build", "--builders", "ssh://-oProxyCommand=x"], vec!["--builders", "must not start with `-`"]),
        (vec!["build", "--builders", "builder x86_64-linux"], vec!["--builders", "ssh:// or ssh-ng://"]),
        (vec!["build", "--builders", "ssh://b x86_64-linux - four"], vec!["--builders", "max jobs `four`"]),
        (vec!["build", "--builders", "ssh://b - - - - - - - x"], vec!["--builders", "9 fields"]),
    ];
    let before = (host_state(live.host(HOST)), fleet_files(&live));
    for (args, expected) in &cases {
        let run = live.hostctl(args);
        expect_bad(&run, &format!("{args:?}"), expected);
    }
    // Files named on the command line: a fleet file that does not exist, a key that is
    // not a key, a key that does not exist.
    let run = HostctlRun::from(run_hostctl(&live, &["--fleet", &missing_fleet, "apply"]));
    expect_bad(&run, "missing fleet file", &[&format!("{missing_fleet}: cannot read")]);
    let run = live.fleet.hostctl(&["--key", &garbage_key, "apply"]);
    expect_bad(&run, "garbage key", &[&garbage_key]);
    let run = live.fleet.hostctl(&["--key", "/nonexistent/fleet.sec", "apply"]);
    expect_bad(&run, "missing key", &["/nonexistent/fleet.sec"]);
    assert_eq!((host_state(live.host(HOST)), fleet_files(&live)), before, "a bad command line changed something");
    assert!(live.deployments(HOST).is_empty(), "no deployment reached the agent");
}

fn run_hostctl(live: &LiveFleet, args: &[&str]) -> Output {
    run(Command::new(binary("hostctl"))
        .current_dir(&live.fleet.dir)
        .env("NIX_CONFIG", hostctl_tests::NIX_CONFIG)
        .env("HOSTCTL_CACHE_DIR", live.fleet.tmp.path().join("cache"))
        .args(args))
}

#[test]
fn bad_agent_configs_stop_serve_with_exit_2_before_it_creates_anything() {
    let dir = tempfile::Builder::new().prefix("hostctl-bad-agent-").tempdir().unwrap();
    let state = dir.path().join("state");
    let key = "\"fleet-1:DVtPvRyvUPbu/+Sn4hlrm4Lt/mYSsmlDciUrSupuJ3s=\"";
    let base = format!("hostname: web1\nlisten: \"127.0.0.1:0\"\nstate_dir: {:?}\n", state.display().to_string());
    let cases: Vec<(String, Vec<&str>)> = vec![
        (format!("{base}trusted_keys: [{key}]\ncolour: blue\n"), vec![":5:1: colour: unknown field `colour`"]),
        (format!("{base}trusted_keys: [{key}]\nconfirm_timeout: 30x\n"), vec![":5:18: confirm_timeout", "`30x`"]),
        (format!("{base}trusted_keys: []\n"), vec![":4:", "trusted_keys"]),
        (format!("{base}trusted_keys: [\"fleet-1:short\"]\n"), vec![":4:", "trusted_keys[0]"]),
        (format!("{base}trusted_keys: [{key}]\nhealth:\n  - http: http://127.0.0.1/\n"), vec!["health[0]"]),
        (format!("{base}trusted_keys: [{key}]\nbus: nowhere\n"), vec![":5:6: bus"]),
        (format!("{}trusted_keys: [{key}]\n", base.replace("web1", "Web_1")), vec![":1:11: hostname", "`Web_1`"]),
        (format!("{base}trusted_keys: [{key}\n"), vec![":5:1: YAML syntax error", "line 4 column 15"]),
        (
            format!(
                "{base}trusted_keys: [{key}]\npull:\n  url: /srv/fleet\n  substituters: [\"https://c https://d\"]\n"
            ),
            vec![":7:18: pull.substituters[0]: invalid cache URL `https://c https://d`", "whitespace"],
        ),
        (
            format!("{base}trusted_keys: [{key}]\npull:\n  url: /srv/fleet\n  substituters: [\"--option=x\"]\n"),
            vec![":7:18: pull.substituters[0]: invalid cache URL `--option=x`"],
        ),
    ];
    for (yaml, expected) in &cases {
        let config = dir.path().join("agent.yaml");
        std::fs::write(&config, yaml).unwrap();
        let out = run(Command::new(binary("hostctl-agent")).arg("serve").arg("--config").arg(&config));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {}", text(&out));
        let file = config.display().to_string();
        assert!(stderr.contains(&file), "{yaml}: names the file: {stderr}");
        for part in expected {
            assert!(stderr.contains(part), "{yaml}: expected {part:?} in {stderr}");
        }
        assert!(!state.exists(), "{yaml}: serve created its state dir before refusing");
    }
}
