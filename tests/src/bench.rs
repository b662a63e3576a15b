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

/// Seconds since midnight UTC of an agent log line's leading RFC 3339 timestamp
/// (`2026-11-21T13:07:12.123456Z  INFO ...`).
fn log_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let time = stamp.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let (h, m, s): (f64, f64, f64) =
        (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The deployment id of an agent log line (`id=...`, quoted or not).
fn log_id(line: &str) -> Option<&str> {
    let rest = &line[line.find(" id=")? + 4..];
    Some(rest.split_whitespace().next()?.trim_matches('"'))
}

/// Activation latency from an agent's log: for each deployment, the seconds from
/// `deployment accepted` (the request was journaled) to `activation started`
/// (`switch-to-configuration` launched, after `nix-env --set`).
pub fn activation_latencies(log: &str) -> Vec<f64> {
    let mut accepted = std::collections::HashMap::new();
    let mut latencies = Vec::new();
    for line in log.lines() {
        let (Some(time), Some(id)) = (log_time(line), log_id(line)) else { continue };
        if line.contains("deployment accepted") {
            accepted.insert(id.to_owned(), time);
        } else if line.contains("activation started") {
            if let Some(start) = accepted.remove(id) {
                latencies.push(time - start);
            }
        }
    }
    latencies
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_latency_pairs_lines_by_id() {
        let log = "2026-11-21T13:07:12.100000Z  INFO hostctl_agent::deploy: deployment accepted id=a toplevel=/x\n\
                   2026-11-21T13:07:12.150000Z  INFO hostctl_agent::deploy: deployment accepted id=\"b\"\n\
                   2026-11-21T13:07:12.180000Z  INFO hostctl_agent::deploy: activation started id=a pid=1\n\
                   garbage\n\
                   2026-11-21T13:07:12.450000Z  INFO hostctl_agent::deploy: activation started id=\"b\" pid=2\n";
        let got = activation_latencies(log);
        assert_eq!(got.len(), 2);
        assert!((got[0] - 0.08).abs() < 1e-6 && (got[1] - 0.3).abs() < 1e-6, "{got:?}");
    }
}
