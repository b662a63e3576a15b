//! Fetching over ssh (`pull.url` `ssh://user@host[:port]/path` or `user@host:path`):
//! libgit2's libssh2 transport logs in with `pull.ssh_key_file`, and the server's host
//! key must be listed for it in `pull.ssh_known_hosts_file` ([`known_hosts`]); an
//! unknown, different or revoked key ends the fetch before anything is sent.
//!
//! The known-hosts file is read at every fetch, so an operator can add a key without
//! restarting the agent.

use std::cell::RefCell;
use std::path::PathBuf;

use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};
use hostctl_schemas::agent_config::PullConfig;
use hostctl_schemas::git_url::{GitRemote, SshRemote};

use super::known_hosts::{self, Verdict};

/// What an ssh fetch needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshAuth {
    remote: SshRemote,
    key_file: PathBuf,
    known_hosts: PathBuf,
}

impl SshAuth {
    /// The ssh settings for `config`'s URL: `None` when it is not an ssh URL, an error
    /// when it is one and `ssh_key_file` is missing.
    pub fn from_config(config: &PullConfig) -> Result<Option<Self>, String> {
        let GitRemote::Ssh(remote) = config.remote() else { return Ok(None) };
        let key_file = config
            .ssh_key_file
            .clone()
            .ok_or_else(|| format!("pull.ssh_key_file: required with the ssh URL `{}`", config.url))?;
        Ok(Some(Self { remote, key_file, known_hosts: config.known_hosts_file() }))
    }

    pub fn remote(&self) -> &SshRemote {
        &self.remote
    }

    /// Checks the key file can be read, so a missing key is named as such rather than as
    /// libssh2's "failed to authenticate".
    pub fn check_key_file(&self) -> Result<(), String> {
        std::fs::File::open(&self.key_file)
            .map(drop)
            .map_err(|e| format!("pull.ssh_key_file {}: cannot read: {e}", self.key_file.display()))
    }

    /// The callbacks of one fetch: credentials from the key file (once: a refused key is
    /// not offered again) and the host key check. Why a callback refused goes to
    /// `failure`, whose message is clearer than what libgit2 makes of it.
    pub fn callbacks<'a>(&'a self, failure: &'a RefCell<Option<String>>) -> RemoteCallbacks<'a> {
        let mut callbacks = RemoteCallbacks::new();
        let mut offered = false;
        callbacks.credentials(move |_url, _user, allowed| {
            let refuse = |message: String| {
                *failure.borrow_mut() = Some(message.clone());
                Err(git2::Error::from_str(&message))
            };
            if !allowed.contains(CredentialType::SSH_KEY) {
                return refuse(format!("the ssh server {} offers no public key authentication", self.remote));
            }
            if offered {
                return refuse(format!(
                    "the ssh server {} refused the key {} (pull.ssh_key_file): is its public key in the \
                     user's authorized_keys?",
                    self.remote,
                    self.key_file.display()
                ));
            }
            offered = true;
            Cred::ssh_key(&self.remote.user, None, &self.key_file, None)
        });
        callbacks.certificate_check(move |cert, _host| {
            // libgit2 names the host it connected to; the URL's host is the same one, and
            // with the port it gives the name known_hosts uses.
            let Some(hostkey) = cert.as_hostkey() else {
                // Not ssh (cannot happen for an ssh URL): libgit2's own checks apply.
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let checked = hostkey
                .hostkey()
                .ok_or_else(|| format!("the ssh server {} sent no host key to check", self.remote))
                .and_then(|key| self.check_host_key(key));
            checked.map(|()| CertificateCheckStatus::CertificateOk).map_err(|message| {
                *failure.borrow_mut() = Some(message.clone());
                git2::Error::from_str(&message)
            })
        });
        callbacks
    }

    /// Accepts `key` only if the known-hosts file lists it for this server.
    fn check_host_key(&self, key: &[u8]) -> Result<(), String> {
        let file = self.known_hosts.display();
        let text = std::fs::read_to_string(&self.known_hosts)
            .map_err(|e| format!("cannot read the known-hosts file {file} (pull.ssh_known_hosts_file): {e}"))?;
        let name = self.remote.known_hosts_name();
        let presented = key_type(key);
        match known_hosts::check(&text, &name, key) {
            Verdict::Known => Ok(()),
            Verdict::Unknown => Err(format!(
                "ssh host key of {name} ({presented}) is unknown: {file} lists no key for `{name}`; \
                 add the server's key there (e.g. from `ssh-keyscan`, checked out of band)"
            )),
            Verdict::Mismatch(types) => Err(format!(
                "ssh host key of {name} ({presented}) does not match {file}, which lists {} for `{name}`: \
                 refusing to fetch (the server's key changed, or someone is in between)",
                types.join(", ")
            )),
            Verdict::Revoked => Err(format!("ssh host key of {name} ({presented}) is marked @revoked in {file}")),
        }
    }
}

/// The key type named at the start of an ssh public key blob (`ssh-ed25519`, ...).
fn key_type(blob: &[u8]) -> String {
    let name = blob
        .get(..4)
        .and_then(|len| <[u8; 4]>::try_from(len).ok())
        .map(|len| u32::from_be_bytes(len) as usize)
        .and_then(|len| blob.get(4..4 + len))
        .and_then(|name| std::str::from_utf8(name).ok());
    name.unwrap_or("unknown key type").to_owned()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use base64::Engine as _;

    #[test]
    fn host_key_verdicts_name_the_host_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let known = dir.path().join("known_hosts");
        let key = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let other = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
        std::fs::write(&known, format!("[127.0.0.1]:2222 ssh-ed25519 {}\n", b64(key))).unwrap();
        let yaml = format!(
            "hostname: web1\ntrusted_keys: [\"fleet-1:11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=\"]\npull:\n  url: \
             ssh://root@127.0.0.1:2222/srv/x.git\n  ssh_key_file: /k\n  ssh_known_hosts_file: {}\n",
            known.display()
        );
        let config = hostctl_schemas::agent_config::parse_agent_config(&yaml, Path::new("a.yaml")).unwrap();
        let auth = SshAuth::from_config(config.pull.as_ref().unwrap()).unwrap().unwrap();
        assert_eq!(auth.check_host_key(key), Ok(()));
        let err = auth.check_host_key(other).unwrap_err();
        assert!(
            err.contains("[127.0.0.1]:2222 (ssh-ed25519) does not match") && err.contains(&*known.to_string_lossy())
        );
        std::fs::write(&known, format!("127.0.0.1 ssh-ed25519 {}\n", b64(key))).unwrap();
        let err = auth.check_host_key(key).unwrap_err();
        assert!(err.contains("is unknown") && err.contains("lists no key for `[127.0.0.1]:2222`"), "{err}");
        std::fs::remove_file(&known).unwrap();
        let err = auth.check_host_key(key).unwrap_err();
        assert!(err.starts_with("cannot read the known-hosts file"), "{err}");
        assert_eq!(key_type(b"\x00\x00"), "unknown key type");
        let err = auth.check_key_file().unwrap_err();
        assert!(err.starts_with("pull.ssh_key_file /k: cannot read"), "{err}");
    }
}
