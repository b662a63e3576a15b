//! Incremental evaluation end to end: real Nix 2.8, real strace, real git. After each
//! commit, which hosts hostctl evaluated is seen from outside (a `nix` first on PATH logs
//! the host of every `nix eval`), and every result is compared with a fresh
//! `--no-eval-cache` evaluation: a reused result that is stale fails here. Lookups are not
//! traced, so a commit adding, deleting or retyping any path evaluates every host.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code throughout (helpers too): a failed step must fail the test"
)]

use std::ffi::OsString;
use std::path::PathBuf;

use hostctl_tests::{git, watching_nix, HostctlRun, TestFleet};
use serde_json::Value;

/// A test fleet whose `hostctl` runs see a `nix` that logs each evaluated host.
struct Watched {
    fleet: TestFleet,
    path: OsString,
    log: PathBuf,
    /// `store = ...` for a private store, if the test uses one.
    store: Option<String>,
}

impl Watched {
    fn new(fleet: TestFleet) -> Self {
        let (path, log) = watching_nix(fleet.tmp.path());
        Self { fleet, path, log, store: None }
    }

    /// Uses a store of its own under the fleet's temp dir (a `local?root=` store: Nix's
    /// copy of the source is then not at its logical path).
    fn with_private_store(mut self) -> Self {
        let store = format!("local?root={}", self.fleet.tmp.path().join("store").display());
        let update = self.fleet.nix(&["--store", &store, "flake", "update"]);
        assert!(update.status.success(), "{}", String::from_utf8_lossy(&update.stderr));
        self.store = Some(format!("store = {store}"));
        self
    }

    fn run(&self, args: &[&str]) -> HostctlRun {
        let extra: Vec<&str> = self.store.iter().map(String::as_str).collect();
        let mut cmd = self.fleet.hostctl_command(args, &extra);
        HostctlRun::from(cmd.env("PATH", &self.path).env("RUST_LOG", "info").output().unwrap())
    }

    /// `hostctl --json eval` -> (hosts Nix evaluated, host -> drv path). Every result is
    /// checked against a fresh evaluation that uses no cache and no record.
    fn eval(&self) -> (Vec<String>, Vec<(String, String)>) {
        let before = self.evaluated().len();
        let run = self.run(&["--json", "eval"]);
        run.expect_code(0);
        let mut hosts = self.evaluated()[before..].to_vec();
        hosts.sort();
        let drvs = drvs(&run.json());
        let fresh = self.run(&["--json", "--no-eval-cache", "eval"]);
        fresh.expect_code(0);
        assert_eq!(drvs, self::drvs(&fresh.json()), "every result equals a fresh evaluation\n{}", run.stderr);
        (hosts, drvs)
    }

    fn evaluated(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).map_or_else(|_| Vec::new(), |t| t.lines().map(str::to_owned).collect())
    }

    fn commit(&self, message: &str) {
        self.fleet.commit(message);
    }

    fn records(&self) -> Vec<PathBuf> {
        let dir = self.fleet.tmp.path().join("cache/eval");
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(dir).map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect()).unwrap_or_default();
        files.retain(|f| f.to_string_lossy().ends_with(".reads.json"));
        files
    }
}

fn drvs(v: &Value) -> Vec<(String, String)> {
    let hosts = v["hosts"].as_object().unwrap();
    hosts.iter().map(|(h, e)| (h.clone(), e["drv_path"].as_str().unwrap_or("-").to_owned())).collect()
}

fn drv<'a>(drvs: &'a [(String, String)], host: &str) -> &'a str {
    &drvs.iter().find(|(h, _)| h == host).unwrap().1
}

const ALL: [&str; 4] = ["arm1", "db1", "web1", "web2"];

