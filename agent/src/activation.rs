//! Running `switch-to-configuration` detached from the agent, behind the
//! [`ServiceManager`] trait, and reading back its output and exit status.
//!
//! Invariant: only this module (and `crate::systemd`, its transient-unit implementation)
//! runs `switch-to-configuration`. The activation outlives the agent: an agent restarted
//! by the switch itself (or by anything else) finds the activation through its
//! [`ActivationHandle`] in the journal and reads the exit status from the exit file, which
//! the wrapper writes with write-then-rename.
//!
//! Starting is two-step ([`ServiceManager::prepare`], then [`Prepared::launch`]) so the
//! agent can journal the handle *before* `switch-to-configuration` can run: an activation
//! whose handle is not in the journal never runs, and a restarted agent never has to guess
//! whether an unrecorded activation is still changing the system.
//!
//! [`DetachedChild`] is a child in its own process group that the agent does not wait on
//! for the result (hosts without systemd, and most tests). On a systemd host, stopping the
//! agent's unit would kill its whole cgroup including such a child, so there
//! `crate::systemd::SystemdUnits` starts the same wrapper as a transient unit instead;
//! `crate::systemd::Managers` routes a journaled handle to the manager it names.

use std::fs::File;
use std::future::Future;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;

use hostctl_schemas::inventory::Mode;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use crate::orphan::{process_start_time, ChildProcess};

/// What to activate, and where its output and exit status go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationSpec {
    /// `<toplevel>/bin/switch-to-configuration` as a file (below a test store's root).
    pub program: PathBuf,
    pub mode: Mode,
    pub log: PathBuf,
    pub exit_file: PathBuf,
}

/// How to find a started activation again, also after an agent restart (journaled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationHandle {
    /// Which [`ServiceManager`] started it ([`DETACHED_CHILD`], or `systemd`).
    pub manager: String,
    /// The wrapper's process id, and its start time in clock ticks since boot (from
    /// `/proc/<pid>/stat`), so a recycled pid is not mistaken for it (0 and `None` for a
    /// systemd unit: its pid exists only once launched, after the handle was journaled).
    pub pid: u32,
    pub start_time: Option<u64>,
    pub log: PathBuf,
    pub exit_file: PathBuf,
    /// The systemd unit (`hostctl-activate-….service`); absent in journals written before
    /// systemd units were supported, which only ever hold detached children.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// [`ActivationHandle::manager`] of a [`DetachedChild`].
pub const DETACHED_CHILD: &str = "detached-child";

impl ActivationHandle {
    /// What runs the activation, for messages: `unit NAME` or `process PID`.
    pub fn describe(&self) -> String {
        match &self.unit {
            Some(unit) => format!("unit {unit}"),
            None => format!("process {}", self.pid),
        }
    }
}

/// Where an activation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationStatus {
    Running,
    /// Finished with this exit code (128 + n when killed by signal n).
    Finished(i32),
    /// Never launched: the agent stopped (or gave up) between [`ServiceManager::prepare`]
    /// and [`Prepared::launch`], so `switch-to-configuration` did not run.
    Cancelled,
    /// The process is gone and left no exit status (killed along with its wrapper, or
    /// the machine rebooted).
    Vanished,
}

/// Why an activation could not be started or queried.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("cannot start `{program} {mode}`: {source}")]
    Spawn {
        program: String,
        mode: Mode,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the activation's exit status {file}: {problem}")]
    ExitFile { file: String, problem: String },
    #[error("cannot kill the activation (process group {pid}): {problem}")]
    Kill { pid: u32, problem: String },
    #[error("cannot launch the prepared activation ({what}): {source}")]
    Launch {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("systemd ({unit}): {problem}")]
    Systemd { unit: String, problem: String },
    #[error("the activation handle names an unknown service manager `{0}`")]
    UnknownManager(String),
}

/// A service manager's answer to come (boxed, so `dyn ServiceManager` works).
pub type Answer<'a, T> = Pin<Box<dyn Future<Output = Result<T, ActivationError>> + Send + 'a>>;

