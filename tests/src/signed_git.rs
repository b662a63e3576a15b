//! Signed commits made the way operators make them: real `git commit -S` with an SSH key
//! from real `ssh-keygen` (`gpg.format = ssh`) or an OpenPGP key from real `gpg`, for the
//! commit-signature policy tests. Nothing here builds a signature or an object by hand.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run;

#[expect(clippy::panic, reason = "test harness: a failed setup step must fail the test")]
fn fail(message: &str) -> ! {
    panic!("{message}")
}

fn checked(cmd: &mut Command) -> String {
    let out = run(cmd);
    if !out.status.success() {
        fail(&format!("{cmd:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An SSH signing key: its private key file and its public `type base64` line.
#[derive(Debug, Clone)]
pub struct SshKey {
    pub private: PathBuf,
    pub public: String,
}

impl SshKey {
    /// `ssh-keygen -t ed25519` without a passphrase, in `dir`.
    pub fn generate(dir: &Path, name: &str) -> Self {
        let private = dir.join(name);
        checked(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"]).arg(&private));
        let public = std::fs::read_to_string(private.with_extension("pub"))
            .unwrap_or_else(|e| fail(&format!("{name}.pub: {e}")));
        let public = public.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        Self { private, public }
    }

    /// An `allowed_signers` line for this key: `principal [options] key`.
    pub fn allowed_line(&self, principal: &str, options: &str) -> String {
        format!("{principal} {options} {}\n", self.public).replace("  ", " ")
    }
}

/// A GnuPG home with keys in it (`GNUPGHOME`), optionally living at a faked time.
#[derive(Debug)]
pub struct Gpg {
    pub home: PathBuf,
}

impl Gpg {
    /// A new home in `dir`; `faked_time` (e.g. `20200101T000000`) makes every gpg run
    /// there, also git's, believe it is then: how a key that expired long ago signs.
    pub fn new(dir: &Path, faked_time: Option<&str>) -> Self {
        let home = dir.join("gnupg");
        std::fs::create_dir_all(&home).unwrap_or_else(|e| fail(&format!("{}: {e}", home.display())));
        let mut conf = "pinentry-mode loopback\n".to_owned();
        if let Some(time) = faked_time {
            conf.push_str(&format!("faked-system-time {time}\n"));
        }
        std::fs::write(home.join("gpg.conf"), conf).unwrap_or_else(|e| fail(&format!("gpg.conf: {e}")));
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700));
        Self { home }
    }

    fn gpg(&self) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", &self.home).args(["--batch", "--no-tty", "--passphrase", ""]);
        cmd
    }

    /// A new ed25519 signing key for `uid` that expires after `expire` (`1y`, `1d`,
    /// `never`); returns its fingerprint.
    pub fn generate(&self, uid: &str, expire: &str) -> String {
        checked(self.gpg().args(["--quick-gen-key", uid, "ed25519", "sign", expire]));
        let listing = checked(self.gpg().args(["--with-colons", "--list-keys", uid]));
        listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:").map(|r| r.trim_matches(':').to_owned()))
            .unwrap_or_else(|| fail(&format!("no fingerprint for {uid} in {listing}")))
    }

    /// Revokes the key with the revocation certificate gpg wrote when it made it.
    pub fn revoke(&self, fingerprint: &str) {
        let cert = self.home.join("openpgp-revocs.d").join(format!("{fingerprint}.rev"));
        let text = std::fs::read_to_string(&cert).unwrap_or_else(|e| fail(&format!("{}: {e}", cert.display())));
        // gpg writes it with the armor line escaped so it is not imported by accident.
        let armored = text.replace(":-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----BEGIN PGP PUBLIC KEY BLOCK-----");
        let file = self.home.join("revoke.asc");
        std::fs::write(&file, armored).unwrap_or_else(|e| fail(&format!("revoke.asc: {e}")));
        checked(self.gpg().arg("--import").arg(&file));
    }

    /// The armored public key, as an `openpgp_keyring` holds it.
    pub fn export(&self, fingerprint: &str) -> String {
        checked(self.gpg().args(["--armor", "--export", fingerprint]))
    }
}

/// The home's gpg-agent (started by the first signature) goes with it.
impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf").env("GNUPGHOME", &self.home).args(["--kill", "all"]).output();
    }
}

/// How a commit is signed.
#[derive(Debug, Clone, Copy)]
pub enum Signing<'a> {
    Unsigned,
    Ssh(&'a SshKey),
    Openpgp(&'a Gpg, &'a str),
}

/// `git commit -q --allow-empty -m message` in `dir` with everything staged (`add -A`
/// first), signed as `signing` says; returns the new commit id.
pub fn commit(dir: &Path, signing: Signing<'_>, message: &str) -> String {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir).args(["-c", "user.name=hostctl-test", "-c", "user.email=test@example.invalid"]);
    match signing {
        Signing::Unsigned => {
            cmd.args(["-c", "commit.gpgsign=false"]);
        }
        Signing::Ssh(key) => {
            cmd.args(["-c", "gpg.format=ssh", "-c", "commit.gpgsign=true"]);
            cmd.arg("-c").arg(format!("user.signingkey={}", key.private.display()));
        }
        Signing::Openpgp(gpg, fingerprint) => {
            cmd.env("GNUPGHOME", &gpg.home).args(["-c", "gpg.format=openpgp", "-c", "commit.gpgsign=true"]);
            cmd.arg("-c").arg(format!("user.signingkey={fingerprint}"));
        }
    }
    checked(Command::new("git").current_dir(dir).args(["add", "-A"]));
    checked(cmd.args(["commit", "-q", "--allow-empty", "-m", message]));
    checked(Command::new("git").current_dir(dir).args(["rev-parse", "HEAD"])).trim().to_owned()
}

/// A copy of commit `id` with another tree (that of `tree_of`), signature kept: what a
/// commit looks like when its content was changed after it was signed. Returns its id.
pub fn with_other_tree(dir: &Path, id: &str, tree_of: &str) -> String {
    let object = checked(Command::new("git").current_dir(dir).args(["cat-file", "commit", id]));
    let tree = checked(Command::new("git").current_dir(dir).args(["rev-parse", &format!("{tree_of}^{{tree}}")]));
    let (first, rest) = object.split_once('\n').unwrap_or_else(|| fail(&format!("commit {id}: {object}")));
    if !first.starts_with("tree ") {
        fail(&format!("commit {id} does not start with its tree: {object}"));
    }
    let forged = format!("tree {}\n{rest}", tree.trim());
    let file = dir.join(".git").join("forged-commit");
    std::fs::write(&file, forged).unwrap_or_else(|e| fail(&format!("{}: {e}", file.display())));
    let args = ["hash-object", "-t", "commit", "-w", "--literally"];
    checked(Command::new("git").current_dir(dir).args(args).arg(&file)).trim().to_owned()
}
