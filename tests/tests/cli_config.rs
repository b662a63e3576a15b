//! Where hostctl takes its configuration from: `fleet.yaml` found upward from the working
//! directory, `HOSTCTL_FLEET` and `HOSTCTL_KEY` (a flag wins over its variable, the
//! variable over the default), and a host's own agent `port`.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code throughout (helpers too): a failed step must fail the test"
)]

use std::io::Read as _;

use hostctl_tests::{HostctlRun, TestFleet};

fn hosts(run: &HostctlRun) -> Vec<String> {
    run.expect_code(0);
    run.json()["hosts"].as_object().unwrap().keys().cloned().collect()
}

#[test]
fn fleet_yaml_is_found_upward_and_hostctl_fleet_names_another() {
    let fleet = TestFleet::new();
    let sub = fleet.path("hosts");
    let run = HostctlRun::from(hostctl_tests::run(&mut fleet.hostctl_in(&sub, &["--json", "eval", "--on", "web1"])));
    assert_eq!(hosts(&run), ["web1"], "found ../fleet.yaml from hosts/");

    let elsewhere = tempfile::tempdir().unwrap();
    let run = HostctlRun::from(hostctl_tests::run(&mut fleet.hostctl_in(elsewhere.path(), &["eval"])));
    run.expect_code(2);
    assert_eq!(
        run.stderr,
        format!(
            "error: no fleet.yaml in {} or a directory above it; pass --fleet FILE or set HOSTCTL_FLEET\n",
            elsewhere.path().display()
        )
    );

    // HOSTCTL_FLEET over the search, --fleet over HOSTCTL_FLEET.
    let other = fleet.path("other.yaml");
    std::fs::write(
        &other,
        fleet
            .read("fleet.yaml")
            .replace("  web1:", "  web7:\n    address: 192.0.2.17\n    configuration: web1\n  web1:"),
    )
    .unwrap();
    let mut cmd = fleet.hostctl_in(&sub, &["--json", "eval", "--on", "web7"]);
    let run = HostctlRun::from(hostctl_tests::run(cmd.env("HOSTCTL_FLEET", &other)));
    assert_eq!(hosts(&run), ["web7"]);
    let mut cmd = fleet.hostctl_in(elsewhere.path(), &["--json", "eval", "--on", "web7"]);
    cmd.env("HOSTCTL_FLEET", elsewhere.path().join("nothing.yaml")).arg("--fleet").arg(&other);
    assert_eq!(hosts(&HostctlRun::from(hostctl_tests::run(&mut cmd))), ["web7"]);
    let mut cmd = fleet.hostctl_in(&sub, &["eval"]);
    let missing = elsewhere.path().join("nothing.yaml");
    let run = HostctlRun::from(hostctl_tests::run(cmd.env("HOSTCTL_FLEET", &missing)));
    run.expect_code(2);
    assert!(run.stderr.contains(&missing.display().to_string()), "{}", run.stderr);
}

#[test]
fn hostctl_key_is_the_default_key_and_key_wins() {
    let fleet = TestFleet::new();
    let dir = fleet.dir.clone();
    let from_env = fleet.tmp.path().join("env.sec");
    let from_flag = fleet.tmp.path().join("flag.sec");
    let mut cmd = fleet.hostctl_in(&dir, &["status", "--no-drift"]);
    let run = HostctlRun::from(hostctl_tests::run(cmd.env("HOSTCTL_KEY", &from_env)));
    run.expect_code(2);
    assert!(run.stderr.contains(&from_env.display().to_string()), "{}", run.stderr);
    let mut cmd = fleet.hostctl_in(&dir, &["status", "--no-drift", "--key"]);
    cmd.arg(&from_flag).env("HOSTCTL_KEY", &from_env);
    let run = HostctlRun::from(hostctl_tests::run(&mut cmd));
    run.expect_code(2);
    assert!(run.stderr.contains(&from_flag.display().to_string()), "{}", run.stderr);
    assert!(!run.stderr.contains(&from_env.display().to_string()), "{}", run.stderr);
}

#[test]
fn a_hosts_own_port_overrides_defaults_port() {
    let fleet = TestFleet::new();
    let key = fleet.tmp.path().join("fleet.sec");
    let secret = hostctl_tests::livefleet::nix_stdout(&fleet, &["key", "generate-secret", "--key-name", "t"], None);
    hostctl_tests::write_secret(&key, &secret);
    // Something listening on web1's own port; defaults.port stays 7420 (nothing there).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let yaml = fleet
        .read("fleet.yaml")
        .replace("    address: 192.0.2.11\n", &format!("    address: 127.0.0.1\n    port: {port}\n"));
    fleet.write("fleet.yaml", &yaml);
    fleet.commit("web1 on its own port");
    let accept = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut head = [0u8; 64];
        let n = conn.read(&mut head).unwrap();
        String::from_utf8_lossy(&head[..n]).into_owned()
    });
    let run = fleet.hostctl(&["--json", "--key", key.to_str().unwrap(), "status", "--no-drift", "--on", "web1"]);
    run.expect_code(1);
    let request = accept.join().unwrap();
    assert!(request.starts_with("GET /v1/status"), "hostctl asked web1 on port {port}: {request:?}");
}
