//! Issue 14's trusted wire against real agents on simulated hosts: a request signed for
//! one host (or one agent identity) is refused by another, also when a compromised host
//! forwards what it received from its own address; a TLS man-in-the-middle with
//! its own key is refused by the controller at `connect` before anything is sent, and a
//! controller tricked into pinning it gets nothing done; plain HTTP to the API port gets
//! no API answer; and enrollment: first contact refused with the key shown, `enroll`
//! records it, a changed key is refused until `enroll --expect` names it.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use hostctl_tests::http::Request;
use hostctl_tests::identity::{test_identity, test_identity_public};
use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::mitm::Mitm;
use hostctl_tests::simhost::{agent_config, SimHost};

const TIMEOUT: Duration = Duration::from_secs(10);

/// fleet.yaml for the running hosts, each at `address(host)` and pinned to `pin(host)`.
fn inventory(live: &LiveFleet, address: impl Fn(&SimHost) -> String, pin: impl Fn(&SimHost) -> Option<String>) {
    let mut yaml = String::from("flake: .\ndefaults:\n  port: 7420\n  mode: switch\n  confirm_timeout: 30s\nhosts:\n");
    for host in &live.hosts {
        yaml.push_str(&format!("  {}:\n    address: {}\n    system: x86_64-linux\n", host.name, address(host)));
        if let Some(key) = pin(host) {
            yaml.push_str(&format!("    agent_key: {key}\n"));
        }
    }
    live.fleet.write("fleet.yaml", &yaml);
    live.fleet.commit_allow_empty("inventory");
}

#[test]
fn a_request_for_one_host_or_identity_is_refused_by_another_and_changes_nothing() {
    let live = LiveFleet::start(&["web1", "web2"]);
    let key = live.secret_key();
    let body = br#"{"to":"previous"}"#;
    let for_web1 = Request::new("POST", "/v1/rollback", body).signed(&key, "web1");
    // Captured on its way to web1 (or forwarded by a compromised web1), sent to web2.
    let r = for_web1.send_with_timeout(&live.agent_addr("web2"), TIMEOUT).unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains(r#"request is for host \"web1\", this is \"web2\""#), "{}", r.body);
    // Signed for web2's name but web1's identity: the identity binds it too.
    let web1_identity = test_identity_public("web1").key;
    let relabelled = Request::new("POST", "/v1/rollback", body).signed_for_identity(
        &key,
        "web2",
        &web1_identity,
        hostctl_tests::http::now(),
    );
    let r = relabelled.send_with_timeout(&live.agent_addr("web2"), TIMEOUT).unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("this agent's identity is"), "{}", r.body);
    assert!(live.deployments("web2").is_empty(), "nothing recorded on web2");
    // The genuine request reaches web1's handler (nothing to roll back to: not a 401).
    let r = for_web1.send_with_timeout(&live.agent_addr("web1"), TIMEOUT).unwrap();
    assert_ne!(r.status, 401, "{}", r.body);
}

