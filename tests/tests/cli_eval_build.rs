//! `hostctl eval` and `hostctl build` on a copy of the example fleet: real Nix, real git.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code throughout (helpers too): a failed step must fail the test"
)]

use hostctl_tests::{git, TestFleet};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn hosts(v: &Value) -> Vec<String> {
    v["hosts"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

#[test]
fn eval_reports_every_host_with_rev_lock_and_drv() {
    let fleet = TestFleet::new();
    let run = fleet.hostctl(&["--json", "eval"]);
    run.expect_code(0);
    let v = run.json();
    assert_eq!(hosts(&v), ["arm1", "db1", "web1", "web2"]);
    let head = git(&fleet.dir, &["rev-parse", "HEAD"]).trim().to_owned();
    let lock = hex::encode(Sha256::digest(fleet.read("flake.lock").as_bytes()));
    for (name, host) in v["hosts"].as_object().unwrap() {
        assert_eq!(host["result"], "evaluated", "{name}: {host}");
        assert_eq!(host["rev"], head.as_str(), "{name}");
        assert_eq!(host["lock"], lock.as_str(), "{name}");
        let drv = host["drv_path"].as_str().unwrap();
        assert!(
            drv.starts_with("/nix/store/") && drv.ends_with(&format!("nixos-system-{name}-24.05-example.drv")),
            "{drv}"
        );
        assert!(std::path::Path::new(drv).exists(), "{drv} was written by the evaluation");
        assert!(host["error"].is_null());
    }
    assert_eq!(v["hosts"]["arm1"]["system"], "aarch64-linux");
    assert_eq!(v["hosts"]["web1"]["system"], "x86_64-linux");
}

#[test]
fn human_output_is_a_line_per_host() {
    let fleet = TestFleet::new();
    let run = fleet.hostctl(&["eval", "--on", "web1"]);
    run.expect_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stdout);
    assert!(lines[0].starts_with("web1  evaluated  /nix/store/"), "{}", lines[0]);
}

#[test]
fn selectors_pick_names_globs_and_tags() {
    let fleet = TestFleet::new();
    let pick = |args: &[&str]| {
        let mut all = vec!["--json", "eval"];
        all.extend_from_slice(args);
        let run = fleet.hostctl(&all);
        run.expect_code(0);
        hosts(&run.json())
    };
    assert_eq!(pick(&["--on", "web*"]), ["web1", "web2"]);
    assert_eq!(pick(&["--on", "@eu"]), ["db1", "web1"]);
    assert_eq!(pick(&["--on", "@arm", "--on", "db1"]), ["arm1", "db1"]);
    assert_eq!(pick(&["--on", "web?"]), ["web1", "web2"]);
    assert_eq!(pick(&["--on", "web1,db1"]), ["db1", "web1"]);
    assert_eq!(pick(&["--on", "@e*"]), ["arm1", "db1", "web1"]);
    assert_eq!(pick(&["--on", "@us,arm1", "--on", "db?"]), ["arm1", "db1", "web2"]);
}

#[test]
fn a_selector_that_matches_nothing_is_bad_input() {
    let fleet = TestFleet::new();
    let file = fleet.path("fleet.yaml").display().to_string();
    for (sel, msg) in [
        ("wbe*", format!("--on wbe*: matches no host; hosts in {file}: arm1, db1, web1, web2")),
        ("wbe1", format!("--on wbe1: matches no host (did you mean web1?); hosts in {file}: arm1, db1, web1, web2")),
        ("db1,dc1", format!("--on dc1: matches no host (did you mean db1?); hosts in {file}: arm1, db1, web1, web2")),
        ("@asia", format!("--on @asia: no host has this tag; tags in {file}: arm, db, edge, eu, us, web")),
        (
            "@ue",
            format!("--on @ue: no host has this tag (did you mean @eu?); tags in {file}: arm, db, edge, eu, us, web"),
        ),
        ("@db-*", format!("--on @db-*: no host has this tag; tags in {file}: arm, db, edge, eu, us, web")),
    ] {
        let run = fleet.hostctl(&["eval", "--on", "web1", "--on", sel]);
        run.expect_code(2);
        assert_eq!(run.stderr, format!("error: {msg}\n"), "{sel}");
        assert!(run.stdout.is_empty(), "nothing was evaluated: {}", run.stdout);
    }
}

#[test]
fn one_hosts_evaluation_error_does_not_stop_the_others() {
    let fleet = TestFleet::new();
    let web2 = fleet.read("hosts/web2.nix").replace("\"nginx\"", "\"nginx\" \"nope\"");
    fleet.write("hosts/web2.nix", &web2);
    fleet.write("hosts/db1.nix", "{ system = \"x86_64-linux\"; roles = [ ; }\n");
    fleet.commit("break web2 and db1");
    let run = fleet.hostctl(&["--json", "eval"]);
    run.expect_code(1);
    let v = run.json();
    assert_eq!(v["hosts"]["web1"]["result"], "evaluated");
    assert_eq!(v["hosts"]["arm1"]["result"], "evaluated");
    let web2 = &v["hosts"]["web2"];
    assert_eq!(web2["result"], "failed");
    let err = web2["error"].as_str().unwrap();
    assert!(err.starts_with("host web2: evaluation failed"), "{err}");
    assert!(err.contains("unknown role(s) nope"), "Nix's own message is kept: {err}");
    let err = v["hosts"]["db1"]["error"].as_str().unwrap();
    assert!(err.contains("syntax error"), "{err}");
    assert!(err.contains("hosts/db1.nix:1:"), "Nix's position is kept: {err}");
}

#[test]
fn inventory_system_must_match_the_configuration() {
    let fleet = TestFleet::new();
    let yaml = fleet.read("fleet.yaml").replacen("system: x86_64-linux", "system: aarch64-linux", 1);
    fleet.write("fleet.yaml", &yaml);
    fleet.commit("wrong system for web1");
    let run = fleet.hostctl(&["--json", "eval", "--on", "web1"]);
    run.expect_code(1);
    let err = run.json()["hosts"]["web1"]["error"].as_str().unwrap().to_owned();
    assert!(err.contains("says system aarch64-linux, but the configuration evaluates to x86_64-linux"), "{err}");
}

#[test]
fn untracked_files_are_named_in_a_warning_and_a_hint() {
    let fleet = TestFleet::new();
    fleet.write("hosts/web3.nix", "{ system = \"x86_64-linux\"; roles = [ ]; motd = \"new\"; }\n");
    let run = fleet.hostctl(&["--json", "eval"]);
    run.expect_code(0);
    let warning = "is not tracked by git, so Nix does not see it: hosts/web3.nix\n  \
                   (a flake only contains git-tracked files; run `git add` on it if the configuration needs it)";
    assert!(run.stderr.contains("1 file in ") && run.stderr.contains(warning), "{}", run.stderr);
    assert_eq!(hosts(&run.json()).len(), 4, "web3 is invisible to Nix until added");

    // A tracked file that reads an untracked one: Nix says "does not exist".
    let web1 = fleet.read("hosts/web1.nix");
    fleet.write("hosts/web1.nix", &web1.replacen('{', "import ./web1-extra.nix // {", 1));
    fleet.commit("web1 imports web1-extra.nix");
    fleet.write("hosts/web1-extra.nix", "{ }\n");
    let run = fleet.hostctl(&["--json", "eval", "--on", "web1"]);
    run.expect_code(1);
    let err = run.json()["hosts"]["web1"]["error"].as_str().unwrap().to_owned();
    // Nix 2.8 says "getting status of '...': No such file", later Nix "path '...' does not exist".
    // Nix's message is kept, naming the file in the working tree rather than in the store.
    let extra = fleet.dir.canonicalize().unwrap().join("hosts/web1-extra.nix");
    assert!(err.contains(&format!("'{}'", extra.display())), "{err}");
    assert!(err.contains("hint: hosts/web1-extra.nix is on disk but not tracked by git"), "{err}");
}

#[test]
fn dirty_tree_rev_is_marked() {
    let fleet = TestFleet::new();
    let head = git(&fleet.dir, &["rev-parse", "HEAD"]).trim().to_owned();
    let web1 = fleet.read("hosts/web1.nix").replace("web frontend", "changed frontend");
    fleet.write("hosts/web1.nix", &web1);
    let run = fleet.hostctl(&["--json", "eval", "--on", "web1"]);
    run.expect_code(0);
    assert_eq!(run.json()["hosts"]["web1"]["rev"], format!("{head}-dirty"));
}

#[test]
fn build_reports_store_paths_and_attributes_failures() {
    let fleet = TestFleet::new();
    // Changes only this run makes, so both toplevels are new to the store: arm1's
    // platform error aborts a shared `nix build`, and web1 must still get built.
    let nonce = format!("{}-{:?}", std::process::id(), std::time::SystemTime::now());
    for host in ["web1", "arm1"] {
        let file = format!("hosts/{host}.nix");
        let text = fleet.read(&file).replacen("motd = \"", &format!("motd = \"{nonce} "), 1);
        fleet.write(&file, &text);
    }
    fleet.commit("a web1 and an arm1 nobody has built");
    let run = fleet.hostctl(&["--json", "build"]);
    run.expect_code(1);
    let v = run.json();
    for name in ["web1", "web2", "db1"] {
        let host = &v["hosts"][name];
        assert_eq!(host["result"], "built", "{name}: {host}");
        let out = host["toplevel"].as_str().unwrap();
        let stc = std::path::Path::new(out).join("bin/switch-to-configuration");
        assert!(stc.exists(), "{} exists", stc.display());
    }
    let arm1 = &v["hosts"]["arm1"];
    assert_eq!(arm1["result"], "failed");
    let err = arm1["error"].as_str().unwrap();
    assert!(err.contains("a 'aarch64-linux'") && err.contains("is required to build"), "{err}");
    assert!(!err.contains("nixos-system-web1"), "only arm1's part of Nix's output: {err}");
}

#[test]
fn build_of_buildable_hosts_succeeds() {
    let fleet = TestFleet::new();
    let run = fleet.hostctl(&["--json", "build", "--on", "@web"]);
    run.expect_code(0);
    let v = run.json();
    assert_eq!(hosts(&v), ["web1", "web2"]);
    let eval = fleet.hostctl(&["--json", "eval", "--on", "@web"]).json();
    for name in ["web1", "web2"] {
        assert_eq!(v["hosts"][name]["toplevel"], eval["hosts"][name]["toplevel"], "build and eval agree");
    }
}

fn evals(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |t| t.lines().count())
}

