//! Scenario 8 of the VM lane: power cuts at named points (tests/tests/vm_power.rs).
//!
//! A point stops the world at one place: a debug-build pause point of the agent
//! (`agent/src/pause.rs`: the test writes the point's name to `/run/hostctl-agent/pause-at`,
//! the agent writes `paused-at` and blocks there), a hold of the fixture's
//! `switch-to-configuration` (`/run/hostctl-vm-hold-switch`), a new unit still starting,
//! or `hostctl apply` having returned. Then qemu gets SIGKILL, the guest boots again, the
//! invariants of [`super::checks`] must hold and the outcome must be the one the recovery
//! table (agent/src/recovery.rs, docs/RELIABILITY.md) gives for that point: which system
//! runs and how the cut deployment ended. One guest takes point after point.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::checks::check;
use super::fleet::VmFleet;
use crate::fail;

/// Where the agent's pause requests and markers live (its unit's RuntimeDirectory).
const PAUSE_DIR: &str = "/run/hostctl-agent";
/// How long reaching a point may take (build, import, activation under TCG).
const REACH_TIMEOUT: Duration = Duration::from_secs(300);

/// What the deployment cut short changes on the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `hostctl apply` (switch) of a new version of a running unit.
    Switch,
    /// A switch that also starts a oneshot unit taking 60 s.
    SlowUnit,
    /// A switch with a unit that fails to start: exit 4, the agent rolls back.
    FailingUnit,
    /// `hostctl apply --mode boot`.
    Boot,
}

/// How the world is stopped at the point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The agent's pause point of this name.
    Pause(&'static str),
    /// The agent's pause point, then the fixture's hold: the next switch-to-configuration
    /// (the rollback's) is running when the power goes.
    PauseThenHold(&'static str),
    /// Between the profile switch and the activation's work: the fixture's hold.
    HoldSwitch,
    /// The slow unit of [`Change::SlowUnit`] is `activating`.
    UnitStarting,
    /// `hostctl apply` returned (the deployment was acknowledged).
    Acknowledged,
}

/// What must run after the boot, and how the deployment cut short must have ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The system that ran before; the deployment (if one was registered) ended in one
    /// of these states.
    Old(&'static [&'static str]),
    /// The new system, its deployment `confirmed`.
    New,
}

/// One cut point of the table in tests/tests/vm_power.rs.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// Its name in docs/RELIABILITY.md.
    pub id: &'static str,
    /// What was running when the power went.
    pub what: &'static str,
    pub change: Change,
    pub stop: Stop,
    pub expect: Expect,
}

/// What a cut led to, for the results table.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The cut deployment's final state and end reason ("-" when none was registered).
    pub deployment: String,
    /// `old` or `new`.
    pub running: &'static str,
    /// From the power cut to the invariants checked (boot, recovery, checks).
    pub took: Duration,
    /// Why the outcome is not the recovery table's (the invariants held: the caller
    /// goes on with the next point and fails at the end).
    pub surprise: Option<String>,
}

/// Cuts the power at `point` on guest `name` during the `seq`-th change, boots, checks.
/// `acknowledged` collects the deployments `hostctl apply` reported, which must stay in
/// the journal, final, across every later cut.
pub fn cut(vm: &mut VmFleet, name: &str, point: &Point, seq: usize, acknowledged: &mut Vec<String>) -> Outcome {
    vm.set_host(name, &services(point.change, seq));
    let old = vm.guest(name).resolve("/run/current-system");
    let new = vm.toplevel(name);
    let before = deployment_ids(vm, name);
    let armed = match point.stop {
        Stop::Pause(p) | Stop::PauseThenHold(p) => format!("echo {p} > {PAUSE_DIR}/pause-at"),
        Stop::HoldSwitch => "touch /run/hostctl-vm-hold-switch".to_owned(),
        Stop::UnitStarting | Stop::Acknowledged => "true".to_owned(),
    };
    vm.guest(name).sh(&armed);
    let mode = if point.change == Change::Boot { "boot" } else { "switch" };
    let mut apply = vm.spawn_hostctl(&["--json", "apply", "--mode", mode]);
    let reached = reach(vm, name, point, &mut apply);
    let id = reached.clone().or_else(|| deployment_ids(vm, name).into_iter().find(|id| !before.contains(id)));
    let cut_at = Instant::now();
    vm.guest_mut(name).power_cut();
    let _ = apply.kill();
    if let Some(acked) = reached {
        acknowledged.push(acked);
    }
    vm.guest_mut(name).boot();
    let acked: Vec<&str> = acknowledged.iter().map(String::as_str).collect();
    let running = check(vm, name, &acked);
    let record = id.as_ref().map(|id| vm.agent_get(name, &format!("/v1/deployments/{id}")));
    let deployment = record.as_ref().map_or("-".to_owned(), describe);
    let state = record.as_ref().and_then(|r| r["state"].as_str()).unwrap_or("");
    let ok = match point.expect {
        Expect::New => running == new && state == "confirmed",
        Expect::Old(states) => running == old && (record.is_none() || states.contains(&state)),
    };
    let surprise = (!ok).then(|| {
        format!(
            "{name}: after a power cut at `{}` expected {:?}; runs {running} (old {old}, new {new}), deployment {deployment}",
            point.id, point.expect
        )
    });
    // Confirmed but never reported to the controller: it must stay so all the same.
    if let (Expect::New, Some(id), Stop::Pause(_)) = (point.expect, id, point.stop) {
        acknowledged.push(id);
    }
    let running = if running == new { "new" } else { "old" };
    let outcome = Outcome { deployment, running, took: cut_at.elapsed(), surprise };
    eprintln!(
        "vm power cut | {} | {} | {} | runs {} | {:.0} s{}",
        point.id,
        point.what,
        outcome.deployment,
        outcome.running,
        outcome.took.as_secs_f64(),
        if outcome.surprise.is_some() { " | NOT AS EXPECTED" } else { "" }
    );
    outcome
}