/// What lets a prepared activation go, not started before it is awaited.
pub type Launch = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// Starts activations so they survive the agent, and reports on them. Asking runs on
/// the agent's runtime and waits without holding a worker (systemd may take seconds).
pub trait ServiceManager: Send + Sync + std::fmt::Debug {
    /// Creates the activation without running `switch-to-configuration` yet: that starts
    /// only on [`Prepared::launch`], and never if the [`Prepared`] is dropped or the agent
    /// dies first (the activation then reports [`ActivationStatus::Cancelled`]). It only
    /// removes files and spawns, so it need not wait.
    fn prepare(&self, spec: &ActivationSpec) -> Result<Prepared, ActivationError>;
    fn status<'a>(&'a self, handle: &'a ActivationHandle) -> Answer<'a, ActivationStatus>;
    /// Kills the activation with everything it started (a hung `switch-to-configuration`)
    /// and returns once it is gone; it then reports [`ActivationStatus::Vanished`].
    fn kill<'a>(&'a self, handle: &'a ActivationHandle) -> Answer<'a, ()>;
    /// Reboots the host as `systemctl reboot` does (a `reboot` deployment); only systemd
    /// can, the others refuse.
    fn reboot(&self) -> Answer<'_, ()> {
        Box::pin(std::future::ready(Err(ActivationError::Systemd {
            unit: "reboot.target".into(),
            problem: "the agent does not run under systemd, so it cannot reboot the host (set boot.reboot_command)"
                .into(),
        })))
    }
}

/// An activation that exists (its handle can be journaled) but has not started.
pub struct Prepared {
    pub handle: ActivationHandle,
    go: Launch,
}

impl Prepared {
    pub fn new(handle: ActivationHandle, go: Launch) -> Self {
        Self { handle, go }
    }

    /// Lets `switch-to-configuration` run.
    pub async fn launch(self) -> Result<ActivationHandle, ActivationError> {
        self.go.await.map_err(|source| ActivationError::Launch { what: self.handle.describe(), source })?;
        Ok(self.handle)
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("handle", &self.handle).finish_non_exhaustive()
    }
}

/// What the wrapper writes to the exit file when it was never told to go.
const CANCELLED: &str = "cancelled";

/// The wrapper around `switch-to-configuration`. It first waits for `go` on its stdin (a
/// pipe from the agent): end of file instead means the agent dropped it or died before
/// journaling it, and it records `cancelled` without running anything. Then output goes to
/// the log, and the exit status to `EXIT.tmp`, renamed to `EXIT` so a reader never sees
/// half of it. Arguments are positional (`$1`..`$4`), never spliced into the script.
const WRAPPER: &str = r#"IFS= read -r go || go=
if [ "$go" != go ]; then printf 'cancelled\n' >"$4.tmp" && mv -f "$4.tmp" "$4"; exit 0; fi
"$1" "$2" </dev/null >"$3" 2>&1
code=$?
printf '%s\n' "$code" >"$4.tmp" && mv -f "$4.tmp" "$4""#;

/// Runs the wrapper as a child in its own process group: a signal to the agent's group
/// (Ctrl-C, `kill -- -PGID`) and the agent's exit leave it running.
#[derive(Debug, Default, Clone, Copy)]
pub struct DetachedChild;

impl ServiceManager for DetachedChild {
    fn prepare(&self, spec: &ActivationSpec) -> Result<Prepared, ActivationError> {
        let spawn_err =
            |source| ActivationError::Spawn { program: spec.program.display().to_string(), mode: spec.mode, source };
        let _ = std::fs::remove_file(&spec.exit_file);
        // tokio's `Command`: its pipe is written without blocking a runtime worker, and
        // the runtime reaps the wrapper.
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("hostctl-activation")
            .arg(&spec.program)
            .arg(spec.mode.as_str())
            .arg(&spec.log)
            .arg(&spec.exit_file)
            // As nixos-rebuild: "1" only for --install-bootloader, which hostctl never asks.
            .env("NIXOS_INSTALL_BOOTLOADER", "")
            // The gate: std creates the pipe close-on-exec, so only the wrapper holds its
            // read end and no other child of the agent keeps the write end open.
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(spawn_err)?;
        let pid = child.id().unwrap_or_default();
        let gate = child.stdin.take();
        // Reap the wrapper when it exits so it does not linger as a zombie; the result
        // itself is read from the exit file, which also works after a restart.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let handle = ActivationHandle {
            manager: DETACHED_CHILD.to_owned(),
            pid,
            start_time: process_start_time(pid),
            log: spec.log.clone(),
            exit_file: spec.exit_file.clone(),
            unit: None,
        };
        let go = async move {
            let mut gate = gate.ok_or_else(|| std::io::Error::other("the wrapper has no stdin pipe"))?;
            gate.write_all(b"go\n").await?;
            gate.flush().await
        };
        Ok(Prepared::new(handle, Box::pin(go)))
    }

    fn status<'a>(&'a self, handle: &'a ActivationHandle) -> Answer<'a, ActivationStatus> {
        Box::pin(async move { detached_status(handle) })
    }

    fn kill<'a>(&'a self, handle: &'a ActivationHandle) -> Answer<'a, ()> {
        Box::pin(kill_group(handle))
    }
}

