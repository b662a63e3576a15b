//! Scale benchmark (issue 7): one `hostctl apply` and one `hostctl status` driving N
//! agents (default 500), each a real `hostctl-agent serve` process on its own loopback
//! address (127.1.x.y, port 7420) with its own state directory and system profile.
//!
//! Run as root: `cargo run --release -p hostctl-tests --bin bench-scale [N]`; prints a
//! Markdown table. The agents share this machine's Nix store, so no closure is copied:
//! what is measured is the controller's side of a large rollout (N evaluations, one build,
//! N status/missing/deploy/poll/confirm exchanges, N activations by N agents), not the
//! transfer, which `bench-apply` measures against `nix copy`.

#![expect(
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark binary: a failed setup step must stop it with its message"
)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hostctl_tests::livefleet::nix_stdout;
use hostctl_tests::{binary, git, TestFleet, NIX_CONFIG};
use serde_json::Value;

/// Every agent's port; agent `i` listens on [`addr`]`(i)`.
const PORT: u16 = 7420;

/// The agents; killed and waited for by pid on drop.
struct Agents {
    children: Vec<Child>,
}

impl Drop for Agents {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

fn name(i: usize) -> String {
    format!("s{i:03}")
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(500);
    let fleet = synthetic_fleet(n);
    let (key_file, public_key) = signing_key(&fleet);
    write_inventory(&fleet, n, &key_file);
    fleet.commit(&format!("{n} synthetic hosts on loopback"));
    let agents = start_agents(&fleet, n, &public_key);
    let idle = rss_summary(&agents);

    let first = hostctl(&fleet, &["--json", "apply"]);
    let noop = hostctl(&fleet, &["--json", "apply"]);
    let noop_uncached = hostctl(&fleet, &["--json", "--no-eval-cache", "apply"]);
    let status = hostctl(&fleet, &["--json", "status"]);
    let busy = rss_summary(&agents);

    println!("| what | wall | controller peak RSS | hosts |\n| --- | --- | --- | --- |");
    for (what, run) in [
        ("`hostctl apply`, first (eval + build + deploy)", &first),
        ("`hostctl apply` again, nothing changed (evaluation cache)", &noop),
        ("`hostctl --no-eval-cache apply`, nothing changed", &noop_uncached),
        ("`hostctl status`", &status),
    ] {
        println!("| {what} | {:.2} s | {} MiB | {} |", run.wall, run.peak_kib / 1024, run.results());
    }
    let (median, max) = host_seconds(&first.json);
    println!("\nN = {n} agents. Per-host deploy time in the first apply: median {median:.2} s, max {max:.2} s.");
    println!("Agent RSS after start: {idle}; after the runs: {busy}.");
    println!("TCP connections the controller opened per host during the runs: {:.1}.", connections(n));
    for (what, run) in
        [("first apply", &first), ("no-op apply", &noop), ("uncached no-op apply", &noop_uncached), ("status", &status)]
    {
        for line in run.failures() {
            println!("- {what}: {line}");
        }
    }
    drop(agents);
}

/// The example fleet with hosts s001..sN, each shaped like web1 with its own motd (so its
/// own toplevel).
fn synthetic_fleet(n: usize) -> TestFleet {
    let fleet = TestFleet::new();
    for entry in std::fs::read_dir(fleet.path("hosts")).expect("hosts dir").flatten() {
        let _ = std::fs::remove_file(entry.path());
    }
    for i in 1..=n {
        let text = format!("{{ system = \"x86_64-linux\"; roles = [ \"nginx\" ]; motd = \"{} of {n}\"; }}\n", name(i));
        fleet.write(&format!("hosts/{}.nix", name(i)), &text);
    }
    git(&fleet.dir, &["add", "-A"]);
    fleet
}

fn signing_key(fleet: &TestFleet) -> (PathBuf, String) {
    let key_file = fleet.tmp.path().join("fleet.sec");
    let secret = nix_stdout(fleet, &["key", "generate-secret", "--key-name", "hostctl-bench"], None);
    hostctl_tests::write_secret(&key_file, &secret);
    let public = nix_stdout(fleet, &["key", "convert-secret-to-public"], Some(&secret)).trim().to_owned();
    (key_file, public)
}

fn write_inventory(fleet: &TestFleet, n: usize, key_file: &Path) {
    let mut yaml = format!(
        "flake: .\nsigning_key: {}\ndefaults:\n  port: 7420\n  mode: switch\n  confirm_timeout: 60s\nrollout:\n  batch: 100%\n  max_failures: 0\nhosts:\n",
        key_file.display()
    );
    for i in 1..=n {
        let pin = hostctl_tests::identity::test_identity_public(&name(i));
        yaml.push_str(&format!(
            "  {}:\n    address: {}\n    system: x86_64-linux\n    agent_key: {pin}\n",
            name(i),
            addr(i)
        ));
    }
    fleet.write("fleet.yaml", &yaml);
}

/// 127.1.x.y: all of 127.0.0.0/8 is this machine's loopback.
fn addr(i: usize) -> std::net::Ipv4Addr {
    let i = u16::try_from(i).expect("at most 65535 hosts");
    let [hi, lo] = i.to_be_bytes();
    std::net::Ipv4Addr::new(127, 1, hi, lo)
}

/// Starts agent i for every host and waits until each accepts connections.
fn start_agents(fleet: &TestFleet, n: usize, public_key: &str) -> Agents {
    let mut agents = Agents { children: Vec::new() };
    for i in 1..=n {
        let dir = fleet.tmp.path().join("agents").join(name(i));
        std::fs::create_dir_all(dir.join("profiles")).expect("agent dir");
        // Pre-provisioned, as the inventory pins it.
        hostctl_tests::identity::write_identity(&dir.join("identity.key"), &name(i));
        let config = format!(
            "hostname: {}\nlisten: {}:{PORT}\ntrusted_keys: [\"{public_key}\"]\nstate_dir: {}\nprofile: {}\n\
             confirm_timeout: 60s\nbus: unix:path={}\nservice_manager: detached\nidentity_key_file: {}\n",
            name(i),
            addr(i),
            dir.join("state").display(),
            dir.join("profiles/system").display(),
            dir.join("no-bus").display(),
            dir.join("identity.key").display(),
        );
        std::fs::write(dir.join("agent.yaml"), config).expect("agent config");
        let log = std::fs::File::create(dir.join("agent.log")).expect("agent log");
        let child = Command::new(binary("hostctl-agent"))
            .args(["serve", "--config"])
            .arg(dir.join("agent.yaml"))
            .env("NIX_CONFIG", NIX_CONFIG)
            .env("HOSTCTL_EXAMPLE_STATE", dir.join("system"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start an agent");
        agents.children.push(child);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for i in 1..=n {
        while TcpStream::connect_timeout(&SocketAddr::from((addr(i), PORT)), Duration::from_secs(1)).is_err() {
            assert!(Instant::now() < deadline, "agent {} did not start listening", name(i));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    agents
}

/// One timed `hostctl` run.
struct Run {
    wall: f64,
    peak_kib: u64,
    json: Value,
}

impl Run {
    /// `activated: 500` / `unchanged: 500, failed: 2`.
    fn results(&self) -> String {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for host in self.json["hosts"].as_object().into_iter().flat_map(|m| m.values()) {
            let result = host["result"].as_str().map_or_else(|| "state".to_owned(), str::to_owned);
            *counts.entry(result).or_default() += 1;
        }
        counts.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
    }

    /// Failed hosts grouped by step and error (digits folded to `#`, so host names, ports and
    /// durations do not split a cause), most frequent first: `17 × connect: ... (e.g. s042)`.
    fn failures(&self) -> Vec<String> {
        let mut groups = std::collections::BTreeMap::<String, (usize, String)>::new();
        for (host, report) in self.json["hosts"].as_object().into_iter().flatten() {
            let Some(error) = report["error"].as_str() else { continue };
            let step = report["step"].as_str().unwrap_or("?");
            let folded: String = error.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect();
            let entry = groups.entry(format!("{step}: {folded}")).or_insert((0, host.clone()));
            entry.0 += 1;
        }
        let mut sorted: Vec<_> = groups.into_iter().collect();
        sorted.sort_by_key(|(_, (count, _))| std::cmp::Reverse(*count));
        sorted.into_iter().map(|(cause, (count, host))| format!("{count} × {cause} (e.g. {host})")).collect()
    }
}

/// `hostctl ARGS` under GNU time (wall seconds and peak RSS of hostctl itself).
fn hostctl(fleet: &TestFleet, args: &[&str]) -> Run {
    let times = fleet.tmp.path().join("time.out");
    let cmd = fleet.hostctl_command(args, &[]);
    let program = cmd.get_program().to_owned();
    let argv: Vec<_> = cmd.get_args().map(ToOwned::to_owned).collect();
    let envs: Vec<_> = cmd.get_envs().map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned))).collect();
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-o").arg(&times).args(["-f", "%e %M"]).arg(program).args(argv).current_dir(&fleet.dir);
    for (k, v) in envs {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let started = Instant::now();
    let out = timed.output().expect("run hostctl");
    let wall = started.elapsed().as_secs_f64();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("hostctl {args:?}: not JSON ({e}); stderr:\n{}", String::from_utf8_lossy(&out.stderr))
    });
    let text = std::fs::read_to_string(&times).unwrap_or_default();
    let peak_kib = text.lines().last().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse().ok());
    Run { wall, peak_kib: peak_kib.unwrap_or(0), json }
}

/// Median and max of the hosts' `seconds`.
fn host_seconds(report: &Value) -> (f64, f64) {
    let mut s: Vec<f64> = report["hosts"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|h| h["seconds"].as_f64())
        .collect();
    s.sort_by(f64::total_cmp);
    (s.get(s.len() / 2).copied().unwrap_or(0.0), s.last().copied().unwrap_or(0.0))
}

/// `min/median/max MiB` of the agents' VmRSS.
fn rss_summary(agents: &Agents) -> String {
    let mut kib: Vec<u64> = agents.children.iter().filter_map(|c| vm_rss(c.id())).collect();
    kib.sort_unstable();
    let mib = |k: u64| k as f64 / 1024.0;
    match (kib.first(), kib.get(kib.len() / 2), kib.last()) {
        (Some(&lo), Some(&mid), Some(&hi)) => {
            format!("min {:.1} / median {:.1} / max {:.1} MiB", mib(lo), mib(mid), mib(hi))
        }
        _ => "unknown".to_owned(),
    }
}

fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Connections to the agents now in TIME-WAIT (closed by the controller within the last
/// minute), per host.
fn connections(n: usize) -> f64 {
    let out = Command::new("ss").args(["-Htan", "state", "time-wait"]).output().expect("ss");
    let text = String::from_utf8_lossy(&out.stdout);
    let agent = format!(":{PORT}");
    let closed = text
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|peer| peer.starts_with("127.1.") && peer.ends_with(&agent))
        .count();
    closed as f64 / n as f64
}
