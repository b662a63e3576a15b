//! Load against one agent (issue 9), shared by `tests/load.rs` and the `bench-load`
//! binary: many signed requests at once (one thread and one connection each, released
//! together), a fixed mix of routes sent from a few workers, latency percentiles and the
//! agent's resident memory (`VmRSS`).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hostctl_schemas::api::status::StatusResponse;
use hostctl_schemas::signing::SecretKey;

use crate::http::{Request, Response};

/// One request of the mix, by what it asks and what it must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Signed `GET /v1/status`: 200 with a `StatusResponse` naming the host.
    Status,
    /// Signed `GET /v1/generations`: 200 (the agent runs `nix-env --list-generations`).
    Generations,
    /// Signed `GET /v1/deployments/{id}` of an id the agent never had: 404.
    UnknownDeployment,
    /// `GET /v1/status` without a signature: 401.
    Unsigned,
    /// `GET /metrics` (unauthenticated by design, plain HTTP on the agent's
    /// `metrics_listen`, [`crate::simhost::METRICS_PORT`]): 200.
    Metrics,
}

impl Kind {
    /// The mix, per 10 requests: 5 status, 1 generations, 2 unknown deployments, 1 unsigned,
    /// 1 metrics.
    pub fn of(i: usize) -> Kind {
        match i % 10 {
            0..=4 => Kind::Status,
            5 => Kind::Generations,
            6 | 7 => Kind::UnknownDeployment,
            8 => Kind::Unsigned,
            _ => Kind::Metrics,
        }
    }

    /// The request, signed now with `key` for host `hostname` where the kind is signed;
    /// `i` makes the unknown deployment ids distinct.
    pub fn request(self, key: &SecretKey, hostname: &str, i: usize) -> Request {
        let signed = |path: &str| Request::new("GET", path, b"").signed(key, hostname);
        match self {
            Kind::Status => signed("/v1/status"),
            Kind::Generations => signed("/v1/generations"),
            Kind::UnknownDeployment => signed(&format!("/v1/deployments/no-such-{i}")),
            Kind::Unsigned => Request::new("GET", "/v1/status", b""),
            Kind::Metrics => Request::new("GET", "/metrics", b""),
        }
    }

    fn expected_status(self) -> u16 {
        match self {
            Kind::Status | Kind::Generations | Kind::Metrics => 200,
            Kind::UnknownDeployment => 404,
            Kind::Unsigned => 401,
        }
    }

    /// `None` if `response` is what this kind must get from host `hostname`'s agent, else
    /// what was wrong.
    pub fn check(self, response: &Response, hostname: &str) -> Option<String> {
        if response.status != self.expected_status() {
            return Some(format!(
                "{self:?}: status {} (want {}): {:.300}",
                response.status,
                self.expected_status(),
                response.body
            ));
        }
        match self {
            Kind::Status => match serde_json::from_str::<StatusResponse>(&response.body) {
                Ok(s) if s.hostname == hostname => None,
                Ok(s) => Some(format!("status names host `{}`, not `{hostname}`", s.hostname)),
                Err(e) => Some(format!("status is not a StatusResponse ({e}): {:.300}", response.body)),
            },
            Kind::Generations => serde_json::from_str::<serde_json::Value>(&response.body)
                .ok()
                .filter(|v| v["generations"].is_array())
                .map_or_else(|| Some(format!("generations: not the expected JSON: {:.300}", response.body)), |_| None),
            Kind::Metrics => {
                (!response.body.contains("hostctl_agent_info")).then(|| format!("metrics: {:.300}", response.body))
            }
            Kind::UnknownDeployment | Kind::Unsigned => serde_json::from_str::<serde_json::Value>(&response.body)
                .err()
                .map(|e| format!("{self:?}: body is not JSON ({e})")),
        }
    }
}

/// What one request got, and how long it took (connect to last byte).
#[derive(Debug)]
pub struct Outcome {
    pub kind: Kind,
    pub latency: Duration,
    /// `None`: the right answer; otherwise the error (transport, timeout, wrong answer).
    pub error: Option<String>,
}

/// Sends one request on a new connection and checks the answer.
fn send_checked(kind: Kind, request: &Request, addr: &str, hostname: &str, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let result = match kind {
        Kind::Metrics => request.send_plain(&metrics_addr(addr), timeout),
        _ => request.send_with_timeout(addr, timeout),
    };
    let latency = started.elapsed();
    let error = match result {
        // The socket timeouts bound each wait, not the whole exchange.
        Ok(_) if latency > timeout => Some(format!("{kind:?}: took {latency:?}, more than {timeout:?}")),
        Ok(response) => kind.check(&response, hostname),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            Some(format!("{kind:?}: timed out after {timeout:?} ({e})"))
        }
        Err(e) => Some(format!("{kind:?}: {e}")),
    };
    Outcome { kind, latency, error }
}

/// The agent's `metrics_listen` address beside its API address `addr` (`ip:port`).
pub fn metrics_addr(addr: &str) -> String {
    let ip = addr.rsplit_once(':').map_or(addr, |(ip, _)| ip);
    format!("{ip}:{}", crate::simhost::METRICS_PORT)
}

