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
fn completion_scripts_for_bash_zsh_and_fish_need_no_fleet() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, script, stderr) = hostctl(&["completions", shell]);
        assert_eq!(code, Some(0), "{shell}: {stderr}");
        assert!(script.contains("COMPLETE") && script.contains("hostctl"), "{shell}:\n{script}");
    }
    // bash is on every machine this runs on: the script must parse.
    let (_, bash, _) = hostctl(&["completions", "bash"]);
    let (ok, stderr) = feed("bash", &["-n"], &bash);
    assert!(ok, "bash -n: {stderr}");
}

/// What bash offers for `words` (the last one being typed) with the script `hostctl
/// completions bash` prints loaded, in `dir`: bash calls the completion function as it would
/// on TAB, which calls hostctl back.
fn bash_completes(dir: &std::path::Path, words: &[&str]) -> Vec<String> {
    let bin_dir = binary("hostctl").parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let script = r#"source <(hostctl completions bash)
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMP_TYPE=9
spec=$(complete -p hostctl) || exit 3
func=${spec#*-F }; func=${func%% *}
"$func" hostctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}""#;
    let out = Command::new("bash")
        .args(["-c", script, "bash"])
        .args(words)
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("HOSTCTL_FLEET")
        .output()
        .unwrap();
    assert!(out.status.success(), "bash: {}", String::from_utf8_lossy(&out.stderr));
    let mut words: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.trim_end().to_owned())
        .collect();
    words.sort();
    words
}

#[test]
fn bash_completes_host_names_and_tags_from_the_fleet_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fleet.yaml"),
        "flake: .\nhosts:\n  web1: {address: 192.0.2.11, tags: [web, eu]}\n  web2: {address: 192.0.2.12, tags: [web]}\n  \
         db1: {address: 192.0.2.21, tags: [db]}\n",
    )
    .unwrap();
    // Found upward from a subdirectory, as commands find it.
    let sub = dir.path().join("hosts/web1");
    std::fs::create_dir_all(&sub).unwrap();
    assert_eq!(bash_completes(&sub, &["hostctl", "apply", "--on", "w"]), ["web1", "web2"]);
    assert_eq!(
        bash_completes(&sub, &["hostctl", "apply", "--on", "web1,"]),
        ["web1,@db", "web1,@eu", "web1,@web", "web1,db1", "web1,web1", "web1,web2"]
    );
    assert_eq!(bash_completes(dir.path(), &["hostctl", "history", "@"]), ["@db", "@eu", "@web"]);
    assert_eq!(bash_completes(dir.path(), &["hostctl", "rollback", "d"]), ["db1"]);
    assert_eq!(bash_completes(dir.path(), &["hostctl", "status", "--on", "d"]), ["db1"]);
    // Subcommands and options still complete.
    assert_eq!(bash_completes(dir.path(), &["hostctl", "hi"]), ["history"]);
    assert!(bash_completes(dir.path(), &["hostctl", "apply", "--max"]).contains(&"--max-failures".to_owned()));
    // No fleet file: nothing to offer, and no error printed into the shell.
    let empty = tempfile::tempdir().unwrap();
    assert!(bash_completes(empty.path(), &["hostctl", "history", "w"]).is_empty());
    // A typed --fleet wins over the search.
    let fleet = dir.path().join("fleet.yaml");
    assert_eq!(
        bash_completes(empty.path(), &["hostctl", "--fleet", fleet.to_str().unwrap(), "history", "web"]),
        ["web1", "web2"]
    );
}

/// groff's warnings about `page`, or `None` when groff is not installed.
fn groff_warnings(page: &str) -> Option<String> {
    if !Command::new("groff").arg("--version").output().is_ok_and(|o| o.status.success()) {
        eprintln!("groff is not installed: the man pages were generated but not rendered");
        return None;
    }
    let (ok, warnings) = feed("groff", &["-man", "-Tutf8", "-ww", "-z"], page);
    Some(if ok { warnings } else { format!("groff failed: {warnings}") })
}

#[test]
fn every_man_page_renders_without_warnings() {
    let (code, page, stderr) = hostctl(&["man"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(page.contains(".TH hostctl 1"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    let (code, listed, stderr) = hostctl(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(listed.lines().count() >= 12, "{listed}");
    for file in listed.lines() {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.contains(".SH \"EXIT STATUS\"") && text.contains(".SH \"ENVIRONMENT\""), "{file}");
        if let Some(warnings) = groff_warnings(&text) {
            assert!(warnings.trim().is_empty(), "{file}: {warnings}");
        }
    }
    assert!(std::fs::read_to_string(dir.path().join("hostctl-rollback.1")).unwrap().contains("to\\-lock"));
}

#[test]
fn a_man_page_for_an_unknown_subcommand_or_into_a_missing_directory_is_refused() {
    let (code, stdout, stderr) = hostctl(&["man", "aply"]);
    assert_eq!((code, stdout.as_str()), (Some(2), ""));
    assert!(stderr.contains("invalid value 'aply'") && stderr.contains("pages: eval, build, check, apply"), "{stderr}");
    let (code, _, stderr) = hostctl(&["man", "--dir", "/nonexistent/man1"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("/nonexistent/man1/hostctl.1"), "{stderr}");
}

#[test]
fn an_unknown_shell_is_bad_input() {
    let (code, stdout, stderr) = hostctl(&["completions", "tcsh"]);
    assert_eq!(code, Some(2));
    assert!(stdout.is_empty());
    assert!(stderr.contains("invalid value 'tcsh'") && stderr.contains("bash"), "{stderr}");
}

#[test]
fn hostctl_agent_has_man_pages_too() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary("hostctl-agent")).args(["man", "--dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let serve = std::fs::read_to_string(dir.path().join("hostctl-agent-serve.1")).unwrap();
    for want in [
        "\\-\\-config",
        ".SH \"EXIT STATUS\"",
        ".SH \"ENVIRONMENT\"",
        "RUST_LOG",
        ".SH \"FILES\"",
        "/etc/hostctl/agent.yaml",
    ] {
        assert!(serve.contains(want), "hostctl-agent-serve.1 lacks {want}:\n{serve}");
    }
    if let Some(warnings) = groff_warnings(&serve) {
        assert!(warnings.trim().is_empty(), "{warnings}");
    }
    let out = Command::new(binary("hostctl-agent")).args(["man", "serv"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no subcommand `serv`; pages: serve, check-config"));
}
