//! The `agent.yaml` a simulated host's agent runs with: the base configuration
//! ([`agent_config`]), extra top-level keys ([`agent_config_with`]) and the `pull:` block
//! ([`SimHost::pull_yaml`], which also writes the webhook secret 0600).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::simhost::SimHost;

/// A YAML agent configuration for `host`: its name and address, `trusted_key` as the only
/// trusted key, its identity key pre-provisioned in ROOT/etc/identity.key
/// ([`crate::identity::test_identity`]), metrics on plain HTTP at
/// [`crate::simhost::METRICS_PORT`], state under ROOT/state/agent, the standard system profile (inside the
/// host's own `/nix`), a 30 s confirmation window, the session bus, and detached
/// activations (never the machine's systemd, should it run one).
pub fn agent_config(host: &SimHost, trusted_key: &str) -> String {
    agent_config_trusting(host, &[trusted_key])
}

/// [`agent_config`] trusting each of `trusted_keys` (e.g. the old and the new fleet key
/// while the fleet key changes).
pub fn agent_config_trusting(host: &SimHost, trusted_keys: &[&str]) -> String {
    // JSON strings are valid YAML double-quoted scalars: no escaping rules of our own.
    let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let listen = SocketAddr::from((host.addr, host.port)).to_string();
    let state_dir = host.root.join("state/agent");
    let keys: Vec<String> = trusted_keys.iter().map(|k| quote(k)).collect();
    // Pre-provisioned, so the fleet file pins it before the agent first starts.
    let identity = host.root.join("etc/identity.key");
    if !identity.exists() {
        crate::identity::write_identity(&identity, &host.name);
    }
    format!(
        "hostname: {}\nlisten: {}\ntrusted_keys: [{}]\nstate_dir: {}\nprofile: {}\nconfirm_timeout: 30s\nbus: session\n\
         service_manager: detached\nidentity_key_file: {}\nmetrics_listen: {}\n",
        quote(&host.name),
        quote(&listen),
        keys.join(", "),
        quote(&state_dir.to_string_lossy()),
        quote("/nix/var/nix/profiles/system"),
        quote(&identity.to_string_lossy()),
        quote(&SocketAddr::from((host.addr, crate::simhost::METRICS_PORT)).to_string()),
    )
}

/// [`agent_config`] with `extra_yaml` appended (top-level keys, e.g. a `pull:` block
/// from [`pull_yaml`]).
pub fn agent_config_with(host: &SimHost, trusted_key: &str, extra_yaml: &str) -> String {
    let mut yaml = agent_config(host, trusted_key);
    yaml.push_str(extra_yaml);
    if !yaml.ends_with('\n') {
        yaml.push('\n');
    }
    yaml
}

/// Settings of an agent's `pull:` block (see `schemas/src/agent_config.rs`).
#[derive(Debug, Clone)]
pub struct PullSettings {
    /// Git URL or path of the remote.
    pub url: String,
    pub branch: String,
    /// E.g. `2s`, `300s`.
    pub interval: String,
    /// Written 0600 to ROOT/etc/webhook-secret by [`SimHost::pull_yaml`] when set.
    pub webhook_secret: Option<String>,
    /// `pinned` or `follow`.
    pub lock: String,
    /// `ssh_key_file` and `ssh_known_hosts_file`, for an ssh URL.
    pub ssh: Option<(PathBuf, PathBuf)>,
    /// The `commits:` mapping's lines, indented for inside `pull:` (signature policy).
    pub commits: Option<String>,
}

impl SimHost {
    /// A `pull:` block for `agent.yaml`; writes the webhook secret (mode 0600) to
    /// ROOT/etc/webhook-secret first if there is one.
    pub fn pull_yaml(&self, settings: &PullSettings) -> String {
        let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
        let mut yaml = format!(
            "pull:\n  url: {}\n  branch: {}\n  interval: {}\n  lock: {}\n",
            quote(&settings.url),
            quote(&settings.branch),
            settings.interval,
            settings.lock
        );
        if let Some(secret) = &settings.webhook_secret {
            let path = self.root.join("etc/webhook-secret");
            // Removed first: a file that exists keeps its mode when rewritten.
            let _ = std::fs::remove_file(&path);
            crate::write_secret(&path, secret);
            yaml.push_str(&format!("  webhook_secret_file: {}\n", quote(&path.to_string_lossy())));
        }
        if let Some((key, known_hosts)) = &settings.ssh {
            yaml.push_str(&format!("  ssh_key_file: {}\n", quote(&key.to_string_lossy())));
            yaml.push_str(&format!("  ssh_known_hosts_file: {}\n", quote(&known_hosts.to_string_lossy())));
        }
        if let Some(commits) = &settings.commits {
            yaml.push_str(&format!("  commits:\n{commits}"));
        }
        yaml
    }
}