#[test]
fn a_commit_touching_one_host_reevaluates_only_that_host() {
    let fleet = TestFleet::new();
    fleet.write("README.md", "notes\n");
    fleet.commit("docs");
    let w = Watched::new(fleet).with_private_store();
    let (evaluated, first) = w.eval();
    assert_eq!(evaluated, ALL, "nothing recorded yet: every host");
    assert_eq!(w.records().len(), 4, "one record per host");

    let web1 = w.fleet.read("hosts/web1.nix").replace("web frontend", "changed frontend");
    w.fleet.write("hosts/web1.nix", &web1);
    w.commit("change web1");
    let (evaluated, second) = w.eval();
    assert_eq!(evaluated, ["web1"]);
    assert_ne!(drv(&second, "web1"), drv(&first, "web1"));
    for host in ["arm1", "db1", "web2"] {
        assert_eq!(drv(&second, host), drv(&first, host), "{host} reused");
    }
    let (evaluated, _) = w.eval();
    assert!(evaluated.is_empty(), "the reused results were cached for this commit: {evaluated:?}");

    // The records moved forward: the next commit is compared with this one.
    let web2 = w.fleet.read("hosts/web2.nix").replace("roles", "# a comment\n  roles");
    w.fleet.write("hosts/web2.nix", &web2);
    w.commit("touch web2");
    assert_eq!(w.eval().0, ["web2"]);
    // A file no host reads.
    w.fleet.write("README.md", "other notes\n");
    w.commit("docs");
    assert!(w.eval().0.is_empty(), "a file nothing read");
}

#[test]
fn a_file_reached_only_through_read_file_reevaluates_its_host() {
    let fleet = TestFleet::new();
    let db1 = fleet.read("hosts/db1.nix");
    let db1 = db1.replacen("motd = ", "motd = builtins.readFile ../motd/db1.txt + ", 1);
    fleet.write("hosts/db1.nix", &db1);
    fleet.write("motd/db1.txt", "db1 says hello\n");
    fleet.commit("db1's motd from a file");
    let w = Watched::new(fleet);
    let (_, first) = w.eval();

    w.fleet.write("motd/db1.txt", "db1 says goodbye\n");
    w.commit("new motd");
    let (evaluated, second) = w.eval();
    assert_eq!(evaluated, ["db1"], "only Nix's readFile reaches motd/db1.txt");
    assert_ne!(drv(&second, "db1"), drv(&first, "db1"));
}

#[test]
fn a_new_file_in_a_directory_read_with_read_dir_reevaluates_every_host() {
    let fleet = TestFleet::new();
    let web2 = fleet.read("hosts/web2.nix").replacen(
        "motd = ",
        "motd = builtins.concatStringsSep \",\" (builtins.attrNames (builtins.readDir ../web2.d)) + ",
        1,
    );
    fleet.write("hosts/web2.nix", &web2);
    fleet.write("web2.d/a", "a\n");
    fleet.commit("web2 lists web2.d");
    let w = Watched::new(fleet);
    let (_, first) = w.eval();

    w.fleet.write("web2.d/a", "other content, same name\n");
    w.commit("content only");
    assert!(w.eval().0.is_empty(), "readDir sees names and types, not content");

    w.fleet.write("web2.d/b", "b\n");
    w.commit("a new file in web2.d");
    let (evaluated, second) = w.eval();
    assert_eq!(evaluated, ALL, "a path was added");
    assert_ne!(drv(&second, "web2"), drv(&first, "web2"));
}

#[test]
fn a_file_that_path_exists_did_not_find_reevaluates_every_host_once_added() {
    let fleet = TestFleet::new();
    let arm1 = fleet.read("hosts/arm1.nix").replacen(
        "motd = ",
        "motd = (if builtins.pathExists ../arm1-flag then \"flagged \" else \"plain \") + ",
        1,
    );
    fleet.write("hosts/arm1.nix", &arm1);
    fleet.commit("arm1 looks for a flag");
    let w = Watched::new(fleet);
    let (_, first) = w.eval();

    w.fleet.write("arm1-flag", "");
    w.commit("the flag");
    let (evaluated, second) = w.eval();
    assert_eq!(evaluated, ALL, "a path was added: the failed lookup was not traced");
    assert_ne!(drv(&second, "arm1"), drv(&first, "arm1"));
}

