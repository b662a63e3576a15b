//! Bad input to `hostctl` and `hostctl-agent`: each case exits 2 with a message naming
//! the file, line and column (or the argument), and changes nothing.

use hostctl_tests::{binary, run, TestFleet};
use std::process::Command;

/// Writes `fleet.yaml`, runs `hostctl eval`, and checks exit 2 + the message.
fn bad_fleet(fleet: &TestFleet, yaml: &str, expected: &[&str]) {
    fleet.write("fleet.yaml", yaml);
    let run = fleet.hostctl(&["--json", "eval"]);
    run.expect_code(2);
    // No report, but `--json` still gets one document: the error, as on stderr.
    let message = run.stderr.trim_end().strip_prefix("error: ").unwrap_or_default().to_owned();
    assert_eq!(
        run.json(),
        serde_json::json!({"error": {"kind": "inventory", "message": message, "exit_code": 2}}),
        "{}",
        run.stderr
    );
    assert_eq!(fleet.read("fleet.yaml"), yaml, "the bad fleet.yaml was left as it was");
    for part in expected {
        assert!(run.stderr.contains(part), "expected {part:?} in:\n{}", run.stderr);
    }
}

const GOOD_HOST: &str = "hosts:\n  web1:\n    address: 192.0.2.11\n";

#[test]
fn bad_fleet_yaml_cases_name_file_line_and_key() {
    let fleet = TestFleet::new();
    let file = fleet.path("fleet.yaml").display().to_string();
    bad_fleet(&fleet, "hosts:\n  web1:\n    address: [192.0.2.11\n", &[&format!("{file}:"), "YAML syntax error"]);
    bad_fleet(
        &fleet,
        "hosts:\n  web1:\n    adress: 192.0.2.11\n",
        &[&format!("{file}:3:5: hosts.web1.adress: unknown field `adress`"), "expected one of `address`"],
    );
    bad_fleet(&fleet, &format!("{GOOD_HOST}colour: blue\n"), &[&format!("{file}:4:1: colour: unknown field `colour`")]);
    bad_fleet(
        &fleet,
        "hosts:\n  Web_1:\n    address: 192.0.2.11\n",
        &[&format!("{file}:2:3"), "invalid host name `Web_1`"],
    );
    bad_fleet(
        &fleet,
        "defaults:\n  confirm_timeout: 30x\nhosts:\n  web1:\n    address: 192.0.2.11\n",
        &[&format!("{file}:2:20: defaults.confirm_timeout"), "invalid duration `30x`", "like 30s, 5m or 1h30m"],
    );
    bad_fleet(&fleet, "hosts: {}\n", &[&format!("{file}:1:"), "hosts: a fleet needs at least one host"]);
    bad_fleet(&fleet, "defaults:\n  port: 7420\n", &[&format!("{file}:"), "missing field `hosts`"]);
    bad_fleet(&fleet, &format!("{GOOD_HOST}rollout:\n  batch: 150%\n"), &[&format!("{file}:5:"), "rollout.batch"]);
    bad_fleet(&fleet, &format!("{GOOD_HOST}defaults:\n  mode: reboot\n"), &[&format!("{file}:5:"), "defaults.mode"]);
    bad_fleet(&fleet, "hosts:\n  web1:\n    address: 192.0.2.11\n    tags: [Web!]\n", &[&format!("{file}:4:"), "Web!"]);
    bad_fleet(
        &fleet,
        "hosts:\n  web1:\n    address: 'not an address'\n",
        &[&format!("{file}:3:"), "hosts.web1.address"],
    );
    bad_fleet(
        &fleet,
        "hosts:\n  web1:\n    address: 192.0.2.11\n    configuration: 'a.b'\n",
        &[&format!("{file}:4:"), "hosts.web1.configuration"],
    );
}

