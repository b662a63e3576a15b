//! `GET /metrics` of a real agent on a simulated host, read without a signature over
//! plain HTTP on its `metrics_listen` (the TLS API port does not serve it) and parsed by an independent Prometheus text parser (`prometheus-parse`), after a real
//! deployment and after a failed one.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code throughout (helpers too): a failed step must fail the test"
)]

use hostctl_tests::http::Request;
use hostctl_tests::livefleet::LiveFleet;
use prometheus_parse::{Sample, Scrape, Value};

/// An unsigned `GET /metrics` on the metrics listener, parsed; the API port (TLS) has no
/// such route.
fn scrape(live: &LiveFleet, host: &str) -> Scrape {
    let on_api = Request::new("GET", "/metrics", b"").send(&live.agent_addr(host)).unwrap();
    assert_eq!(on_api.status, 404, "{}", on_api.body);
    let timeout = std::time::Duration::from_secs(10);
    let r = Request::new("GET", "/metrics", b"").send_plain(&live.metrics_addr(host), timeout).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    Scrape::parse(r.body.lines().map(|l| Ok(l.to_owned()))).unwrap_or_else(|e| panic!("{e}:\n{}", r.body))
}

fn samples<'a>(s: &'a Scrape, name: &str) -> Vec<&'a Sample> {
    s.samples.iter().filter(|x| x.metric == name).collect()
}

/// The value of the one sample of `name` whose labels include `labels`.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> =
        samples(s, name).into_iter().filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))).collect();
    assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
    match found[0].value {
        Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn metrics_describe_the_running_system_and_count_deployments() {
    let live = LiveFleet::start(&["web1"]);
    let before = scrape(&live, "web1");
    assert_eq!(value(&before, "hostctl_agent_info", &[("hostname", "web1")]), 1.0);
    assert_eq!(value(&before, "hostctl_agent_state", &[("state", "idle")]), 1.0);
    assert!(samples(&before, "hostctl_system_info").is_empty(), "nothing deployed yet");
    assert_eq!(value(&before, "hostctl_deployments_total", &[("result", "confirmed")]), 0.0);
    assert!(samples(&before, "hostctl_last_activation_success").is_empty());
    assert!(samples(&before, "hostctl_pull_info").is_empty(), "push mode");

    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(0);
    let web1 = &run.json()["hosts"]["web1"];
    let after = scrape(&live, "web1");
    let (rev, lock, toplevel) =
        (web1["rev"].as_str().unwrap(), web1["lock"].as_str().unwrap(), web1["toplevel"].as_str().unwrap());
    let labels = [("rev", rev), ("lock", lock), ("toplevel", toplevel)];
    assert_eq!(value(&after, "hostctl_system_info", &labels), 1.0);
    assert_eq!(value(&after, "hostctl_system_generation", &[]), 1.0);
    assert_eq!(value(&after, "hostctl_pinned_lock_info", &[("lock", lock)]), 1.0);
    assert_eq!(value(&after, "hostctl_deployments_total", &[("result", "confirmed")]), 1.0);
    assert_eq!(value(&after, "hostctl_rollbacks_total", &[]), 0.0);
    assert_eq!(value(&after, "hostctl_last_activation_success", &[]), 1.0);
    assert!(value(&after, "hostctl_last_activation_timestamp_seconds", &[]) > 1.7e9);

    // A failing switch: the deployment fails and the agent restores the running system.
    live.change_host("web1", "broken motd");
    std::fs::write(live.host("web1").root.join("state/fail-switch-web1"), "4").unwrap();
    live.hostctl(&["--json", "apply"]).expect_code(1);
    let failed = scrape(&live, "web1");
    assert_eq!(value(&failed, "hostctl_deployments_total", &[("result", "failed")]), 1.0);
    assert_eq!(value(&failed, "hostctl_last_activation_success", &[]), 0.0);
    assert_eq!(value(&failed, "hostctl_deployments_total", &[("result", "confirmed")]), 1.0);
    assert_eq!(value(&failed, "hostctl_rollbacks_total", &[]), 1.0, "the failed switch was rolled back");
}
