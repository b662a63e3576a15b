//! Readings the benchmark binaries share (`src/bin/bench-*`): CPU time of processes.

use crate::livefleet::LiveFleet;

/// CPU seconds of `hostctl apply` (with its Nix children) and of all agents (with their
/// waited-for children) during an apply.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cpu {
    pub controller: f64,
    pub agents: f64,
}

/// utime+stime+cutime+cstime of a process (`self` for this one), in seconds (clock ticks
/// are 100/s on Linux); 0 if it cannot be read.
pub fn cpu_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime is field 14 of the whole line.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    if f.len() < 15 {
        return 0.0;
    }
    (f[11] + f[12] + f[13] + f[14]) / 100.0
}

/// CPU seconds of all of `live`'s agents so far.
pub fn agents_cpu(live: &LiveFleet) -> f64 {
    live.hosts.iter().filter_map(|h| h.agent_pid()).map(|p| cpu_of(&p.to_string())).sum()
}
