//! Health checks the agent runs after a successful activation, before it waits for
//! confirmation: the agent config's `health` checks, then the deployment request's.
//! Only `command` checks run here (argv, no shell); `http` checks belong to the
//! controller, so a request carrying one is refused and an agent config with one does
//! not start.
//!
//! Each attempt runs the command in a process group of its own with its output in a
//! file (so a child that keeps the output open cannot hang the agent); on timeout the
//! whole group is killed (SIGKILL, by the command's pid, which is its group id) and the
//! command reaped. A check fails when its first attempt and all `retries` more failed,
//! `interval` apart; the first failing check fails the deployment.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration as StdDuration;

use hostctl_nix::command::render_argv;
use hostctl_schemas::api::deployments::HealthFailure;
use hostctl_schemas::inventory::{HealthCheck, HealthKind};
use hostctl_schemas::text::plural;

use crate::activation::log_tail;

/// How many lines of a failed check's output its error keeps.
const OUTPUT_TAIL_LINES: usize = 10;

/// The first `http` check among `checks`, as an error naming `field[index]`.
pub fn refuse_http(field: &str, checks: &[HealthCheck]) -> Result<(), String> {
    match checks.iter().position(|c| matches!(c.kind, HealthKind::Http(_))) {
        Some(i) => Err(format!(
            "{field}[{i}]: `http` health checks run on the controller (fleet.yaml); the agent runs only `command` checks"
        )),
        None => Ok(()),
    }
}

/// Runs `checks` in order; `Err` names the first failing one with its output's tail.
/// `output` is the file each attempt's output goes to (overwritten per attempt).
pub async fn run_checks(checks: &[HealthCheck], output: &Path) -> Result<(), HealthFailure> {
    for check in checks {
        let HealthKind::Command(argv) = &check.kind else {
            // Refused when the request or config was read; never run an unchecked probe.
            return Err(HealthFailure::new(format!("{:?}", check.kind), "not a command check"));
        };
        run_check(check, argv, output).await?;
    }
    Ok(())
}

/// The deployment's error for a failed check.
pub fn failure_message(failure: &HealthFailure) -> String {
    format!("health check `{}` failed: {}", failure.check, failure.error)
}

async fn run_check(check: &HealthCheck, argv: &[String], output: &Path) -> Result<(), HealthFailure> {
    let attempts = check.retries.saturating_add(1);
    let mut problem = String::new();
    for attempt in 1..=attempts {
        match attempt_once(argv, check.timeout.into(), output).await {
            Ok(()) => {
                tracing::info!(check = %render_argv(argv), attempt, "health check passed");
                return Ok(());
            }
            Err(p) => problem = p,
        }
        tracing::warn!(check = %render_argv(argv), attempt, attempts, %problem, "health check attempt failed");
        if attempt < attempts {
            tokio::time::sleep(check.interval.into()).await;
        }
    }
    let tail = tail_lines(&log_tail(output), OUTPUT_TAIL_LINES);
    let mut error = format!("{problem} ({})", plural(attempts, "attempt", "attempts"));
    if !tail.is_empty() {
        error.push_str("; output:\n");
        error.push_str(&tail);
    }
    Err(HealthFailure::new(render_argv(argv), error))
}

/// One attempt: `Err` says why it failed (exit status, timeout, could not start).
async fn attempt_once(argv: &[String], timeout: StdDuration, output: &Path) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("the command is empty")?;
    let out = std::fs::File::create(output).map_err(|e| format!("cannot create {}: {e}", output.display()))?;
    let err = out.try_clone().map_err(|e| format!("cannot open {}: {e}", output.display()))?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own group, so a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(describe(status)),
        Ok(Err(e)) => Err(format!("cannot wait for `{program}`: {e}")),
        Err(_) => {
            kill_group(pid);
            // Reap it, so the pid is free and no zombie is left behind.
            let _ = child.start_kill();
            let _ = child.wait().await;
            let pid = pid.map_or_else(|| "?".to_owned(), |p| p.to_string());
            Err(format!("timed out after {}ms (process {pid} and its group killed)", timeout.as_millis()))
        }
    }
}

