//! Benchmark (issue 7): `hostctl apply` side by side with the way a user deploys without
//! a fleet tool (nixos-rebuild `--target-host` style: `nix copy --to ssh://root@host`, as nix-copy-closure,
//! then `nix-env -p /nix/var/nix/profiles/system --set` and `switch-to-configuration
//! switch` over ssh), on the same N simulated hosts (default 10), each running a real
//! agent and a real sshd in its namespaces.
//!
//! Run as root: `cargo run --release -p hostctl-tests --bin bench-ssh [N]`; prints a
//! Markdown table. Rounds, each after a commit that gives every host a new system (so
//! both ways copy the same few new paths), built beforehand so only deployment is timed:
//! the ssh way one host after another, the ssh way all hosts in parallel, and
//! `hostctl apply` (all hosts in one batch). Then both ways once more with nothing new.

#![expect(clippy::expect_used, reason = "a benchmark binary: a failed step must stop it with its message")]

use std::process::Command;
use std::time::Instant;

use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::simhost::SimHost;
use hostctl_tests::sshd::Sshd;
use hostctl_tests::NIX_CONFIG;
use serde_json::Value;

/// One host's ssh access: its address, the client key and a known_hosts file.
struct Target {
    addr: String,
    key: String,
    known_hosts: String,
    state: String,
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let names: Vec<String> = (1..=n).map(|i| format!("b{i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let live = LiveFleet::start_with(&names, |fleet| {
        for name in &names {
            let text = format!("{{ system = \"x86_64-linux\"; roles = [ \"nginx\" ]; motd = \"{name}\"; }}\n");
            fleet.write(&format!("hosts/{name}.nix"), &text);
        }
    });
    let servers: Vec<Sshd> = live.hosts.iter().map(|h| Sshd::start_in(h, &[22])).collect();
    let targets: Vec<Target> = live.hosts.iter().zip(&servers).map(|(h, s)| target(h, s)).collect();
    // First deployment: every store gets the common closure.
    hostctl_json(&live, &["--json", "apply"]);

    let toplevels = new_round(&live, &names, "round 1");
    let ssh_sequential = timed(|| targets.iter().zip(&toplevels).for_each(|(t, top)| ssh_deploy(t, top)));
    let toplevels = new_round(&live, &names, "round 2");
    let ssh_together = timed(|| ssh_parallel(&targets, &toplevels));
    new_round(&live, &names, "round 3");
    let (hostctl_wall, report) = timed_value(|| hostctl_json(&live, &["--json", "apply"]));
    let hostctl_deploy = slowest_host(&report);
    let copied = report["hosts"][names[0]]["paths_copied"].clone();

    // Nothing new: the ssh way copies nothing and re-activates; hostctl finds every
    // host unchanged.
    let ssh_nothing = timed(|| ssh_parallel(&targets, &toplevels_of(&report, &names)));
    let (hostctl_nothing, _) = timed_value(|| hostctl_json(&live, &["--json", "apply"]));

    println!("| {n} hosts, each with a new system (same new paths for both ways) | wall |\n| --- | --- |");
    println!(
        "| ssh way, one host after another | {ssh_sequential:.2} s ({:.2} s per host) |",
        ssh_sequential / n as f64
    );
    println!("| ssh way, all hosts in parallel | {ssh_together:.2} s |");
    println!("| `hostctl apply` (eval from cache + build check + deploy) | {hostctl_wall:.2} s |");
    println!("| `hostctl apply` deploy phase (slowest host, status to confirmed) | {hostctl_deploy:.2} s |");
    println!("| ssh way in parallel / `hostctl apply` | {:.2}x |", ssh_together / hostctl_wall);
    println!("| nothing new: ssh way in parallel / `hostctl apply` | {ssh_nothing:.2} s / {hostctl_nothing:.2} s |");
    println!("\nPaths hostctl copied to {} in round 3: {copied}.", names[0]);
    drop(servers);
}

fn target(host: &SimHost, sshd: &Sshd) -> Target {
    let addr = host.addr.to_string();
    let known_hosts = sshd.dir().join("known_hosts");
    std::fs::write(&known_hosts, sshd.known_hosts_line(&addr)).expect("known_hosts");
    Target {
        addr,
        key: sshd.client_key().display().to_string(),
        known_hosts: known_hosts.display().to_string(),
        state: host.state_dir().display().to_string(),
    }
}

/// Commits a new motd for every host and builds the new systems; their toplevels.
fn new_round(live: &LiveFleet, names: &[&str], round: &str) -> Vec<String> {
    for name in names {
        let file = format!("hosts/{name}.nix");
        let text = format!("{{ system = \"x86_64-linux\"; roles = [ \"nginx\" ]; motd = \"{name} {round}\"; }}\n");
        live.fleet.write(&file, &text);
    }
    live.fleet.commit(round);
    let report = hostctl_json(live, &["--json", "build"]);
    toplevels_of(&report, names)
}

fn toplevels_of(report: &Value, names: &[&str]) -> Vec<String> {
    names.iter().map(|n| report["hosts"][*n]["toplevel"].as_str().expect("a toplevel").to_owned()).collect()
}

fn hostctl_json(live: &LiveFleet, args: &[&str]) -> Value {
    let run = live.hostctl(args);
    run.expect_code(0);
    run.json()
}

fn ssh_options(t: &Target) -> Vec<String> {
    ["-i", &t.key, "-o", &format!("UserKnownHostsFile={}", t.known_hosts), "-o", "StrictHostKeyChecking=yes"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// What a user does by hand (or what nixos-rebuild --target-host does) for one host.
fn ssh_deploy(t: &Target, toplevel: &str) {
    // Legacy `ssh://` (`nix-store --serve --write` as root), as nixos-rebuild --target-host
    // and nix-copy-closure use: an `ssh-ng://` daemon does not trust the client.
    let store = format!("ssh://root@{}", t.addr);
    check(
        Command::new("nix")
            .env("NIX_CONFIG", NIX_CONFIG)
            .env("NIX_SSHOPTS", ssh_options(t).join(" "))
            .args(["copy", "--to", &store, toplevel]),
    );
    let ssh = |remote: &[&str]| {
        check(Command::new("ssh").args(ssh_options(t)).arg(format!("root@{}", t.addr)).args(remote));
    };
    ssh(&["nix-env", "-p", "/nix/var/nix/profiles/system", "--set", toplevel]);
    let state = format!("HOSTCTL_EXAMPLE_STATE={}", t.state);
    let switch = format!("{toplevel}/bin/switch-to-configuration");
    ssh(&["env", &state, &switch, "switch"]);
}

fn ssh_parallel(targets: &[Target], toplevels: &[String]) {
    std::thread::scope(|s| {
        for (t, top) in targets.iter().zip(toplevels) {
            s.spawn(move || ssh_deploy(t, top));
        }
    });
}

fn check(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn timed(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

fn timed_value<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let start = Instant::now();
    let v = f();
    (start.elapsed().as_secs_f64(), v)
}

/// The longest per-host `seconds` (status to final state) in a report.
fn slowest_host(report: &Value) -> f64 {
    let hosts = report["hosts"].as_object().into_iter().flat_map(|m| m.values());
    hosts.filter_map(|h| h["seconds"].as_f64()).fold(0.0, f64::max)
}
