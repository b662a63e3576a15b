//! `hostctl completions SHELL` and `hostctl man`: generated from the clap definitions,
//! usable without a fleet file, and accepted by the tools that read them.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code throughout: a failed step must fail the test")]

use std::io::Write as _;
use std::process::{Command, Stdio};

use hostctl_tests::binary;

/// `hostctl ARGS` in an empty directory (no fleet.yaml): (exit code, stdout, stderr).
fn hostctl(args: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary("hostctl")).current_dir(dir.path()).args(args).output().unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Feeds `text` to `program args` on stdin; its exit status and stderr.
fn feed(program: &str, args: &[&str], text: &str) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn completions_for_bash_zsh_and_fish_need_no_fleet() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, script, stderr) = hostctl(&["completions", shell]);
        assert_eq!(code, Some(0), "{shell}: {stderr}");
        assert!(script.contains("rollback") && script.contains("via-cache"), "{shell}:\n{script}");
    }
    // bash is on every machine this runs on: the script must parse.
    let (_, bash, _) = hostctl(&["completions", "bash"]);
    let (ok, stderr) = feed("bash", &["-n"], &bash);
    assert!(ok, "bash -n: {stderr}");
}

#[test]
fn the_man_page_renders_without_warnings() {
    let (code, page, stderr) = hostctl(&["man"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(page.contains(".TH hostctl 1"), "{page}");
    if Command::new("groff").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let (ok, warnings) = feed("groff", &["-man", "-Tutf8", "-ww", "-z"], &page);
        assert!(ok && warnings.trim().is_empty(), "groff: {warnings}");
    } else {
        eprintln!("groff is not installed: the man page was generated but not rendered");
    }
}

#[test]
fn an_unknown_shell_is_bad_input() {
    let (code, stdout, stderr) = hostctl(&["completions", "tcsh"]);
    assert_eq!(code, Some(2));
    assert!(stdout.is_empty());
    assert!(stderr.contains("invalid value 'tcsh'") && stderr.contains("bash"), "{stderr}");
}
