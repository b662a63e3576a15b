//! `hostctl check`: inventory vs flake, git state, and the duplicate-nixpkgs lint.

use hostctl_tests::TestFleet;
use serde_json::Value;

fn findings(v: &Value) -> Vec<Value> {
    v["findings"].as_array().cloned().unwrap_or_default()
}

#[test]
fn the_example_fleet_is_clean() {
    let fleet = TestFleet::new();
    let run = fleet.hostctl(&["--json", "check"]);
    run.expect_code(0);
    let v = run.json();
    assert!(findings(&v).is_empty(), "{v}");
    assert_eq!(v["hosts"]["web1"]["result"], "ok");
}

#[test]
fn an_input_without_follows_is_found_with_its_flake_nix_line() {
    let fleet = TestFleet::new();
    let flake = fleet.read("flake.nix");
    let without: String = flake.lines().filter(|l| !l.contains(".follows")).map(|l| format!("{l}\n")).collect();
    assert_ne!(without, flake);
    fleet.write("flake.nix", &without);
    let out = fleet.nix(&["flake", "lock"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    fleet.commit("drop follows");

    let run = fleet.hostctl(&["--json", "check"]);
    run.expect_code(1);
    let found = findings(&run.json());
    let dup: Vec<&Value> = found.iter().filter(|f| f["kind"] == "duplicate-nixpkgs").collect();
    assert_eq!(dup.len(), 1, "{found:?}");
    let line = without.lines().position(|l| l.contains("inputs.fleetlib.url")).unwrap() + 1;
    let flake_nix = fleet.path("flake.nix").canonicalize().unwrap();
    assert_eq!(dup[0]["location"], format!("{}:{line}:10", flake_nix.display()));
    let message = dup[0]["message"].as_str().unwrap();
    assert!(message.contains("input `fleetlib` brings its own nixpkgs"), "{message}");
    assert!(message.contains(r#"inputs.fleetlib.inputs.nixpkgs.follows = "nixpkgs";"#), "{message}");

    let human = fleet.hostctl(&["check"]);
    human.expect_code(1);
    assert!(human.stderr.contains(&format!("flake.nix:{line}:10: error: input `fleetlib`")), "{}", human.stderr);
}

#[test]
fn inventory_and_flake_disagreeing_is_reported() {
    let fleet = TestFleet::new();
    let yaml = fleet.read("fleet.yaml");
    let cut = yaml.find("  db1:").unwrap();
    let end = yaml.find("  arm1:").unwrap();
    let mut edited = format!("{}{}", &yaml[..cut], &yaml[end..]);
    edited = edited.replace("hosts:\n", "hosts:\n  web9:\n    address: 192.0.2.19\n");
    fleet.write("fleet.yaml", &edited);
    fleet.commit("web9 in, db1 out");
    let run = fleet.hostctl(&["--json", "check"]);
    run.expect_code(1);
    let v = run.json();
    assert_eq!(v["hosts"]["web9"]["result"], "failed");
    let found = findings(&v);
    let kinds: Vec<(&str, &str)> =
        found.iter().map(|f| (f["kind"].as_str().unwrap(), f["severity"].as_str().unwrap())).collect();
    assert!(kinds.contains(&("missing-configuration", "error")), "{kinds:?}");
    assert!(kinds.contains(&("unlisted-configuration", "warning")), "{kinds:?}");
    let missing = found.iter().find(|f| f["kind"] == "missing-configuration").unwrap();
    assert!(missing["message"].as_str().unwrap().contains("host web9: nixosConfigurations.web9 does not exist"));
}

#[test]
fn git_state_is_reported_as_warnings() {
    let fleet = TestFleet::new();
    fleet.write("notes.txt", "untracked\n");
    let web1 = fleet.read("hosts/web1.nix").replace("web frontend", "edited frontend");
    fleet.write("hosts/web1.nix", &web1);
    let run = fleet.hostctl(&["--json", "check"]);
    run.expect_code(0);
    let found = findings(&run.json());
    let kinds: Vec<&str> = found.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["untracked-files", "dirty-tree"], "{found:?}");
    assert!(found[0]["message"].as_str().unwrap().contains("notes.txt"));
    assert!(found[1]["message"].as_str().unwrap().contains("hosts/web1.nix"));
}