/// A direct link between the network namespaces of `from` and `to`, so that `from` reaches
/// `to`'s agent from its own address (the simulated hosts are otherwise only linked to
/// the controller); removed with the namespaces.
fn link_hosts(from: &SimHost, to: &SimHost) {
    let ip = |args: &[&str]| {
        let out = hostctl_tests::run(Command::new("ip").args(args));
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let (a, b) = (from.netns.as_str(), to.netns.as_str());
    ip(&["link", "add", "peer0", "netns", a, "type", "veth", "peer", "name", "peer0", "netns", b]);
    ip(&["-n", a, "link", "set", "peer0", "up"]);
    ip(&["-n", b, "link", "set", "peer0", "up"]);
    let (from_addr, to_addr) = (format!("{}/32", from.addr), format!("{}/32", to.addr));
    ip(&["-n", a, "route", "add", &to_addr, "dev", "peer0", "src", &from.addr.to_string()]);
    ip(&["-n", b, "route", "add", &from_addr, "dev", "peer0"]);
}

#[test]
fn a_request_forwarded_by_a_compromised_host_from_its_own_address_changes_nothing() {
    let live = LiveFleet::start(&["web1", "web2"]);
    // Two generations on each host, so that a rollback accepted by web2 would change it.
    live.hostctl(&["--json", "apply"]).expect_code(0);
    live.change_host("web1", "web1 B");
    live.change_host("web2", "web2 B");
    live.hostctl(&["--json", "apply"]).expect_code(0);
    let (web1, web2) = (live.host("web1"), live.host("web2"));
    let (web2_system, web2_deployments) = (web2.current_system(), live.deployment_ids("web2"));
    let web1_system = web1.current_system();

    // web1 is taken over: in its namespace, with its identity key, in front of its agent.
    link_hosts(web1, web2);
    let port = 7421;
    let mut relay = Command::new("ip")
        .args(["netns", "exec", &web1.netns, env!("CARGO_BIN_EXE_compromised-host")])
        .args([format!("{}:{port}", web1.addr), "web1".to_owned(), live.agent_addr("web1"), live.agent_addr("web2")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(relay.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), "listening");
    live.write_inventory_with(
        "30s",
        |h| if h.name == "web1" { format!("    port: {port}\n") } else { String::new() },
        "",
    );
    live.fleet.commit("web1 through its compromised self");

    // The controller rolls web1 back through it; every request is also replayed to web2.
    let rollback = live.hostctl(&["--json", "rollback", "web1"]);
    relay.kill().unwrap();
    relay.wait().unwrap();
    let replayed: Vec<String> = lines.map(Result::unwrap).collect();
    rollback.expect_code(0);
    assert_ne!(live.host("web1").current_system(), web1_system, "web1 itself was rolled back");
    assert!(replayed.iter().any(|l| l.starts_with("replayed POST /v1/rollback")), "{replayed:?}");
    for line in &replayed {
        assert!(line.ends_with(": 401"), "web2 accepted a request for web1: {replayed:?}");
    }
    assert_eq!(live.host("web2").current_system(), web2_system, "web2 was not rolled back");
    assert_eq!(live.deployment_ids("web2"), web2_deployments, "nothing recorded on web2");
    // The refusals came from web1's own address, not the controller's.
    let log = live.host("web2").agent_log();
    let from_web1 = format!("peer={}:", web1.addr);
    assert!(
        log.lines().any(|l| l.contains("request refused") && l.contains(&from_web1) && l.contains("for host \"web1\"")),
        "web2's agent logged no refusal of web1's request from web1's address:\n{log}"
    );
}

#[test]
fn a_tls_man_in_the_middle_is_refused_at_connect_and_nothing_is_pushed() {
    let live = LiveFleet::start(&["web1"]);
    let host = live.host("web1");
    let agent = SocketAddr::from((host.addr, host.port));
    let real = test_identity_public("web1");
    // On the controller's side of web1's link: reachable, and the address the fleet names.
    let mitm = Mitm::start(SocketAddr::from((host.controller_addr, host.port)), "web1", agent, real.key);
    inventory(&live, |h| h.controller_addr.to_string(), |_| Some(real.to_string()));
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(1);
    let web1 = &run.json()["hosts"]["web1"];
    assert_eq!(web1["step"], "connect", "{web1}");
    let error = web1["error"].as_str().unwrap();
    for part in [
        format!("the agent shows identity {}", mitm.identity),
        format!("but {real} is pinned"),
        "nothing was sent".to_owned(),
        format!(
            "run: hostctl --fleet {} enroll web1 --expect {}",
            live.fleet.path("fleet.yaml").display(),
            mitm.identity
        ),
    ] {
        assert!(error.contains(&part), "{part:?} not in {error}");
    }
    assert!(mitm.handshakes() == 0 && mitm.requests() == 0, "the controller sent the impostor nothing");
    assert!(live.deployments("web1").is_empty(), "nothing was pushed");

    // An operator tricked into pinning the impostor: it relays, but every request is
    // signed for its identity, which the real agent refuses.
    inventory(&live, |h| h.controller_addr.to_string(), |_| Some(mitm.identity.to_string()));
    let run = live.hostctl(&["--json", "status", "--no-drift"]);
    run.expect_code(1);
    let error = run.json()["hosts"]["web1"]["error"].as_str().unwrap().to_owned();
    assert!(error.contains("HTTP 401") && error.contains("this agent's identity is"), "{error}");
    assert!(mitm.requests() >= 1, "the request went through the impostor");
    assert!(live.deployments("web1").is_empty());
}

#[test]
fn plain_http_to_the_api_port_gets_no_api_answer() {
    let live = LiveFleet::start(&["web1"]);
    let signed = Request::new("GET", "/v1/status", b"").signed(&live.secret_key(), "web1");
    for request in [signed, Request::new("GET", "/metrics", b""), Request::new("POST", "/v1/bundles", b"x")] {
        let answer = request.send_plain(&live.agent_addr("web1"), TIMEOUT);
        assert!(answer.is_err(), "{} {}: {answer:?}", request.method, request.path);
    }
    // The same request over TLS is answered.
    assert_eq!(live.agent_status("web1")["hostname"], "web1");
}

#[test]
fn enrollment_shows_records_and_guards_the_agent_identity() {
    let mut live = LiveFleet::start(&["web1"]);
    let key = test_identity_public("web1");
    let config = live.host("web1").root.join("etc/agent.yaml");
    let identity = Command::new(hostctl_tests::binary("hostctl-agent"))
        .args(["identity", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(identity.status.success(), "{}", String::from_utf8_lossy(&identity.stderr));
    assert_eq!(String::from_utf8_lossy(&identity.stdout).trim(), key.to_string());

    // First contact: nothing pinned, refused with the key shown and the command.
    inventory(&live, |h| h.addr.to_string(), |_| None);
    let run = live.hostctl(&["--json", "status", "--no-drift"]);
    run.expect_code(1);
    let error = run.json()["hosts"]["web1"]["error"].as_str().unwrap().to_owned();
    let fix = format!("run: hostctl --fleet {} enroll web1 --expect {key}", live.fleet.path("fleet.yaml").display());
    assert!(error.contains("none pinned") && error.ends_with(&fix), "{error}");
    let pins = live.fleet.path("known_agents");
    let wrong = test_identity_public("web2");
    let run = live.hostctl(&["--json", "enroll", "web1", "--expect", &wrong.to_string()]);
    run.expect_code(1);
    assert!(!pins.exists(), "an unexpected key is not recorded");
    let run = live.hostctl(&["--json", "enroll", "web1"]);
    run.expect_code(0);
    assert_eq!(run.json()["hosts"]["web1"]["recorded"], true);
    assert_eq!(run.json()["hosts"]["web1"]["seen"], key.to_string());
    assert!(std::fs::read_to_string(&pins).unwrap().contains(&format!("web1 {key}\n")));
    live.hostctl(&["--json", "status", "--no-drift"]).expect_code(0);

    // The agent's key changes (reinstalled): refused until enrolled with --expect.
    let fleet_key = live.public_key.clone();
    let host = live.host_mut("web1");
    host.stop_agent();
    let identity_file = host.root.join("etc/identity.key");
    let new = hostctl_schemas::signing::SecretKey::from_seed("web1", [0x42; 32]);
    std::fs::remove_file(&identity_file).unwrap();
    hostctl_tests::write_secret(&identity_file, &new.to_nix_text());
    let yaml = agent_config(host, &fleet_key);
    host.start_agent(&yaml);
    let new_key = hostctl_schemas::key::PublicKey { name: "web1".into(), key: new.public().key };
    let run = live.hostctl(&["--json", "status", "--no-drift"]);
    run.expect_code(1);
    let error = run.json()["hosts"]["web1"]["error"].as_str().unwrap().to_owned();
    assert!(error.contains(&format!("shows identity {new_key}, but {key} is pinned")), "{error}");
    let before = std::fs::read_to_string(&pins).unwrap();
    live.hostctl(&["--json", "enroll", "web1"]).expect_code(1);
    assert_eq!(std::fs::read_to_string(&pins).unwrap(), before, "a changed key is not recorded without --expect");
    live.hostctl(&["--json", "enroll", "web1", "--expect", &new_key.to_string()]).expect_code(0);
    live.hostctl(&["--json", "status", "--no-drift"]).expect_code(0);

    // A bad pin file is bad input, named file:line.
    std::fs::write(&pins, format!("# pins\nweb1 {}\n", "web1:AAAA")).unwrap();
    let run = live.hostctl(&["status", "--no-drift"]);
    run.expect_code(2);
    assert!(run.stderr.contains("known_agents:2: invalid public key"), "{}", run.stderr);
}

#[test]
fn a_missing_or_readable_identity_key_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("agent-identity.key");
    let config = dir.path().join("agent.yaml");
    let yaml = format!(
        "hostname: web1\ntrusted_keys: [\"fleet-1:11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=\"]\nstate_dir: {}\n\
         identity_key_file: {}\n",
        dir.path().join("state").display(),
        key_file.display()
    );
    std::fs::write(&config, yaml).unwrap();
    let identity = || {
        Command::new(hostctl_tests::binary("hostctl-agent"))
            .args(["identity", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = identity();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("agent-identity.key: cannot read"), "{out:?}");
    std::fs::write(&key_file, test_identity("web1").to_nix_text()).unwrap();
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = identity();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("agent-identity.key: mode 0644"), "{out:?}");
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = identity();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), test_identity_public("web1").to_string());
}
