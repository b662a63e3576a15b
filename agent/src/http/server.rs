//! The API's sockets and connections: [`listen`] (a deep accept queue) and [`serve`], which
//! accepts connections itself (axum's `serve` has no header timeout): each one is admitted
//! within the caps of [`super::connections`] or closed at once, gets TCP keepalive, must
//! finish its TLS handshake (on the API listener; the optional plain `metrics_listen` and
//! `webhook_listen` listeners have none) and send its first request's headers within
//! [`HEADER_TIMEOUT`] of being accepted (and, kept alive, its next ones within it of each
//! answer), is closed
//! lingering ([`super::linger`]: an early 413 reaches a client still sending), and ends
//! gracefully on shutdown (in-flight requests, imports included, complete).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::connections::{Admission, Slot};
use super::linger::Lingering;
use super::peer::Peer;

/// How long a connection has to send a request's headers, counted from when the agent
/// starts waiting for them: on a new connection, and after each answer on a kept-alive
/// one (so it is also the idle keep-alive timeout). A client sending one byte per second
/// is cut off here instead of holding its file descriptor forever. For a new connection it
/// is one deadline from accept: the TLS handshake and the first request's headers together
/// (a slow handshake followed by slow headers cannot stretch it to twice as long).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the accept loop pauses after an error that is not about one connection
/// (e.g. out of file descriptors), as axum's `serve` does: retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// One listener's router, its connection caps and, for the API, its TLS.
#[derive(Clone)]
pub struct Listener {
    pub router: Router,
    pub admission: Admission,
    /// `None` on the plain metrics and webhook listeners.
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("tls", &self.tls.is_some()).finish_non_exhaustive()
    }
}

/// Serves `served.router` on `listener` until `shutdown` completes, within its caps.
pub async fn serve(
    listener: TcpListener,
    served: Listener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
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
        let slot = match served.admission.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                // Closed unread: its file descriptor is free again at once.
                tracing::debug!(%peer, %refused, "connection refused");
                drop(stream);
                continue;
            }
        };
        notice_dead_peers(&stream);
        // An answer leaves as several TLS records; under Nagle's algorithm one written
        // while another is unacknowledged waits for the client's delayed ACK (up to 40 ms
        // on Linux). The controller's sockets already have TCP_NODELAY (reqwest's default).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
        let first_headers_by = tokio::time::Instant::now() + HEADER_TIMEOUT;
        let connection = Connection {
            http: http.clone(),
            router: served.router.clone(),
            watcher: graceful.watcher(),
            slot,
            first_headers_by,
        };
        let tls = served.tls.clone();
        tokio::spawn(async move {
            let stream = Lingering::new(stream);
            let Some(tls) = tls else { return connection.serve(stream, peer).await };
            match tokio::time::timeout_at(first_headers_by, tls.accept(stream)).await {
                Ok(Ok(stream)) => connection.serve(stream, peer).await,
                // Plain HTTP, a client that does not pin this agent, a scanner: no API answer.
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "no TLS handshake within the header timeout"),
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// What serving one admitted connection needs; its slot is freed when it ends.
struct Connection {
    http: hyper::server::conn::http1::Builder,
    router: Router,
    watcher: Watcher,
    slot: Slot,
    /// When the first request's headers must be complete: [`HEADER_TIMEOUT`] after accept.
    first_headers_by: tokio::time::Instant,
}

impl Connection {
    /// Serves the connection; it is dropped (closed) if its first request's headers are
    /// not complete by `first_headers_by`. hyper's own header timeout starts only when
    /// hyper starts reading, after the handshake, so it alone would allow handshake time
    /// plus [`HEADER_TIMEOUT`].
    async fn serve<I: AsyncRead + AsyncWrite + Send + Unpin + 'static>(self, io: I, peer: std::net::SocketAddr) {
        let first_request = std::sync::Arc::new(tokio::sync::Notify::new());
        let service = service(&self.router, peer, first_request.clone());
        let connection = self.http.serve_connection(TokioIo::new(io), service);
        let mut connection = std::pin::pin!(self.watcher.watch(connection));
        let ended = tokio::select! {
            ended = &mut connection => Some(ended),
            () = first_request.notified() => Some(connection.await),
            () = tokio::time::sleep_until(self.first_headers_by) => None,
        };
        match ended {
            Some(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
            Some(Ok(())) => {}
            None => tracing::debug!(%peer, "no complete request headers within the header timeout of accept"),
        }
        drop(self.slot);
    }
}

/// The router as a hyper service for one connection from `peer`, which each request
/// carries as a [`Peer`] extension; `first_request` is notified when a request's headers
/// are complete (hyper calls the service only then).
fn service(
    router: &Router,
    peer: SocketAddr,
    first_request: std::sync::Arc<tokio::sync::Notify>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    let inner = TowerToHyperService::new(router.clone());
    hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        first_request.notify_one();
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
