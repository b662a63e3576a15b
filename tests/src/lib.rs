//! Harness for end-to-end tests: temporary copies of the example fleet in real git
//! repositories, the built `hostctl` binaries, and a Nix configuration fit for tests.
//!
//! Everything a test creates lives under a [`tempfile::TempDir`] and is removed on drop,
//! also when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub mod agent_yaml;
pub mod bench;
pub mod cross;
pub mod dbus;
pub mod fake_systemd1;
pub mod gates;
pub mod http;
pub mod identity;
pub mod invariants;
pub mod livefleet;
pub mod loadgen;
pub mod mitm;
pub mod private_bus;
pub mod signed_git;
pub mod simhost;
pub mod slots;
pub mod sshd;
mod store_root;
pub mod tls;
pub mod tmpfs;
pub mod userns;
pub mod vm;

pub(crate) use store_root::make_dirs_writable;
pub use store_root::StoreRoot;

/// Nix settings for tests: flakes on, no binary caches (no network here).
pub const NIX_CONFIG: &str = "experimental-features = nix-command flakes\nsubstituters =\n";

/// Says on stderr that the running test skips (all of it, or the part `why` names):
/// straight to the stream, because libtest captures `eprintln!` of passing tests and a
/// skip must be seen in the run's output.
pub fn skip(why: &str) {
    use std::io::Write as _;
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    let _ = writeln!(std::io::stderr(), "skipping {test}: {why}");
}

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// A binary of the workspace (`target/<profile>/NAME`), rebuilt first if stale:
/// `cargo test -p hostctl-tests` alone would not rebuild other packages' binaries, and a
/// test against an old binary proves nothing. `HOSTCTL_BIN_DIR` points elsewhere instead.
pub fn binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("HOSTCTL_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    // Test executables are target/<profile>/deps/<test>-<hash>; binaries of this crate
    // (benchmarks) are target/<profile>/<bin>.
    let exe = std::env::current_exe().unwrap_or_default();
    let mut profile_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if profile_dir.file_name().is_some_and(|n| n == "deps") {
        profile_dir.pop();
    }
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| build_binaries(&profile_dir));
    profile_dir.join(name)
}

