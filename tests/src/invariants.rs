//! The fault suite's invariants (issue 9): what must hold on a simulated host after any
//! fault, whatever the fault was. [`check`] asserts every one of them and reports which of
//! the two systems the host runs, so that the test can assert the one it expects.
//!
//! - (a) no half-registered store path: every path valid in the host's Nix database
//!   exists on disk with the contents its hash records (`nix store verify --all
//!   --no-trust`, which never repairs) and references only valid paths, and no store
//!   object on disk is unknown to the database (what an interrupted import leaves);
//! - (b) no profile generation points at a missing path: `system` and every
//!   `system-<n>-link` of the host's profile resolve to valid paths;
//! - (c) the journal is readable: every record in `<state_dir>/deployments` is whole JSON
//!   holding a deployment of the API's shape under its own id, in a final state, and the
//!   agent answers `GET /v1/status` and is idle;
//! - (d) the host runs the old or the new system and reports which: what
//!   `switch-to-configuration` last made the running system (the simulated host's
//!   `/run/current-system`), what the profile points at and the agent's status all name
//!   the same toplevel, and it is `old` or `new`.
//!
//! The `nix` commands run inside the host (its own `/nix`), never against this machine's
//! store. `nix-store --verify` is not used: it silently drops a valid path that vanished
//! from disk from the database, which would repair the very fault looked for.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hostctl_schemas::api::deployments::Deployment;
use serde_json::Value;

use crate::fail;
use crate::livefleet::LiveFleet;
use crate::simhost::SimHost;

/// How long [`check`] waits for the agent to answer and be idle (a just-restarted agent).
const SETTLE: Duration = Duration::from_secs(15);

/// Which of the two systems a host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Running {
    Old,
    New,
}

/// What [`check`] found, for the test's own assertions and messages.
#[derive(Debug, Clone)]
pub struct Report {
    pub host: String,
    pub running: Running,
    /// The running toplevel.
    pub toplevel: String,
    /// Valid paths in the host's store, all verified.
    pub valid_paths: usize,
    /// Profile generations on disk, all pointing at valid paths.
    pub generations: usize,
    /// Journal records, all whole and final.
    pub records: usize,
}

impl Report {
    /// Fails unless the host runs `expected`.
    pub fn expect(&self, expected: Running, why: &str) -> &Self {
        if self.running != expected {
            fail(&format!("{why}: {} runs {:?} ({}), expected {expected:?}", self.host, self.running, self.toplevel));
        }
        self
    }
}

/// Checks every invariant of the module documentation on `host` of `live`, whose
/// system before the fault was `old` and the one being deployed `new`; fails the test
/// naming the broken one. The host's link must be up.
pub fn check(live: &LiveFleet, host: &str, old: &str, new: &str) -> Report {
    let h = live.host(host);
    let valid = check_store(h);
    let generations = check_profile(h, &valid);
    let records = check_journal(h);
    let status = settled_status(live, host);
    let (running, toplevel) = check_running(h, &status, old, new);
    Report { host: host.to_owned(), running, toplevel, valid_paths: valid.len(), generations, records }
}

/// [`check`] on every host of `live` with its own old and new system:
/// `systems(host) -> (old, new)`. Returns the reports in host order.
pub fn check_all(live: &LiveFleet, systems: impl Fn(&str) -> (String, String)) -> Vec<Report> {
    live.hosts
        .iter()
        .map(|h| {
            let (old, new) = systems(&h.name);
            check(live, &h.name, &old, &new)
        })
        .collect()
}

