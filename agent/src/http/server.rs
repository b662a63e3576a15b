//! The API's socket and connections: [`listen`] (a deep accept queue) and [`serve`] (TCP
//! keepalive on every connection, graceful shutdown: in-flight requests, imports
//! included, complete).

use std::future::Future;

use tokio::net::TcpListener;

use super::state::AppState;

/// Serves the API v1 router on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = axum::serve::ListenerExt::tap_io(listener, notice_dead_peers);
    axum::serve(listener, super::router(state)).with_graceful_shutdown(shutdown).await
}

/// Keepalive probes on every accepted connection: a controller whose link died mid-upload
/// is noticed in about half a minute, so its half-sent import (and the spool file under
/// `state_dir/tmp`) is dropped instead of waiting for a close that never comes.
fn notice_dead_peers(stream: &mut tokio::net::TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(15))
        .with_interval(std::time::Duration::from_secs(5))
        .with_retries(3);
    let socket = socket2::SockRef::from(&*stream);
    // Best effort: without keepalive the connection still works, it is only noticed later.
    if let Err(e) = socket
        .set_tcp_keepalive(&keepalive)
        .and_then(|()| socket.set_tcp_user_timeout(Some(std::time::Duration::from_secs(30))))
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
