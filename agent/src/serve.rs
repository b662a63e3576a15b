//! `hostctl-agent serve`: builds the agent from its configuration (its identity key and
//! TLS configuration included), finishes what the journal left open, listens (the API
//! over TLS; metrics and the webhook also on plain listeners when configured), and shuts
//! down gracefully on SIGTERM or SIGINT (in-flight requests, imports included, complete;
//! detached activations keep running).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use hostctl_nix::profile::{Profile, ProfileError};
use hostctl_nix::Nix;
use hostctl_schemas::agent_config::AgentConfig;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::activation::ServiceManager;
use crate::deploy::{Deployer, DeployerOptions};
use crate::handles::Handles;
use crate::host::StoreFs;
use crate::http::auth::Authenticator;
use crate::http::connections::Admission;
use crate::http::server;
use crate::http::state::AppState;
use crate::import::Importer;
use crate::import_roots::ImportRoots;
use crate::journal::{create_private_dir, Journal, JournalError};

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("profile: {0}")]
    Profile(#[from] ProfileError),
    #[error("cannot prepare {dir}: {source}")]
    Dir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the SIGTERM/SIGINT handlers: {0}")]
    Signal(#[source] std::io::Error),
    #[error("configuration: {0}")]
    Config(String),
    /// A secret or the state directory that other users could read or replace.
    #[error("refusing to start: {0}")]
    Permissions(#[from] hostctl_schemas::perms::PermError),
    #[error("the HTTP server failed: {0}")]
    Server(#[source] std::io::Error),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error(transparent)]
    Tls(#[from] hostctl_wire::WireError),
}

impl ServeError {
    /// The configuration (or a file it names) is wrong: nothing was started or changed.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Self::Identity(e) => e.is_bad_input(),
            _ => matches!(self, Self::Config(_) | Self::Permissions(_)),
        }
    }
}

/// Refuses to start when the state directory or a secret the configuration names could be
/// read or replaced by other users (the state directory is created 0700 when missing).
pub fn check_private_paths(config: &AgentConfig) -> Result<(), hostctl_schemas::perms::PermError> {
    use hostctl_schemas::perms::{judge, Private};
    let euid = nix::unistd::geteuid().as_raw();
    let check_private = |path: &std::path::Path, what, kind| judge(path, what, kind, std::fs::metadata(path), euid);
    check_private(&config.state_dir, "state_dir", Private::Dir)?;
    if let Some(pull) = &config.pull {
        if let Some(file) = &pull.webhook_secret_file {
            check_private(file, "pull.webhook_secret_file", Private::File)?;
        }
        if let Some(file) = &pull.ssh_key_file {
            check_private(file, "pull.ssh_key_file", Private::File)?;
        }
    }
    Ok(())
}

/// Everything `serve` refuses in its configuration before it starts, and `check-config`
/// reports the same way (one function, so the two cannot disagree): secrets and the state
/// directory others could read, `http` health checks, an unreadable webhook secret, an ssh
/// URL without its key, binfmt emulation that cannot work. Returns the binfmt plan.
pub fn check_startable(config: &AgentConfig) -> Result<Option<crate::binfmt::Plan>, ServeError> {
    check_private_paths(config)?;
    // An `http` check the agent cannot run must not silently pass.
    crate::health::refuse_http("health", &config.health).map_err(ServeError::Config)?;
    if let Some(pull) = &config.pull {
        if let Some(path) = &pull.webhook_secret_file {
            crate::pull::webhook::HookAuth::load(path).map_err(ServeError::Config)?;
        }
        crate::pull::ssh::SshAuth::from_config(pull).map_err(ServeError::Config)?;
    }
    // Refused like a bad `health` entry: emulation that cannot work must not start.
    match &config.binfmt {
        Some(section) => Ok(Some(crate::binfmt::plan(section).map_err(|e| ServeError::Config(e.to_string()))?)),
        None => Ok(None),
    }
}

/// A configured agent, ready to serve.
#[derive(Debug)]
pub struct Agent {
    state: AppState,
    binfmt: Option<crate::binfmt::Plan>,
    tls: Arc<hostctl_wire::ServerConfig>,
    identity: hostctl_schemas::key::PublicKey,
}

/// The sockets an agent serves: the TLS API, and the optional plain metrics and webhook
/// listeners.
#[derive(Debug)]
pub struct Listeners {
    pub api: TcpListener,
    pub metrics: Option<TcpListener>,
    pub webhook: Option<TcpListener>,
}

impl Listeners {
    /// The API listener alone.
    pub fn api(api: TcpListener) -> Self {
        Self { api, metrics: None, webhook: None }
    }
}

impl Agent {
    /// Prepares the state directory (0700), the profile's directory, the journal and the
    /// Nix handle (`store` from the configuration, if any).
    pub fn new(config: AgentConfig, services: Arc<dyn ServiceManager>) -> Result<Self, ServeError> {
        let binfmt = check_startable(&config)?;
        create_private_dir(&config.state_dir)?;
        let identity_key = crate::identity::load_or_create(&config)?;
        let tls = hostctl_wire::server_config(&identity_key)?;
        let identity = crate::identity::public_identity(&config, &identity_key);
        let profile = Profile::new(&config.profile)?;
        if let Some(parent) = profile.as_path().parent() {
            std::fs::create_dir_all(parent)
                .map_err(|source| ServeError::Dir { dir: parent.display().to_string(), source })?;
        }
        let mut nix = Nix::new();
        if let Some(store) = &config.store {
            nix = nix.with_store(store.clone());
        }
        let nix = Arc::new(nix);
        let journal = Journal::open(&config.state_dir.join("deployments"))?;
        let store_fs = StoreFs::from_store_url(config.store.as_deref());
        let options = DeployerOptions {
            health: config.health.clone(),
            confirm_timeout: config.confirm_timeout,
            activation_timeout: Some(config.activation_timeout.into()),
            current_system: Some(crate::host::CURRENT_SYSTEM.into()),
            booted_system: Some(crate::host::BOOTED_SYSTEM.into()),
            boot: Some(config.boot.clone()),
            bootctl: None,
            caches: config.caches.clone(),
            cache_keys: config
                .trusted_keys
                .iter()
                .chain(config.pull.iter().flat_map(|p| &p.trusted_public_keys))
                .cloned()
                .collect(),
        };
        let store_dir = store_fs.store_dir();
        let deployer = Arc::new(Deployer::new(journal, Arc::clone(&nix), profile, store_fs, services, options));
        let tmp = config.state_dir.join("tmp");
        let roots_dir = config.state_dir.join("gcroots/imports");
        let roots = ImportRoots::open(&roots_dir, Arc::clone(&nix))
            .map_err(|source| ServeError::Dir { dir: roots_dir.display().to_string(), source })?;
        let roots = Arc::new(roots);
        roots.release_when_deployments_end(deployer.events());
        let importer = Importer::new(Arc::clone(&nix), tmp.clone(), store_dir)
            .map_err(|source| ServeError::Dir { dir: tmp.display().to_string(), source })?
            .with_roots(roots);
        let auth = Arc::new(Authenticator::new(config.hostname.clone(), identity.key, config.trusted_keys.clone()));
        let pull = crate::pull::Puller::from_config(&config, Arc::clone(&deployer)).map_err(ServeError::Config)?;
        let gc_log = crate::gc::GcLog::open(&config.state_dir.join("gc.json"));
        let gc = Arc::new(crate::gc::Collector::new(Arc::clone(&nix), Arc::clone(&deployer), config.retention, gc_log));
        gc.run_after_confirmations();
        let importer = Arc::new(importer);
        let agent = Handles { config: Arc::new(config), nix, deployer, importer, gc, pull };
        Ok(Self { state: AppState { agent, auth }, binfmt, tls, identity })
    }

    /// The pull-mode task's handle (`None` in push mode).
    pub fn puller(&self) -> Option<Arc<crate::pull::Puller>> {
        self.state.agent.pull.clone()
    }

    /// The router of the plain `webhook_listen` listener.
    pub fn webhook_router(&self) -> Router {
        crate::http::webhook_router(self.state.clone())
    }

    /// The agent's public identity, `<hostname>:<base64>` (what `identity.pub` holds).
    pub fn identity(&self) -> &hostctl_schemas::key::PublicKey {
        &self.identity
    }

    /// Recovers the journal, then serves on `listeners` until `shutdown` completes.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        if let Some(plan) = self.binfmt.clone() {
            crate::binfmt::start(plan, self.state.agent.deployer.events().clone()).await;
        }
        self.state.agent.importer.recover_interrupted().await;
        self.state.agent.deployer.recover().await;
        // After recovery, so a pull round never meets a deployment the journal left open.
        if let Some(pull) = &self.state.agent.pull {
            tokio::spawn(Arc::clone(pull).run());
        }
        // After recovery too: the first properties describe the recovered state.
        crate::dbus::spawn(self.state.agent.clone());
        let config = &self.state.agent.config;
        let admission = Admission::new(config.max_connections.get(), config.max_connections_per_peer.get());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let plain = [
            (listeners.metrics, crate::http::metrics_router(self.state.clone())),
            (listeners.webhook, crate::http::webhook_router(self.state.clone())),
        ];
        let mut tasks = Vec::new();
        for (listener, router) in plain {
            let Some(listener) = listener else { continue };
            let served = server::Listener { router, admission: admission.clone(), tls: None };
            tasks.push(tokio::spawn(server::serve(listener, served, stopped_signal(stopped.clone()))));
        }
        let api = server::Listener {
            router: crate::http::router(self.state),
            admission,
            tls: Some(tokio_rustls::TlsAcceptor::from(self.tls)),
        };
        let result = server::serve(listeners.api, api, shutdown).await;
        let _ = stop.send(true);
        for task in tasks {
            if let Ok(Err(e)) = task.await {
                tracing::error!(error = %e, "a plain listener failed");
            }
        }
        result.map_err(ServeError::Server)
    }
}