/// hosts/<name>.nix for the `seq`-th change: a new version of `vm-web` every time.
pub fn services(change: Change, seq: usize) -> String {
    let web = format!("vm-web = {{ exec = \"/bin/sleep infinity\"; version = \"{seq}\"; }};");
    let extra = match change {
        Change::Switch | Change::Boot => "",
        Change::SlowUnit => "vm-slow = { exec = \"/bin/sleep 60\"; type = \"oneshot\"; };",
        Change::FailingUnit => "vm-broken = { exec = \"/bin/false\"; type = \"oneshot\"; };",
    };
    format!("{{ services = {{ {web} {extra} }}; }}\n")
}

/// Waits until `point` is reached; returns the deployment `hostctl apply` reported, for
/// [`Stop::Acknowledged`].
fn reach(vm: &VmFleet, name: &str, point: &Point, apply: &mut crate::HostctlChild) -> Option<String> {
    let guest = vm.guest(name);
    let deadline = Instant::now() + REACH_TIMEOUT;
    let paused = |p: &str| {
        let out = guest.ssh(&format!("cat {PAUSE_DIR}/paused-at 2>/dev/null"));
        String::from_utf8_lossy(&out.stdout).trim() == p
    };
    let switching = || guest.ssh("pgrep -f 'bin/switch-to-configuratio[n]'").status.success();
    loop {
        let there = match point.stop {
            Stop::Pause(p) => paused(p),
            Stop::PauseThenHold(p) => {
                if paused(p) {
                    guest.sh(&format!("touch /run/hostctl-vm-hold-switch; echo none > {PAUSE_DIR}/pause-at"));
                    wait_for(deadline, point, apply, switching);
                    return None;
                }
                false
            }
            Stop::HoldSwitch => switching(),
            Stop::UnitStarting => guest.unit_property("vm-slow", "ActiveState") == "activating",
            Stop::Acknowledged => {
                if !apply.is_running() {
                    let run = apply.wait_timeout(Duration::from_secs(10)).unwrap_or_else(|| apply.kill());
                    run.expect_code(0);
                    return run.json()["hosts"][name]["deployment"].as_str().map(str::to_owned);
                }
                false
            }
        };
        if there {
            return None;
        }
        // Not on `hostctl apply` ending: it may give up on an agent held at a point.
        if Instant::now() > deadline {
            fail(&format!("{name}: never reached `{}`: {}", point.id, apply.output(None).stderr));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn wait_for(deadline: Instant, point: &Point, apply: &crate::HostctlChild, done: impl Fn() -> bool) {
    while !done() {
        if Instant::now() > deadline {
            fail(&format!("never reached `{}`: {}", point.id, apply.output(None).stderr));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The deployment ids in the guest's journal (its files' names).
fn deployment_ids(vm: &VmFleet, name: &str) -> Vec<String> {
    let listing = vm.guest(name).sh("ls /var/lib/hostctl-agent/deployments/ 2>/dev/null || true");
    listing.lines().filter_map(|f| f.strip_suffix(".json")).map(str::to_owned).collect()
}

/// `state (end_reason)` of a deployment record.
fn describe(record: &Value) -> String {
    let state = record["state"].as_str().unwrap_or("?");
    match record["end_reason"].as_str() {
        Some(reason) => format!("{state} ({reason})"),
        None => state.to_owned(),
    }
}
