//! Benchmark of the fan-out through a binary cache (issue 7): `hostctl apply` to N
//! simulated hosts (default 10) with the default stream push (the controller sends each
//! host what it lacks) vs `hostctl apply --via-cache file://DIR` (one signed `nix copy` to
//! the cache, each agent fetches from it), side by side on fresh fleets.
//!
//! Run as root: `cargo run --release -p hostctl-tests --bin bench-via-cache [N] [MiB]`;
//! prints a Markdown table. Every host's system carries a shared payload of MiB (default
//! 32) random, incompressible bytes, so the closures weigh what a small real system does;
//! each host also has its own toplevel. Real agents on simulated hosts, real Nix, every
//! store starts empty; `hostctl build` runs first, untimed. The cache is a directory on
//! this machine, so "bytes the controller sends" is the figure that carries over to a
//! fleet behind one uplink; wall times here include the agents' own work on 2 shared cores.

#![expect(clippy::expect_used, reason = "a benchmark binary: a failed setup step must stop it with its message")]

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use hostctl_tests::bench::{agents_cpu, cpu_of, Cpu};
use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::simhost::agent_config_with;
use hostctl_tests::TestFleet;
use serde_json::Value;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let names: Vec<String> = (1..=n).map(|i| format!("c{i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();

    let stream = measure(&names, mib, false);
    let cached = measure(&names, mib, true);

    println!("| {n} hosts, {mib} MiB shared payload | stream push (default) | `--via-cache file://` | ratio |");
    println!("| --- | --- | --- | --- |");
    let row = |what: &str, a: f64, b: f64, unit: &str| {
        println!("| {what} | {a:.2} {unit} | {b:.2} {unit} | {:.2}x |", a / b.max(f64::MIN_POSITIVE));
    };
    row("`hostctl apply` wall time", stream.wall, cached.wall, "s");
    row("bytes the controller sends (streams / cache upload)", stream.sent_mib, cached.sent_mib, "MiB");
    row("controller CPU (with its Nix)", stream.cpu.controller, cached.cpu.controller, "s");
    row("agents' CPU (with their Nix)", stream.cpu.agents, cached.cpu.agents, "s");
    row("slowest host, status to confirmed", stream.slowest, cached.slowest, "s");
    println!("| push to the cache (part of the wall time) | - | {:.2} s | |", cached.push_seconds);
}

/// What one apply cost.
struct Measured {
    wall: f64,
    sent_mib: f64,
    cpu: Cpu,
    slowest: f64,
    push_seconds: f64,
}

/// A fresh fleet of `names` with the payload, built; then one timed `hostctl apply`.
fn measure(names: &[&str], mib: usize, via_cache: bool) -> Measured {
    let mut live = LiveFleet::start_with(names, |fleet| add_payload(fleet, names, mib));
    let cache = live.fleet.tmp.path().join("cache");
    let url = format!("file://{}", cache.display());
    if via_cache {
        let extra = format!("caches: [{}]\n", Value::String(url.clone()));
        let key = live.public_key.clone();
        for host in &mut live.hosts {
            let yaml = agent_config_with(host, &key, &extra);
            host.stop_agent();
            host.start_agent(&yaml);
        }
    }
    live.hostctl(&["build"]).expect_code(0);
    let mut args = vec!["--json", "apply"];
    if via_cache {
        args.extend(["--via-cache", url.as_str()]);
    }
    let (agents_before, self_before) = (agents_cpu(&live), cpu_of("self"));
    let start = Instant::now();
    let run = live.hostctl(&args);
    let wall = start.elapsed().as_secs_f64();
    let cpu = Cpu { controller: cpu_of("self") - self_before, agents: agents_cpu(&live) - agents_before };
    run.expect_code(0);
    let report = run.json();
    let hosts = report["hosts"].as_object().expect("hosts");
    let streamed: u64 = hosts.values().filter_map(|h| h["wire_bytes"].as_u64()).sum();
    let sent = if via_cache { dir_bytes(&cache) } else { streamed };
    Measured {
        wall,
        sent_mib: sent as f64 / (1024.0 * 1024.0),
        cpu,
        slowest: hosts.values().filter_map(|h| h["seconds"].as_f64()).fold(0.0, f64::max),
        push_seconds: report["via_cache"]["seconds"].as_f64().unwrap_or(0.0),
    }
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().expect("metadata");
        total += if meta.is_dir() { dir_bytes(&entry.path()) } else { meta.len() };
    }
    total
}

/// Each host a copy of the example's web1 with its own motd, and every toplevel wrapped
/// in one that adds `payload` (a store path of `mib` MiB shared by all hosts) next to the
/// original's `bin/switch-to-configuration`.
fn add_payload(fleet: &TestFleet, names: &[&str], mib: usize) {
    for name in names {
        let text = format!("{{ system = \"x86_64-linux\"; roles = [ \"nginx\" ]; motd = \"{name}\"; }}\n");
        fleet.write(&format!("hosts/{name}.nix"), &text);
    }
    let mut payload = std::fs::File::create(fleet.path("payload.bin")).expect("payload");
    let mut random = std::fs::File::open("/dev/urandom").expect("/dev/urandom");
    std::io::copy(&mut std::io::Read::take(&mut random, (mib * 1024 * 1024) as u64), &mut payload).expect("payload");
    payload.flush().expect("payload");
    let flake = fleet.read("flake.nix");
    let call = "fleetlib.lib.mkSystem ({ inherit name; } // import (./hosts + \"/${name}.nix\"))";
    assert!(flake.contains(call), "examples/fleet/flake.nix changed: update bench-via-cache");
    let wrapped = flake.replacen(call, &format!("withPayload ({call})"), 1).replacen(
        "    in\n",
        &format!("{WITH_PAYLOAD}    in\n"),
        1,
    );
    fleet.write("flake.nix", &wrapped);
    fleet.commit("bench: a shared payload in every system");
}

/// Nix for [`add_payload`]: a constant, no values pasted in.
const WITH_PAYLOAD: &str = r#"      payload = builtins.path { path = ./payload.bin; name = "hostctl-bench-payload"; };
      withPayload = sys:
        let
          t = sys.config.system.build.toplevel;
          top = builtins.derivation {
            inherit (t) name system;
            inherit t payload;
            builder = "/bin/sh";
            args = [ "-eu" "-c" "/bin/mkdir $out && /bin/ln -s $t/bin $out/bin && /bin/ln -s $payload $out/payload" ];
          };
        in
        sys // { config = sys.config // { system = sys.config.system // { build = sys.config.system.build // { toplevel = top; }; }; }; };
"#;
