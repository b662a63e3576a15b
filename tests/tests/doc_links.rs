//! No file of the repository points at a path outside it (issue 17: several pointed at
//! `../shared/DESIGN.md`, which a clone does not have), and every relative Markdown link
//! names a file or directory that exists. Checked over the files git tracks.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use hostctl_tests::workspace_root;

/// `path` (relative to `dir`, both relative to the root) with `.` and `..` resolved; `None`
/// when it climbs above the root.
fn resolve(dir: &Path, path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in dir.join(path).components() {
        match part {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Some(Path::new("/").join(path)),
        }
    }
    Some(out)
}

/// What is wrong with one file's references: `file:line: message` each. `exists` says
/// whether a root-relative path exists.
fn problems(file: &str, text: &str, exists: &dyn Fn(&Path) -> bool) -> Vec<String> {
    let dir = Path::new(file).parent().unwrap_or(Path::new(""));
    let mut found = Vec::new();
    let mut in_fence = false;
    for (n, line) in text.lines().enumerate() {
        // Any `../…` that climbs out of the repository, in any kind of file.
        for (i, _) in line.match_indices("../") {
            let before = line[..i].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '.' || c == '/' || c == '_' || c == '-') {
                continue; // the middle of a longer path; its start is checked
            }
            let rest = &line[i..];
            let end = rest.find(|c: char| c.is_whitespace() || "`'\")]>,;*".contains(c)).unwrap_or(rest.len());
            let path = &rest[..end];
            if resolve(dir, path).is_none() {
                found.push(format!("{file}:{}: `{path}` points outside the repository", n + 1));
            }
        }
        // Relative Markdown links must name something that is there (code is not a link).
        if !file.ends_with(".md") {
            continue;
        }
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        if in_fence {
            continue;
        }
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        for (i, _) in prose.match_indices("](") {
            let rest = &prose[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = rest[..end].split('#').next().unwrap_or("");
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            match resolve(dir, target) {
                Some(p) if p.is_absolute() || exists(&p) => {}
                Some(p) => found.push(format!("{file}:{}: link to `{target}`: {} does not exist", n + 1, p.display())),
                None => {} // reported above as pointing outside
            }
        }
    }
    found
}

#[test]
fn no_file_points_outside_the_repository_and_markdown_links_resolve() {
    let root = workspace_root();
    let out = Command::new("git").arg("-C").arg(&root).args(["ls-files", "-z"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let files = String::from_utf8(out.stdout).unwrap();
    let text_kinds = [".md", ".rs", ".nix", ".sh", ".yaml", ".yml", ".toml", ".txt"];
    let exists = |p: &Path| root.join(p).exists();
    let mut found = Vec::new();
    for file in files.split('\0').filter(|f| text_kinds.iter().any(|k| f.ends_with(k))) {
        if file == "tests/tests/doc_links.rs" {
            continue; // its own examples
        }
        let Ok(text) = std::fs::read_to_string(root.join(file)) else { continue };
        found.extend(problems(file, &text, &exists));
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_check_reports_what_breaks_it() {
    let exists = |p: &Path| p == Path::new("docs/DESIGN.md");
    let text = "see [design](../../shared/DESIGN.md) and [ok](DESIGN.md)\n\
                [gone](MISSING.md), [web](https://example.org/x), [anchor](#top)\n\
                include ../../outside.txt but not lib/../docs/x\n\
                code is no link: `[a-z]([a-z])?`\n```\n[in](a fence)\n```\n";
    assert_eq!(
        problems("docs/NOTES.md", text, &exists),
        [
            "docs/NOTES.md:1: `../../shared/DESIGN.md` points outside the repository",
            "docs/NOTES.md:2: link to `MISSING.md`: docs/MISSING.md does not exist",
            "docs/NOTES.md:3: `../../outside.txt` points outside the repository",
        ]
    );
    assert_eq!(
        problems("README.md", "[d](../shared/DESIGN.md)", &exists),
        ["README.md:1: `../shared/DESIGN.md` points outside the repository"]
    );
    assert!(problems("a/b/c.rs", "\"../../x\"", &exists).is_empty(), "a/b/../../x is the root's x");
    assert_eq!(problems("a.rs", "\"../x\"", &exists), ["a.rs:1: `../x` points outside the repository"]);
}