#[test]
fn missing_or_broken_files_are_bad_input() {
    let fleet = TestFleet::new();
    let run = fleet.hostctl(&["eval"]);
    run.expect_code(0);

    let missing = fleet.path("nope.yaml");
    let run = hostctl_tests::HostctlRun::from(run_hostctl(&fleet, &["--fleet", missing.to_str().unwrap(), "eval"]));
    run.expect_code(2);
    assert!(run.stderr.contains(&format!("{}: cannot read", missing.display())), "{}", run.stderr);

    let yaml = fleet.read("fleet.yaml").replace("flake: .", "flake: ./elsewhere");
    fleet.write("fleet.yaml", &yaml);
    let run = fleet.hostctl(&["eval"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("elsewhere") && run.stderr.contains("cannot open the flake directory"),
        "{}",
        run.stderr
    );

    let yaml = fleet.read("fleet.yaml").replace("flake: ./elsewhere", "flake: .");
    fleet.write("fleet.yaml", &yaml);
    let lock = fleet.read("flake.lock");
    fleet.write("flake.lock", &lock.replacen("\"nodes\": {", "\"nodes\": {,", 1));
    let run = fleet.hostctl(&["eval"]);
    run.expect_code(2);
    let lock_file = fleet.path("flake.lock").canonicalize().unwrap();
    assert!(run.stderr.contains(&format!("{}:2:", lock_file.display())), "{}", run.stderr);
    assert!(run.stderr.contains("not a valid flake.lock"), "{}", run.stderr);
}

#[test]
fn bad_command_line_exits_2() {
    let fleet = TestFleet::new();
    let run = fleet.hostctl(&["eval", "--no-such-flag"]);
    run.expect_code(2);
    assert!(run.stderr.contains("--no-such-flag"), "{}", run.stderr);
    let run = fleet.hostctl(&["frobnicate"]);
    run.expect_code(2);
    let run = fleet.hostctl(&["--eval-jobs", "0", "eval"]);
    run.expect_code(2);
    assert!(run.stderr.contains("--eval-jobs"), "{}", run.stderr);
}

fn run_hostctl(fleet: &TestFleet, args: &[&str]) -> std::process::Output {
    run(Command::new(binary("hostctl")).current_dir(&fleet.dir).env("NIX_CONFIG", hostctl_tests::NIX_CONFIG).args(args))
}

#[test]
fn agent_configs_are_validated() {
    let examples = hostctl_tests::workspace_root().join("examples/agents");
    for host in ["web1", "web2", "db1", "arm1"] {
        let path = examples.join(format!("{host}.yaml"));
        let out = run(Command::new(binary("hostctl-agent")).arg("check-config").arg("--config").arg(&path));
        assert!(out.status.success(), "{host}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("hostname: web1\n", "missing field `trusted_keys`"),
        ("hostname: web1\ntrusted_keys: []\n", "trusted"),
        ("hostname: web1\ntrusted_keys: [\"fleet-1:short\"]\n", "2:"),
        ("hostname: web1\nlisten: nowhere\ntrusted_keys: [\"fleet-1:DVtPvRyvUPbu/+Sn4hlrm4Lt/mYSsmlDciUrSupuJ3s=\"]\n", "listen"),
    ];
    for (yaml, expected) in cases {
        let path = tmp.path().join("agent.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = run(Command::new(binary("hostctl-agent")).arg("check-config").arg("--config").arg(&path));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {stderr}");
        assert!(stderr.contains(&path.display().to_string()) && stderr.contains(expected), "{yaml}: {stderr}");
    }
}

/// `check-config` refuses what `serve` refuses, with the same message: both run one check.
#[test]
fn check_config_refuses_what_serve_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let head = format!(
        "hostname: web1\nstate_dir: {}\ntrusted_keys: [\"fleet-1:DVtPvRyvUPbu/+Sn4hlrm4Lt/mYSsmlDciUrSupuJ3s=\"]\n",
        state.display()
    );
    let missing = tmp.path().join("no-such-secret");
    let cases = [
        (
            format!("pull:\n  url: /srv/fleet.git\n  webhook_secret_file: {}\n", missing.display()),
            format!("pull.webhook_secret_file: cannot read {}: No such file or directory", missing.display()),
        ),
        (
            "pull:\n  url: ftp://git.example.com/fleet.git\n".to_owned(),
            ":5:8: pull.url: invalid git URL `ftp://git.example.com/fleet.git`: the agent cannot fetch with this URL \
             scheme; use a path, `file://`, `http://`, `https://`, `git://`, `ssh://user@host/path` or `user@host:path`"
                .to_owned(),
        ),
    ];
    for (tail, expected) in cases {
        let path = tmp.path().join("agent.yaml");
        std::fs::write(&path, format!("{head}{tail}")).unwrap();
        for command in ["check-config", "serve"] {
            let out = run(Command::new(binary("hostctl-agent")).arg(command).arg("--config").arg(&path));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command} {tail}: {stderr}");
            assert!(stderr.contains(&path.display().to_string()), "{command}: names the file: {stderr}");
            assert!(stderr.contains(&expected), "{command}: expected {expected:?} in {stderr}");
        }
        assert!(!state.exists(), "nothing was created: {}", state.display());
    }
}
