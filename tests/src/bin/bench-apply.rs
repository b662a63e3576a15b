//! Benchmark of `hostctl apply` (issue 3): paths and bytes moved vs `nix copy` of the
//! same closure into an empty store, and N hosts in parallel vs one after another.
//! Run as root: `cargo run --release -p hostctl-tests --bin bench-apply [N]`; prints a
//! Markdown table. Real agents on simulated hosts, real Nix, every store starts empty.

use std::process::Command;
use std::time::Instant;

use hostctl_tests::bench::{activation_latencies, agents_cpu, cpu_of, Cpu};
use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::{StoreRoot, NIX_CONFIG};
use serde_json::Value;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let names: Vec<String> = (1..=n).map(|i| format!("b{i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();

    // Parallel: every host in one batch, all stores empty.
    let (parallel_s, parallel, parallel_cpu, parallel_latency) = timed_apply(&names, &[]);
    // One after another: a fresh fleet, batch size 1.
    let (sequential_s, sequential, _, sequential_latency) = timed_apply(&names, &["--batch", "1"]);
    let per_host = sequential_s / n as f64;
    let slowest = slowest_host(&sequential).unwrap_or(per_host);
    // In the parallel run every host starts together, so its slowest host is the wall
    // time of the deploy phase (push + activate + confirm), without eval and build.
    let parallel_deploy = slowest_host(&parallel).unwrap_or(parallel_s);

    let first = &parallel["hosts"][names[0]];
    let toplevel = first["toplevel"].as_str().unwrap_or_default().to_owned();
    let (copy_paths, copy_bytes) = nix_copy_into_empty_store(&toplevel);

    println!("| what | value |\n| --- | --- |");
    println!("| hosts | {n} |");
    println!("| `hostctl apply`, all hosts in one batch (eval + build check + deploy) | {parallel_s:.2} s |");
    println!("| `hostctl apply --batch 1`, one host after another | {sequential_s:.2} s ({per_host:.2} s per host) |");
    println!("| deploy phase, all hosts in parallel (slowest host's status-to-confirmed) | {parallel_deploy:.2} s |");
    println!("| slowest single host deployed alone (from the `--batch 1` run) | {slowest:.2} s |");
    println!("| parallel deploy / slowest single host | {:.2}x |", parallel_deploy / slowest);
    println!(
        "| CPU during the parallel apply: controller (with its Nix) / agents (with theirs) | {:.2} s / {:.2} s |",
        parallel_cpu.controller, parallel_cpu.agents
    );
    println!("| paths copied to one empty host: hostctl / nix copy | {} / {copy_paths} |", first["paths_copied"]);
    println!("| NAR bytes copied to one empty host: hostctl / nix copy | {} / {copy_bytes} |", first["bytes_copied"]);
    println!("| bytes on the wire (zstd) for that host | {} |", first["wire_bytes"]);
    println!(
        "| activation latency (request journaled -> switch-to-configuration started), median / max: one host at a time | {} |",
        median_max_ms(sequential_latency)
    );
    println!("| the same, all hosts in parallel | {} |", median_max_ms(parallel_latency));
}

/// A fresh fleet of `names` (each a copy of the example's web1 with its own motd), then
/// one `hostctl apply`; returns wall seconds, the JSON report, CPU and the agents'
/// activation latencies.
fn timed_apply(names: &[&str], extra: &[&str]) -> (f64, Value, Cpu, Vec<f64>) {
    let live = LiveFleet::start_with(names, |fleet| {
        for name in names {
            let text = format!("{{ system = \"x86_64-linux\"; roles = [ \"nginx\" ]; motd = \"{name}\"; }}\n");
            fleet.write(&format!("hosts/{name}.nix"), &text);
        }
    });
    // Build first so the timing is about the transfer and activation, not the build.
    live.hostctl(&["build"]).expect_code(0);
    let mut args = vec!["--json", "apply"];
    args.extend_from_slice(extra);
    let (agents_before, self_before) = (agents_cpu(&live), cpu_of("self"));
    let start = Instant::now();
    let run = live.hostctl(&args);
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = Cpu { controller: cpu_of("self") - self_before, agents: agents_cpu(&live) - agents_before };
    run.expect_code(0);
    let logs = live.hosts.iter().map(|h| std::fs::read_to_string(h.root.join("agent.log")).unwrap_or_default());
    let latencies = logs.flat_map(|log| activation_latencies(&log)).collect();
    (elapsed, run.json(), cpu, latencies)
}

/// `median / max` in milliseconds.
fn median_max_ms(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    match (v.get(v.len() / 2), v.last()) {
        (Some(median), Some(max)) => format!("{:.0} / {:.0} ms", median * 1000.0, max * 1000.0),
        _ => "not found in the agents' logs".to_owned(),
    }
}

/// The longest per-host time (`seconds`: status to final state) in a report.
fn slowest_host(report: &Value) -> Option<f64> {
    let hosts = report["hosts"].as_object()?;
    hosts.values().filter_map(|h| h["seconds"].as_f64()).reduce(f64::max)
}

/// `nix copy` of the closure into an empty `local?root=` store: paths and NAR bytes.
fn nix_copy_into_empty_store(toplevel: &str) -> (usize, u64) {
    let store = StoreRoot::new();
    let url = store.url();
    let out = Command::new("nix")
        .env("NIX_CONFIG", NIX_CONFIG)
        .args(["copy", "--no-check-sigs", "--to", &url, toplevel])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !out {
        return (0, 0);
    }
    let info = Command::new("nix")
        .env("NIX_CONFIG", NIX_CONFIG)
        .args(["path-info", "--json", "--recursive", "--store", &url, toplevel])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let infos = hostctl_nix::output::parse_path_info(&info, "/nix/store").unwrap_or_default();
    (infos.len(), infos.iter().map(|i| i.nar_size).sum())
}
