//! Test helper for `tests/wire_bounds.rs`: the slow-header attacker of issue 14. Opens
//! COUNT connections to ADDR (`host:port`), completes a TLS handshake on each (accepting
//! any agent identity: the attacker wants a connection, not an agent), sends each the
//! first byte of a request, prints
//! `opened N` (N: connects that succeeded), then sends every connection one more header
//! byte per second, forever, printing `open K` each second (K: connections the server has
//! not closed). Run inside a simulated host's network namespace, so its connections come
//! from another address than the test's own requests.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The start of a request whose header never ends: one byte per second, then `a`s.
const DRIP: &[u8] = b"GET /v1/status HTTP/1.1\r\nx-slow: ";

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let parsed = match (args.next(), args.next()) {
        (Some(addr), Some(count)) => addr.parse::<SocketAddr>().ok().zip(count.parse::<usize>().ok()),
        _ => None,
    };
    let Some((addr, count)) = parsed else {
        eprintln!("usage: hold-connections IP:PORT COUNT");
        return std::process::ExitCode::from(2);
    };
    let mut open: Vec<Tls> = Vec::new();
    for _ in 0..count {
        if let Some(stream) = open_one(addr) {
            open.push(stream);
        }
    }
    println!("opened {}", open.len());
    let mut sent = 1;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let byte = [DRIP.get(sent).copied().unwrap_or(b'a')];
        sent += 1;
        open.retain_mut(|stream| still_open(stream) && stream.write_all(&byte).is_ok());
        // The test stopped reading: it is over, and so is this.
        if writeln!(std::io::stdout(), "open {}", open.len()).is_err() {
            return std::process::ExitCode::SUCCESS;
        }
    }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A connection with its TLS handshake done and the first request byte sent, then made
/// non-blocking; `None` if the server refused or closed it.
fn open_one(addr: SocketAddr) -> Option<Tls> {
    // A connect the server's full accept queue drops is retried by the kernel; 5 s
    // covers two retries.
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let (config, _) = hostctl_wire::accept_any().ok()?;
    let connection = rustls::ClientConnection::new(config, hostctl_wire::server_name()).ok()?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).ok()?;
    }
    stream.write_all(&DRIP[..1]).ok()?;
    stream.sock.set_nonblocking(true).ok()?;
    Some(stream)
}

/// Whether the server has not closed `stream` (a read sees neither EOF, an alert nor a reset).
fn still_open(stream: &mut Tls) -> bool {
    match stream.conn.read_tls(&mut stream.sock) {
        Ok(0) => false,
        Ok(_) => stream.conn.process_new_packets().is_ok_and(|state| !state.peer_has_closed()),
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}
