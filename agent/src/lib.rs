//! `hostctl-agent` as a library: the daemon's modules, so the binary (`main.rs`) stays
//! glue and integration tests can run the HTTP server in-process.
//!
//! Request path: [`server`] routes → [`auth`] (signature, nonce, body hash; [`body`] reads
//! bodies within limits) → handlers in [`routes`] and [`import`] → [`deploy`] (deployments:
//! [`journal`] + [`activation`]), [`host`] (what the host runs), [`export_stream`] (the
//! import stream validator). [`serve`] wires it up and handles signals.

pub mod activation;
pub mod auth;
pub mod body;
pub mod deploy;
pub mod error;
pub mod export_stream;
pub mod host;
pub mod import;
pub mod journal;
pub mod routes;
pub mod serve;
pub mod server;

/// The current Unix time in seconds (0 if the clock is before 1970, which no signature
/// check accepts anyway).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
