//! `hostctl-agent` as a library: the daemon's modules, so the binary (`main.rs`) stays
//! glue and integration tests can run the HTTP server in-process.
//!
//! Request path: [`http`] routes → [`http::auth`] (signature, nonce, body hash;
//! [`http::body`] reads bodies within limits) → one handler module per endpoint in
//! [`http`], which calls down into the domain modules and maps their errors to HTTP:
//! [`import`] (the all-or-nothing store import, its paths rooted by [`import_roots`] until a
//! deployment ends), [`bundle`], [`generations`], [`status`],
//! [`metrics`], [`pull::webhook`], [`deploy`] (deployments, refused with [`deploy_error`],
//! moved on only by [`transition`]s: [`journal`] + [`activator`] (profile, store,
//! [`activation`] as [`systemd`] units or detached children) + [`substitute`] + [`health`];
//! [`rollback`] re-activates the previous system and serves `POST /v1/rollback` (targets
//! from [`rollback_target`]), [`recovery`] resumes after a restart), [`host`] (what the host runs),
//! `hostctl_nix::export_stream` (the import stream validator), [`pull`] (pull mode: fetch, webhook,
//! build, hand-off to [`deploy`]).
//! [`dbus`] publishes the status on D-Bus (`org.hostctl.Agent1`) and serves
//! `hostctl-agent status`; it and the HTTP API share the agent's [`handles`]. [`binfmt`]
//! keeps binfmt_misc emulation registered. [`serve`]
//! wires it up and handles signals; [`upgrade`] restarts it into a new agent a switch shipped,
//! when idle ([`version`]: the version it reports).

pub mod activation;
pub mod activator;
pub mod binfmt;
pub mod boot_once;
pub mod bootloader;
pub mod bundle;
pub mod bundle_client;
pub mod dbus;
pub mod deploy;
pub mod deploy_error;
pub mod events;
pub mod gc;
pub mod generations;
pub mod handles;
pub mod health;
pub mod host;
pub mod http;
pub mod identity;
pub mod import;
pub mod import_roots;
pub mod journal;
pub mod metrics;
pub mod orphan;
pub mod pause;
pub mod pull;
pub mod reboot;
pub mod recovery;
pub mod rollback;
pub mod rollback_target;
pub mod running;
pub mod serve;
pub mod status;
pub mod substitute;
pub mod systemd;
pub mod transition;
pub mod upgrade;
pub mod version;

/// The current Unix time in seconds (0 if the clock is before 1970, which no signature
/// check accepts anyway).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The current Unix time in milliseconds (0 before 1970): confirmation deadlines are
/// compared at this resolution.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
