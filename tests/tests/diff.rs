//! `hostctl diff` against real agents on simulated hosts: what a change would do to each
//! host's closure, before anything is applied, and that it changes nothing.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code throughout (helpers too): a failed step must fail the test"
)]

use hostctl_tests::livefleet::LiveFleet;
use serde_json::Value;

fn package<'a>(host: &'a Value, name: &str) -> Option<&'a Value> {
    host["changes"].as_array().unwrap().iter().find(|c| c["package"] == name)
}

#[test]
fn diff_shows_package_changes_per_host_and_changes_nothing() {
    let live = LiveFleet::start(&["web1", "db1"]);
    live.hostctl(&["--json", "apply", "--on", "web1"]).expect_code(0);
    let running = live.host("web1").current_system();

    // web1 gains the postgresql role; db1 was never deployed.
    live.fleet.write(
        "hosts/web1.nix",
        "{ system = \"x86_64-linux\"; roles = [ \"nginx\" \"postgresql\" ]; motd = \"web1 + db\"; }\n",
    );
    live.fleet.commit("web1 gets postgresql");
    let run = live.hostctl(&["--json", "diff"]);
    run.expect_code(0);
    let v = run.json();
    let web1 = &v["hosts"]["web1"];
    assert_eq!(web1["result"], "ok", "{web1}");
    assert_eq!(web1["running"], running.as_str());
    let added = package(web1, "hostctl-example-role-postgresql").unwrap_or_else(|| panic!("{web1}"));
    assert_eq!((added["old"].clone(), added["new"].clone()), (serde_json::json!([]), serde_json::json!([""])));
    assert!(added["size_delta"].as_i64().unwrap() > 0);
    assert!(package(web1, "hostctl-example-role-nginx").is_none(), "unchanged packages are not listed");
    assert!(web1["closure_size_delta"].as_i64().unwrap() > 0);
    let db1 = &v["hosts"]["db1"];
    assert_eq!((db1["result"].as_str(), db1["running"].as_str()), (Some("ok"), None), "{db1}");

    // Human output: a line per host and the changes under it.
    let human = live.hostctl(&["diff", "--on", "web1"]);
    human.expect_code(0);
    assert!(human.stdout.contains("hostctl-example-role-postgresql: ∅ → ε, +"), "{}", human.stdout);

    // Nothing was applied.
    assert_eq!(live.host("web1").current_system(), running);
    assert_eq!(live.host("db1").current_system(), "");

    // Once applied, web1 is unchanged.
    live.hostctl(&["--json", "apply", "--on", "web1"]).expect_code(0);
    let again = live.hostctl(&["--json", "diff", "--on", "web1"]);
    again.expect_code(0);
    assert_eq!(again.json()["hosts"]["web1"]["result"], "unchanged");
}

/// `hostctl --key K ARGS` with `answer` on stdin.
fn hostctl_answering(live: &LiveFleet, args: &[&str], answer: &str) -> hostctl_tests::HostctlRun {
    use std::io::Write as _;
    let key = live.key_file.display().to_string();
    let mut all = vec!["--key", key.as_str()];
    all.extend_from_slice(args);
    let mut cmd = live.fleet.hostctl_command(&all, &[]);
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(answer.as_bytes()).unwrap();
    hostctl_tests::HostctlRun::from(child.wait_with_output().unwrap())
}

#[test]
fn apply_diff_shows_the_changes_and_applies_only_when_told_yes() {
    let live = LiveFleet::start(&["web1"]);
    live.hostctl(&["--json", "apply"]).expect_code(0);
    let running = live.host("web1").current_system();
    live.fleet.write("hosts/web1.nix", "{ system = \"x86_64-linux\"; roles = [ \"nginx\" \"postgresql\" ]; }\n");
    live.fleet.commit("web1 gets postgresql");

    for answer in ["n\n", "", "maybe\n"] {
        let run = hostctl_answering(&live, &["--json", "apply", "--diff"], answer);
        run.expect_code(2);
        assert!(run.stderr.contains("hostctl-example-role-postgresql: ∅ → ε"), "{}", run.stderr);
        assert!(run.stderr.contains("Apply to 1 host? [y/N]") && run.stderr.contains("not applied"), "{}", run.stderr);
        assert_eq!(live.host("web1").current_system(), running, "{answer:?} changed nothing");
    }
    let run = hostctl_answering(&live, &["--json", "apply", "--diff"], "y\n");
    run.expect_code(0);
    assert_eq!(run.json()["hosts"]["web1"]["result"], "activated");
    assert_ne!(live.host("web1").current_system(), running);

    live.fleet.write("hosts/web1.nix", "{ system = \"x86_64-linux\"; roles = [ \"nginx\" ]; }\n");
    live.fleet.commit("web1 drops postgresql");
    let run = live.hostctl(&["--json", "apply", "--diff", "--yes"]);
    run.expect_code(0);
    assert!(run.stderr.contains("hostctl-example-role-postgresql: ε → ∅"), "{}", run.stderr);
    assert!(!run.stderr.contains("[y/N]"), "--yes does not ask");
    // --yes without --diff, and --diff with --dry-run, are bad invocations.
    live.hostctl(&["apply", "--yes"]).expect_code(2);
    live.hostctl(&["apply", "--diff", "--dry-run"]).expect_code(2);
}
