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