fn build_binaries(profile_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args(["build", "--quiet", "-p", "hostctl", "-p", "hostctl-agent"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = run(&mut cmd);
    if !out.status.success() {
        fail(&format!("building the binaries failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
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

/// A `nix` first on `PATH` that appends the host of every `#nixosConfigurations.<host>`
/// installable it is given to `log`, then runs the real `nix`: which hosts a command
/// evaluated, seen from outside. Returns the `PATH` to run with and the log.
pub fn watching_nix(dir: &Path) -> (std::ffi::OsString, PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let which = run(Command::new("sh").args(["-c", "command -v nix"]));
    let real = String::from_utf8_lossy(&which.stdout).trim().to_owned();
    if real.is_empty() {
        fail("no nix on PATH");
    }
    let bin = dir.join("watching-bin");
    let log = dir.join("evaluated.log");
    let script = format!(
        "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in *'#nixosConfigurations.'*) h=${{a#*#nixosConfigurations.}}; \
         echo \"${{h%%.*}}\" >> '{}';; esac; done\nexec '{real}' \"$@\"\n",
        log.display()
    );
    std::fs::create_dir_all(&bin)
        .and_then(|()| std::fs::write(bin.join("nix"), script))
        .and_then(|()| std::fs::set_permissions(bin.join("nix"), std::fs::Permissions::from_mode(0o755)))
        .unwrap_or_else(|e| fail(&format!("cannot write the nix wrapper in {}: {e}", bin.display())));
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&inherited)))
        .unwrap_or_else(|e| fail(&format!("PATH: {e}")));
    (path, log)
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

/// Writes a secret file with mode 0600 from its creation on: the controller and the agent
/// refuse keys and secrets other users could read.
pub fn write_secret(path: &Path, contents: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()));
    written.unwrap_or_else(|e| fail(&format!("cannot write the secret {}: {e}", path.display())));
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
        Self::copy_of("examples/fleet")
    }

    /// A copy of the flake directory `rel` (relative to the workspace root), committed.
    pub fn copy_of(rel: &str) -> Self {
        let tmp = match tempfile::Builder::new().prefix("hostctl-fleet-").tempdir() {
            Ok(t) => t,
            Err(e) => fail(&format!("cannot create a temp dir: {e}")),
        };
        let dir = tmp.path().join("fleet");
        if let Err(e) = copy_tree(&workspace_root().join(rel), &dir) {
            fail(&format!("cannot copy {rel}: {e}"));
        }
        git(&dir, &["init", "-q", "-b", "main"]);
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-q", "-m", "example fleet"]);
        let fleet = Self { tmp, dir };
        // A flake without inputs has no lock to fetch for.
        if fleet.path("flake.lock").exists() {
            fleet.fetch_relative_inputs();
        }
        fleet
    }

    /// Nix 2.8 reads a locked relative `path:` input only from the store, so on a store
    /// that has never seen it evaluation fails; `nix flake update` puts it there and
    /// leaves `flake.lock` byte-identical (checked here, as the tests rely on it).
    fn fetch_relative_inputs(&self) {
        let before = self.read("flake.lock");
        let out = self.nix(&["flake", "update"]);
        if !out.status.success() {
            fail(&format!("nix flake update: {}", String::from_utf8_lossy(&out.stderr)));
        }
        if self.read("flake.lock") != before {
            fail("nix flake update changed the example's flake.lock");
        }
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

    /// `git add -A && git commit --allow-empty`: for steps that may or may not change a
    /// file (e.g. rewriting `fleet.yaml` with the values it already has).
    pub fn commit_allow_empty(&self, message: &str) {
        git(&self.dir, &["add", "-A"]);
        git(&self.dir, &["commit", "-q", "--allow-empty", "-m", message]);
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
        HostctlRun::from(run(&mut self.hostctl_command(args, extra_nix_config)))
    }

    /// The command [`TestFleet::hostctl_with`] runs, for tests that change its
    /// environment. The evaluation cache lives in this fleet's temp dir.
    pub fn hostctl_command(&self, args: &[&str], extra_nix_config: &[&str]) -> Command {
        let mut config = NIX_CONFIG.to_owned();
        for line in extra_nix_config {
            config.push_str(line);
            config.push('\n');
        }
        let mut cmd = Command::new(binary("hostctl"));
        cmd.current_dir(&self.dir)
            .env("NIX_CONFIG", config)
            .env("HOSTCTL_CACHE_DIR", self.tmp.path().join("cache"))
            .env_remove("RUST_LOG")
            .arg("--fleet")
            .arg(self.path("fleet.yaml"))
            .args(args);
        cmd
    }
}

impl TestFleet {
    /// `hostctl ARGS...` in `dir` without `--fleet` (and without `HOSTCTL_FLEET` or
    /// `HOSTCTL_KEY` from the test's environment): hostctl finds the fleet itself.
    pub fn hostctl_in(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary("hostctl"));
        cmd.current_dir(dir)
            .env("NIX_CONFIG", NIX_CONFIG)
            .env("HOSTCTL_CACHE_DIR", self.tmp.path().join("cache"))
            .env_remove("RUST_LOG")
            .env_remove("HOSTCTL_FLEET")
            .env_remove("HOSTCTL_KEY")
            .args(args);
        cmd
    }

    /// Starts `hostctl --fleet <dir>/fleet.yaml ARGS...` in the background (stdout and
    /// stderr go to files), for tests that stop or kill the controller mid-rollout.
    pub fn spawn_hostctl(&self, args: &[&str]) -> HostctlChild {
        let out_dir = tempfile::Builder::new()
            .prefix("hostctl-child-")
            .tempdir_in(self.tmp.path())
            .unwrap_or_else(|e| fail(&format!("cannot create a temp dir: {e}")));
        let stdout_path = out_dir.path().join("stdout");
        let stderr_path = out_dir.path().join("stderr");
        let open =
            |p: &Path| std::fs::File::create(p).unwrap_or_else(|e| fail(&format!("create {}: {e}", p.display())));
        let child = Command::new(binary("hostctl"))
            .current_dir(&self.dir)
            .env("NIX_CONFIG", NIX_CONFIG)
            .env("HOSTCTL_CACHE_DIR", self.tmp.path().join("cache"))
            .env_remove("RUST_LOG")
            .arg("--fleet")
            .arg(self.path("fleet.yaml"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(open(&stdout_path))
            .stderr(open(&stderr_path))
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot start hostctl {args:?}: {e}")));
        HostctlChild { child: Some(child), stdout_path, stderr_path, _out_dir: out_dir }
    }
}

/// A `hostctl` running in the background ([`TestFleet::spawn_hostctl`]). Killed (by
/// pid) and reaped on drop if still running.
#[derive(Debug)]
pub struct HostctlChild {
    child: Option<std::process::Child>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    _out_dir: tempfile::TempDir,
}

impl HostctlChild {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            // Not reaped yet (we hold the Child), so the pid is still ours.
            let _ = Command::new("kill").args(["-s", signal, &pid.to_string()]).output();
        }
    }

    /// SIGSTOP: the controller freezes (no request leaves it) until [`HostctlChild::resume`].
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Whether it is still running (or stopped).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL (a crash of the controller), then reaps it; returns what it had printed.
    pub fn kill(&mut self) -> HostctlRun {
        let code = match self.child.take() {
            Some(mut child) => {
                let _ = child.kill();
                child.wait().ok().and_then(|s| s.code())
            }
            None => None,
        };
        self.output(code)
    }

    /// Waits up to `timeout` for it to exit: its output, or `None` if still running.
    pub fn wait_timeout(&mut self, timeout: std::time::Duration) -> Option<HostctlRun> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(self.output(status.code()));
                }
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                Ok(None) => return None,
                Err(e) => fail(&format!("cannot wait for hostctl: {e}")),
            }
        }
    }

    /// What it has printed so far.
    pub fn output(&self, code: Option<i32>) -> HostctlRun {
        HostctlRun {
            code,
            stdout: std::fs::read_to_string(&self.stdout_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.stderr_path).unwrap_or_default(),
        }
    }
}

