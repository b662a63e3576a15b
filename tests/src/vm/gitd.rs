//! `git daemon` on this machine's loopback, serving bare repositories to the guests over
//! `git://` (qemu user networking takes a guest's connection to 10.0.2.2 to 127.0.0.1
//! here). Read-only, no authentication: test material only. Stopped by pid on drop.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fail;

/// A running `git daemon` and the directory it serves.
#[derive(Debug)]
pub struct GitDaemon {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl GitDaemon {
    /// Serves a new empty directory (every repository in it) on 127.0.0.1.
    pub fn start() -> GitDaemon {
        let dir = tempfile::Builder::new()
            .prefix("hostctl-gitd-")
            .tempdir()
            .unwrap_or_else(|e| fail(&format!("cannot create a temp dir: {e}")));
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| fail(&format!("no free port: {e}")));
        let child = Command::new("git")
            .args(["daemon", "--reuseaddr", "--export-all", "--informative-errors", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", dir.path().display()))
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot start git daemon: {e}")));
        let daemon = GitDaemon { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_err() {
            if Instant::now() > deadline {
                fail(&format!("git daemon does not listen on 127.0.0.1:{port}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        daemon
    }

    /// Where the bare repository `name` lives here.
    pub fn repo_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Its URL as a guest reaches it.
    pub fn guest_url(&self, name: &str) -> String {
        format!("git://10.0.2.2:{}/{name}", self.port)
    }

    /// `git init --bare` of `name`, added to `repo` as remote `origin`.
    pub fn add_remote(&self, repo: &Path, name: &str) {
        let path = self.repo_path(name).display().to_string();
        crate::git(self.dir.path(), &["init", "-q", "--bare", "-b", "main", &path]);
        crate::git(repo, &["remote", "add", "origin", &path]);
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
