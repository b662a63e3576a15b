//! The API's socket and connections: [`listen`] (a deep accept queue) and [`serve`], which
//! accepts connections itself (axum's `serve` has no header timeout): each one is admitted
//! within the caps of [`super::connections`] or closed at once, gets TCP keepalive, must
//! send its request headers within [`HEADER_TIMEOUT`] (and, kept alive, its next ones
//! within it too), is closed lingering ([`super::linger`]: an early 413 reaches a client
//! still sending), and ends gracefully on shutdown (in-flight requests, imports included,
//! complete).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};

use super::connections::Admission;
use super::linger::Lingering;
use super::peer::Peer;
use super::state::AppState;

/// How long a connection has to send a request's headers, counted from when the agent
/// starts waiting for them: on a new connection, and after each answer on a kept-alive
/// one (so it is also the idle keep-alive timeout). A client sending one byte per second
/// is cut off here instead of holding its file descriptor forever.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the accept loop pauses after an error that is not about one connection
/// (e.g. out of file descriptors), as axum's `serve` does: retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serves the API v1 router on `listener` until `shutdown` completes, within the
/// connection caps of the agent's configuration.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = &state.agent.config;
    let admission = Admission::new(config.max_connections.get(), config.max_connections_per_peer.get());
    let router = super::router(state);
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    pause_after(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match admission.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                // Closed unread: its file descriptor is free again at once.
                tracing::debug!(%peer, %refused, "connection refused");
                drop(stream);
                continue;
            }
        };
        notice_dead_peers(&stream);
        let io = TokioIo::new(Lingering::new(stream));
        let connection = graceful.watch(http.serve_connection(io, service(&router, peer)));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The router as a hyper service for one connection from `peer`, which each request
/// carries as a [`Peer`] extension.
fn service(
    router: &Router,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    let inner = TowerToHyperService::new(router.clone());
    hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(Peer(peer));
        hyper::service::Service::call(&inner, request)
    })
}

/// Waits before the next `accept` unless the error concerned only the connection being
/// accepted (reset before it was accepted, ...).
async fn pause_after(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

/// Keepalive probes on every accepted connection: a controller whose link died mid-upload
/// is noticed in about half a minute, so its half-sent import (and the spool file under
/// `state_dir/tmp`) is dropped instead of waiting for a close that never comes.
fn notice_dead_peers(stream: &TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(15))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    let socket = socket2::SockRef::from(stream);
    // Best effort: without keepalive the connection still works, it is only noticed later.
    if let Err(e) =
        socket.set_tcp_keepalive(&keepalive).and_then(|()| socket.set_tcp_user_timeout(Some(Duration::from_secs(30))))
    {
        tracing::debug!(error = %e, "cannot enable TCP keepalive on a connection");
    }
}

/// Connections the kernel queues for the agent to accept. `TcpListener::bind` asks for
/// 128: 200 status requests sent at once overflowed it, and each dropped connection waited
/// for its SYN to be sent again (1 s, then 3 s, 7 s, ...). The kernel caps it at
/// `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 1024;

/// `TcpListener::bind` with `LISTEN_BACKLOG` (and `SO_REUSEADDR`, as `bind` sets it).
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