#[test]
fn a_file_path_exists_found_is_reused_when_its_content_changes_but_not_when_deleted() {
    let fleet = TestFleet::new();
    let arm1 = fleet.read("hosts/arm1.nix").replacen(
        "motd = ",
        "motd = (if builtins.pathExists ../arm1-flag then \"flagged \" else \"plain \") + ",
        1,
    );
    fleet.write("hosts/arm1.nix", &arm1);
    fleet.write("arm1-flag", "looked up, never read\n");
    fleet.commit("arm1 looks for a flag that exists");
    let w = Watched::new(fleet);
    let (_, first) = w.eval();

    w.fleet.write("arm1-flag", "other content\n");
    w.commit("the flag's content");
    assert!(w.eval().0.is_empty(), "pathExists does not see content");

    std::fs::remove_file(w.fleet.dir.join("arm1-flag")).unwrap();
    w.commit("no flag");
    let (evaluated, second) = w.eval();
    assert_eq!(evaluated, ALL, "a path was deleted");
    assert_ne!(drv(&second, "arm1"), drv(&first, "arm1"));
}

#[test]
fn a_changed_input_reevaluates_every_host() {
    let w = Watched::new(TestFleet::new());
    let (_, first) = w.eval();
    // A nixpkgs bump: the input's content and its flake.lock entry change, nothing else.
    let nixpkgs = w.fleet.read("nixpkgs/flake.nix").replace("24.05-example", "24.05-bumped");
    w.fleet.write("nixpkgs/flake.nix", &nixpkgs);
    let lock = w.fleet.nix(&["flake", "lock", "--update-input", "nixpkgs"]);
    assert!(lock.status.success(), "{}", String::from_utf8_lossy(&lock.stderr));
    assert!(git(&w.fleet.dir, &["status", "--porcelain"]).contains("flake.lock"), "the lock changed");
    w.commit("bump nixpkgs");
    let (evaluated, second) = w.eval();
    assert_eq!(evaluated, ALL);
    for host in ALL {
        assert_ne!(drv(&second, host), drv(&first, host), "{host}");
    }
}

#[test]
fn a_corrupt_or_missing_record_means_a_full_evaluation() {
    let w = Watched::new(TestFleet::new());
    w.eval();
    let records = w.records();
    assert_eq!(records.len(), 4);
    for (i, record) in records.iter().enumerate() {
        if i == 0 {
            std::fs::remove_file(record).unwrap();
        } else {
            std::fs::write(record, b"{\"format\": 1, \"read\": [").unwrap();
        }
    }
    w.fleet.write("README.md", "nothing reads this\n");
    w.commit("unrelated");
    assert_eq!(w.eval().0, ALL, "no usable record: every host");
    assert_eq!(w.records().len(), 4, "written again");
    w.fleet.write("README.md", "still nothing\n");
    w.commit("unrelated again");
    assert!(w.eval().0.is_empty());
}

#[test]
fn a_host_whose_system_holds_the_commit_id_is_evaluated_at_every_commit() {
    let fleet = TestFleet::new();
    // system.configurationRevision-style: db1's motd names the commit.
    let flake = fleet.read("flake.nix").replace(
        "// import (./hosts + \"/${name}.nix\"))",
        "// import (./hosts + \"/${name}.nix\") // (if name == \"db1\" then { motd = \"db1 at ${self.rev}\"; } else { }))",
    );
    assert_ne!(flake, fleet.read("flake.nix"));
    fleet.write("flake.nix", &flake);
    fleet.write("README.md", "notes\n");
    fleet.commit("db1 shows its revision");
    let w = Watched::new(fleet);
    let (_, first) = w.eval();
    assert_eq!(w.records().len(), 3, "db1's evaluation is not recorded");

    w.fleet.write("README.md", "nothing reads this\n");
    w.commit("unrelated");
    let (evaluated, second) = w.eval();
    assert_eq!(evaluated, ["db1"], "its result depends on the commit itself");
    assert_ne!(drv(&second, "db1"), drv(&first, "db1"), "a new revision in its motd");
}

