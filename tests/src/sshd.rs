//! A real OpenSSH server (`/usr/sbin/sshd`) for pull mode over ssh: started inside a
//! simulated host's namespaces, so it listens on that host's own loopback (port 22 is
//! free there, which the scp-like `user@host:path` form needs) without touching the
//! machine's network.
//!
//! Everything lives in a temporary directory: `sshd_config`, an ed25519 host key (and an
//! impostor key for mismatch tests), a client key whose public half is in
//! `authorized_keys`, the pid file and the log. Root logs in with its key only
//! (`PermitRootLogin prohibit-password`); git over ssh runs `git-upload-pack`. The
//! server is stopped by its pid on drop, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::simhost::{Background, SimHost};
use crate::{fail, run};

const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd and its keys.
#[derive(Debug)]
pub struct Sshd {
    dir: tempfile::TempDir,
    process: Option<Background>,
}

impl Sshd {
    /// Starts sshd inside `host` listening on `ports` of every address the host has
    /// (its loopback included); returns once the first port accepts connections.
    pub fn start_in(host: &SimHost, ports: &[u16]) -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("hostctl-sshd-")
            .tempdir()
            .unwrap_or_else(|e| fail(&format!("cannot create a temp dir for sshd: {e}")));
        for name in ["host_ed25519", "impostor_ed25519", "client_ed25519", "other_client_ed25519"] {
            keygen(&dir.path().join(name));
        }
        let mut sshd = Sshd { dir, process: None };
        sshd.authorize("client_ed25519");
        let config = sshd.path("sshd_config");
        std::fs::write(&config, sshd.config(ports))
            .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", config.display())));
        // sshd's privilege separation directory; Debian creates it only when its service
        // starts, which never happens here.
        std::fs::create_dir_all("/run/sshd").unwrap_or_else(|e| fail(&format!("cannot create /run/sshd: {e}")));
        let config_s = config.to_string_lossy().into_owned();
        let argv = [SSHD, "-D", "-e", "-f", config_s.as_str()];
        let first = ports.first().copied().unwrap_or(22);
        let log = sshd.path("sshd.log");
        sshd.process = Some(host.start_background(&argv, first, &log.to_string_lossy()));
        sshd
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self, ports: &[u16]) -> String {
        let mut text = String::new();
        for port in ports {
            text.push_str(&format!("Port {port}\n"));
        }
        text.push_str(&format!(
            "ListenAddress 0.0.0.0\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
             PermitRootLogin prohibit-password\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nLogLevel VERBOSE\n",
            self.path("host_ed25519").display(),
            self.path("sshd.pid").display(),
            self.path("authorized_keys").display(),
        ));
        text
    }

    /// The temporary directory (a place for known-hosts files too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client's private key (ed25519, no passphrase) that root may log in with.
    pub fn client_key(&self) -> PathBuf {
        self.path("client_ed25519")
    }

    /// Makes only the key pair `name` (`client_ed25519` or `other_client_ed25519`)
    /// authorized: sshd reads the file at every login.
    pub fn authorize(&self, name: &str) {
        let public = read(&self.path(&format!("{name}.pub")));
        let file = self.path("authorized_keys");
        std::fs::write(&file, public).unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", file.display())));
    }

    /// A `known_hosts` line listing the server's host key under `name` (`host` or
    /// `[host]:port`).
    pub fn known_hosts_line(&self, name: &str) -> String {
        known_line(name, &self.path("host_ed25519.pub"))
    }

    /// A `known_hosts` line listing another ed25519 key under `name`: a server that
    /// changed its key, or an impostor.
    pub fn impostor_line(&self, name: &str) -> String {
        known_line(name, &self.path("impostor_ed25519.pub"))
    }

    /// What sshd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // The listener only (its pid is our child's: the namespace wrappers exec it);
        // per-connection children end with their connections.
        if let Some(mut process) = self.process.take() {
            if let Some(pid) = process.pid() {
                let _ = Command::new("kill").args(["-s", "TERM", &pid.to_string()]).output();
            }
            process.kill();
        }
    }
}

fn keygen(path: &Path) {
    let out =
        run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "hostctl-test", "-f"]).arg(path));
    if !out.status.success() {
        fail(&format!("ssh-keygen for {}: {}", path.display(), String::from_utf8_lossy(&out.stderr)));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", path.display())))
}

/// `name TYPE BASE64` from a `.pub` file (`TYPE BASE64 COMMENT`).
fn known_line(name: &str, public: &Path) -> String {
    let text = read(public);
    let fields: Vec<&str> = text.split_whitespace().take(2).collect();
    format!("{name} {}\n", fields.join(" "))
}
