//! The address a request came from: [`Peer`], added to every request's extensions by
//! `server.rs` for the connection it arrived on, read by the handlers that journal who
//! asked (deployments, rollbacks, bundles). Absent when the router is driven without a socket
//! (tests), so handlers take it as an `Option`.

use std::net::SocketAddr;

use hostctl_schemas::api::deployments::Requester;

use super::auth::Authenticated;

/// The peer's socket address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// Who asked: the key that signed and the peer's IP address (without its port, which
/// says nothing about who asked and would make every request look different).
pub fn requester(auth: &Authenticated, peer: Option<Peer>) -> Requester {
    signed_by(auth.key.clone(), peer)
}

/// Who asked, for a request signed by the trusted key named `key` (a bundle carries its
/// own signature instead of the request's).
pub fn signed_by(key: String, peer: Option<Peer>) -> Requester {
    Requester { key, address: peer.map(|Peer(addr)| addr.ip().to_canonical().to_string()) }
}
