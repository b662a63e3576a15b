//! An agent that answers, but not well, is not `unreachable` (issue 17, truthful status):
//! a real agent that cannot read its profile answers HTTP 500, and an impostor pinned as
//! web2's agent answers 200 with a page that is not API v1's JSON. `status` (human and
//! `--json`), `history` and `apply` say what happened: the HTTP status and the agent's
//! own text, or `bad answer` and what was wrong with it.

use std::net::SocketAddr;

use hostctl_tests::identity::test_identity_public;
use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::mitm::Mitm;
use serde_json::Value;

/// web1 at its agent (pinned to it), web2 at `web2_addr` pinned to `web2_key`.
fn inventory(live: &LiveFleet, web2_addr: &str, web2_key: &str) {
    let mut yaml = String::from("flake: .\ndefaults:\n  port: 7420\n  mode: switch\n  confirm_timeout: 30s\nhosts:\n");
    for host in &live.hosts {
        let (address, key) = match host.name.as_str() {
            "web2" => (web2_addr.to_owned(), web2_key.to_owned()),
            name => (host.addr.to_string(), test_identity_public(name).to_string()),
        };
        yaml.push_str(&format!(
            "  {}:\n    address: {address}\n    system: x86_64-linux\n    agent_key: {key}\n",
            host.name
        ));
    }
    live.fleet.write("fleet.yaml", &yaml);
    live.fleet.commit_allow_empty("inventory");
}

fn host<'a>(v: &'a Value, name: &str) -> &'a Value {
    &v["hosts"][name]
}

#[test]
fn an_agent_answering_an_error_or_a_bad_answer_is_not_called_unreachable() {
    let live = LiveFleet::start(&["web1", "web2"]);
    // web1's profile link is a plain file: its agent cannot read what it runs (HTTP 500).
    let profiles = live.host("web1").root.join("nix/var/nix/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(profiles.join("system"), "not a link").unwrap();
    // web2: something on its address with the pinned identity that is no agent.
    let web2 = live.host("web2");
    let page = "<html>it works</html>";
    let answer = format!("HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n{page}", page.len());
    let impostor = Mitm::answering(SocketAddr::from((web2.controller_addr, web2.port)), "web2", &answer);
    inventory(&live, &web2.controller_addr.to_string(), &impostor.identity.to_string());

    let json = live.hostctl(&["--json", "status", "--no-drift"]);
    json.expect_code(1);
    let v = json.json();
    let web1 = host(&v, "web1");
    assert_eq!(
        (web1["result"].as_str(), web1["reachable"].as_bool(), web1["refused"].as_bool()),
        (Some("failed"), Some(true), Some(false)),
        "{web1}"
    );
    let error = web1["error"].as_str().unwrap();
    assert!(
        error.starts_with("web1: GET /v1/status: HTTP 500") && error.contains("cannot read the profile"),
        "{error}"
    );
    let web2 = host(&v, "web2");
    assert_eq!((web2["reachable"].as_bool(), web2["refused"].as_bool()), (Some(true), Some(false)), "{web2}");
    let error = web2["error"].as_str().unwrap();
    assert!(
        error.starts_with("web2: GET /v1/status: HTTP 200: bad answer: ") && error.contains("<html>it works"),
        "{error}"
    );

    let human = live.hostctl(&["status", "--no-drift"]);
    human.expect_code(1);
    assert!(human.stdout.contains("web1  failed     HTTP 500\n"), "{}", human.stdout);
    assert!(human.stdout.contains("web2  failed     bad answer\n"), "{}", human.stdout);
    assert!(!human.stdout.contains("unreachable"), "{}", human.stdout);

    let history = live.hostctl(&["history", "web2"]);
    history.expect_code(1);
    assert!(history.stdout.contains("web2  failed     bad answer\n"), "{}", history.stdout);

    let apply = live.hostctl(&["--json", "apply", "--on", "web1"]);
    apply.expect_code(1);
    let web1 = host(&apply.json(), "web1").clone();
    assert_eq!(web1["step"], "connect", "{web1}");
    assert!(web1["error"].as_str().unwrap().contains("HTTP 500"), "{web1}");
}

/// An agent of another version than this hostctl (after an upgrade of one side) answers
/// normally, and `status` says so: its version in `--json`, a `warning:` line in human
/// output. The agent is this build with another version in its stamp (tests/src/vm/upgrade.rs).
#[test]
fn status_warns_about_an_agent_of_another_version() {
    let mut live = LiveFleet::start(&["web1"]);
    let same = live.hostctl(&["status", "--no-drift"]);
    same.expect_code(0);
    assert!(!same.stdout.contains("warning:"), "{}", same.stdout);

    let agent = live.fleet.tmp.path().join("older/hostctl-agent");
    hostctl_tests::vm::upgrade::stamped_agent(&agent, "0.0.1-older");
    let web1 = live.host_mut("web1");
    web1.stop_agent();
    let config = web1.root.join("etc/agent.yaml").display().to_string();
    web1.start_process(&[agent.to_str().unwrap(), "serve", "--config", &config]);

    let json = live.hostctl(&["--json", "status", "--no-drift"]);
    json.expect_code(0);
    assert_eq!(host(&json.json(), "web1")["agent_version"], "0.0.1-older", "{}", json.json());
    let human = live.hostctl(&["status", "--no-drift"]);
    human.expect_code(0);
    assert!(
        human.stdout.contains("warning: the agent is hostctl-agent 0.0.1-older, this hostctl is "),
        "{}",
        human.stdout
    );
}
