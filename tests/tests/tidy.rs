//! The code map's invariants, checked mechanically over every `.rs` file of the
//! workspace (as rust-analyzer's `tidy.rs` does): only the Nix layer names and runs Nix,
//! processes are spawned only where [`SPAWNERS`] says, D-Bus and systemd's interface only
//! in their folders, no file over [`MAX_LINES`] lines, every module opens with `//!`.
//!
//! Each check is a function over (workspace-relative path, text), so the tests at the end
//! run it on a small tree with violations and show that it reports them.
//!
//! Test code is free to spawn what it likes: the `hostctl-tests` crate, `tests/`
//! directories, `*_tests.rs`/`tests.rs` files and inline `#[cfg(test)] mod` blocks are
//! exempt from the spawn and name checks (not from length and `//!`). Comments are
//! exempt from the name checks (documentation may name an interface).

#![expect(clippy::panic, reason = "test code throughout (helpers too): a file that cannot be read must fail the test")]

use std::fmt;
use std::path::Path;

use hostctl_tests::workspace_root;

/// The longest a file may be.
const MAX_LINES: usize = 600;

/// The only files whose (non-test) code may call `Command::new`, with what each runs.
/// Extend it when a module starts a process, and say so in the code map.
const SPAWNERS: &[(&str, &str)] = &[
    ("nix/src/runner.rs", "nix, nix-store, nix-env: the one place Nix runs"),
    ("agent/src/activation.rs", "the wrapper that runs switch-to-configuration"),
    ("agent/src/health.rs", "`command` health checks (an argv, no shell)"),
    (
        "agent/src/bootloader.rs",
        "bootctl set-default / set-oneshot (systemd-boot's EFI variables), boot.reboot_command",
    ),
    ("controller/src/evaltrace.rs", "strace, checked once by tracing `true`"),
];

/// Where Nix's programs may be named (an argv[0] such as `"nix-store"`): the Nix layer,
/// which builds each argv (`command.rs`) and runs it (`runner.rs`).
const NIX_LAYER: &[&str] = &["nix/src/command.rs", "nix/src/runner.rs"];

/// Nix's executables; a string naming one (or a path ending in one) outside the Nix
/// layer is a command line the layer does not see.
const NIX_PROGRAMS: &[&str] = &[
    "nix",
    "nix-store",
    "nix-env",
    "nix-build",
    "nix-instantiate",
    "nix-shell",
    "nix-collect-garbage",
    "nix-copy-closure",
    "nix-daemon",
    "nix-channel",
];

/// Names that belong to one folder each: (what the code contains, the folders allowed to).
/// A folder ends with `/`.
const OWNED_NAMES: &[(&str, &[&str])] = &[
    ("zbus", &["agent/src/dbus/", "agent/src/systemd/"]),
    ("org.freedesktop.DBus", &["agent/src/dbus/"]),
    ("org.hostctl.Agent1", &["agent/src/dbus/"]),
    ("org.freedesktop.systemd1", &["agent/src/systemd/"]),
];

/// One broken invariant, at `path:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    path: String,
    line: usize,
    message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path, self.line, self.message)
    }
}

fn violation(path: &str, line: usize, message: impl Into<String>) -> Violation {
    Violation { path: path.to_owned(), line, message: message.into() }
}

/// A check over one file: its workspace-relative path (with `/`) and its text.
type Check = fn(&str, &str) -> Vec<Violation>;

const CHECKS: [Check; 5] = [module_doc, length, nix_programs, spawners, owned_names];

/// Every module says what it is for before anything else.
fn module_doc(path: &str, text: &str) -> Vec<Violation> {
    match text.lines().next() {
        Some(first) if first.starts_with("//!") => vec![],
        _ => vec![violation(path, 1, "a module opens with a `//!` line saying what it owns")],
    }
}

fn length(path: &str, text: &str) -> Vec<Violation> {
    let lines = text.lines().count();
    if lines <= MAX_LINES {
        return vec![];
    }
    vec![violation(path, MAX_LINES + 1, format!("{lines} lines, more than {MAX_LINES}: split the module"))]
}

/// Nix runs only through the Nix layer: no other code names a Nix program.
fn nix_programs(path: &str, text: &str) -> Vec<Violation> {
    if NIX_LAYER.contains(&path) {
        return vec![];
    }
    let mut found = Vec::new();
    for (number, line) in code_lines(path, text) {
        for literal in string_literals(line) {
            let program = literal.rsplit('/').next().unwrap_or(literal);
            if NIX_PROGRAMS.contains(&program) {
                let message = format!("`\"{literal}\"` names a Nix program: run Nix through hostctl-nix's runner");
                found.push(violation(path, number, message));
            }
        }
    }
    found
}