#[test]
fn a_clean_commit_is_evaluated_once_then_served_from_the_cache() {
    let fleet = TestFleet::new();
    let (path, log) = hostctl_tests::watching_nix(fleet.tmp.path());
    // A private store, so deleting a .drv below cannot disturb other tests.
    let store = format!("local?root={}", fleet.tmp.path().join("store").display());
    let store_setting = format!("store = {store}");
    // Nix 2.8 fetches relative path: inputs only from the store; `flake update` puts
    // them there and leaves the lock as it is.
    let update = fleet.nix(&["--store", &store, "flake", "update"]);
    assert!(update.status.success(), "{}", String::from_utf8_lossy(&update.stderr));
    assert_eq!(git(&fleet.dir, &["status", "--porcelain"]), "", "the lock is unchanged");
    let eval = |args: &[&str]| {
        let mut cmd = fleet.hostctl_command(args, &[store_setting.as_str()]);
        let run = hostctl_tests::HostctlRun::from(cmd.env("PATH", &path).output().unwrap());
        run.expect_code(0);
        run.json()
    };
    let first = eval(&["--json", "eval"]);
    assert_eq!(evals(&log), 4, "one evaluation per host");
    let second = eval(&["--json", "eval"]);
    assert_eq!(evals(&log), 4, "nothing evaluated again on the unchanged commit");
    assert_eq!(first, second, "the cached results are the evaluated ones");
    eval(&["--json", "--no-eval-cache", "eval", "--on", "web1"]);
    assert_eq!(evals(&log), 5, "--no-eval-cache evaluates");

    // A dirty tree is never served from (or written to) the cache.
    let web1 = fleet.read("hosts/web1.nix").replace("web frontend", "changed frontend");
    fleet.write("hosts/web1.nix", &web1);
    let dirty = eval(&["--json", "eval", "--on", "web1"]);
    assert_ne!(dirty["hosts"]["web1"]["drv_path"], first["hosts"]["web1"]["drv_path"]);
    eval(&["--json", "eval", "--on", "web1"]);
    assert_eq!(evals(&log), 7, "a dirty tree is evaluated every time");

    // The change committed: a new revision misses, then hits.
    git(&fleet.dir, &["commit", "-qam", "change web1"]);
    let committed = eval(&["--json", "eval"]);
    assert_eq!(evals(&log), 8, "a new commit evaluates the host whose file changed (tests/tests/incremental.rs)");
    assert_eq!(committed["hosts"]["web1"]["drv_path"], dirty["hosts"]["web1"]["drv_path"]);
    eval(&["--json", "eval"]);
    assert_eq!(evals(&log), 8);

    // A collected .drv is not trusted: that host is evaluated again.
    let drv = committed["hosts"]["db1"]["drv_path"].as_str().unwrap().to_owned();
    let in_store = |p: &str| fleet.tmp.path().join("store").join(p.trim_start_matches('/'));
    assert!(in_store(&drv).exists());
    let del = std::process::Command::new("nix-store").args(["--store", &store, "--delete", &drv]).output().unwrap();
    assert!(del.status.success(), "nix-store --delete {drv}: {}", String::from_utf8_lossy(&del.stderr));
    assert!(!in_store(&drv).exists());
    let again = eval(&["--json", "eval"]);
    assert_eq!(evals(&log), 9, "only db1, whose .drv was collected");
    assert_eq!(again["hosts"]["db1"]["drv_path"], drv.as_str());
    assert!(in_store(&drv).exists(), "evaluated again, so written again");
}
