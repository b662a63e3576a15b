//! The [`Nix`] handle: runs [`NixCommand`]s and turns failures into [`NixError`]s that keep
//! the argv, the exit status and the tail of stderr.
//!
//! Invariant: this is the only place in hostctl that spawns a Nix process.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};

use hostctl_schemas::builders::Builders;
use serde::de::DeserializeOwned;
use tokio::process::Command;
use tokio::sync::OnceCell;

use crate::command::{render_argv, NixCommand, Program};
use crate::version::NixVersion;

/// How much of a failing command's stderr an error keeps.
const STDERR_TAIL_LINES: usize = 40;
const STDERR_TAIL_BYTES: usize = 8 * 1024;

/// A failed Nix invocation.
#[derive(Debug, thiserror::Error)]
pub enum NixError {
    #[error("cannot run `{argv}`: {source}")]
    Spawn {
        argv: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{argv}` failed ({status}):\n{stderr_tail}")]
    Failed { argv: String, status: ExitStatus, stderr_tail: String },
    #[error("`{argv}` printed output hostctl cannot read ({problem}); output starts with: {stdout_head}")]
    BadOutput { argv: String, problem: String, stdout_head: String },
    #[error("cannot tell the Nix version from `nix --version` output {output:?}")]
    UnknownVersion { output: String },
}

impl NixError {
    /// Nix's own message for a failed command: the tail of its stderr.
    pub fn nix_message(&self) -> Option<&str> {
        match self {
            NixError::Failed { stderr_tail, .. } => Some(stderr_tail),
            _ => None,
        }
    }
}

/// What a successful command printed.
#[derive(Debug, Clone)]
pub struct NixOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A handle on one Nix installation and store. Cheap to share behind an `Arc`; the
/// version is detected on first use and then remembered.
#[derive(Debug, Default)]
pub struct Nix {
    bin_dir: Option<PathBuf>,
    store: Option<String>,
    options: Vec<(String, String)>,
    /// `--show-trace` on every `nix` invocation.
    show_trace: bool,
    /// Nix's `builders` setting for `build_outputs` only (`--builders`).
    builders: Option<Builders>,
    version: OnceCell<NixVersion>,
}

impl Nix {
    /// Uses `nix`, `nix-store`, `nix-env` from `PATH` and the default store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs the executables from this directory instead of `PATH`.
    pub fn with_bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Talks to this store (`--store URL`), e.g. `local?root=/tmp/x` in tests.
    pub fn with_store(mut self, store: impl Into<String>) -> Self {
        self.store = Some(store.into());
        self
    }

    /// The `--store` every invocation gets, if any.
    pub fn store(&self) -> Option<&str> {
        self.store.as_deref()
    }

    /// Adds `--option NAME VALUE` to every invocation.
    pub fn with_option(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((name.into(), value.into()));
        self
    }

    /// Adds `--option NAME VALUE` to every invocation for each of `options`
    /// (`hostctl --nix-option`).
    pub fn with_options(mut self, options: &[crate::command::NixOption]) -> Self {
        self.options.extend(options.iter().map(|o| (o.name().to_owned(), o.value().to_owned())));
        self
    }

    /// Adds `--show-trace` to every `nix` invocation (`hostctl --show-trace`).
    pub fn with_show_trace(mut self, on: bool) -> Self {
        self.show_trace = on;
        self
    }

    /// Has [`Nix::build_outputs`](crate::Nix::build_outputs) pass `--builders VALUE`
    /// (remote builders, validated; the empty value: build locally only); `None` keeps
    /// Nix's setting.
    pub fn with_builders(mut self, builders: Option<Builders>) -> Self {
        self.builders = builders;
        self
    }

    /// The `builders` value builds get, if any.
    pub fn builders(&self) -> Option<&Builders> {
        self.builders.as_ref()
    }

    /// The full argv this handle runs for `cmd`: program, global options, then its args.
    pub fn argv(&self, cmd: &NixCommand) -> Vec<String> {
        let program = match &self.bin_dir {
            Some(dir) => dir.join(cmd.program().name()).to_string_lossy().into_owned(),
            None => cmd.program().name().to_owned(),
        };
        let mut argv = vec![program];
        // `nix --version` must stay bare: old Nix rejects options before it.
        let is_version = cmd.args() == ["--version"];
        if !is_version {
            if cmd.program() == Program::Nix {
                // hostctl needs these whatever the user's nix.conf says; `extra-` adds to it.
                argv.extend(["--extra-experimental-features".to_owned(), "nix-command flakes".to_owned()]);
                if self.show_trace {
                    argv.push("--show-trace".to_owned());
                }
            }
            if let Some(store) = &self.store {
                argv.extend(["--store".to_owned(), store.clone()]);
            }
            for (name, value) in &self.options {
                argv.extend(["--option".to_owned(), name.clone(), value.clone()]);
            }
        }
        argv.extend(cmd.args().iter().cloned());
        argv
    }

    /// The Nix version, asked once per handle.
    pub async fn version(&self) -> Result<NixVersion, NixError> {
        self.version
            .get_or_try_init(|| async {
                let out = self.run(&NixCommand::version()).await?;
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                NixVersion::parse(&text).ok_or(NixError::UnknownVersion { output: text })
            })
            .await
            .copied()
    }

    /// Runs `cmd` to completion. Killed if the future is dropped (cancelled evaluations
    /// must not keep burning a core).
    pub async fn run(&self, cmd: &NixCommand) -> Result<NixOutput, NixError> {
        self.run_with_stdin(cmd, None).await
    }

    /// Runs `cmd` feeding `stdin` to it.
    pub async fn run_with_stdin(&self, cmd: &NixCommand, stdin: Option<&[u8]>) -> Result<NixOutput, NixError> {
        self.run_inner(&[], cmd, stdin, None).await
    }

    /// Runs `cmd` under `wrapper`: a program and its arguments that end by running the
    /// argv after them (a tracer's `strace ... --`), so the wrapper sees Nix's whole
    /// process tree. Errors name the whole argv, wrapper included.
    pub async fn run_wrapped(&self, wrapper: &[String], cmd: &NixCommand) -> Result<NixOutput, NixError> {
        self.run_inner(wrapper, cmd, None, None).await
    }

    /// Runs `cmd` like [`Nix::run`], but first hands the process id of the started child
    /// to `on_spawn`, before anything waits on it: callers record it (the agent journals
    /// the pid of every Nix process that changes a profile, so a restarted agent can stop
    /// one its dead predecessor left running). If `on_spawn` fails the child is killed and
    /// its error is returned as [`NixError::Spawn`].
    pub async fn run_observed(
        &self,
        cmd: &NixCommand,
        on_spawn: &mut (dyn FnMut(u32) -> std::io::Result<()> + Send),
    ) -> Result<NixOutput, NixError> {
        self.run_inner(&[], cmd, None, Some(on_spawn)).await
    }

    async fn run_inner(
        &self,
        wrapper: &[String],
        cmd: &NixCommand,
        stdin: Option<&[u8]>,
        on_spawn: Option<&mut (dyn FnMut(u32) -> std::io::Result<()> + Send)>,
    ) -> Result<NixOutput, NixError> {
        let argv: Vec<String> = wrapper.iter().cloned().chain(self.argv(cmd)).collect();
        let rendered = render_argv(&argv);
        tracing::debug!(argv = %rendered, "running nix");
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| NixError::Spawn { argv: rendered.clone(), source })?;
        if let Some(observe) = on_spawn {
            let pid = child.id().ok_or_else(|| std::io::Error::other("the child has no process id"));
            if let Err(source) = pid.and_then(observe) {
                // Dropping the child kills it (`kill_on_drop`); reap it so no zombie stays.
                let _ = child.kill().await;
                return Err(NixError::Spawn { argv: rendered, source });
            }
        }
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use tokio::io::AsyncWriteExt;
            // A write error means Nix exited early; its status and stderr say why.
            let _ = pipe.write_all(data).await;
            drop(pipe);
        }
        let out =
            child.wait_with_output().await.map_err(|source| NixError::Spawn { argv: rendered.clone(), source })?;
        if !out.status.success() {
            return Err(NixError::Failed { argv: rendered, status: out.status, stderr_tail: stderr_tail(&out.stderr) });
        }
        Ok(NixOutput { stdout: out.stdout, stderr: out.stderr })
    }

    /// Starts `cmd` and hands its stdout over as a stream, for output too large to hold
    /// in memory (`nix-store --export` of a closure). stderr is collected on the side so
    /// a chatty Nix cannot block on a full pipe. Call [`NixStdout::finish`] after reading
    /// to learn whether it succeeded; dropping the handle kills the process.
    pub fn spawn_stdout(&self, cmd: &NixCommand) -> Result<NixStdout, NixError> {
        let argv = self.argv(cmd);
        let rendered = render_argv(&argv);
        tracing::debug!(argv = %rendered, "running nix (streaming stdout)");
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| NixError::Spawn { argv: rendered.clone(), source })?;
        let missing_pipe = || NixError::Spawn { argv: rendered.clone(), source: std::io::Error::other("no pipe") };
        let stdout = child.stdout.take().ok_or_else(missing_pipe)?;
        let mut stderr = child.stderr.take().ok_or_else(missing_pipe)?;
        let stderr_task = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = Vec::new();
            // A read error only shortens the message; the exit status still tells.
            let _ = stderr.read_to_end(&mut buf).await;
            buf
        });
        Ok(NixStdout { argv: rendered, child, stdout, stderr_task })
    }

    /// Runs `cmd` with `stdin` read from a file (an import stream too large for memory).
    /// Not cancelled with the future: the process is killed if the future is dropped, so
    /// callers that must not stop half-way (`nix-store --import`) run it in a spawned task.
    pub async fn run_with_stdin_file(&self, cmd: &NixCommand, stdin: std::fs::File) -> Result<NixOutput, NixError> {
        let argv = self.argv(cmd);
        let rendered = render_argv(&argv);
        tracing::debug!(argv = %rendered, "running nix (stdin from a file)");
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| NixError::Spawn { argv: rendered.clone(), source })?;
        let out =
            child.wait_with_output().await.map_err(|source| NixError::Spawn { argv: rendered.clone(), source })?;
        if !out.status.success() {
            return Err(NixError::Failed { argv: rendered, status: out.status, stderr_tail: stderr_tail(&out.stderr) });
        }
        Ok(NixOutput { stdout: out.stdout, stderr: out.stderr })
    }

    /// Runs `cmd` and parses its stdout as JSON.
    pub async fn run_json<T: DeserializeOwned>(&self, cmd: &NixCommand) -> Result<T, NixError> {
        let out = self.run(cmd).await?;
        serde_json::from_slice(&out.stdout).map_err(|e| self.bad_output(cmd, e.to_string(), &out.stdout))
    }

    pub(crate) fn bad_output(&self, cmd: &NixCommand, problem: String, stdout: &[u8]) -> NixError {
        let head: String = String::from_utf8_lossy(stdout).chars().take(300).collect();
        NixError::BadOutput { argv: render_argv(&self.argv(cmd)), problem, stdout_head: head }
    }

    /// The executable this handle runs for `program` (all share one bin dir).
    pub fn program_path(&self, program: Program) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(program.name()),
            None => PathBuf::from(program.name()),
        }
    }
}

/// A running Nix command whose stdout is read as a stream ([`Nix::spawn_stdout`]).
#[derive(Debug)]
pub struct NixStdout {
    argv: String,
    child: tokio::process::Child,
    stdout: tokio::process::ChildStdout,
    stderr_task: tokio::task::JoinHandle<Vec<u8>>,
}

impl NixStdout {
    /// The command's stdout.
    pub fn stdout(&mut self) -> &mut tokio::process::ChildStdout {
        &mut self.stdout
    }

    /// Waits for the command to exit; a non-zero exit is [`NixError::Failed`] with the
    /// tail of its stderr. Call it after reading stdout to its end.
    pub async fn finish(mut self) -> Result<(), NixError> {
        let status = self.child.wait().await.map_err(|source| NixError::Spawn { argv: self.argv.clone(), source })?;
        let stderr = self.stderr_task.await.unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(NixError::Failed { argv: self.argv, status, stderr_tail: stderr_tail(&stderr) })
        }
    }
}

/// The last lines of a command's stderr, bounded in bytes, without Nix's progress noise.
pub fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    let mut tail = lines[start..].join("\n");
    if tail.len() > STDERR_TAIL_BYTES {
        let mut cut = tail.len() - STDERR_TAIL_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = format!("…{}", &tail[cut..]);
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_adds_global_options_but_not_to_version() {
        let nix =
            Nix::new().with_bin_dir("/opt/nix/bin").with_store("local?root=/tmp/s").with_option("substituters", "");
        assert_eq!(nix.argv(&NixCommand::version()), ["/opt/nix/bin/nix", "--version"]);
        let flake = crate::command::FlakeRef::new("/f").unwrap();
        let argv = nix.argv(&NixCommand::list_configurations(&flake));
        assert_eq!(
            &argv[..8],
            [
                "/opt/nix/bin/nix",
                "--extra-experimental-features",
                "nix-command flakes",
                "--store",
                "local?root=/tmp/s",
                "--option",
                "substituters",
                ""
            ]
        );
        assert_eq!(argv[8], "eval");
    }

    #[test]
    fn nix_options_and_show_trace_reach_every_nix_argv() {
        use crate::command::NixOption;
        let options = [NixOption::new("max-jobs", "0").unwrap(), NixOption::new("eval-cache", "false").unwrap()];
        let nix = Nix::new().with_options(&options).with_show_trace(true);
        let flake = crate::command::FlakeRef::new("/f").unwrap();
        let argv = nix.argv(&NixCommand::list_configurations(&flake));
        assert_eq!(
            &argv[..10],
            [
                "nix",
                "--extra-experimental-features",
                "nix-command flakes",
                "--show-trace",
                "--option",
                "max-jobs",
                "0",
                "--option",
                "eval-cache",
                "false"
            ]
        );
        assert_eq!(nix.argv(&NixCommand::version()), ["nix", "--version"]);
        for bad in ["", "-x", "--store", "a b", "a=b"] {
            assert_eq!(
                NixOption::new(bad, "v").unwrap_err().to_string(),
                format!("`{bad}` is not a Nix setting name (letters, digits and `-`, e.g. `max-jobs`)")
            );
        }
    }

    #[test]
    fn stderr_tail_keeps_the_end() {
        let long: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let tail = stderr_tail(long.as_bytes());
        assert!(tail.starts_with("line 60"));
        assert!(tail.ends_with("line 99"));
    }

    #[tokio::test]
    async fn failure_keeps_argv_status_and_stderr() {
        let nix = Nix::new().with_option("substituters", "");
        let flake = crate::command::FlakeRef::new("/nonexistent-hostctl-flake").unwrap();
        let err = nix.run(&NixCommand::list_configurations(&flake)).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(
                "nix --extra-experimental-features 'nix-command flakes' --option substituters '' eval --json"
            ),
            "{text}"
        );
        assert!(text.contains("/nonexistent-hostctl-flake#nixosConfigurations"), "{text}");
        assert!(text.contains("exit status: 1"), "{text}");
        assert!(err.nix_message().is_some_and(|m| m.contains("/nonexistent-hostctl-flake")), "{text}");
    }

    #[tokio::test]
    async fn run_observed_reports_the_pid_before_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path();
        // Written by a child process: a file this multi-threaded test process had open for
        // writing can be inherited by a sibling test's fork, and exec then fails (ETXTBSY).
        let written = std::process::Command::new("sh")
            .args(["-c", "printf '#!/bin/sh\\necho \"$$\"\\n' > \"$1\" && chmod 755 \"$1\"", "sh"])
            .arg(bin.join("nix-env"))
            .status()
            .unwrap();
        assert!(written.success());
        let nix = Nix::new().with_bin_dir(bin);
        let cmd = NixCommand::list_generations(
            &crate::profile::Profile::new(std::path::Path::new("/nix/var/nix/profiles/x")).unwrap(),
        );
        let mut seen = Vec::new();
        let out = nix
            .run_observed(&cmd, &mut |pid| {
                seen.push(pid);
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), seen[0].to_string(), "the pid of the child itself");

        let err = nix.run_observed(&cmd, &mut |_| Err(std::io::Error::other("journal full"))).await.unwrap_err();
        assert!(matches!(err, NixError::Spawn { .. }), "{err}");
        assert!(err.to_string().contains("journal full"), "{err}");
    }

    #[tokio::test]
    async fn spawn_failure_names_the_program() {
        let nix = Nix::new().with_bin_dir("/nonexistent-hostctl-bin");
        let err = nix.version().await.unwrap_err();
        assert!(matches!(err, NixError::Spawn { .. }));
        assert!(err.to_string().contains("/nonexistent-hostctl-bin/nix --version"), "{err}");
    }
}