/// Processes are started only by the files on the allow-list.
fn spawners(path: &str, text: &str) -> Vec<Violation> {
    if SPAWNERS.iter().any(|(file, _)| *file == path) {
        return vec![];
    }
    code_lines(path, text)
        .filter(|(_, line)| line.contains("Command::new("))
        .map(|(number, _)| {
            violation(path, number, "`Command::new` outside the spawners the code map lists (tidy.rs SPAWNERS)")
        })
        .collect()
}

/// D-Bus, the agent's interface and systemd's only in their folders.
fn owned_names(path: &str, text: &str) -> Vec<Violation> {
    let mut found = Vec::new();
    for (number, line) in code_lines(path, text) {
        for (name, folders) in OWNED_NAMES {
            if line.contains(name) && !folders.iter().any(|folder| path.starts_with(folder)) {
                let message = format!("`{name}` belongs in {}", folders.join(" or "));
                found.push(violation(path, number, message));
            }
        }
    }
    found
}

/// Test code: the tests crate, integration tests, test modules in files of their own.
fn is_test_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    path.starts_with("tests/") || path.contains("/tests/") || name == "tests.rs" || name.ends_with("_tests.rs")
}

/// The numbered lines (from 1) of `text` that are code: not comments, not test code.
fn code_lines<'a>(path: &str, text: &'a str) -> impl Iterator<Item = (usize, &'a str)> {
    let test_file = is_test_file(path);
    let lines: Vec<&str> = text.lines().collect();
    let mut code = Vec::new();
    let mut i = 0;
    while i < lines.len() && !test_file {
        let trimmed = lines[i].trim_start();
        if trimmed == "#[cfg(test)]" {
            if let Some(end) = test_module_end(&lines, i) {
                i = end + 1;
                continue;
            }
        }
        if !trimmed.starts_with("//") {
            code.push((i + 1, lines[i]));
        }
        i += 1;
    }
    code.into_iter()
}

/// For a `#[cfg(test)]` at `start` on an inline `mod name {`: the index of its closing
/// brace (the first `}` line at the `mod` line's indentation, as rustfmt writes it).
fn test_module_end(lines: &[&str], start: usize) -> Option<usize> {
    let module = (start + 1..lines.len()).find(|&i| !lines[i].trim_start().starts_with("#["))?;
    let line = lines[module];
    let trimmed = line.trim_start();
    if !(trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ")) || !trimmed.ends_with('{') {
        return None;
    }
    let close = format!("{}}}", &line[..line.len() - trimmed.len()]);
    (module + 1..lines.len()).find(|&i| lines[i] == close)
}

/// The contents of the string literals on one line (escapes left as written; a `"` in a
/// char literal is skipped).
fn string_literals(line: &str) -> Vec<&str> {
    let bytes = line.as_bytes();
    let mut literals = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\'' && bytes.get(i + 1) == Some(&b'"') && bytes.get(i + 2) == Some(&b'\'') {
            i += 3;
            continue;
        }
        if bytes[i] == b'"' {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && bytes[end] != b'"' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            literals.push(line.get(start..end.min(bytes.len())).unwrap_or(""));
            i = end + 1;
            continue;
        }
        i += 1;
    }
    literals
}

/// The `.rs` files under `root` (relative paths with `/`, sorted), leaving out build
/// output (`target/`, also the fuzz crate's) and hidden directories.
fn rust_files(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())).path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    dirs.push(path);
                }
            } else if name.ends_with(".rs") {
                let relative = path.strip_prefix(root).unwrap_or(&path);
                files.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    files.sort();
    files
}

/// Every violation in the tree under `root`.
fn tidy(root: &Path) -> Vec<Violation> {
    let mut found = Vec::new();
    for file in rust_files(root) {
        let text = std::fs::read_to_string(root.join(&file)).unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
        for check in CHECKS {
            found.extend(check(&file, &text));
        }
    }
    found
}

#[test]
fn the_workspace_is_tidy() {
    let root = workspace_root();
    assert!(rust_files(&root).len() > 100, "the walk found the workspace's files");
    let found = tidy(&root);
    let list: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert!(found.is_empty(), "{} violations of the code map's invariants:\n{}", found.len(), list.join("\n"));
}

#[test]
fn the_allow_lists_name_files_that_exist() {
    let root = workspace_root();
    let files = SPAWNERS.iter().map(|(file, _)| *file).chain(NIX_LAYER.iter().copied());
    let folders = OWNED_NAMES.iter().flat_map(|(_, folders)| folders.iter().copied());
    for path in files.chain(folders) {
        assert!(root.join(path).exists(), "tidy.rs lists {path}, which does not exist: update the list");
    }
}