impl Drop for HostctlChild {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
            fail(&format!(
                "expected exit code {code}, got {:?}\nstdout:\n{}\nstderr:\n{}",
                self.code, self.stdout, self.stderr
            ));
        }
        self
    }
}

/// A bare git repository standing in for a forge (pull mode): `ROOT/remote.git` next to
/// the fleet copy, so the same path works inside a simulated host (only `/nix` differs
/// there).
impl TestFleet {
    /// The bare remote's path (it exists once [`TestFleet::init_bare_remote`] ran).
    pub fn bare_remote(&self) -> PathBuf {
        self.tmp.path().join("remote.git")
    }

    /// `git init --bare` at [`TestFleet::bare_remote`], adds it as `origin` and pushes
    /// `main`; returns its path. Idempotent.
    pub fn init_bare_remote(&self) -> PathBuf {
        let remote = self.bare_remote();
        if !remote.exists() {
            git(self.tmp.path(), &["init", "-q", "--bare", "-b", "main", &remote.to_string_lossy()]);
            git(&self.dir, &["remote", "add", "origin", &remote.to_string_lossy()]);
        }
        self.push();
        remote
    }

    /// `git push origin main`.
    pub fn push(&self) {
        git(&self.dir, &["push", "-q", "origin", "main"]);
    }

    /// `git push --force origin <local>:main`.
    pub fn force_push(&self, local: &str) {
        git(&self.dir, &["push", "-q", "--force", "origin", &format!("{local}:main")]);
    }

    /// The commit id of `HEAD`.
    pub fn head(&self) -> String {
        git(&self.dir, &["rev-parse", "HEAD"]).trim().to_owned()
    }

    /// `nixosConfigurations.<host>`'s toplevel at the working tree (evaluated with the
    /// test Nix configuration in the fleet directory; nothing is built).
    pub fn toplevel(&self, host: &str) -> String {
        let attr = format!(".#nixosConfigurations.{host}.config.system.build.toplevel.outPath");
        let out = self.nix(&["eval", "--raw", &attr]);
        if !out.status.success() {
            fail(&format!("nix eval {attr}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Bumps the fake nixpkgs' `version` in `nixpkgs/flake.nix` to `version` and runs
    /// `nix flake lock --update-input nixpkgs` (a lock change, as in examples/README.md).
    /// Does not commit.
    pub fn bump_nixpkgs(&self, version: &str) {
        let text = self.read("nixpkgs/flake.nix");
        let start =
            text.find("version = \"").map(|i| i + 11).unwrap_or_else(|| fail("no version in nixpkgs/flake.nix"));
        let end = text[start..].find('"').map(|i| start + i).unwrap_or_else(|| fail("no version end"));
        self.write("nixpkgs/flake.nix", &format!("{}{version}{}", &text[..start], &text[end..]));
        // Flakes only see tracked files: stage first.
        git(&self.dir, &["add", "-A"]);
        let out = self.nix(&["flake", "lock", "--update-input", "nixpkgs"]);
        if !out.status.success() {
            fail(&format!("nix flake lock --update-input nixpkgs: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Meaningful when not run as root (root may delete read-only directories anyway).
    #[test]
    fn store_root_removes_read_only_store_paths() {
        let store = StoreRoot::new();
        let root = store.path().to_path_buf();
        assert_eq!(store.url(), format!("local?root={}", root.display()));
        let object = store.physical("/nix/store/00000000000000000000000000000000-x");
        std::fs::create_dir_all(object.join("sub")).unwrap();
        std::fs::write(object.join("sub/file"), "x").unwrap();
        for dir in [object.join("sub"), object.clone(), root.join("nix/store")] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        drop(store);
        assert!(!root.exists(), "{} was left behind", root.display());
    }
}
