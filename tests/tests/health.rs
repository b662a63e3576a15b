//! Health checks gate confirmation and the rollout: a failing `http` check (run by the
//! controller) or `command` check (run by the agent) rolls the host back and stops the
//! rollout, and the summary names the hosts that were never touched; a passing check
//! (served from inside the host's own network namespace) lets the host be confirmed.
//! `https://` checks trust the roots `SSL_CERT_FILE` names, and a failure through a proxy
//! names it.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code throughout (helpers too): a failed step must fail the test"
)]

use hostctl_tests::invariants::{self, Running};
use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::tls::TestCa;
use hostctl_tests::{run, HostctlRun};
use serde_json::Value;

/// The confirmation window in these tests: long, so that a rollback well before it ran
/// out was the controller's (or the agent's health check's) doing, not the timer's.
const WINDOW: &str = "40s";
const WINDOW_SECS: u64 = 40;

fn result(v: &Value, host: &str) -> String {
    v["hosts"][host]["result"].as_str().unwrap_or("").to_owned()
}

fn toplevel(v: &Value, host: &str) -> String {
    v["hosts"][host]["toplevel"].as_str().unwrap_or_else(|| panic!("no toplevel for {host}: {v}")).to_owned()
}

/// The host's newest deployment must be a rollback ended by a health check, not by the
/// confirmation timer.
fn assert_rolled_back_early(live: &LiveFleet, host: &str, toplevel_b: &str) {
    let newest = live
        .deployments(host)
        .into_iter()
        .find(|d| d["toplevel"].as_str() == Some(toplevel_b))
        .unwrap_or_else(|| panic!("{host} has no deployment of {toplevel_b}"));
    assert_eq!(newest["state"], "rolled-back", "{newest}");
    let (created, finished) = (newest["created"].as_u64().unwrap(), newest["finished"].as_u64().unwrap());
    assert!(
        finished.saturating_sub(created) < WINDOW_SECS - 5,
        "rolled back by the failed check, not by the {WINDOW} timer: {newest}"
    );
}

#[test]
fn a_failing_http_check_rolls_back_and_stops_the_rollout() {
    // Batches in host order: db1, then web1, then web2.
    let live = LiveFleet::start(&["db1", "web1", "web2"]);
    let rollout = "rollout:\n  batch: 1\n  max_failures: 0\n";
    live.write_inventory_with(WINDOW, |_| String::new(), rollout);
    live.fleet.commit("no health checks yet");
    let first = live.hostctl(&["--json", "apply"]);
    first.expect_code(0);
    let a = first.json();
    for host in ["db1", "web1", "web2"] {
        assert_eq!(result(&a, host), "activated", "{a}");
        live.change_host(host, &format!("{host} B"));
    }
    // Nothing listens on db1's port 8099.
    let dead_url = live.host("db1").health_url(8099);
    live.write_inventory_with(
        WINDOW,
        |h| {
            if h.name == "db1" {
                format!("    health:\n      - http: {dead_url}\n        timeout: 1s\n        retries: 1\n        interval: 200ms\n")
            } else {
                String::new()
            }
        },
        rollout,
    );
    live.fleet.commit("db1 gets a health check that fails");
    let logs_before: Vec<String> = ["web1", "web2"].iter().map(|h| live.switch_log(h)).collect();

    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(1);
    let v = run.json();
    assert_eq!(result(&v, "db1"), "rolled-back", "{}", v["hosts"]["db1"]);
    assert_eq!(v["hosts"]["db1"]["step"], "health", "names the failing step: {}", v["hosts"]["db1"]);
    let db1_b = toplevel(&v, "db1");
    assert_ne!(db1_b, toplevel(&a, "db1"));
    assert_eq!(live.host("db1").current_system(), toplevel(&a, "db1"), "db1 runs A again");
    assert_eq!(live.host("db1").profile_system(), Some(toplevel(&a, "db1")), "db1's profile points at A again");
    assert_rolled_back_early(&live, "db1", &db1_b);
    for (i, host) in ["web1", "web2"].iter().enumerate() {
        assert_eq!(result(&v, host), "skipped", "{}", v["hosts"][host]);
        let error = v["hosts"][host]["error"].as_str().unwrap_or_default();
        assert!(error.contains("not attempted"), "{host}: {error}");
        assert_eq!(live.host(host).current_system(), toplevel(&a, host), "{host} was never touched");
        assert_eq!(live.switch_log(host), logs_before[i], "{host} was never touched");
    }
    for host in ["db1", "web1", "web2"] {
        invariants::check(&live, host, &toplevel(&a, host), &live.fleet.toplevel(host))
            .expect(Running::Old, "rolled back or never touched");
    }
}