/// A tree with one violation of each kind, beside code that keeps every rule: exactly the
/// violations are reported, each at its file and line.
#[test]
fn every_check_reports_what_breaks_it() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let long = format!("//! Long.\n{}", "fn f() {}\n".repeat(MAX_LINES));
    let files: &[(&str, &str)] = &[
        // Broken.
        ("controller/src/nodoc.rs", "use std::fmt;\n"),
        ("controller/src/long.rs", &long),
        ("agent/src/deploy.rs", "//! D.\nfn f() {\n    let _ = std::process::Command::new(\"nix-env\");\n}\n"),
        ("controller/src/paths.rs", "//! P.\nconst NIX: &str = \"/usr/bin/nix-store\";\n"),
        ("controller/src/shell.rs", "//! S.\nfn f() {\n    tokio::process::Command::new(\"sh\");\n}\n"),
        ("agent/src/serve.rs", "//! S.\nuse zbus::Connection;\nconst B: &str = \"org.freedesktop.systemd1\";\n"),
        ("agent/src/dbus/unit.rs", "//! U.\nconst S: &str = \"org.freedesktop.systemd1.Unit\";\n"),
        ("agent/src/systemd/agent.rs", "//! A.\nconst A: &str = \"org.hostctl.Agent1\";\n"),
        ("agent/src/half.rs", "//! H.\n#[cfg(test)]\nfn helper() {\n    std::process::Command::new(\"nix\");\n}\n"),
        // Kept.
        ("nix/src/runner.rs", "//! R.\nfn f(argv: &[String]) {\n    Command::new(&argv[0]);\n}\n"),
        ("nix/src/command.rs", "//! C.\nconst NAMES: [&str; 2] = [\"nix\", \"nix-store\"];\n"),
        ("agent/src/dbus/mod.rs", "//! D.\nuse zbus::Connection;\nconst N: &str = \"org.hostctl.Agent1\";\n"),
        ("agent/src/systemd/proxies.rs", "//! P.\n#[zbus::proxy(default_service = \"org.freedesktop.systemd1\")]\n"),
        ("agent/src/lib.rs", "//! On D-Bus as `org.hostctl.Agent1`.\n/// Not zbus.\nfn f() {\n    let c = '\"';\n}\n"),
        (
            "agent/src/orphan.rs",
            "//! O.\nfn f() {}\n\n#[cfg(test)]\nmod tests {\n    fn t() {\n        Command::new(\"nix\");\n    }\n}\n",
        ),
        ("agent/src/journal_tests.rs", "//! J.\nfn t() {\n    Command::new(\"nix-store\");\n}\n"),
        ("tests/tests/apply.rs", "//! A.\nfn t() {\n    Command::new(\"nix\").arg(\"org.hostctl.Agent1\");\n}\n"),
        ("target/debug/build/out.rs", "fn generated() { Command::new(\"nix\"); }\n"),
        ("fuzz/target/x.rs", "fn generated() {}\n"),
    ];
    for (path, text) in files {
        let file = tmp.path().join(path);
        std::fs::create_dir_all(file.parent().unwrap_or(tmp.path())).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut found: Vec<String> = tidy(tmp.path()).iter().map(|v| format!("{}:{}", v.path, v.line)).collect();
    found.sort();
    let expected = [
        "agent/src/dbus/unit.rs:2",
        "agent/src/deploy.rs:3",
        "agent/src/deploy.rs:3",
        "agent/src/half.rs:4",
        "agent/src/half.rs:4",
        "agent/src/serve.rs:2",
        "agent/src/serve.rs:3",
        "agent/src/systemd/agent.rs:2",
        "controller/src/long.rs:601",
        "controller/src/nodoc.rs:1",
        "controller/src/paths.rs:2",
        "controller/src/shell.rs:3",
    ];
    assert_eq!(found, expected);
    // The messages say which rule, so a failure of the real tree explains itself.
    let messages: Vec<String> = tidy(tmp.path()).iter().map(ToString::to_string).collect();
    for part in [
        "agent/src/deploy.rs:3: `\"nix-env\"` names a Nix program",
        "agent/src/deploy.rs:3: `Command::new` outside the spawners",
        "agent/src/serve.rs:2: `zbus` belongs in agent/src/dbus/ or agent/src/systemd/",
        "agent/src/serve.rs:3: `org.freedesktop.systemd1` belongs in agent/src/systemd/",
        "controller/src/long.rs:601: 601 lines, more than 600",
        "controller/src/nodoc.rs:1: a module opens with a `//!` line",
    ] {
        assert!(messages.iter().any(|m| m.starts_with(part)), "{part:?} not in {messages:#?}");
    }
}

#[test]
fn string_literals_and_test_modules_are_found() {
    assert_eq!(string_literals(r#"f("a", "b\"c", '"', "")"#), ["a", r#"b\"c"#, ""]);
    let text = "a\n#[cfg(test)]\n#[path = \"x.rs\"]\nmod x;\nb\n    #[cfg(test)]\n    mod t {\n    x\n    }\nc\n";
    let code: Vec<(usize, &str)> = code_lines("agent/src/a.rs", text).collect();
    assert_eq!(code, [(1, "a"), (2, "#[cfg(test)]"), (3, "#[path = \"x.rs\"]"), (4, "mod x;"), (5, "b"), (10, "c")]);
    assert_eq!(code_lines("agent/src/pull/tests.rs", text).count(), 0);
}