/// A detached child's status: its exit file, else whether the wrapper still runs (both
/// read from files, at once).
fn detached_status(handle: &ActivationHandle) -> Result<ActivationStatus, ActivationError> {
    if let Some(done) = read_exit_file(&handle.exit_file)? {
        return Ok(done);
    }
    let alive = match (process_start_time(handle.pid), handle.start_time) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if alive {
        return Ok(ActivationStatus::Running);
    }
    // It may have renamed the exit file between the two checks.
    Ok(read_exit_file(&handle.exit_file)?.unwrap_or(ActivationStatus::Vanished))
}

/// SIGKILL to the wrapper's process group (its id is the wrapper's pid), if the wrapper
/// is still the process the handle names; then waits until it is gone.
async fn kill_group(handle: &ActivationHandle) -> Result<(), ActivationError> {
    let process = ChildProcess { pid: handle.pid, start_time: handle.start_time };
    let pgid = i32::try_from(handle.pid).map(nix::unistd::Pid::from_raw);
    let kill_err = |problem: String| ActivationError::Kill { pid: handle.pid, problem };
    if process.is_alive() {
        let pgid = pgid.map_err(|e| kill_err(e.to_string()))?;
        match nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(kill_err(e.to_string())),
        }
    }
    let start = std::time::Instant::now();
    while process.is_alive() {
        if start.elapsed() > KILL_WAIT {
            return Err(kill_err(format!("still there {KILL_WAIT:?} after SIGKILL")));
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(())
}

/// How long a killed activation may take to disappear.
const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the exit file says (`Finished` or `Cancelled`), `None` if it does not exist yet.
pub fn read_exit_file(file: &Path) -> Result<Option<ActivationStatus>, ActivationError> {
    let problem = |problem: String| ActivationError::ExitFile { file: file.display().to_string(), problem };
    match std::fs::read_to_string(file) {
        Ok(text) if text.trim() == CANCELLED => Ok(Some(ActivationStatus::Cancelled)),
        Ok(text) => text
            .trim()
            .parse::<i32>()
            .map(|code| Some(ActivationStatus::Finished(code)))
            .map_err(|_| problem(format!("{:?} is not a number", text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(problem(e.to_string())),
    }
}

/// How many lines of activation output a deployment reports.
pub const LOG_TAIL_LINES: usize = 50;
/// At most this much of the log's end is read for the tail.
const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// The last [`LOG_TAIL_LINES`] lines of the log (empty if there is none yet).
pub fn log_tail(log: &Path) -> String {
    let Ok(mut file) = File::open(log) else { return String::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(LOG_TAIL_BYTES);
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        // The first line was cut by the byte limit.
        lines.remove(0);
    }
    let from = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[from..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostctl_schemas::api::deployments::ActivationOutcome;
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::Duration;

    fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("switch-to-configuration");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    async fn wait(handle: &ActivationHandle) -> ActivationStatus {
        for _ in 0..200 {
            match DetachedChild.status(handle).await.unwrap() {
                ActivationStatus::Running => tokio::time::sleep(Duration::from_millis(25)).await,
                done => return done,
            }
        }
        panic!("activation did not finish");
    }

    fn spec(dir: &Path, program: PathBuf, mode: Mode) -> ActivationSpec {
        ActivationSpec { program, mode, log: dir.join("x.log"), exit_file: dir.join("x.exit") }
    }

    #[tokio::test]
    async fn runs_detached_and_reports_exit_code_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let program =
            script(dir.path(), r#"echo "mode $1 bootloader=[$NIXOS_INSTALL_BOOTLOADER]"; echo oops >&2; exit 4"#);
        let handle = DetachedChild.prepare(&spec(dir.path(), program, Mode::Test)).unwrap().launch().await.unwrap();
        assert_eq!(wait(&handle).await, ActivationStatus::Finished(4));
        assert_eq!(log_tail(&handle.log), "mode test bootloader=[]\noops");
        assert!(!dir.path().join("x.exit.tmp").exists());
    }

    #[tokio::test]
    async fn the_activation_has_its_own_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let program = script(dir.path(), "sleep 1");
        let handle = DetachedChild.prepare(&spec(dir.path(), program, Mode::Switch)).unwrap().launch().await.unwrap();
        assert_eq!(DetachedChild.status(&handle).await.unwrap(), ActivationStatus::Running);
        let pid = nix::unistd::Pid::from_raw(i32::try_from(handle.pid).unwrap());
        // A group of its own: signals to the agent's group (Ctrl-C, `kill -- -PGID`) miss it.
        assert_eq!(nix::unistd::getpgid(Some(pid)).unwrap(), pid);
        assert_ne!(nix::unistd::getpgid(None).unwrap(), pid);
        assert_eq!(wait(&handle).await, ActivationStatus::Finished(0));
    }

    #[tokio::test]
    async fn kill_stops_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let program = script(dir.path(), &format!("sleep 600 & echo $! > {}; wait", pid_file.display()));
        let handle = DetachedChild.prepare(&spec(dir.path(), program, Mode::Switch)).unwrap().launch().await.unwrap();
        for _ in 0..200 {
            if std::fs::read_to_string(&pid_file).is_ok_and(|t| t.ends_with('\n')) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let sleep_pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        assert!(process_start_time(sleep_pid).is_some(), "the activation's own child runs");
        DetachedChild.kill(&handle).await.unwrap();
        assert_eq!(DetachedChild.status(&handle).await.unwrap(), ActivationStatus::Vanished);
        for _ in 0..200 {
            if process_start_time(sleep_pid).is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(process_start_time(sleep_pid).is_none(), "the activation's child was killed with it");
        DetachedChild.kill(&handle).await.unwrap();
    }

    #[tokio::test]
    async fn a_prepared_activation_runs_nothing_until_launched() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let program = script(dir.path(), &format!("touch {}", marker.display()));
        let prepared = DetachedChild.prepare(&spec(dir.path(), program, Mode::Switch)).unwrap();
        let handle = prepared.handle.clone();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(DetachedChild.status(&handle).await.unwrap(), ActivationStatus::Running, "waiting at the gate");
        assert!(!marker.exists());
        // Dropping it is what the agent's death does to the gate: end of file.
        drop(prepared);
        assert_eq!(wait(&handle).await, ActivationStatus::Cancelled);
        assert!(!marker.exists(), "switch-to-configuration never ran");
        assert!(!dir.path().join("x.log").exists());
    }

    #[tokio::test]
    async fn a_killed_activation_without_exit_file_vanishes() {
        let dir = tempfile::tempdir().unwrap();
        let handle = ActivationHandle {
            manager: "detached-child".into(),
            pid: u32::MAX - 1,
            start_time: Some(1),
            log: dir.path().join("none.log"),
            exit_file: dir.path().join("none.exit"),
            unit: None,
        };
        assert_eq!(DetachedChild.status(&handle).await.unwrap(), ActivationStatus::Vanished);
        std::fs::write(&handle.exit_file, "100\n").unwrap();
        assert_eq!(DetachedChild.status(&handle).await.unwrap(), ActivationStatus::Finished(100));
        std::fs::write(&handle.exit_file, "x").unwrap();
        assert!(DetachedChild.status(&handle).await.is_err());
    }

    #[test]
    fn exit_codes_map_to_outcomes() {
        let cases = [
            (0, ActivationOutcome::Ok),
            (1, ActivationOutcome::CheckFailed),
            (2, ActivationOutcome::ActivationFailed),
            (4, ActivationOutcome::UnitsFailed),
            (100, ActivationOutcome::RebootRequired),
            (3, ActivationOutcome::Other),
            (137, ActivationOutcome::Other),
        ];
        for (code, outcome) in cases {
            assert_eq!(ActivationOutcome::from_exit_code(Some(code)), outcome, "{code}");
        }
        assert!(ActivationOutcome::RebootRequired.succeeded());
        assert!(!ActivationOutcome::UnitsFailed.succeeded());
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("l");
        assert_eq!(log_tail(&log), "");
        let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let tail = log_tail(&log);
        assert!(tail.starts_with("line 950\n") && tail.ends_with("line 999"), "{tail}");
    }
}
