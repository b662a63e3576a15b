//! A TLS man-in-the-middle for the agent API: listens on an address, terminates TLS with
//! its own identity key (a self-signed certificate like the agent's, from `hostctl-wire`)
//! and re-originates each request to the real agent over TLS pinned to the agent's
//! identity, relaying the answer. What it saw is counted, so a test can show that a
//! controller refused it before sending anything. [`Mitm::answering`] relays nothing: it
//! gives every request the same canned answer (a broken or impostor agent).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hostctl_schemas::key::PublicKey;
use hostctl_schemas::signing::SecretKey;

/// What the proxy saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// TCP connections accepted.
    pub connections: AtomicUsize,
    /// TLS handshakes a client completed with the proxy's key.
    pub handshakes: AtomicUsize,
    /// Requests (heads) read from clients and forwarded.
    pub requests: AtomicUsize,
}

/// A running proxy; stops accepting on drop.
#[derive(Debug)]
pub struct Mitm {
    pub addr: SocketAddr,
    /// The proxy's own identity, as a controller would pin it (`<host>:<base64>`).
    pub identity: PublicKey,
    pub seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
}

impl Mitm {
    /// Listens on `listen`, pretending to be host `host`'s agent (real one at `agent`,
    /// identity `agent_key`).
    pub fn start(listen: SocketAddr, host: &str, agent: SocketAddr, agent_key: [u8; 32]) -> Mitm {
        Self::serve(listen, host, Upstream::Agent(agent, agent_key))
    }

    /// Listens on `listen` as host `host`'s agent and answers every request with `answer`
    /// (a whole HTTP response), asking no agent.
    pub fn answering(listen: SocketAddr, host: &str, answer: &str) -> Mitm {
        Self::serve(listen, host, Upstream::Canned(Arc::from(answer.as_bytes())))
    }

    fn serve(listen: SocketAddr, host: &str, upstream: Upstream) -> Mitm {
        let key = SecretKey::from_seed(host, [0x6d; 32]);
        let identity = PublicKey { name: host.to_owned(), key: key.public().key };
        let server = hostctl_wire::server_config(&key).unwrap_or_else(|e| crate::fail(&format!("mitm: {e}")));
        let listener = TcpListener::bind(listen).unwrap_or_else(|e| crate::fail(&format!("mitm: bind {listen}: {e}")));
        let addr = listener.local_addr().unwrap_or(listen);
        let _ = listener.set_nonblocking(true);
        let (seen, stop) = (Arc::new(Seen::default()), Arc::new(AtomicBool::new(false)));
        let (seen2, stop2) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        seen2.connections.fetch_add(1, Ordering::Relaxed);
                        let (server, seen, upstream) = (Arc::clone(&server), Arc::clone(&seen2), upstream.clone());
                        std::thread::spawn(move || {
                            let _ = relay(client, server, &seen, &upstream);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Mitm { addr, identity, seen, stop }
    }

    pub fn handshakes(&self) -> usize {
        self.seen.handshakes.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Mitm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Where the answers come from.
#[derive(Clone)]
enum Upstream {
    /// The real agent at this address, with this identity.
    Agent(SocketAddr, [u8; 32]),
    /// This response, whatever the request.
    Canned(Arc<[u8]>),
}

/// One client connection: the handshake with the proxy's key, then one request relayed.
fn relay(
    client: TcpStream,
    server: Arc<hostctl_wire::ServerConfig>,
    seen: &Seen,
    upstream: &Upstream,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut tls =
        rustls::StreamOwned::new(rustls::ServerConnection::new(server).map_err(std::io::Error::other)?, client);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    seen.handshakes.fetch_add(1, Ordering::Relaxed);
    let request = read_request(&mut tls)?;
    seen.requests.fetch_add(1, Ordering::Relaxed);
    let answer = match upstream {
        Upstream::Agent(agent, agent_key) => {
            let mut upstream = crate::http::tls_over(TcpStream::connect(agent)?, Some(*agent_key))?;
            upstream.write_all(&request)?;
            crate::http::read_to_close(&mut upstream)?
        }
        Upstream::Canned(answer) => answer.to_vec(),
    };
    tls.write_all(&answer)?;
    tls.conn.send_close_notify();
    tls.flush()
}

/// A request's head (rewritten to `connection: close`) and its `content-length` body.
pub fn read_request(stream: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut length = 0;
    let mut out = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if !lower.starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("connection: close\r\n\r\n");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    let mut request = out.into_bytes();
    request.extend_from_slice(&body);
    Ok(request)
}
