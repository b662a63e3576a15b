//! Progress on stderr during a real `hostctl apply`: timestamped plain lines per host and
//! step when stderr is not a terminal, the failing step's log under a failed host, and
//! redrawn lines (with a final mark per host) on a terminal (a pty from `script`).

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code throughout: a failed step must fail the test")]

use std::process::Command;

use hostctl_tests::livefleet::LiveFleet;

/// Whether `line` is `HH:MM:SS.mmmZ host: text` (the `Z`: the time is UTC).
fn timestamped(line: &str, host: &str) -> bool {
    let b = line.as_bytes();
    line.len() > 14
        && b[2] == b':'
        && b[5] == b':'
        && b[8] == b'.'
        && b[12] == b'Z'
        && line[..12].chars().filter(char::is_ascii_digit).count() == 9
        && line[14..].starts_with(&format!("{host}: "))
}

#[test]
fn plain_progress_names_each_step_and_shows_the_failing_log() {
    let live = LiveFleet::start(&["web1", "db1"]);
    std::fs::write(live.host("db1").root.join("state/fail-switch-db1"), "4").unwrap();
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(1);
    let lines: Vec<&str> = run.stderr.lines().collect();
    for (host, step) in [
        ("web1", "evaluating"),
        ("web1", "building"),
        ("web1", "pushing"),
        ("web1", "activating"),
        ("web1", "confirming"),
        ("web1", "activated"),
        ("db1", "failed at activate"),
    ] {
        assert!(
            lines.iter().any(|l| timestamped(l, host) && l[14 + host.len() + 2..].starts_with(step)),
            "no `{host}: {step}` line:\n{}",
            run.stderr
        );
    }
    let tail: Vec<&&str> = lines.iter().filter(|l| timestamped(l, "db1") && l.contains("db1:   | ")).collect();
    assert!(tail.iter().any(|l| l.contains("fails on purpose")), "db1's log tail is shown:\n{}", run.stderr);
    assert!(serde_json::from_str::<serde_json::Value>(&run.stdout).is_ok(), "stdout is only the JSON report");
}

#[test]
fn a_host_that_does_not_evaluate_is_reported_failed_once() {
    let live = LiveFleet::start(&["web1"]);
    // `ghost` is in the inventory but has no `nixosConfigurations.ghost`.
    live.write_inventory("  ghost:\n    address: 192.0.2.77\n");
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(1);
    let ghost: Vec<&str> =
        run.stderr.lines().filter(|l| timestamped(l, "ghost")).map(|l| &l[14 + "ghost: ".len()..]).collect();
    let failures: Vec<&&str> = ghost.iter().filter(|l| l.contains("failed")).collect();
    assert_eq!(failures, [&"evaluation failed"], "one failure line for ghost:\n{}", run.stderr);
    assert!(ghost.contains(&"evaluating"), "{}", run.stderr);
}

#[test]
fn on_a_terminal_each_host_gets_a_redrawn_line_with_a_final_mark() {
    let live = LiveFleet::start(&["web1"]);
    // `script` runs the command on a pty (so stderr is a terminal) and copies its output.
    let hostctl = hostctl_tests::binary("hostctl");
    let fleet = live.fleet.path("fleet.yaml");
    let argv = format!("{} --key {} --fleet {} apply", hostctl.display(), live.key_file.display(), fleet.display());
    let out = Command::new("script")
        .args(["-qec", &argv, "/dev/null"])
        .current_dir(&live.fleet.dir)
        .env("NIX_CONFIG", hostctl_tests::NIX_CONFIG)
        .env("HOSTCTL_CACHE_DIR", live.fleet.tmp.path().join("cache"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("✓ activated"), "a final mark for web1:\n{text}");
    assert!(text.contains("\u{1b}["), "drawn with terminal control sequences:\n{text}");
    assert!(!text.lines().any(|l| timestamped(l, "web1")), "no plain lines on a terminal:\n{text}");
}