/// (a): returns the valid paths.
fn check_store(h: &SimHost) -> BTreeSet<String> {
    let out = h.run_in(&["nix", "path-info", "--all", "--json"]);
    if !out.status.success() {
        fail(&format!("{}: nix path-info --all: {}", h.name, String::from_utf8_lossy(&out.stderr)));
    }
    let infos: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| fail(&format!("{}: nix path-info --all --json: {e}", h.name)));
    let valid: BTreeSet<String> = infos.iter().filter_map(|i| i["path"].as_str().map(str::to_owned)).collect();
    for info in &infos {
        let path = info["path"].as_str().unwrap_or_default();
        if std::fs::symlink_metadata(physical(h, path)).is_err() {
            fail(&format!("{}: {path} is valid in the Nix database but missing on disk", h.name));
        }
        for reference in info["references"].as_array().into_iter().flatten() {
            let reference = reference.as_str().unwrap_or_default();
            if !valid.contains(reference) {
                fail(&format!("{}: valid path {path} references {reference}, which is not valid", h.name));
            }
        }
    }
    if !valid.is_empty() {
        let out = h.run_in(&["nix", "store", "verify", "--all", "--no-trust"]);
        if !out.status.success() {
            fail(&format!(
                "{}: nix store verify --all --no-trust ({}): {}",
                h.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let unknown = h.invalid_store_entries();
    if !unknown.is_empty() {
        fail(&format!("{}: store objects on disk that Nix does not know (half-imported): {unknown:?}", h.name));
    }
    valid
}

/// Where `/nix/store/<base>` of the host lives on this machine's disk.
fn physical(h: &SimHost, store_path: &str) -> PathBuf {
    h.root.join(store_path.trim_start_matches('/'))
}

/// (b): returns the number of generations.
fn check_profile(h: &SimHost, valid: &BTreeSet<String>) -> usize {
    let generations = h.profile_generations();
    for (n, target) in &generations {
        if !valid.contains(target) {
            fail(&format!("{}: profile generation {n} points at {target:?}, not a valid path", h.name));
        }
    }
    if let Some(current) = h.profile_system() {
        if !valid.contains(&current) {
            fail(&format!("{}: the system profile points at {current}, not a valid path", h.name));
        }
    }
    generations.len()
}

/// (c), the files: returns the number of records.
fn check_journal(h: &SimHost) -> usize {
    let dir = state_dir(h).join("deployments");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| fail(&format!("{}: {}: {e}", h.name, dir.display())));
    let mut records = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".json") else { continue };
        let text = std::fs::read_to_string(entry.path())
            .unwrap_or_else(|e| fail(&format!("{}: journal record {name}: {e}", h.name)));
        let record: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| fail(&format!("{}: journal record {name} is not whole JSON ({e}): {text}", h.name)));
        let deployment: Deployment = serde_json::from_value(record["deployment"].clone())
            .unwrap_or_else(|e| fail(&format!("{}: journal record {name} holds no deployment ({e}): {text}", h.name)));
        if deployment.id != id {
            fail(&format!("{}: journal record {name} holds deployment {}", h.name, deployment.id));
        }
        if !deployment.state.is_final() {
            fail(&format!("{}: deployment {id} was left {:?}: {text}", h.name, deployment.state));
        }
        records += 1;
    }
    records
}

/// The agent's `state_dir` from the configuration it was last started with.
fn state_dir(h: &SimHost) -> PathBuf {
    let config = std::fs::read_to_string(h.root.join("etc/agent.yaml")).unwrap_or_default();
    config
        .lines()
        .find_map(|line| line.strip_prefix("state_dir:"))
        .map(|value| {
            let value = value.trim();
            serde_json::from_str::<String>(value).unwrap_or_else(|_| value.to_owned())
        })
        .map_or_else(|| h.root.join("state/agent"), PathBuf::from)
}

/// (c), the agent: its `GET /v1/status` once it answers and is idle.
fn settled_status(live: &LiveFleet, host: &str) -> Value {
    let deadline = Instant::now() + SETTLE;
    loop {
        let last = match live.agent_request(host, "GET", "/v1/status", b"") {
            Ok(r) if r.status == 200 => match serde_json::from_str::<Value>(&r.body) {
                Ok(v) if v["state"] == "idle" => return v,
                _ => r.body,
            },
            Ok(r) => format!("{} {}", r.status, r.body),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            fail(&format!("{host}: the agent is not idle and answering within {SETTLE:?}; last answer: {last}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (d).
fn check_running(h: &SimHost, status: &Value, old: &str, new: &str) -> (Running, String) {
    let running = h.current_system();
    let running_is = if running == old {
        Running::Old
    } else if running == new {
        Running::New
    } else {
        fail(&format!("{}: runs {running:?}, neither the old system {old} nor the new {new}", h.name))
    };
    let profile = h.profile_system();
    if profile.as_deref() != Some(running.as_str()) {
        fail(&format!("{}: runs {running} but the system profile points at {profile:?}", h.name));
    }
    if status["toplevel"].as_str() != Some(running.as_str()) {
        fail(&format!("{}: runs {running} but its agent reports {}: {status}", h.name, status["toplevel"]));
    }
    (running_is, running)
}
