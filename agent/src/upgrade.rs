//! Restarting into a new agent. A switch never restarts the agent's unit (the NixOS
//! module sets `restartIfChanged = false`: the agent must outlive the activation it
//! follows), so after a deployment whose system ships another `hostctl-agent` the old one
//! keeps running. This task notices that the running system (`/run/current-system`) ships
//! a different program for the agent's own unit than the one running (`/proc/self/exe`)
//! and, once the agent is idle (no deployment queued, activating or awaiting
//! confirmation), asks `serve` to stop gracefully with [`EXIT_UPGRADE`], which the
//! module's unit restarts on (`RestartForceExitStatus`): systemd then starts the unit as
//! the switch left it, the new program.
//!
//! It never restarts the agent mid-deployment, never outside a systemd service unit (no
//! one would start it again), and never twice for the same shipped program (a unit that
//! still starts the old program after the restart would loop): `state_dir/upgrade-restart`
//! names the program of the last restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hostctl_schemas::api::status::AgentState;

use crate::handles::Handles;

/// The exit code of a restart into a new agent (EX_TEMPFAIL); the module's unit lists it
/// in `RestartForceExitStatus` and `SuccessExitStatus`.
pub const EXIT_UPGRADE: u8 = 75;

/// How often the running system is compared with the running agent.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Where the last restart's target is remembered, under `state_dir`.
const MARKER: &str = "upgrade-restart";

/// What the agent should do about the program its system ships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The system ships the running program (or names none for the agent's unit).
    Stay,
    /// Another program, but a deployment is in flight: look again later.
    Wait,
    /// Another program, and a restart for it was already made: the unit does not start it.
    AlreadyTried(PathBuf),
    /// Another program, and the agent is idle: restart into it.
    Restart(PathBuf),
}

/// The decision for a running program `running` (`/proc/self/exe`'s link text), the
/// program `shipped` by the running system for the agent's unit, whether the agent is
/// idle, and the program of the last restart (`tried`). A shipped program whose file name
/// does not end in `hostctl-agent` is not an agent: the unit runs something else.
pub fn decide(running: &Path, shipped: Option<&Path>, idle: bool, tried: Option<&Path>) -> Decision {
    let Some(shipped) = shipped else { return Decision::Stay };
    // An agent run by another service (a test runner's, say) must not take that
    // service's program for a new agent.
    let is_agent = shipped.file_name().is_some_and(|n| n.to_string_lossy().ends_with("hostctl-agent"));
    if !is_agent || same_program(running, shipped) {
        return Decision::Stay;
    }
    if !idle {
        return Decision::Wait;
    }
    if tried == Some(shipped) {
        return Decision::AlreadyTried(shipped.to_owned());
    }
    Decision::Restart(shipped.to_owned())
}

/// Whether `shipped` is the program running as `running`. A program replaced on disk
/// since it started (`… (deleted)`, e.g. a package upgrade without Nix) is not; links
/// are followed, and the same file under two names is the same program.
fn same_program(running: &Path, shipped: &Path) -> bool {
    if running.to_string_lossy().ends_with(" (deleted)") {
        return false;
    }
    if running == shipped {
        return true;
    }
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(running), std::fs::metadata(shipped)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        // A shipped program that is not there cannot be started either: stay.
        (_, Err(_)) => true,
        (Err(_), Ok(_)) => false,
    }
}

/// The program `unit`'s file in `system` (`etc/systemd/system/<unit>`) starts: the first
/// word of its `ExecStart=`, without systemd's prefixes (`@-:+!`). `None` when the
/// system has no such unit or it names no absolute program.
pub fn shipped_program(system: &Path, unit: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(system.join("etc/systemd/system").join(unit)).ok()?;
    let exec = text.lines().rev().find_map(|line| line.trim().strip_prefix("ExecStart="))?;
    let exec = exec.trim_start_matches(['@', '-', ':', '+', '!']);
    let program = exec.split_whitespace().next()?.trim_matches('"');
    program.starts_with('/').then(|| PathBuf::from(program))
}

/// The systemd service unit a process runs in, from its `/proc/<pid>/cgroup` text: the
/// last `*.service` component of its cgroup path. `None` outside a service unit.
pub fn service_unit(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.rsplit('/').find(|c| c.ends_with(".service")).map(str::to_owned)
    })
}

/// Waits until the agent should restart into the program its system ships (see the
/// module docs); never completes outside a systemd service unit. Returns the program.
pub async fn wait_for_new_agent(app: Handles, system: PathBuf) -> PathBuf {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let Some(unit) = service_unit(&cgroup) else {
        tracing::info!("not in a systemd service unit: no restart into a new agent shipped by a switch");
        return std::future::pending().await;
    };
    let marker = app.config.state_dir.join(MARKER);
    let mut warned = false;
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let running = std::fs::read_link("/proc/self/exe").unwrap_or_default();
        let shipped = shipped_program(&system, &unit);
        let idle = crate::status::agent_state(&app.deployer.records()) == AgentState::Idle;
        let tried = std::fs::read_to_string(&marker).ok().map(PathBuf::from);
        match decide(&running, shipped.as_deref(), idle, tried.as_deref()) {
            Decision::Stay | Decision::Wait => {}
            Decision::AlreadyTried(program) => {
                if !warned {
                    tracing::warn!(
                        unit,
                        running = %running.display(),
                        shipped = %program.display(),
                        "the system ships another agent, but the last restart did not start it: not restarting again (is {unit} the system's unit?)"
                    );
                    warned = true;
                }
            }
            Decision::Restart(program) => {
                if let Err(e) = std::fs::write(&marker, program.as_os_str().as_encoded_bytes()) {
                    tracing::warn!(file = %marker.display(), error = %e, "cannot remember the restart; restarting anyway");
                }
                tracing::info!(
                    unit,
                    running = %running.display(),
                    shipped = %program.display(),
                    version = crate::version::version(),
                    "the running system ships another agent and none of its deployments is in flight: restarting into it"
                );
                return program;
            }
        }
    }
}

#[cfg(test)]
#[path = "upgrade_tests.rs"]
mod tests;