/// Completes once `stopped` turns true (or its sender is gone).
async fn stopped_signal(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Binds `addr`, naming it if that fails.
fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, ServeError> {
    server::listen(addr).map_err(|source| ServeError::Bind { addr: addr.to_string(), source })
}

/// Binds the optional plain listener `addr`.
fn bind_optional(addr: Option<std::net::SocketAddr>) -> Result<Option<TcpListener>, ServeError> {
    addr.map(bind).transpose()
}

/// Why [`serve`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// SIGTERM or SIGINT.
    Signal,
    /// To restart into the new agent the running system ships (`crate::upgrade`): exit
    /// with [`crate::upgrade::EXIT_UPGRADE`].
    Upgrade,
}

/// Runs the daemon for `config` until SIGTERM or SIGINT, or (if `restart_on_upgrade`)
/// until it should restart into a new agent (`crate::upgrade`).
pub async fn serve(config: AgentConfig, restart_on_upgrade: bool) -> Result<Stopped, ServeError> {
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signal)?;
    let addr = config.listen;
    // `service_manager:` picks what starts new activations; journaled ones of either kind
    // are still followed.
    let services = Arc::new(crate::systemd::Managers::for_config(&config));
    let (metrics, webhook) = (config.metrics_listen, config.webhook_listen);
    let agent = Agent::new(config, services)?;
    let listeners = Listeners { api: bind(addr)?, metrics: bind_optional(metrics)?, webhook: bind_optional(webhook)? };
    tracing::info!(
        %addr,
        identity = %agent.identity,
        metrics = ?metrics,
        webhook = ?webhook,
        state_dir = %agent.state.agent.config.state_dir.display(),
        "hostctl-agent listening (TLS)"
    );
    let app = agent.state.agent.clone();
    let upgrade = async move {
        if restart_on_upgrade {
            crate::upgrade::wait_for_new_agent(app, crate::host::CURRENT_SYSTEM.into()).await
        } else {
            tracing::info!("--no-restart-on-upgrade: a new agent shipped by a switch starts at the next restart");
            std::future::pending().await
        }
    };
    let (why, stopped) = tokio::sync::oneshot::channel();
    let shutdown = async move {
        let why_stopped = tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); Stopped::Signal }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); Stopped::Signal }
            _ = upgrade => Stopped::Upgrade,
        };
        let _ = why.send(why_stopped);
    };
    agent.run(listeners, shutdown).await?;
    let stopped = stopped.await.unwrap_or(Stopped::Signal);
    tracing::info!(?stopped, "hostctl-agent stopped");
    Ok(stopped)
}