#[test]
fn a_passing_http_check_confirms_and_a_404_rolls_back() {
    let live = LiveFleet::start(&["web1"]);
    let _server = live.host("web1").start_health_server(8080);
    live.host("web1").set_healthy(true);
    let url = live.host("web1").health_url(8080);
    live.write_inventory_with(
        WINDOW,
        |_| {
            format!(
                "    health:\n      - http: {url}\n        timeout: 2s\n        retries: 2\n        interval: 300ms\n"
            )
        },
        "",
    );
    live.fleet.commit("web1 has a health endpoint");

    let first = live.hostctl(&["--json", "apply"]);
    first.expect_code(0);
    let v = first.json();
    assert_eq!(result(&v, "web1"), "activated", "{v}");
    let a = toplevel(&v, "web1");
    assert!(
        live.host("web1").health_log().contains("GET /healthz"),
        "the controller asked: {}",
        live.host("web1").health_log()
    );
    assert_eq!(live.deployments("web1")[0]["state"], "confirmed");

    live.change_host("web1", "web1 B is unhealthy");
    live.host("web1").set_healthy(false);
    let second = live.hostctl(&["--json", "apply"]);
    second.expect_code(1);
    let v = second.json();
    assert_eq!(result(&v, "web1"), "rolled-back", "{}", v["hosts"]["web1"]);
    assert_eq!(v["hosts"]["web1"]["step"], "health", "names the failing step: {}", v["hosts"]["web1"]);
    assert_eq!(live.host("web1").current_system(), a, "web1 runs A again");
    assert_eq!(live.host("web1").profile_system(), Some(a.clone()));
    assert_rolled_back_early(&live, "web1", &toplevel(&v, "web1"));
    let log = live.host("web1").health_log();
    assert!(log.lines().any(|l| l.contains("GET /healthz") && l.contains(" 404 ")), "{log}");
    invariants::check(&live, "web1", &a, &toplevel(&v, "web1")).expect(Running::Old, "rolled back: 404");
}