/// SIGKILL to the process group led by `pid`.
fn kill_group(pid: Option<u32>) {
    let Some(pgid) = pid.and_then(|p| i32::try_from(p).ok()) else { return };
    if let Err(e) = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL) {
        tracing::warn!(pgid, error = %e, "cannot kill a timed-out health check's process group");
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "failed".to_owned(),
    }
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostctl_schemas::duration::Duration;

    fn command(argv: &[&str], timeout_ms: u64, retries: u32) -> HealthCheck {
        HealthCheck {
            kind: HealthKind::Command(argv.iter().map(|a| (*a).to_owned()).collect()),
            timeout: Duration::from(StdDuration::from_millis(timeout_ms)),
            retries,
            interval: Duration::from(StdDuration::from_millis(50)),
        }
    }

    #[tokio::test]
    async fn passing_failing_and_retried_checks() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("health.log");
        assert_eq!(run_checks(&[command(&["true"], 1000, 0)], &out).await, Ok(()));
        assert_eq!(run_checks(&[], &out).await, Ok(()));

        let err = run_checks(&[command(&["true"], 1000, 0), command(&["false"], 1000, 1)], &out).await.unwrap_err();
        assert_eq!(err, HealthFailure::new("false", "exit status 1 (2 attempts)"), "names the failing check");
        assert_eq!(failure_message(&err), "health check `false` failed: exit status 1 (2 attempts)");

        let err = run_checks(&[command(&["sh", "-c", "echo not ready; exit 3"], 1000, 0)], &out).await.unwrap_err();
        assert_eq!(
            failure_message(&err),
            "health check `sh -c 'echo not ready; exit 3'` failed: exit status 3 (1 attempt); output:\nnot ready"
        );

        // Passes on the third attempt: the first two remove one file each.
        let flag = dir.path().join("flag");
        std::fs::write(&flag, "").unwrap();
        let script = format!("if [ -e {0} ]; then rm {0}; exit 1; fi", flag.display());
        assert_eq!(run_checks(&[command(&["sh", "-c", &script], 1000, 2)], &out).await, Ok(()));

        let err = failure_message(&run_checks(&[command(&["/nonexistent/check"], 1000, 0)], &out).await.unwrap_err());
        assert!(err.contains("cannot run `/nonexistent/check`"), "{err}");
    }

    #[tokio::test]
    async fn a_slow_check_is_killed_at_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("health.log");
        let started = std::time::Instant::now();
        let err = failure_message(&run_checks(&[command(&["sleep", "5"], 500, 0)], &out).await.unwrap_err());
        assert!(started.elapsed() < StdDuration::from_secs(2), "{:?}", started.elapsed());
        assert!(err.starts_with("health check `sleep 5` failed: timed out after 500ms (process "), "{err}");
        let pid: u32 = err.split("(process ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "sleep {pid} still exists");

        // A grandchild holding the output open is killed with its group.
        let script = format!("sleep 5 & echo $! > {}/child; wait", dir.path().display());
        let err = failure_message(&run_checks(&[command(&["sh", "-c", &script], 300, 0)], &out).await.unwrap_err());
        assert!(err.contains("timed out after 300ms"), "{err}");
        let child = std::fs::read_to_string(dir.path().join("child")).unwrap();
        std::thread::sleep(StdDuration::from_millis(50));
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.trim())).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z "), "grandchild alive: {stat}");
    }

    #[test]
    fn http_checks_are_refused_by_index() {
        let http = HealthCheck::new(HealthKind::Http("http://x/healthz".into()));
        let cmd = command(&["true"], 1000, 0);
        assert_eq!(refuse_http("health", std::slice::from_ref(&cmd)), Ok(()));
        let err = refuse_http("health", &[cmd, http]).unwrap_err();
        assert!(err.starts_with("health[1]: `http` health checks run on the controller"), "{err}");
    }
}
