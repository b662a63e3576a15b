//! Processes a test runs in a simulated host beside its agent: the health server whose
//! answer a test switches between 200 and 404 (over HTTP, or HTTPS with a test
//! certificate), and any other listening process (a server that never answers, say), each
//! killed by pid when its [`Background`] guard drops.

use std::fs::{File, OpenOptions};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{SimHost, GATE_TIMEOUT};
use crate::fail;
use crate::tls::ServerCert;

/// `python3 -c` this, `ADDR PORT DIR CERT KEY`: http.server's file server for DIR behind
/// TLS, one log line per request on stderr as `python3 -m http.server` writes them. A
/// client that refuses the certificate fails `accept` only for its own connection.
const TLS_SERVER: &str = r#"
import functools, http.server, ssl, sys
addr, port, root, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
server = http.server.ThreadingHTTPServer((addr, port), handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

impl SimHost {
    /// ROOT/health: what [`SimHost::start_health_server`] serves.
    pub fn health_dir(&self) -> PathBuf {
        self.root.join("health")
    }

    /// Makes `GET /healthz` on the health server answer 200 (`true`: ROOT/health/healthz
    /// exists) or 404 (`false`).
    pub fn set_healthy(&self, healthy: bool) {
        let dir = self.health_dir();
        let file = dir.join("healthz");
        let result = if healthy {
            std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, "ok\n"))
        } else {
            std::fs::remove_file(&file)
                .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
        };
        result.unwrap_or_else(|e| fail(&format!("cannot change {}: {e}", file.display())));
    }

    /// `http://ADDR:PORT/healthz`.
    pub fn health_url(&self, port: u16) -> String {
        format!("http://{}:{port}/healthz", self.addr)
    }

    /// Starts a second process in the host next to the agent: `python3 -m http.server`
    /// on `ADDR:port` serving ROOT/health (see [`SimHost::set_healthy`]), its output in
    /// ROOT/health.log (one line per request). Returns once the port accepts connections;
    /// the server is killed (by pid) when the returned guard is dropped.
    pub fn start_health_server(&self, port: u16) -> Background {
        std::fs::create_dir_all(self.health_dir())
            .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", self.health_dir().display())));
        let (port_s, addr_s) = (port.to_string(), self.addr.to_string());
        let dir = self.health_dir().to_string_lossy().into_owned();
        let argv = ["python3", "-m", "http.server", &port_s, "--bind", &addr_s, "--directory", &dir];
        let log_path = self.root.join("health.log");
        let log =
            File::create(&log_path).unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", log_path.display())));
        self.spawn_listening(&argv, port, log, &log_path)
    }

    /// `https://ADDR:PORT/healthz`.
    pub fn health_https_url(&self, port: u16) -> String {
        format!("https://{}:{port}/healthz", self.addr)
    }

    /// Like [`SimHost::start_health_server`], over TLS with `cert` (made for this host's
    /// address by [`crate::tls::TestCa::server_cert`]): `https://ADDR:port/healthz`.
    pub fn start_tls_health_server(&self, port: u16, cert: &ServerCert) -> Background {
        std::fs::create_dir_all(self.health_dir())
            .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", self.health_dir().display())));
        let (port_s, addr_s) = (port.to_string(), self.addr.to_string());
        let dir = self.health_dir().to_string_lossy().into_owned();
        let (cert_s, key_s) = (cert.cert.to_string_lossy().into_owned(), cert.key.to_string_lossy().into_owned());
        let argv = ["python3", "-c", TLS_SERVER, &addr_s, &port_s, &dir, &cert_s, &key_s];
        let log_path = self.root.join("health.log");
        let log =
            File::create(&log_path).unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", log_path.display())));
        self.spawn_listening(&argv, port, log, &log_path)
    }

    /// Starts `argv` in the host next to the agent (output appended to ROOT/`log`) and
    /// waits until something accepts connections on `ADDR:port`; killed (by pid) when the
    /// returned guard is dropped. E.g. a server that never answers, for timeouts.
    pub fn start_background(&self, argv: &[&str], port: u16, log: &str) -> Background {
        let log_path = self.root.join(log);
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| fail(&format!("cannot open {}: {e}", log_path.display())));
        self.spawn_listening(argv, port, out, &log_path)
    }

    /// Starts `argv` in the host with its output to `log` (at `log_path`) and waits until
    /// something accepts connections on `ADDR:port`.
    fn spawn_listening(&self, argv: &[&str], port: u16, log: File, log_path: &Path) -> Background {
        let err = log.try_clone().unwrap_or_else(|e| fail(&format!("cannot duplicate a file handle: {e}")));
        let mut cmd = self.command_in(argv);
        cmd.stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(err));
        let child = cmd.spawn().unwrap_or_else(|e| fail(&format!("cannot start {argv:?} in host {}: {e}", self.name)));
        let mut process = Background { child: Some(child) };
        let target = SocketAddr::from((self.addr, port));
        let deadline = Instant::now() + GATE_TIMEOUT;
        while TcpStream::connect_timeout(&target, Duration::from_millis(250)).is_err() {
            if !process.is_running() || Instant::now() > deadline {
                let text = std::fs::read_to_string(log_path).unwrap_or_default();
                fail(&format!("{argv:?} in host {} did not listen on {target}:\n{text}", self.name));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        process
    }

    /// What the health server logged (one line per request it answered).
    pub fn health_log(&self) -> String {
        std::fs::read_to_string(self.root.join("health.log")).unwrap_or_default()
    }
}

/// A process a test started in the background; killed (SIGKILL, by pid) and reaped on
/// drop.
#[derive(Debug)]
pub struct Background {
    pub(crate) child: Option<Child>,
}

impl Background {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}