#[test]
fn a_failing_command_check_rolls_back() {
    let live = LiveFleet::start(&["web1"]);
    let check = |argv: &'static str| {
        move |_: &hostctl_tests::simhost::SimHost| {
            format!("    health:\n      - command: {argv}\n        timeout: 5s\n        retries: 0\n")
        }
    };
    live.write_inventory_with(WINDOW, check(r#"["true"]"#), "");
    live.fleet.commit("a command check that passes");
    let first = live.hostctl(&["--json", "apply"]);
    first.expect_code(0);
    let v = first.json();
    assert_eq!(result(&v, "web1"), "activated", "{v}");
    let a = toplevel(&v, "web1");

    live.change_host("web1", "web1 B fails its check");
    live.write_inventory_with(WINDOW, check(r#"["false"]"#), "");
    live.fleet.commit("a command check that fails");
    let second = live.hostctl(&["--json", "apply"]);
    second.expect_code(1);
    let v = second.json();
    assert_eq!(result(&v, "web1"), "rolled-back", "{}", v["hosts"]["web1"]);
    assert_eq!(v["hosts"]["web1"]["step"], "health", "names the failing step: {}", v["hosts"]["web1"]);
    assert_eq!(live.host("web1").current_system(), a, "web1 runs A again");
    assert_eq!(live.host("web1").profile_system(), Some(a.clone()));
    assert_rolled_back_early(&live, "web1", &toplevel(&v, "web1"));
    invariants::check(&live, "web1", &a, &toplevel(&v, "web1")).expect(Running::Old, "rolled back: check failed");
}

#[test]
fn a_check_passing_on_a_retry_confirms() {
    let live = LiveFleet::start(&["web1"]);
    let _server = live.host("web1").start_health_server(8080);
    live.host("web1").set_healthy(false);
    let url = live.host("web1").health_url(8080);
    live.write_inventory_with(
        WINDOW,
        |_| {
            format!("    health:\n      - http: {url}\n        timeout: 2s\n        retries: 5\n        interval: 1s\n")
        },
        "",
    );
    live.fleet.commit("web1 becomes healthy a little after its switch");
    let apply = live.spawn_hostctl(&["--json", "apply"]);
    // Healthy from the second probe on.
    let start = std::time::Instant::now();
    while !live.host("web1").health_log().contains("GET /healthz") {
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "no probe came");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    live.host("web1").set_healthy(true);
    let mut apply = apply;
    let run = apply.wait_timeout(std::time::Duration::from_secs(60)).expect("apply finishes");
    run.expect_code(0);
    let v = run.json();
    assert_eq!(result(&v, "web1"), "activated", "{v}");
    let log = live.host("web1").health_log();
    assert!(log.lines().any(|l| l.contains("GET /healthz") && l.contains(" 404 ")), "{log}");
    assert!(log.lines().any(|l| l.contains("GET /healthz") && l.contains(" 200 ")), "{log}");
}

#[test]
fn a_check_that_never_answers_times_out_and_rolls_back() {
    let live = LiveFleet::start(&["web1"]);
    live.write_inventory_with(WINDOW, |_| String::new(), "");
    live.fleet.commit("no checks");
    let first = live.hostctl(&["--json", "apply"]);
    first.expect_code(0);
    let a = toplevel(&first.json(), "web1");

    // Accepts connections (the kernel's backlog) and never answers.
    let addr = live.host("web1").addr.to_string();
    let code = format!(
        "import socket, time\ns = socket.socket()\ns.bind(('{addr}', 8081))\ns.listen(64)\ntime.sleep(100000)\n"
    );
    let _silent = live.host("web1").start_background(&["python3", "-c", &code], 8081, "silent.log");
    let url = live.host("web1").health_url(8081);
    live.change_host("web1", "web1 B hangs its health endpoint");
    live.write_inventory_with(
        WINDOW,
        |_| {
            format!(
                "    health:\n      - http: {url}\n        timeout: 1s\n        retries: 1\n        interval: 200ms\n"
            )
        },
        "",
    );
    live.fleet.commit("a health endpoint that never answers");
    let start = std::time::Instant::now();
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(1);
    let v = run.json();
    assert_eq!(result(&v, "web1"), "rolled-back", "{}", v["hosts"]["web1"]);
    assert_eq!(v["hosts"]["web1"]["step"], "health", "{}", v["hosts"]["web1"]);
    assert_eq!(live.host("web1").current_system(), a);
    assert_rolled_back_early(&live, "web1", &toplevel(&v, "web1"));
    invariants::check(&live, "web1", &a, &toplevel(&v, "web1")).expect(Running::Old, "rolled back: check timed out");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(30),
        "the check's timeout was kept: {:?}",
        start.elapsed()
    );
}

#[test]
fn a_failed_check_in_a_batch_lets_the_batch_finish_and_max_failures_lets_the_rollout_go_on() {
    // Batches of two in host order: [db1, web1], [web2].
    let live = LiveFleet::start(&["db1", "web1", "web2"]);
    live.write_inventory_with(WINDOW, |_| String::new(), "rollout:\n  batch: 2\n  max_failures: 0\n");
    live.fleet.commit("no checks yet");
    let first = live.hostctl(&["--json", "apply"]);
    first.expect_code(0);
    let a = first.json();
    for host in ["db1", "web1", "web2"] {
        live.change_host(host, &format!("{host} B"));
    }
    let dead_url = live.host("db1").health_url(8099);
    let db1_check = move |h: &hostctl_tests::simhost::SimHost| {
        if h.name == "db1" {
            format!("    health:\n      - http: {dead_url}\n        timeout: 1s\n        retries: 0\n")
        } else {
            String::new()
        }
    };
    live.write_inventory_with(WINDOW, &db1_check, "rollout:\n  batch: 2\n  max_failures: 0\n");
    live.fleet.commit("db1's check fails");

    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(1);
    let v = run.json();
    assert_eq!(result(&v, "db1"), "rolled-back", "{v}");
    assert_eq!(live.host("db1").current_system(), toplevel(&a, "db1"));
    assert_eq!(result(&v, "web1"), "activated", "the rest of the batch finishes: {v}");
    assert_eq!(live.host("web1").current_system(), toplevel(&v, "web1"));
    assert_eq!(result(&v, "web2"), "skipped", "{v}");
    assert_eq!(live.host("web2").current_system(), toplevel(&a, "web2"));
    for (host, expected) in [("db1", Running::Old), ("web1", Running::New), ("web2", Running::Old)] {
        invariants::check(&live, host, &toplevel(&a, host), &live.fleet.toplevel(host))
            .expect(expected, "after the batch");
    }

    // One failure tolerated: the rollout goes on to web2.
    let run = live.hostctl(&["--json", "apply", "--max-failures", "1"]);
    run.expect_code(1);
    let v = run.json();
    assert_eq!(result(&v, "db1"), "rolled-back", "{v}");
    assert_eq!(result(&v, "web1"), "unchanged", "{v}");
    assert_eq!(result(&v, "web2"), "activated", "{v}");
    assert_eq!(live.host("web2").current_system(), toplevel(&v, "web2"));
    invariants::check(&live, "web2", &toplevel(&a, "web2"), &toplevel(&v, "web2")).expect(Running::New, "web2 went on");
}

#[test]
fn a_command_check_over_its_timeout_fails_and_is_stopped() {
    let live = LiveFleet::start(&["web1"]);
    live.write_inventory_with(WINDOW, |_| String::new(), "");
    live.fleet.commit("no checks");
    let first = live.hostctl(&["--json", "apply"]);
    first.expect_code(0);
    let a = toplevel(&first.json(), "web1");
    live.change_host("web1", "web1 B has a slow check");
    live.write_inventory_with(
        WINDOW,
        |_| "    health:\n      - command: [\"sleep\", \"300\"]\n        timeout: 1s\n        retries: 0\n".to_owned(),
        "",
    );
    live.fleet.commit("a check slower than its timeout");
    let start = std::time::Instant::now();
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(1);
    let v = run.json();
    assert_eq!(result(&v, "web1"), "rolled-back", "{}", v["hosts"]["web1"]);
    assert_eq!(v["hosts"]["web1"]["step"], "health", "{}", v["hosts"]["web1"]);
    assert_eq!(live.host("web1").current_system(), a);
    assert_rolled_back_early(&live, "web1", &toplevel(&v, "web1"));
    assert!(start.elapsed() < std::time::Duration::from_secs(30), "{:?}", start.elapsed());
    let sleeping: Vec<u32> = live
        .host("web1")
        .netns_pids()
        .into_iter()
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim() == "sleep")
        .collect();
    assert!(sleeping.is_empty(), "the timed-out check was stopped, not left running: pids {sleeping:?}");
    invariants::check(&live, "web1", &a, &toplevel(&v, "web1")).expect(Running::Old, "rolled back: check too slow");
}

/// `hostctl --json apply` with the environment a health check over TLS sees: the CA file
/// `SSL_CERT_FILE` names as the trusted roots, and the proxy variables from `proxy` (none
/// otherwise, whatever the test's own environment holds).
fn apply_with_roots(live: &LiveFleet, roots: &std::path::Path, proxy: Option<&str>) -> HostctlRun {
    let mut cmd = live.hostctl_command(&["--json", "apply"]);
    cmd.env("SSL_CERT_FILE", roots);
    for var in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
        match proxy {
            Some(url) => cmd.env(var, url),
            None => cmd.env_remove(var),
        };
    }
    cmd.env_remove("no_proxy").env_remove("NO_PROXY");
    HostctlRun::from(run(&mut cmd))
}

