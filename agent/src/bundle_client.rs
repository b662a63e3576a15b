//! `hostctl-agent import FILE`: hands a bundle to the agent running on this host, over
//! its own TLS port on this machine (a host without network still has loopback), pinned
//! to the identity the agent published in `state_dir/identity.pub`, and reports how the
//! deployment ended. The checks and the deployment are the daemon's
//! ([`crate::bundle`]): it owns the journal, so no second process ever writes it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use hostctl_schemas::agent_config::AgentConfig;
use hostctl_schemas::api::bundles::PATH;
use hostctl_schemas::api::deployments::{Deployment, DeploymentState};
use hostctl_schemas::api::ApiError;

/// Why an import did not deploy.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {file}: {source}")]
    File {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The agent refused the bundle (signature, host, age, hash): nothing was changed.
    #[error("the agent refused {file}: {message}")]
    Refused { file: String, message: String },
    #[error("cannot read the agent's identity from {file} (has the agent run yet?): {problem}")]
    Identity { file: String, problem: String },
    #[error("cannot reach the agent at {addr}: {message}")]
    Unreachable { addr: String, message: String },
}

impl ImportError {
    /// Exit 2: the bundle itself is bad (or unreadable) and nothing changed.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, ImportError::File { .. } | ImportError::Refused { .. })
    }
}

/// Where to reach the agent from this machine: its `listen` address, or loopback when
/// it listens on every address.
pub fn local_address(config: &AgentConfig) -> SocketAddr {
    let ip = match config.listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, config.listen.port())
}

/// Posts `file` to the local agent; the deployment once it ended.
pub async fn import(config: &AgentConfig, file: &Path) -> Result<Deployment, ImportError> {
    let name = file.display().to_string();
    let body = tokio::fs::File::open(file).await.map_err(|source| ImportError::File { file: name.clone(), source })?;
    let addr = local_address(config);
    let unreachable = |message: String| ImportError::Unreachable { addr: addr.to_string(), message };
    let pin = published_identity(config)?;
    let (tls, _) = hostctl_wire::client_config(Some(pin)).map_err(|e| unreachable(e.to_string()))?;
    // The agent is on loopback: a proxy from the environment must not be asked for it.
    let client = reqwest::Client::builder()
        .no_proxy()
        .use_preconfigured_tls(hostctl_wire::ClientConfig::clone(&tls))
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let response = client
        .post(format!("https://{addr}{PATH}"))
        .body(reqwest::Body::from(body))
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| unreachable(e.to_string()))?;
    if status.is_success() {
        return serde_json::from_str(&text).map_err(|e| unreachable(format!("unexpected answer ({e}): {text}")));
    }
    let message = serde_json::from_str::<ApiError>(&text).map_or(text, |e| e.message);
    if status.is_client_error() {
        Err(ImportError::Refused { file: name, message })
    } else {
        Err(unreachable(format!("HTTP {status}: {message}")))
    }
}

/// The identity key the local agent published (`state_dir/identity.pub`).
fn published_identity(config: &AgentConfig) -> Result<hostctl_wire::KeyBytes, ImportError> {
    let path = config.state_dir.join(hostctl_schemas::agent_config::IDENTITY_PUB_FILE);
    let fail = |problem: String| ImportError::Identity { file: path.display().to_string(), problem };
    let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
    let key: hostctl_schemas::key::PublicKey =
        text.trim().parse().map_err(|e: hostctl_schemas::key::PublicKeyError| fail(e.to_string()))?;
    Ok(key.key)
}

/// One line for the operator.
pub fn describe(d: &Deployment) -> String {
    let state = crate::deploy::state_name(d.state);
    match (&d.error, d.state) {
        (_, DeploymentState::Confirmed) => format!("{}: {state}, running {}", d.id, d.toplevel),
        (Some(e), _) => format!("{}: {state}: {e}", d.id),
        (None, _) => format!("{}: {state}", d.id),
    }
}
