//! A private user + mount namespace with its own binfmt_misc instance (kernel 6.7+: a
//! binfmt_misc mounted in a new user namespace is a new instance owned by it), for tests
//! that register emulators without ever touching the host's `/proc/sys/fs/binfmt_misc`.
//!
//! A holder process (`unshare --user --mount`, waiting on its stdin) keeps the namespaces
//! alive; commands join them with `nsenter`. The binfmt_misc mount exists only in that
//! mount namespace and goes away with it: dropping [`PrivateBinfmt`] closes the holder's
//! stdin (it exits; the test process dying closes it too) and removes the temp dir.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::fail;

/// uids/gids 0..65536 of the namespace map to the same host ids (the tests run as root):
/// Nix's build sandbox inside it needs more than one id.
const ID_MAP: &str = "0 0 65536";

/// The namespaces, their binfmt_misc mount and a temp dir for the test's files.
#[derive(Debug)]
pub struct PrivateBinfmt {
    holder: Child,
    stdin: Option<ChildStdin>,
    tmp: Option<tempfile::TempDir>,
    /// Where the private binfmt_misc is mounted (inside the namespace only).
    pub mount: PathBuf,
}

impl PrivateBinfmt {
    /// Creates the namespaces and mounts a fresh binfmt_misc at `<tmp>/binfmt_misc` in
    /// them. Fails the test, before anything is registered, unless the mount is a new,
    /// empty instance in a user namespace other than the test's.
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("hostctl-binfmt-")
            .tempdir()
            .unwrap_or_else(|e| fail(&format!("cannot create a temp dir: {e}")));
        let mount = tmp.path().join("binfmt_misc");
        std::fs::create_dir(&mount).unwrap_or_else(|e| fail(&format!("mkdir {}: {e}", mount.display())));
        let mut holder = Command::new("unshare")
            .args(["--user", "--mount", "--propagation", "private", "sh", "-c", "read _"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot run unshare: {e}")));
        let stdin = holder.stdin.take();
        let ns = Self { holder, stdin, tmp: Some(tmp), mount };
        ns.wait_for_own_user_namespace();
        for map in ["uid_map", "gid_map"] {
            let path = format!("/proc/{}/{map}", ns.holder.id());
            std::fs::write(&path, ID_MAP).unwrap_or_else(|e| fail(&format!("write {path}: {e}")));
        }
        let mount_point = ns.mount.display().to_string();
        ns.ok(&["mount", "-t", "binfmt_misc", "binfmt_misc", &mount_point]);
        let listing = ns.ok(&["ls", "-A", &mount_point]);
        if listing.split_whitespace().collect::<Vec<_>>() != ["register", "status"] {
            fail(&format!("the binfmt_misc mounted in the namespace is not a fresh instance: {listing:?}"));
        }
        ns
    }

    /// The temp dir (visible inside and outside the namespace).
    pub fn dir(&self) -> &Path {
        self.tmp.as_ref().map_or(Path::new("/nonexistent"), |t| t.path())
    }

    /// The holder's pid (the namespaces' anchor).
    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// `argv` run inside the namespaces as their root (not started yet).
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.holder.id())).args(["--user", "--mount", "--"]).args(argv);
        cmd
    }

    /// Runs `argv` inside and returns its output.
    pub fn run(&self, argv: &[&str]) -> Output {
        crate::run(&mut self.command(argv))
    }

    /// Runs `argv` inside; fails the test unless it succeeds. Returns stdout.
    pub fn ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        if !out.status.success() {
            fail(&format!("{argv:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The names of the entries registered in the private instance.
    pub fn entries(&self) -> Vec<String> {
        let mount = self.mount.display().to_string();
        let mut names: Vec<String> = self
            .ok(&["ls", "-A", &mount])
            .split_whitespace()
            .filter(|n| !matches!(*n, "register" | "status"))
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }

    /// The text of entry `name` (`None` if it is not registered).
    pub fn entry(&self, name: &str) -> Option<String> {
        let out = self.run(&["cat", &self.mount.join(name).display().to_string()]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes `text` to `<mount>/<file>` in one write, the way the agent does (`register`
    /// for a registration line, an entry's name for `-1`/`0`/`1`). The text is an argument,
    /// never part of the shell code.
    pub fn write(&self, file: &str, text: &str) -> Output {
        let path = self.mount.join(file).display().to_string();
        self.run(&["sh", "-c", "printf '%s' \"$1\" > \"$2\"", "sh", text, &path])
    }

    fn wait_for_own_user_namespace(&self) {
        let ours = std::fs::read_link("/proc/self/ns/user").ok();
        let theirs = format!("/proc/{}/ns/user", self.holder.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ns = std::fs::read_link(&theirs).ok();
            if ns.is_some() && ns != ours {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        fail("unshare did not create a user namespace within 10 s");
    }
}

impl Default for PrivateBinfmt {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PrivateBinfmt {
    fn drop(&mut self) {
        // End of input ends `read`; the namespaces (and the mount) go with the last process.
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.holder.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    // Our own child, by pid.
                    let _ = self.holder.kill();
                    let _ = self.holder.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        if let Some(tmp) = self.tmp.take() {
            if let Err(e) = tmp.close() {
                eprintln!("warning: cannot remove the binfmt test dir: {e}");
            }
        }
    }
}