/// `https://` checks (issue 14): the controller verifies the server's certificate against
/// the roots it trusts (`SSL_CERT_FILE` here), so a certificate from a CA it trusts lets
/// the host be confirmed, and one from any other CA fails the gate with the certificate
/// problem named; a check sent through a proxy that fails names the proxy.
#[test]
fn an_https_check_confirms_with_a_trusted_certificate_and_rolls_back_otherwise() {
    let live = LiveFleet::start(&["web1"]);
    let host = live.host("web1");
    let (ca, stranger) = (TestCa::new("hostctl test CA"), TestCa::new("someone else's CA"));
    let _server = host.start_tls_health_server(8443, &ca.server_cert(host.addr, "web1"));
    host.set_healthy(true);
    let url = host.health_https_url(8443);
    let check = format!("    health:\n      - http: {url}\n        timeout: 2s\n        retries: 0\n");
    live.write_inventory_with(WINDOW, |_| check.clone(), "");
    live.fleet.commit("web1 has an https health endpoint");

    let run = apply_with_roots(&live, &ca.cert(), None);
    run.expect_code(0);
    let v = run.json();
    assert_eq!(result(&v, "web1"), "activated", "{v}");
    assert_eq!(v["hosts"]["web1"]["health"][0]["ok"], true, "{v}");
    let a = toplevel(&v, "web1");
    assert!(host.health_log().contains("GET /healthz"), "the controller asked over TLS: {}", host.health_log());

    live.change_host("web1", "web1 B, checked by a controller that trusts another CA");
    let run = apply_with_roots(&live, &stranger.cert(), None);
    run.expect_code(1);
    let v = run.json();
    assert_eq!(result(&v, "web1"), "rolled-back", "{}", v["hosts"]["web1"]);
    assert_eq!(v["hosts"]["web1"]["step"], "health", "{}", v["hosts"]["web1"]);
    let error = v["hosts"]["web1"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("certificate was refused: UnknownIssuer") && error.contains("SSL_CERT_FILE"), "{error}");
    assert_eq!(host.current_system(), a, "web1 runs A again");
    assert_rolled_back_early(&live, "web1", &toplevel(&v, "web1"));
    invariants::check(&live, "web1", &a, &toplevel(&v, "web1"))
        .expect(Running::Old, "rolled back: untrusted certificate");

    // A proxy that refuses every connection: the check fails, and says through what.
    let run = apply_with_roots(&live, &ca.cert(), Some("http://127.0.0.1:9"));
    run.expect_code(1);
    let v = run.json();
    assert_eq!(result(&v, "web1"), "rolled-back", "{}", v["hosts"]["web1"]);
    let error = v["hosts"]["web1"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("cannot connect via proxy http://127.0.0.1:9: "), "{error}");
    assert_eq!(host.current_system(), a, "web1 runs A again");
}
