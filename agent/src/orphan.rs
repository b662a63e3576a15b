//! Nix processes that change the system profile (`nix-env --set`), tracked so a
//! restarted agent can stop one its killed predecessor left running.
//!
//! Invariant: the pid and start time of every profile-changing Nix child are journaled
//! (in [`crate::journal::Record::nix_child`]) as soon as it is spawned, before the agent
//! waits on it. Such a child outlives a `kill -9` of the agent (it may wait minutes for a
//! garbage collector's lock) and could move the profile after recovery already decided
//! where it must point, so recovery first kills it and waits until it is gone
//! ([`stop_leftover`]), and only then reads and restores the profile. The start time
//! (field 22 of `/proc/<pid>/stat`) makes sure a recycled pid is never killed.
//!
//! The window between the spawn and the journal write is not covered: a child spawned
//! just before the agent died, and not yet journaled, is not known to its successor.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// How long a killed process may take to disappear before recovery gives up on it.
const GONE_WITHIN: Duration = Duration::from_secs(10);
const GONE_POLL: Duration = Duration::from_millis(20);

/// A process as the journal remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildProcess {
    pub pid: u32,
    /// Clock ticks since boot when it started; `None` if `/proc` could not tell.
    pub start_time: Option<u64>,
}

impl ChildProcess {
    /// The process `pid` as it is now.
    pub fn observe(pid: u32) -> Self {
        Self { pid, start_time: process_start_time(pid) }
    }

    /// Whether this very process (same pid and start time) still runs (zombies do not).
    /// Without a recorded start time a live pid cannot be told apart from a recycled one,
    /// so it does not count.
    pub fn is_alive(&self) -> bool {
        self.start_time.is_some() && process_start_time(self.pid) == self.start_time
    }
}

/// The start time (field 22 of `/proc/<pid>/stat`) of a live, non-zombie process.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); field 22 is index 19.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn raw_pid(pid: u32) -> Result<Pid, String> {
    i32::try_from(pid).map(Pid::from_raw).map_err(|_| format!("process id {pid} is out of range"))
}

/// Kills `process` with SIGKILL if it is still alive, and waits until it is gone. `Ok(true)` if it had to be
/// killed, `Ok(false)` if it was gone already.
pub async fn stop_leftover(process: &ChildProcess) -> Result<bool, String> {
    if !process.is_alive() {
        return Ok(false);
    }
    let pid = raw_pid(process.pid)?;
    if let Err(e) = kill(pid, Signal::SIGKILL) {
        if e != nix::errno::Errno::ESRCH {
            return Err(format!("cannot kill process {}: {e}", process.pid));
        }
    }
    let start = Instant::now();
    while process.is_alive() {
        if start.elapsed() > GONE_WITHIN {
            return Err(format!("process {} is still there {GONE_WITHIN:?} after SIGKILL", process.pid));
        }
        tokio::time::sleep(GONE_POLL).await;
    }
    Ok(true)
}

/// Stops the profile-changing Nix process a previous agent left running for deployment
/// `id`, if any: recovery calls this before it reads the profile.
pub async fn stop_leftover_nix(id: &str, child: Option<ChildProcess>) {
    let Some(child) = child else { return };
    match stop_leftover(&child).await {
        Ok(true) => {
            tracing::warn!(id, pid = child.pid, "killed a profile change left running by the previous agent")
        }
        Ok(false) => {}
        Err(e) => {
            tracing::error!(id, pid = child.pid, error = %e, "cannot stop the previous agent's profile change")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_live_process_is_killed_and_waited_for() {
        let mut child = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let process = ChildProcess::observe(child.id());
        assert!(process.is_alive());
        // Reap it as its parent would once it dies (here: this test).
        let reaper = std::thread::spawn(move || child.wait());
        assert!(stop_leftover(&process).await.unwrap());
        assert!(!process.is_alive());
        assert!(!reaper.join().unwrap().unwrap().success());
        assert!(!stop_leftover(&process).await.unwrap(), "gone already");
    }

    #[tokio::test]
    async fn a_recycled_pid_is_left_alone() {
        let mut child = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let real = ChildProcess::observe(child.id());
        let other = ChildProcess { pid: real.pid, start_time: real.start_time.map(|t| t + 1) };
        assert!(!other.is_alive());
        assert!(!stop_leftover(&other).await.unwrap());
        assert!(real.is_alive(), "the process with that pid now was not killed");
        let unknown = ChildProcess { pid: real.pid, start_time: None };
        assert!(!stop_leftover(&unknown).await.unwrap());
        assert!(real.is_alive());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
