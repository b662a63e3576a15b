//! Harness for end-to-end tests: temporary copies of the example fleet in real git
//! repositories, the built `hostctl` binaries, and a Nix configuration fit for tests.
//!
//! Everything a test creates lives under a [`tempfile::TempDir`] and is removed on drop,
//! also when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Nix settings for tests: flakes on, no binary caches (no network here).
pub const NIX_CONFIG: &str = "experimental-features = nix-command flakes\nsubstituters =\n";

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// A binary of the workspace, built by the same `cargo test` run (`target/<profile>/NAME`).
/// `HOSTCTL_BIN_DIR` overrides the directory.
pub fn binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("HOSTCTL_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    // The test executable is target/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    profile_dir.join(name)
}

/// Runs a command and returns its output, with a readable dump on spawn failure.
pub fn run(cmd: &mut Command) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) => fail(&format!("cannot run {cmd:?}: {e}")),
    }
}

#[expect(clippy::panic, reason = "test harness: a failed setup step must fail the test")]
fn fail(message: &str) -> ! {
    panic!("{message}")
}

/// Runs `git` in `dir`; fails the test on error.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = run(Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=hostctl-test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"])
        .args(args));
    if !out.status.success() {
        fail(&format!("git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr)));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies a directory tree (files and directories only).
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A private copy of `examples/fleet` in its own git repository, committed.
#[derive(Debug)]
pub struct TestFleet {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

impl TestFleet {
    pub fn new() -> Self {
        let tmp = match tempfile::Builder::new().prefix("hostctl-fleet-").tempdir() {
            Ok(t) => t,
            Err(e) => fail(&format!("cannot create a temp dir: {e}")),
        };
        let dir = tmp.path().join("fleet");
        if let Err(e) = copy_tree(&workspace_root().join("examples/fleet"), &dir) {
            fail(&format!("cannot copy examples/fleet: {e}"));
        }
        git(&dir, &["init", "-q", "-b", "main"]);
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-q", "-m", "example fleet"]);
        Self { tmp, dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| fail(&format!("read {rel}: {e}")))
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(&path, text).unwrap_or_else(|e| fail(&format!("write {rel}: {e}")));
    }

    /// `git add -A && git commit`.
    pub fn commit(&self, message: &str) {
        git(&self.dir, &["add", "-A"]);
        git(&self.dir, &["commit", "-q", "-m", message]);
    }

    /// Runs `nix` with the test configuration in the fleet directory.
    pub fn nix(&self, args: &[&str]) -> Output {
        run(Command::new("nix").current_dir(&self.dir).env("NIX_CONFIG", NIX_CONFIG).args(args))
    }

    /// Runs `hostctl --fleet <dir>/fleet.yaml ARGS...` with the test Nix configuration.
    pub fn hostctl(&self, args: &[&str]) -> HostctlRun {
        self.hostctl_with(args, &[])
    }

    /// Like [`TestFleet::hostctl`] with extra Nix settings appended to `NIX_CONFIG`.
    pub fn hostctl_with(&self, args: &[&str], extra_nix_config: &[&str]) -> HostctlRun {
        let mut config = NIX_CONFIG.to_owned();
        for line in extra_nix_config {
            config.push_str(line);
            config.push('\n');
        }
        let fleet = self.path("fleet.yaml");
        let out = run(Command::new(binary("hostctl"))
            .current_dir(&self.dir)
            .env("NIX_CONFIG", config)
            .env_remove("RUST_LOG")
            .arg("--fleet")
            .arg(&fleet)
            .args(args));
        HostctlRun::from(out)
    }
}

impl Default for TestFleet {
    fn default() -> Self {
        Self::new()
    }
}

/// What a `hostctl` run did.
#[derive(Debug)]
pub struct HostctlRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for HostctlRun {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl HostctlRun {
    /// The `--json` document on stdout.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| fail(&format!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr)))
    }

    /// Fails with the whole output unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        if self.code != Some(code) {
            fail(&format!("expected exit code {code}, got {:?}\nstdout:\n{}\nstderr:\n{}", self.code, self.stdout, self.stderr));
        }
        self
    }
}
