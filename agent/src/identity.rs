//! The agent's identity: an ed25519 key in Nix's secret key format, from which its TLS
//! certificate is made (`hostctl-wire`). [`load_or_create`] reads `identity_key_file`
//! when the configuration names one (it must exist, mode 0600), else
//! `state_dir/identity.key`, generated at first start (0600, written to a temporary file
//! and renamed, so a crash never leaves half a key); either way it (re)writes the
//! world-readable `state_dir/identity.pub`, `<hostname>:<base64>`, for the operator
//! (`hostctl enroll --expect`) and the NixOS module.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use hostctl_schemas::agent_config::{AgentConfig, IDENTITY_KEY_FILE, IDENTITY_PUB_FILE};
use hostctl_schemas::key::PublicKey;
use hostctl_schemas::signing::{SecretKey, SecretKeyError};

/// Why the identity key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The named or existing key file is missing, unreadable, not a key, or other users
    /// could read or replace it: bad input, nothing was started.
    #[error("identity key: {0}")]
    Key(#[from] SecretKeyError),
    #[error("cannot write {file}: {source}")]
    Write {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no randomness from the operating system for a new identity key: {0}")]
    Random(String),
}

impl IdentityError {
    /// A key file that is wrong rather than a failure to write one.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::Key(_))
    }
}

/// The agent's identity key (see the module); the state directory must exist.
pub fn load_or_create(config: &AgentConfig) -> Result<SecretKey, IdentityError> {
    let path = config.identity_key_file.clone().unwrap_or_else(|| config.state_dir.join(IDENTITY_KEY_FILE));
    let key = if config.identity_key_file.is_some() || path.exists() {
        SecretKey::load(&path)?
    } else {
        create(&path, config.hostname.as_str())?
    };
    let public = public_identity(config, &key);
    write_atomically(&config.state_dir.join(IDENTITY_PUB_FILE), format!("{public}\n").as_bytes(), 0o644)?;
    Ok(key)
}

/// The identity as the controller pins it: the host's name and the key's public half.
pub fn public_identity(config: &AgentConfig, key: &SecretKey) -> PublicKey {
    PublicKey { name: config.hostname.to_string(), key: key.public().key }
}

fn create(path: &Path, name: &str) -> Result<SecretKey, IdentityError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| IdentityError::Random(e.to_string()))?;
    let key = SecretKey::from_seed(name, seed);
    write_atomically(path, format!("{}\n", key.to_nix_text()).as_bytes(), 0o600)?;
    tracing::info!(file = %path.display(), "generated the agent's identity key");
    Ok(key)
}

/// Writes `bytes` to a temporary file beside `path` with `mode`, syncs it and renames it
/// over `path`: readers see the old file or the whole new one.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let err = |source| IdentityError::Write { file: path.display().to_string(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // tempfile creates it 0600: the secret is never readable by others, not even briefly.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode)).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn config(dir: &Path, extra: &str) -> AgentConfig {
        let yaml = format!(
            "hostname: web1\ntrusted_keys: [\"fleet-1:11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=\"]\nstate_dir: {}\n{extra}",
            dir.display()
        );
        hostctl_schemas::agent_config::parse_agent_config(&yaml, Path::new("agent.yaml")).unwrap()
    }

    #[test]
    fn generated_once_private_and_published() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "");
        let key = load_or_create(&cfg).unwrap();
        let file = dir.path().join("identity.key");
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        let public = std::fs::read_to_string(dir.path().join("identity.pub")).unwrap();
        assert_eq!(public.trim(), public_identity(&cfg, &key).to_string());
        assert!(public.starts_with("web1:"), "{public}");
        assert_eq!(std::fs::metadata(dir.path().join("identity.pub")).unwrap().mode() & 0o777, 0o644);
        // The second start reads the same key.
        assert_eq!(load_or_create(&cfg).unwrap().public(), key.public());
        // Another key appears only if the file is removed.
        std::fs::remove_file(&file).unwrap();
        assert_ne!(load_or_create(&cfg).unwrap().public(), key.public());
    }

    #[test]
    fn a_named_key_file_must_exist_and_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let named = dir.path().join("agent-identity.sec");
        let cfg = config(dir.path(), &format!("identity_key_file: {}\n", named.display()));
        let err = load_or_create(&cfg).unwrap_err();
        assert!(err.is_bad_input());
        assert!(err.to_string().contains("agent-identity.sec: cannot read"), "{err}");
        assert!(!dir.path().join("identity.key").exists(), "nothing generated in its place");
        let key = SecretKey::from_seed("other-name", [5; 32]);
        std::fs::write(&named, key.to_nix_text()).unwrap();
        std::fs::set_permissions(&named, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(&cfg).unwrap_err();
        assert!(err.is_bad_input());
        assert!(err.to_string().contains("agent-identity.sec: mode 0644"), "{err}");
        std::fs::set_permissions(&named, std::fs::Permissions::from_mode(0o600)).unwrap();
        let loaded = load_or_create(&cfg).unwrap();
        assert_eq!(loaded.public().key, key.public().key);
        let public = std::fs::read_to_string(dir.path().join("identity.pub")).unwrap();
        assert_eq!(public.trim(), format!("web1:{}", key.public().to_string().split_once(':').unwrap().1));
    }
}
