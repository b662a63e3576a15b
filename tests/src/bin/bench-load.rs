//! Load benchmark (issue 9): one agent under 200 concurrent `GET /v1/status` and a long
//! mix of requests (its latency, throughput and resident memory), and one `hostctl apply`
//! deploying to 50 simulated hosts at once.
//!
//! Run as root: `cargo run --release -p hostctl-tests --bin bench-load [REQUESTS [HOSTS
//! [--after-window]]]` (defaults 10000 and 50; 0 hosts skips the fleet); prints Markdown.
//! Real agents on simulated hosts (own network namespace and `/nix` each), real Nix. The
//! agent under load has one confirmed deployment first. `--after-window` then waits out
//! the signature window (the agent remembers each nonce that long) and sends as many
//! requests again.

#![expect(clippy::expect_used, reason = "a benchmark binary: a failed setup step must stop it with its message")]

use std::time::{Duration, Instant};

use hostctl_schemas::signing::SecretKey;
use hostctl_tests::bench::cpu_of;
use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::loadgen::{self, Kind, Latencies, Outcome};

const TIMEOUT: Duration = Duration::from_secs(30);
/// Threads sending the mix, each one request after another.
const WORKERS: usize = 4;
/// Rounds of 200 concurrent status requests.
const ROUNDS: usize = 5;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let requests: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let hosts: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let after_window = args.iter().any(|a| a == "--after-window");

    one_agent(requests, after_window);
    if hosts > 0 {
        fleet(hosts);
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn errors_text(outcomes: &[Outcome]) -> String {
    let (count, first) = loadgen::errors(outcomes, 3);
    if count == 0 {
        "0".to_owned()
    } else {
        format!("{count} (first: {})", first.join("; "))
    }
}

/// Concurrency, throughput and memory of one agent.
fn one_agent(requests: usize, after_window: bool) {
    let live = LiveFleet::start(&["web1"]);
    live.hostctl(&["--json", "apply"]).expect_code(0);
    let pid = live.host("web1").agent_pid().expect("agent pid");
    let (addr, key) = (live.agent_addr("web1"), live.secret_key());
    let rss = || loadgen::vm_rss_kib(pid).expect("agent VmRSS");
    let idle = rss();

    let overflows = loadgen::listen_overflows(&live.host("web1").netns);
    let mut concurrent = Vec::new();
    for _ in 0..ROUNDS {
        concurrent.extend(loadgen::concurrent_status(&addr, "web1", &key, 200, TIMEOUT));
    }
    let overflows = loadgen::listen_overflows(&live.host("web1").netns) - overflows;
    println!("## One agent\n\n| what | value |\n| --- | --- |");
    println!("| VmRSS after one deployment, idle | {} |", mib(idle));
    println!(
        "| 200 concurrent signed `GET /v1/status` ({ROUNDS} rounds, each on its own connection): latency | {} |",
        Latencies::of(&concurrent)
    );
    println!(
        "| … errors or timeouts ({}) / connections dropped by a full accept queue | {} / {overflows} |",
        concurrent.len(),
        errors_text(&concurrent)
    );

    let mut all = loadgen::mix(&addr, "web1", &key, 0, 100, WORKERS, TIMEOUT);
    let start = rss();
    let cpu_before = cpu_of(&pid.to_string());
    let started = Instant::now();
    let (outcomes, mut curve) = rounds(&addr, &key, 100, requests, rss);
    all.extend(outcomes);
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_of(&pid.to_string()) - cpu_before;
    curve.insert(0, start);
    let end = *curve.last().expect("a reading");
    println!(
        "| {requests} mixed requests, {WORKERS} workers: wall / requests per second | {seconds:.1} s / {:.0} |",
        requests as f64 / seconds
    );
    println!("| … agent CPU per request (with its `nix-env` children) | {:.2} ms |", cpu * 1000.0 / requests as f64);
    println!("| … errors or timeouts | {} |", errors_text(&all));
    for kind in [Kind::Status, Kind::Generations, Kind::UnknownDeployment, Kind::Unsigned, Kind::Metrics] {
        println!("| … latency, {kind:?} | {} |", Latencies::of(all.iter().filter(|o| o.kind == kind)));
    }
    println!(
        "| VmRSS after a warm-up of 100 (start) / after {requests} | {} / {} ({}) |",
        mib(start),
        mib(end),
        growth(start, end)
    );
    let steps: Vec<String> = curve.iter().map(|k| format!("{:.2}", *k as f64 / 1024.0)).collect();
    println!("| VmRSS every 1,000 requests (MiB) | {} |", steps.join(", "));
    println!("| VmHWM (peak VmRSS) | {} |", mib(loadgen::vm_hwm_kib(pid).unwrap_or(0)));

    if after_window {
        // The agent keeps each nonce until its signature could no longer be accepted
        // (timestamp + 120 s) and sweeps on the first signed request 30 s or more after
        // the last sweep: a second run after the window shows whether memory grows with
        // the number of requests or only with how many fall within one window.
        std::thread::sleep(Duration::from_secs(125));
        let before = rss();
        let (again, _) = rounds(&addr, &key, 100 + requests, requests, rss);
        println!(
            "| 125 s later: VmRSS before / after {requests} more requests | {} / {} ({} of the start; errors {}) |",
            mib(before),
            mib(rss()),
            growth(start, rss()),
            errors_text(&again)
        );
    }
}

fn growth(start: u64, now: u64) -> String {
    format!("{:+.1}%", (now as f64 - start as f64) * 100.0 / start as f64)
}

/// Requests `first..first + count` of the mix in rounds of 1,000; `rss()` after each round.
fn rounds(addr: &str, key: &SecretKey, first: usize, count: usize, rss: impl Fn() -> u64) -> (Vec<Outcome>, Vec<u64>) {
    let (mut outcomes, mut curve) = (Vec::new(), Vec::new());
    let mut done = 0;
    while done < count {
        let n = 1000.min(count - done);
        outcomes.extend(loadgen::mix(addr, "web1", key, first + done, n, WORKERS, TIMEOUT));
        done += n;
        curve.push(rss());
    }
    (outcomes, curve)
}

/// One `hostctl apply --parallel N` of N simulated hosts, each with its own new system.
fn fleet(hosts: usize) {
    let names: Vec<String> = (1..=hosts).map(|i| format!("l{i:02}")).collect();
    let setup = Instant::now();
    let live = hostctl_tests::loadgen::start_fleet(&names);
    let setup_s = setup.elapsed().as_secs_f64();
    // Evaluation and build first, untimed: the figure is the deployment.
    live.hostctl(&["--json", "build"]).expect_code(0);
    let parallel = hosts.to_string();
    let started = Instant::now();
    let run = live.hostctl(&["--json", "--parallel", &parallel, "apply"]);
    let wall = started.elapsed().as_secs_f64();
    let report = run.json();
    let mut results = std::collections::BTreeMap::<String, usize>::new();
    let mut seconds = Vec::new();
    for name in &names {
        let host = &report["hosts"][name.as_str()];
        *results.entry(host["result"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
        seconds.extend(host["seconds"].as_f64());
    }
    seconds.sort_by(f64::total_cmp);
    let median = seconds.get(seconds.len() / 2).copied().unwrap_or(0.0);
    let max = seconds.last().copied().unwrap_or(0.0);
    let results: Vec<String> = results.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!("\n## {hosts} hosts at once\n\n| what | value |\n| --- | --- |");
    println!("| {hosts} simulated hosts created, agents started | {setup_s:.1} s |");
    println!(
        "| `hostctl --parallel {hosts} apply` (built already; eval cached, deploy) | {wall:.1} s, exit {:?} |",
        run.code
    );
    println!("| results | {} |", results.join(", "));
    println!("| per-host deploy time (status to confirmed), median / max | {median:.2} s / {max:.2} s |");
}