#[test]
fn no_eval_cache_and_dirty_trees_record_nothing() {
    let w = Watched::new(TestFleet::new());
    w.run(&["--json", "--no-eval-cache", "eval"]).expect_code(0);
    assert!(w.records().is_empty(), "--no-eval-cache bypasses records too");
    w.fleet.write("hosts/web1.nix", &w.fleet.read("hosts/web1.nix").replace("web frontend", "dirty"));
    w.run(&["--json", "eval"]).expect_code(0);
    assert!(w.records().is_empty(), "a dirty tree is never recorded");
}

#[test]
fn a_flake_in_a_subdirectory_is_compared_over_the_whole_repository() {
    let fleet = TestFleet::new();
    // The repository becomes the temp dir; the flake lives in its `fleet/` directory,
    // and Nix's copy of the source is the whole repository.
    std::fs::remove_dir_all(fleet.dir.join(".git")).unwrap();
    let root = fleet.tmp.path().to_path_buf();
    let root = root.as_path();
    git(root, &["init", "-q", "-b", "main"]);
    std::fs::write(root.join("outside.txt"), "not in the flake directory\n").unwrap();
    git(root, &["add", "-A", "fleet", "outside.txt"]);
    git(root, &["commit", "-q", "-m", "a repository with the fleet in a subdirectory"]);
    let w = Watched::new(fleet);
    let update = w.fleet.nix(&["flake", "update"]);
    assert!(update.status.success(), "{}", String::from_utf8_lossy(&update.stderr));
    assert_eq!(git(root, &["status", "--porcelain", "fleet"]), "", "the lock is unchanged");
    let (evaluated, _) = w.eval();
    assert_eq!(evaluated, ALL);

    let web2 = w.fleet.read("hosts/web2.nix").replace("roles", "# a comment\n  roles");
    w.fleet.write("hosts/web2.nix", &web2);
    std::fs::write(root.join("outside.txt"), "changed\n").unwrap();
    git(root, &["add", "-A", "fleet", "outside.txt"]);
    git(root, &["commit", "-q", "-m", "web2 and a file outside the flake"]);
    assert_eq!(w.eval().0, ["web2"]);
}

#[test]
fn without_a_working_strace_evaluation_is_plain_and_nothing_is_recorded() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut w = Watched::new(TestFleet::new());
    // An strace that cannot trace, as in a container without ptrace.
    let bin = w.fleet.tmp.path().join("no-ptrace-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script =
        "#!/bin/sh\necho 'strace: test_ptrace_get_syscall_info: PTRACE_TRACEME: Operation not permitted' >&2\nexit 1\n";
    std::fs::write(bin.join("strace"), script).unwrap();
    std::fs::set_permissions(bin.join("strace"), std::fs::Permissions::from_mode(0o755)).unwrap();
    w.path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&w.path))).unwrap();
    let (evaluated, _) = w.eval();
    assert_eq!(evaluated, ALL);
    assert!(w.records().is_empty());
    w.fleet.write("README.md", "nothing reads this\n");
    w.commit("unrelated");
    assert_eq!(w.eval().0, ALL, "no record: every host, evaluated plainly");
    // Said on stderr without -v: the operator learns why every commit evaluates everything.
    w.fleet.write("README.md", "again\n");
    w.commit("again");
    let run = w.run(&["eval", "--on", "web1"]);
    run.expect_code(0);
    let warning = "strace cannot trace here (ptrace not permitted?): incremental evaluation is off";
    assert_eq!(run.stderr.matches(warning).count(), 1, "{}", run.stderr);
}
