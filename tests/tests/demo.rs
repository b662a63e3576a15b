//! `examples/demo.sh --keep` as a newcomer uses it (issue 17): the demo leaves its three
//! simulated hosts running and prints commands to try; each printed command is run exactly
//! as printed (after the printed `cd` and `export`), then the demo is torn down with the
//! printed `kill PID` and must leave none of its namespaces or agents behind.

#![expect(clippy::unwrap_used, clippy::panic, reason = "test code throughout: a failed step must fail the test")]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What the demo printed for the user: the commands block and the teardown pid.
struct Printed {
    /// `cd DIR` and `export ...`: the setup every command runs after.
    setup: Vec<String>,
    commands: Vec<String>,
    pid: String,
}

/// Reads the demo's stderr lines from `lines` until its "try, in another shell" block is
/// complete (or 15 minutes pass).
fn read_printed(lines: &mpsc::Receiver<String>, log: &mut Vec<String>) -> Printed {
    let deadline = Instant::now() + Duration::from_secs(900);
    let (mut inside, mut setup, mut commands) = (false, Vec::new(), Vec::new());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).unwrap_or_else(|_| panic!("no commands printed:\n{}", log.join("\n")));
        log.push(line.clone());
        if line.starts_with("=== the simulated hosts keep running") {
            inside = true;
        } else if inside && line.starts_with("  ") {
            let command = line.trim().to_owned();
            if command.starts_with("cd ") || command.starts_with("export ") {
                setup.push(command);
            } else {
                commands.push(command);
            }
        } else if inside && line.starts_with("To tear everything down") {
            let pid = line.split("`kill ").nth(1).unwrap().trim_end_matches(['\'', '.']).to_owned();
            return Printed { setup, commands, pid };
        }
    }
}

/// Runs `command` in bash after the printed setup lines; its exit status and output.
fn run_printed(setup: &[String], command: &str) -> (Option<i32>, String) {
    let script = format!("{}\n{command}\n", setup.join("\n"));
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// The demo's network namespaces that exist now.
fn demo_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("hostctl-demo-"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_commands_demo_keep_prints_work_as_printed_and_its_teardown_removes_everything() {
    assert!(demo_namespaces().is_empty(), "a demo is already running: {:?}", demo_namespaces());
    let root = hostctl_tests::workspace_root();
    let mut demo = Command::new("bash")
        .arg(root.join("examples/demo.sh"))
        .arg("--keep")
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = demo.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let printed = read_printed(&rx, &mut log);
    assert_eq!(printed.pid, demo.id().to_string(), "the pid to kill is the demo's");
    assert_eq!(printed.setup.len(), 2, "{:?}", printed.setup);
    assert!(printed.commands.len() >= 6, "{:?}", printed.commands);

    let mut outputs = Vec::new();
    for command in &printed.commands {
        let (code, text) = run_printed(&printed.setup, command);
        eprintln!("$ {command}\n{text}");
        assert_eq!(code, Some(0), "{command} failed:\n{text}");
        outputs.push((command.clone(), text));
    }
    let output_of = |sub: &str| -> Vec<&str> {
        outputs.iter().filter(|(c, _)| c.split_whitespace().nth(1) == Some(sub)).map(|(_, t)| t.as_str()).collect()
    };
    let status = output_of("status")[0];
    for host in ["web1", "web2", "db1"] {
        assert!(status.contains(host), "status lacks {host}:\n{status}");
    }
    let histories = output_of("history");
    assert!(histories.len() == 2, "history is printed twice: {histories:?}");
    assert!(histories[1].lines().count() > histories[0].lines().count(), "the rollback is in history: {histories:?}");
    assert!(output_of("rollback")[0].contains("web2"), "{:?}", output_of("rollback"));

    // The printed teardown.
    let (code, text) = run_printed(&[], &format!("kill {}", printed.pid));
    assert_eq!(code, Some(0), "{text}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let exit = loop {
        if let Some(exit) = demo.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the demo did not end within 120 s of `kill`");
        std::thread::sleep(Duration::from_millis(200));
    };
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
        log.push(line);
    }
    assert!(log.iter().any(|l| l.contains("--- cleaning up ---")), "{exit:?}:\n{}", log.join("\n"));
    assert!(demo_namespaces().is_empty(), "left behind: {:?}", demo_namespaces());
}
