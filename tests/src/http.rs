//! A minimal HTTP/1.1 client over TLS (`std::net::TcpStream` and rustls, pinned as the
//! controller pins: to the identity registered for the address in [`crate::identity`])
//! for tests that must send what a real client never would: unsigned, tampered, stale or
//! replayed requests. [`Request::send_plain`] sends without TLS (the plain metrics and
//! webhook listeners, and proof that the API port gives plain HTTP no answer).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hostctl_schemas::ids::HostName;
use hostctl_schemas::signing::{body_sha256, RequestToSign, SecretKey, SignatureHeaders};

/// A response: status code and body text.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// A request before it is sent; `headers` may be edited to tamper with a signature.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, path: &str, body: &[u8]) -> Self {
        Self { method: method.to_owned(), path: path.to_owned(), headers: Vec::new(), body: body.to_vec() }
    }

    /// Adds signature headers made with `key` for host `host`'s agent (every other
    /// agent refuses it), as if sent at unix time `at`.
    pub fn signed_at(self, key: &SecretKey, host: &str, at: u64) -> Self {
        let identity = crate::identity::test_identity_public(host).key;
        self.signed_for_identity(key, host, &identity, at)
    }

    /// Adds signature headers made with `key` for host `host` whose agent has identity
    /// `identity`, as if sent at unix time `at`.
    pub fn signed_for_identity(mut self, key: &SecretKey, host: &str, identity: &[u8; 32], at: u64) -> Self {
        let nonce = format!("{:032x}", nonce_seed());
        let hash = body_sha256(&self.body);
        let host: HostName = host.parse().unwrap_or_else(|e| crate::fail(&format!("signing for {host:?}: {e}")));
        let h: SignatureHeaders = key.sign_request(&RequestToSign {
            host: &host,
            identity,
            method: &self.method,
            path: &self.path,
            timestamp: at,
            nonce: &nonce,
            content_sha256: &hash,
        });
        self.headers.extend(h.pairs().map(|(name, value)| (name.to_owned(), value.to_owned())));
        self
    }

    /// Signed now, for host `host`.
    pub fn signed(self, key: &SecretKey, host: &str) -> Self {
        self.signed_at(key, host, now())
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sends the request to `addr` (`host:port`) on a new connection, waiting up to a
    /// minute (imports and activations can be slow).
    pub fn send(&self, addr: &str) -> std::io::Result<Response> {
        self.send_with_timeout(addr, Duration::from_secs(60))
    }
}

impl Request {
    /// Like [`Request::send`], but gives up connecting after `timeout` and waiting for
    /// the response after `timeout` of silence (e.g. while a host's link is down).
    pub fn send_with_timeout(&self, addr: &str, timeout: Duration) -> std::io::Result<Response> {
        let mut stream = tls_connect(addr, timeout)?;
        self.exchange(&mut stream, addr)
    }

    /// Sends the request in plain HTTP (no TLS), e.g. to `metrics_listen`.
    pub fn send_plain(&self, addr: &str, timeout: Duration) -> std::io::Result<Response> {
        let mut stream = connect(addr, timeout)?;
        self.exchange(&mut stream, addr)
    }

    fn exchange(&self, stream: &mut impl ReadWrite, addr: &str) -> std::io::Result<Response> {
        let mut head = format!("{} {} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n", self.method, self.path);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", self.body.len()));
        stream.write_all(head.as_bytes())?;
        stream.write_all(&self.body)?;
        parse_response(&read_to_close(stream)?)
    }
}

/// A TLS connection to the agent at `addr`, as raw as a test needs: pinned to the identity
/// registered for the address ([`crate::identity::pin_for`]), the handshake done on the
/// first read or write; `timeout` bounds connecting and each read and write.
pub fn tls_connect(addr: &str, timeout: Duration) -> std::io::Result<TlsStream> {
    // An agent the harness did not start (no pin): its answers to what the test sends
    // are what is checked, not who it is.
    tls_over(connect(addr, timeout)?, crate::identity::pin_for(addr))
}

/// TLS over `tcp`, pinned to `pin` (`None`: any agent identity), the handshake done on
/// the first read or write.
pub fn tls_over(tcp: TcpStream, pin: Option<[u8; 32]>) -> std::io::Result<TlsStream> {
    let (config, _) = match pin {
        Some(pin) => hostctl_wire::client_config(Some(pin)),
        None => hostctl_wire::accept_any(),
    }
    .map_err(std::io::Error::other)?;
    let connection =
        rustls::ClientConnection::new(config, hostctl_wire::server_name()).map_err(std::io::Error::other)?;
    Ok(rustls::StreamOwned::new(connection, tcp))
}

/// Everything `stream` sends until it closes; a TLS peer that closed without
/// close_notify after sending something counts as closed.
pub fn read_to_close(stream: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
        Err(e) => Err(e),
        Ok(_) => Ok(raw),
    }
}

/// What [`tls_connect`] returns.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A TCP connection to `addr` with `timeout` for connecting and for each read and write.
fn connect(addr: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    use std::net::ToSocketAddrs as _;
    let target = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("no address: {addr}")))?;
    let stream = TcpStream::connect_timeout(&target, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let text = String::from_utf8_lossy(raw);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not an HTTP response: {text:.200}"));
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Ok(Response { status, body })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Distinct nonces within one test process: time and a counter, not security-grade.
fn nonce_seed() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    nanos ^ (u128::from(COUNTER.fetch_add(1, Ordering::Relaxed)) << 64) ^ u128::from(std::process::id())
}

/// HMAC-SHA256 (RFC 2104) of `message` with `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// `sha256=<hex>`: the `X-Hub-Signature-256` value for `body` under `secret`.
pub fn hub_signature(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(secret, body)))
}

/// A GitHub-like push payload: `{"ref": "refs/heads/<branch>", "after": "<sha>"}`.
pub fn push_payload(branch: &str, after: &str) -> Vec<u8> {
    serde_json::json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "0000000000000000000000000000000000000000",
        "after": after,
        "repository": {"full_name": "example/fleet"},
    })
    .to_string()
    .into_bytes()
}

impl Request {
    /// `POST /v1/hooks/git` as GitHub sends it: `X-GitHub-Event: push`, the delivery id
    /// (if any) and, when `secret` is given, `X-Hub-Signature-256` over `body`.
    pub fn webhook(body: &[u8], secret: Option<&[u8]>, delivery: Option<&str>) -> Self {
        let mut r = Request::new("POST", "/v1/hooks/git", body)
            .header("content-type", "application/json")
            .header("x-github-event", "push");
        if let Some(secret) = secret {
            r = r.header("x-hub-signature-256", &hub_signature(secret, body));
        }
        if let Some(id) = delivery {
            r = r.header("x-github-delivery", id);
        }
        r
    }
}

/// A distinct hex id within this test process (delivery ids, nonces).
pub fn fresh_id() -> String {
    format!("{:032x}", nonce_seed())
}

#[cfg(test)]
mod tests {
    /// RFC 4231 test case 2.
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let mac = super::hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
