//! A compromised host for issue 14's replay test: run inside host A's network namespace,
//! it holds A's identity key (as whoever took A over does), so the controller's pinned
//! connection to A reaches it. Each request it receives is replayed byte for byte to
//! another host's agent from A's own address, then relayed to A's real agent so the
//! controller sees nothing wrong.
//!
//! `compromised-host LISTEN AS AGENT REPLAY_TO`: listens on LISTEN with the test identity
//! of host AS, relays to AS's agent at AGENT, replays to REPLAY_TO; prints `listening` once
//! it accepts connections and `replayed METHOD PATH: STATUS` per request (for requests
//! with a `content-length` body: what `hostctl rollback` and `status` send).

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hostctl_tests::http::{read_to_close, tls_over};
use hostctl_tests::mitm::read_request;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [listen, name, agent, replay_to] => {
            listen.parse::<SocketAddr>().ok().zip(agent.parse::<SocketAddr>().ok()).zip(replay_to.parse().ok()).map(
                |((listen, agent), replay_to): ((SocketAddr, SocketAddr), SocketAddr)| (listen, name, agent, replay_to),
            )
        }
        _ => None,
    };
    let Some((listen, name, agent, replay_to)) = parsed else {
        eprintln!("usage: compromised-host LISTEN AS AGENT REPLAY_TO (addresses as IP:PORT)");
        return ExitCode::from(2);
    };
    let key = hostctl_tests::identity::test_identity(name);
    let (server, listener) = match hostctl_wire::server_config(&key).map_err(|e| e.to_string()).and_then(|server| {
        TcpListener::bind(listen).map(|l| (server, l)).map_err(|e| format!("cannot listen on {listen}: {e}"))
    }) {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("compromised-host: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening");
    let _ = std::io::stdout().flush();
    for client in listener.incoming().flatten() {
        let server = Arc::clone(&server);
        std::thread::spawn(move || {
            if let Err(e) = handle(client, server, agent, replay_to) {
                eprintln!("compromised-host: {e}");
            }
        });
    }
    ExitCode::SUCCESS
}

/// One connection from the controller: one request, replayed to `replay_to`, then relayed
/// to `agent` and its answer sent back.
fn handle(
    client: TcpStream,
    server: Arc<hostctl_wire::ServerConfig>,
    agent: SocketAddr,
    replay_to: SocketAddr,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut tls =
        rustls::StreamOwned::new(rustls::ServerConnection::new(server).map_err(std::io::Error::other)?, client);
    let request = read_request(&mut tls)?;
    let line = String::from_utf8_lossy(request.split(|&b| b == b'\r').next().unwrap_or_default()).into_owned();
    let mut other = tls_over(TcpStream::connect(replay_to)?, None)?;
    other.write_all(&request)?;
    let answer = read_to_close(&mut other)?;
    let status = String::from_utf8_lossy(answer.split(|&b| b == b'\r').next().unwrap_or_default()).into_owned();
    let method_path = line.rsplit_once(' ').map_or(line.as_str(), |(head, _)| head);
    let status = status.split(' ').nth(1).unwrap_or("none");
    println!("replayed {method_path}: {status}");
    let _ = std::io::stdout().flush();
    let mut upstream = tls_over(TcpStream::connect(agent)?, None)?;
    upstream.write_all(&request)?;
    let answer = read_to_close(&mut upstream)?;
    tls.write_all(&answer)?;
    tls.conn.send_close_notify();
    tls.flush()
}
