//! Load (issue 9): 200 status requests in flight at once against one agent, 10,000 mixed
//! requests against one agent without its memory growing, and one `hostctl apply`
//! deploying to 50 simulated hosts at once. Real agents (`hostctl-agent serve` in a
//! simulated host: own network namespace and own `/nix`), real Nix, real HTTP.
//!
//! Timing is not asserted here beyond a generous per-request timeout (a request that
//! hangs is a failure, a slow one is not); `bench-load` measures it.

use std::time::{Duration, Instant};

use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::loadgen::{self, Latencies};
use serde_json::Value;

/// A request that has not been answered within this is a failure (a timeout), however
/// loaded the machine is.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Hosts deployed at once by the parallel apply.
const HOSTS: usize = 50;

fn host_name(i: usize) -> String {
    format!("l{i:02}")
}

/// Fails with the first errors if any outcome is not the right answer in time.
fn assert_no_errors(what: &str, outcomes: &[loadgen::Outcome]) {
    let (count, first) = loadgen::errors(outcomes, 10);
    assert_eq!(count, 0, "{what}: {count} of {} requests failed; first ones:\n{}", outcomes.len(), first.join("\n"));
}

#[test]
fn two_hundred_concurrent_status_requests_all_succeed() {
    let live = LiveFleet::start(&["web1"]);
    let (addr, key) = (live.agent_addr("web1"), live.secret_key());
    let netns = &live.host("web1").netns;
    let overflows = loadgen::listen_overflows(netns);
    let outcomes = loadgen::concurrent_status(&addr, "web1", &key, 200, REQUEST_TIMEOUT);
    assert_eq!(outcomes.len(), 200);
    assert_no_errors("200 concurrent GET /v1/status", &outcomes);
    eprintln!("200 concurrent GET /v1/status: {}", Latencies::of(&outcomes));
    // A full accept queue drops connections silently; their clients only succeed after
    // SYN retransmissions (1 s, 3 s, ...), which a busier machine turns into timeouts.
    let dropped = loadgen::listen_overflows(netns) - overflows;
    assert_eq!(dropped, 0, "the agent's accept queue overflowed: {dropped} connections dropped and retried");
    // The agent is still there and answers.
    assert_eq!(live.agent_status("web1")["hostname"], "web1");
}

#[test]
fn ten_thousand_requests_leave_the_agent_memory_within_ten_percent() {
    let live = LiveFleet::start(&["web1"]);
    // A deployed host, so status and generations read a journal and a generation.
    live.hostctl(&["--json", "apply"]).expect_code(0);
    let pid = live.host("web1").agent_pid().expect("the test started the agent");
    let (addr, key) = (live.agent_addr("web1"), live.secret_key());
    let rss = || loadgen::vm_rss_kib(pid).expect("the agent runs");

    // "Start" is after start-up, one deployment and a warm-up of 100 requests of the same
    // mix: allocator arenas of the runtime's threads, lazy statics and buffers sized by the
    // first requests exist by then. Growth after that is what a long-running agent keeps.
    let warm_up = loadgen::mix(&addr, "web1", &key, 0, 100, 4, REQUEST_TIMEOUT);
    assert_no_errors("warm-up", &warm_up);
    let start = rss();
    eprintln!("agent pid {pid}: VmRSS after the warm-up {start} KiB");
    let mut curve = vec![start];
    let started = Instant::now();
    for round in 0..10 {
        let first = 100 + round * 1000;
        let outcomes = loadgen::mix(&addr, "web1", &key, first, 1000, 4, REQUEST_TIMEOUT);
        assert_no_errors(&format!("requests {first}..{}", first + 1000), &outcomes);
        curve.push(rss());
        eprintln!(
            "after {:>5} requests: VmRSS {} KiB ({:+.1}%), {}",
            (round + 1) * 1000,
            rss(),
            percent(start, rss()),
            Latencies::of(&outcomes)
        );
    }
    let end = *curve.last().unwrap();
    eprintln!("10,000 requests in {:.1} s; VmRSS KiB every 1,000: {curve:?}", started.elapsed().as_secs_f64());
    assert!(
        end as f64 <= start as f64 * 1.10,
        "agent VmRSS grew from {start} to {end} KiB ({:+.1}%) over 10,000 requests; curve: {curve:?}",
        percent(start, end)
    );
}

fn percent(start: u64, now: u64) -> f64 {
    (now as f64 - start as f64) * 100.0 / start as f64
}

#[test]
fn fifty_hosts_deploy_at_once() {
    let names: Vec<String> = (1..=HOSTS).map(host_name).collect();
    let setup = Instant::now();
    let live = hostctl_tests::loadgen::start_fleet(&names);
    eprintln!("{HOSTS} simulated hosts with agents in {:.1} s", setup.elapsed().as_secs_f64());

    let started = Instant::now();
    let run = live.hostctl(&["--json", "--parallel", &HOSTS.to_string(), "apply"]);
    eprintln!("hostctl apply --parallel {HOSTS}: {:.1} s", started.elapsed().as_secs_f64());
    let report = run.json();
    run.expect_code(0);
    for name in &names {
        let host = &report["hosts"][name.as_str()];
        assert_eq!(host["result"], "activated", "{name}: {host}");
        let toplevel = host["toplevel"].as_str().unwrap_or_else(|| panic!("{name}: no toplevel: {host}"));
        let status: Value = live.agent_status(name);
        assert_eq!(status["toplevel"], toplevel, "{name}'s agent reports the new system: {status}");
        assert_eq!(status["state"], "idle", "{name}: confirmed, nothing open: {status}");
        assert_eq!(live.host(name).current_system(), toplevel, "{name} runs it");
    }
    let toplevels: std::collections::BTreeSet<&str> =
        names.iter().filter_map(|n| report["hosts"][n.as_str()]["toplevel"].as_str()).collect();
    assert_eq!(toplevels.len(), HOSTS, "every host has its own system");
}