/// `n` signed `GET /v1/status` all in flight at once: one thread and one connection each;
/// every request is signed first, then a barrier releases all threads together. Each may
/// take up to `timeout` (connecting, and each wait for data).
pub fn concurrent_status(addr: &str, hostname: &str, key: &SecretKey, n: usize, timeout: Duration) -> Vec<Outcome> {
    let barrier = Arc::new(Barrier::new(n));
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let request = Kind::Status.request(key, hostname, 0);
                let barrier = Arc::clone(&barrier);
                scope.spawn(move || {
                    barrier.wait();
                    send_checked(Kind::Status, &request, addr, hostname, timeout)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap_or_else(|_| crate::fail("a request thread panicked"))).collect()
    })
}

/// Requests `first..first + count` of the mix ([`Kind::of`]), each on a new connection,
/// spread over `workers` threads that each send one after another.
pub fn mix(
    addr: &str,
    hostname: &str,
    key: &SecretKey,
    first: usize,
    count: usize,
    workers: usize,
    timeout: Duration,
) -> Vec<Outcome> {
    let workers = workers.max(1);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    (first + w..first + count)
                        .step_by(workers)
                        .map(|i| {
                            let kind = Kind::of(i);
                            send_checked(kind, &kind.request(key, hostname, i), addr, hostname, timeout)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads.into_iter().flat_map(|t| t.join().unwrap_or_else(|_| crate::fail("a worker thread panicked"))).collect()
    })
}

/// The errors among `outcomes`, at most `limit` of them, with how many there were.
pub fn errors(outcomes: &[Outcome], limit: usize) -> (usize, Vec<String>) {
    let all: Vec<&String> = outcomes.iter().filter_map(|o| o.error.as_ref()).collect();
    (all.len(), all.into_iter().take(limit).cloned().collect())
}

/// Latency quantiles of a set of outcomes, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latencies {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latencies {
    /// Nearest-rank quantiles; all zero for no outcomes.
    pub fn of<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> Latencies {
        let mut ms: Vec<f64> = outcomes.into_iter().map(|o| o.latency.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |q: f64| -> f64 {
            if ms.is_empty() {
                return 0.0;
            }
            let i = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
            ms[i]
        };
        Latencies { p50: rank(0.50), p95: rank(0.95), p99: rank(0.99), max: rank(1.0) }
    }
}

impl std::fmt::Display for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p50 {:.1} / p95 {:.1} / p99 {:.1} / max {:.1} ms", self.p50, self.p95, self.p99, self.max)
    }
}

/// `TcpExt: ListenOverflows` of network namespace `netns` (`/proc/net/netstat` read
/// inside it): connections the kernel dropped because the listener's accept queue was
/// full. Each one costs its client a SYN retransmission (1 s or more).
pub fn listen_overflows(netns: &str) -> u64 {
    let out = crate::run(std::process::Command::new("ip").args(["netns", "exec", netns, "cat", "/proc/net/netstat"]));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut tcp_ext = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (tcp_ext.next(), tcp_ext.next()) else {
        crate::fail(&format!("no TcpExt lines in /proc/net/netstat of {netns}: {text:.300}"))
    };
    let found = names.split_whitespace().zip(values.split_whitespace()).find(|(n, _)| *n == "ListenOverflows");
    found.and_then(|(_, v)| v.parse().ok()).unwrap_or_else(|| crate::fail("no TcpExt ListenOverflows"))
}

/// `VmRSS` of process `pid` in KiB (`/proc/PID/status`), if it runs.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmRSS:")
}

/// `VmHWM` (the peak of `VmRSS`) of process `pid` in KiB, if it runs.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:")
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// A live fleet of simulated hosts named `names`, each given its own configuration file
/// (so each gets its own system and the whole closure is pushed to every one).
pub fn start_fleet(names: &[String]) -> crate::livefleet::LiveFleet {
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    crate::livefleet::LiveFleet::start_with(&refs, |fleet| {
        for name in names {
            let text =
                format!("{{ system = \"x86_64-linux\"; roles = [ \"nginx\" ]; motd = \"{name} under load\"; }}\n");
            fleet.write(&format!("hosts/{name}.nix"), &text);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_every_kind_in_its_share() {
        let kinds: Vec<Kind> = (0..1000).map(Kind::of).collect();
        let count = |k: Kind| kinds.iter().filter(|&&x| x == k).count();
        assert_eq!(count(Kind::Status), 500);
        assert_eq!(count(Kind::Generations), 100);
        assert_eq!(count(Kind::UnknownDeployment), 200);
        assert_eq!(count(Kind::Unsigned), 100);
        assert_eq!(count(Kind::Metrics), 100);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let outcomes: Vec<Outcome> = (1..=100)
            .map(|ms| Outcome { kind: Kind::Status, latency: Duration::from_millis(ms), error: None })
            .collect();
        let l = Latencies::of(&outcomes);
        assert_eq!((l.p50, l.p95, l.p99, l.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(Latencies::of(&[]).max, 0.0);
    }
}
