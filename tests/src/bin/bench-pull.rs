//! Benchmark of pull mode (issue 5): the time from `git push` + webhook to the start of
//! the activation, minus the agent's evaluation and build (its own overhead: fetch,
//! decisions, hand-off to the deployer), and the agent's CPU and memory while idle and
//! polling. Run as root:
//! `cargo run --release -p hostctl-tests --bin bench-pull [ROUNDS] [IDLE_SECONDS]`
//! (defaults 5 and 60); prints Markdown tables.
//!
//! One simulated host (network namespace + own `/nix`) runs the real agent in pull mode
//! against a bare remote on disk; every round commits a new motd for web1, pushes, sends
//! the webhook and waits for the activation. The phases come from the agent's log: its
//! timestamps (same clock as this process) and the `fetch_ms`, `eval_ms`, `build_ms`
//! fields of `pull: fetched a new commit` and `pull: built`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hostctl_tests::livefleet::LiveFleet;

const HOST: &str = "web1";

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let idle_s: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);

    let mut live = LiveFleet::start(&[HOST]);
    live.hostctl(&["--json", "apply"]).expect_code(0);
    let push_mode = memory(&live);
    live.enable_pull(HOST, "300s", "pinned");
    let head = live.fleet.head();
    live.push_webhook(HOST, "main", &head);
    live.wait_fetched_commit(HOST, &head, Duration::from_secs(20));
    // The first pulled commit also puts the example's inputs into the host's store
    // (Nix 2.8); not measured.
    round(&live, "warm-up");

    println!("| round | push → activation start | minus eval + build | git push | push done → fetched | fetched → build start | built → activation start | eval | build |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut overheads = Vec::new();
    for i in 1..=rounds {
        let r = round(&live, &format!("round {i}"));
        let overhead = r.total - r.eval - r.build;
        overheads.push(overhead);
        println!(
            "| {i} | {} | **{}** | {} | {} | {} | {} | {} | {} |",
            ms(r.total),
            ms(overhead),
            ms(r.push),
            ms(r.to_fetched),
            ms(r.to_build),
            ms(r.to_activation),
            ms(r.eval),
            ms(r.build)
        );
    }
    overheads.sort_by(f64::total_cmp);
    let median = overheads.get(overheads.len() / 2).copied().unwrap_or(0.0);
    let max = overheads.last().copied().unwrap_or(0.0);
    println!("\nagent overhead (push → activation start − eval − build): median {}, max {}\n", ms(median), ms(max));

    // Idle: poll every second, nothing new on the branch.
    live.enable_pull(HOST, "1s", "pinned");
    live.wait_fetched_commit(HOST, &live.fleet.head(), Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    let pid = live.host(HOST).agent_pid().unwrap_or(0).to_string();
    // Nothing asks the agent anything during the window: requests would cost it CPU.
    let cpu_before = cpu_seconds(&pid);
    std::thread::sleep(Duration::from_secs(idle_s));
    let cpu = cpu_seconds(&pid) - cpu_before;
    let (rss, hwm) = memory(&live);
    let last_fetch = live.pull_status(HOST)["last_fetch"].as_f64().unwrap_or(0.0);
    println!("| idle agent, pull mode, interval 1 s, {idle_s} s | value |\n| --- | --- |");
    println!("| CPU (utime + stime) | {cpu:.2} s ({:.2} % of one core) |", cpu * 100.0 / idle_s as f64);
    println!("| last fetch when the window closed | {:.0} s before |", (now() - last_fetch).max(0.0));
    println!("| VmRSS / VmHWM after it | {} / {} |", kib(rss), kib(hwm));
    println!("| VmRSS / VmHWM in push mode (after one apply) | {} / {} |", kib(push_mode.0), kib(push_mode.1));
    println!("| of the pull-mode RSS: anonymous / file-backed (smaps_rollup) | {} |", rss_split(&live));
}

/// `Rss_Anon` / `Rss_File` of the agent: heap and stacks vs mapped binary and libraries.
fn rss_split(live: &LiveFleet) -> String {
    let pid = live.host(HOST).agent_pid().unwrap_or(0);
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let get = |key: &str| -> u64 {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    format!("{} / {}", kib(get("Anonymous:")), kib(get("Rss:").saturating_sub(get("Anonymous:"))))
}

/// One measured round: seconds of each phase.
#[derive(Debug, Default)]
struct Round {
    total: f64,
    push: f64,
    to_fetched: f64,
    to_build: f64,
    to_activation: f64,
    eval: f64,
    build: f64,
}

fn round(live: &LiveFleet, label: &str) -> Round {
    live.change_host(HOST, &format!("web1 bench {label} {}", now()));
    let log_start = live.host(HOST).agent_log().len();
    let t0 = now();
    live.fleet.push();
    let pushed = now();
    let commit = live.fleet.head();
    let hook = live.push_webhook(HOST, "main", &commit);
    if hook.status != 202 {
        die(&format!("{label}: webhook answered {} {}", hook.status, hook.body));
    }
    live.wait_applied_commit(HOST, &commit, Duration::from_secs(120));
    let log = live.host(HOST).agent_log();
    let log = &log[log_start..];
    let line = |what: &str| {
        log.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| die(&format!("{label}: no `{what}` in the agent log:\n{log}")))
    };
    let fetched = line("pull: fetched a new commit");
    let building = line("pull: building");
    let built = line("pull: built");
    let started = line("activation started");
    let field = |l: &str, name: &str| -> f64 {
        let value = l.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}="))).unwrap_or("0");
        value.parse::<f64>().unwrap_or(0.0) / 1000.0
    };
    Round {
        total: stamp(started) - t0,
        push: pushed - t0,
        to_fetched: stamp(fetched) - pushed,
        to_build: stamp(building) - stamp(fetched),
        to_activation: stamp(started) - stamp(built),
        eval: field(built, "eval_ms"),
        build: field(built, "build_ms"),
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The Unix time of a log line: `2026-11-21T12:11:26.447250Z  INFO ...` (UTC).
fn stamp(line: &str) -> f64 {
    let ts = line.split_whitespace().next().unwrap_or_default();
    let num = |range: std::ops::Range<usize>| ts.get(range).and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let secs: f64 = ts.get(17..ts.len().saturating_sub(1)).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + num(11..13) * 3600 + num(14..16) * 60) as f64 + secs
}

fn ms(seconds: f64) -> String {
    format!("{:.0} ms", seconds * 1000.0)
}

fn kib(k: u64) -> String {
    format!("{:.1} MiB", k as f64 / 1024.0)
}

/// utime + stime of a process in seconds (clock ticks are 100/s on Linux); the agent's
/// own work only (a poll runs no child process).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    f.get(11).zip(f.get(12)).map_or(0.0, |(u, s)| (u + s) / 100.0)
}

/// (VmRSS, VmHWM) of the agent in KiB.
fn memory(live: &LiveFleet) -> (u64, u64) {
    let pid = live.host(HOST).agent_pid().unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

#[expect(clippy::panic, reason = "benchmark: a failed step ends the run with its message")]
fn die(message: &str) -> ! {
    panic!("{message}")
}
