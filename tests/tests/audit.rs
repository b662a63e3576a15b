//! What a host's journal tells an operator afterwards, on real agents in network
//! namespaces: a deployment rolled back because a health check failed keeps that cause
//! (which check, what it said) in `history` (human and `--json`), `status` and the
//! agent's API, instead of "rolled back on request"; and each deployment and rollback
//! records which trusted key asked for it and from which address, shown by `history`
//! and as labels of `hostctl_last_deployment_info` on `/metrics`.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code throughout (helpers too): a failed step must fail the test"
)]

use hostctl_tests::http::Request;
use hostctl_tests::livefleet::LiveFleet;
use serde_json::Value;

/// The name `LiveFleet` gives its fleet key (`nix key generate-secret --key-name`).
const KEY: &str = "hostctl-test";

fn health_lines(url: &str) -> String {
    format!("    health:\n      - http: {url}\n        timeout: 2s\n        retries: 1\n        interval: 200ms\n")
}

/// The newest deployment in `hostctl --json history HOST`.
fn newest(live: &LiveFleet, host: &str) -> Value {
    let run = live.hostctl(&["--json", "history", host]);
    run.expect_code(0);
    run.json()["hosts"][host]["deployments"][0].clone()
}

/// The unsigned `/metrics` line of `name`.
fn metric_line(live: &LiveFleet, host: &str, name: &str) -> String {
    let r = Request::new("GET", "/metrics", b"").send(&live.agent_addr(host)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let prefix = format!("{name}{{");
    r.body.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {name} in:\n{}", r.body)).to_owned()
}

#[test]
fn an_http_check_rollback_keeps_its_cause_and_deployments_name_who_asked() {
    let live = LiveFleet::start(&["web1"]);
    let _server = live.host("web1").start_health_server(8080);
    live.host("web1").set_healthy(true);
    let url = live.host("web1").health_url(8080);
    live.write_inventory_with("40s", |_| health_lines(&url), "");
    live.fleet.commit("web1 has a health endpoint");
    live.hostctl(&["--json", "apply"]).expect_code(0);
    let controller = live.host("web1").controller_addr.to_string();

    let first = newest(&live, "web1");
    assert_eq!(first["state"], "confirmed", "{first}");
    assert_eq!(first["requested_by"]["key"], KEY, "{first}");
    assert_eq!(first["requested_by"]["address"], controller.as_str(), "{first}");
    assert!(first.get("health_failure").is_none(), "no check failed: {first}");
    let info = metric_line(&live, "web1", "hostctl_last_deployment_info");
    assert!(info.contains(&format!("key=\"{KEY}\"")) && info.contains(&format!("address=\"{controller}\"")), "{info}");
    assert!(info.contains("result=\"confirmed\""), "{info}");

    live.change_host("web1", "web1 B is unhealthy");
    live.host("web1").set_healthy(false);
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(1);
    assert_eq!(run.json()["hosts"]["web1"]["result"], "rolled-back");

    let d = newest(&live, "web1");
    assert_eq!((d["state"].as_str(), d["end_reason"].as_str()), (Some("rolled-back"), Some("health-check-failed")), "{d}");
    assert_eq!(d["health_failure"]["check"], format!("GET {url}").as_str(), "{d}");
    assert_eq!(d["health_failure"]["error"], "HTTP 404 (2 attempts)", "{d}");
    let error = d["error"].as_str().unwrap();
    assert!(error.starts_with(&format!("health check `GET {url}` failed: HTTP 404 (2 attempts); ")), "{error}");
    assert!(!error.contains("on request"), "{error}");
    assert_eq!(d["requested_by"]["key"], KEY, "{d}");

    let human = live.hostctl(&["history", "web1"]);
    human.expect_code(0);
    let line = format!("error: health check `GET {url}` failed: HTTP 404 (2 attempts); ");
    assert!(human.stdout.lines().any(|l| l.trim_start().starts_with(&line)), "{}", human.stdout);
    assert!(human.stdout.contains(&format!("{KEY}@{controller}")), "{}", human.stdout);

    let status = live.hostctl(&["--json", "status", "--no-drift"]);
    status.expect_code(0);
    let last = &status.json()["hosts"]["web1"]["last_deployment"];
    assert_eq!((last["state"].as_str(), last["end_reason"].as_str()), (Some("rolled-back"), Some("health-check-failed")));
    assert_eq!(last["health_failure"]["check"], format!("GET {url}").as_str(), "{last}");
    let human = live.hostctl(&["status", "--no-drift"]);
    human.expect_code(0);
    let said = format!("rolled-back (health-check-failed) by {KEY} from {controller}");
    assert!(human.stdout.contains(&said), "{}", human.stdout);
    assert!(human.stdout.lines().any(|l| l.trim_start().starts_with(&line)), "{}", human.stdout);
    let info = metric_line(&live, "web1", "hostctl_last_deployment_info");
    assert!(info.contains("result=\"rolled-back\"") && info.contains("end_reason=\"health-check-failed\""), "{info}");
}

#[test]
fn a_rollback_names_who_asked_and_a_command_check_rollback_names_its_command() {
    let live = LiveFleet::start(&["web1"]);
    let check = |argv: &'static str| {
        move |_: &hostctl_tests::simhost::SimHost| {
            format!("    health:\n      - command: {argv}\n        timeout: 5s\n        retries: 0\n")
        }
    };
    live.write_inventory_with("40s", check(r#"["true"]"#), "");
    live.fleet.commit("a command check that passes");
    live.hostctl(&["--json", "apply"]).expect_code(0);
    live.change_host("web1", "web1 B");
    live.hostctl(&["--json", "apply"]).expect_code(0);
    let rollback = live.hostctl(&["--json", "rollback", "web1", "--generation", "1"]);
    rollback.expect_code(0);
    let d = newest(&live, "web1");
    assert!(d["rollback_of"].is_string(), "the rollback's own deployment: {d}");
    assert_eq!(d["requested_by"]["key"], KEY, "{d}");
    assert_eq!(d["requested_by"]["address"], live.host("web1").controller_addr.to_string().as_str(), "{d}");

    live.change_host("web1", "web1 C fails its check");
    live.write_inventory_with("40s", check(r#"["sh", "-c", "echo degraded; exit 3"]"#), "");
    live.fleet.commit("a command check that fails");
    live.hostctl(&["--json", "apply"]).expect_code(1);
    let d = newest(&live, "web1");
    assert_eq!(d["end_reason"], "health-check-failed", "{d}");
    assert_eq!(d["health_failure"]["check"], "sh -c 'echo degraded; exit 3'", "{d}");
    let error = d["health_failure"]["error"].as_str().unwrap();
    assert!(error.starts_with("exit status 3 (1 attempt); output:\ndegraded"), "{error}");

}
