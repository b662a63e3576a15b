//! The HTTPS client for agent API v1: TLS 1.3 pinned to the host's agent identity
//! (`hostctl-wire`; an agent showing another key, or a host with none pinned, fails with
//! [`HostError::Identity`] before a byte of a request is sent), every request signed with
//! the fleet key for that host and identity (`schemas::signing`), error bodies decoded
//! into [`HostError`]s that name the host, the endpoint, the status and the agent's
//! message.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hostctl_schemas::api::deployments::{self, Deployment, DeploymentRequest};
use hostctl_schemas::api::generations::{self, GenerationsResponse};
use hostctl_schemas::api::logs::{self, LogChunk};
use hostctl_schemas::api::paths::{self, ImportResponse, MissingRequest, MissingResponse};
use hostctl_schemas::api::rollback::{self, RollbackRequest};
use hostctl_schemas::api::status::{self, StatusResponse};
use hostctl_schemas::api::ApiError;
use hostctl_schemas::ids::{Address, HostName, StorePath};
use hostctl_schemas::key::PublicKey;
use hostctl_schemas::signing::{body_sha256, RequestToSign, SecretKey, SignatureHeaders};
use hostctl_wire::SeenKey;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Body, Client, Method};
use serde::de::DeserializeOwned;

use crate::host::{ExportBody, Host, HostError};

/// How long connecting to an agent may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request limit for the small JSON calls.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Whole-request limit for an import: a closure chunk over a slow link, plus the
/// agent's `nix-store --import`, which may take minutes.
pub const IMPORT_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// `<host>-<unix time>-<8 hex digits>`: a deployment's id, unique per request and
/// readable in logs (sent with `POST /v1/deployments` and `/v1/rollback`).
pub fn deployment_id(host: &HostName) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{host}-{now}-{}", random_hex::<4>())
}

/// One agent over HTTPS.
#[derive(Debug)]
pub struct HttpHost {
    name: HostName,
    /// `https://address:port`, no trailing slash.
    base: String,
    key: Arc<SecretKey>,
    /// The identity pinned for the host, if any.
    pin: Option<PublicKey>,
    /// The TLS configuration pinned to it, and the key the agent last showed.
    tls: Arc<hostctl_wire::ClientConfig>,
    seen: SeenKey,
    /// The `hostctl enroll` command that would pin the key the agent shows, but its key.
    enroll: String,
    /// Pooled connections for every call but `confirm`.
    client: Client,
}

/// What [`HttpHost::new`] needs to know about a host's agent besides its name.
#[derive(Debug, Clone)]
pub struct AgentTarget {
    pub address: Address,
    pub port: u16,
    /// The pinned identity (fleet.yaml `agent_key`, else `known_agents`).
    pub pin: Option<PublicKey>,
    /// `hostctl [--fleet FILE] enroll HOST --expect`, completed with the key seen.
    pub enroll: String,
}

/// How long sent data may go unacknowledged, and an idle connection unanswered by
/// keepalives, before the connection counts as dead: a host whose link is cut mid-push
/// fails in about this time instead of the import's hour-long request timeout. Set here
/// rather than left to reqwest's defaults, which happen to match today.
const DEAD_LINK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an idle connection to an agent is kept for reuse.
const AGENT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

fn new_client(tls: &hostctl_wire::ClientConfig) -> Result<Client, reqwest::Error> {
    Client::builder()
        // A proxy in the operator's environment is for their own traffic: through it,
        // agent requests would fail with errors that blame the agent.
        .no_proxy()
        // The pinned-key configuration; no root certificates are read.
        .use_preconfigured_tls(tls.clone())
        // Below the agent's 10 s idle timeout, so a request never goes out on a
        // connection the agent is closing.
        .pool_idle_timeout(AGENT_IDLE_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_keepalive(DEAD_LINK_TIMEOUT / 2)
        .tcp_user_timeout(DEAD_LINK_TIMEOUT)
        .build()
}

impl HttpHost {
    pub fn new(name: HostName, target: AgentTarget, key: Arc<SecretKey>) -> Result<Self, HostError> {
        let base = format!("https://{}", target.address.authority(target.port));
        let setup = |message: String| HostError::Transport {
            host: name.to_string(),
            endpoint: base.clone(),
            message: format!("cannot set up an HTTPS client: {message}"),
        };
        let (tls, seen) =
            hostctl_wire::client_config(target.pin.as_ref().map(|p| p.key)).map_err(|e| setup(e.to_string()))?;
        let client = new_client(&tls).map_err(|e| setup(error_chain(&e)))?;
        Ok(Self { name, base, key, pin: target.pin, tls, seen, enroll: target.enroll, client })
    }

    /// The identity key requests are signed for: the pinned one. Without a pin no
    /// connection is accepted, so nothing signed for this placeholder is ever sent.
    fn identity(&self) -> [u8; hostctl_schemas::key::PUBLIC_KEY_LEN] {
        self.pin.as_ref().map_or([0; hostctl_schemas::key::PUBLIC_KEY_LEN], |p| p.key)
    }

    /// [`HostError::Identity`] when the agent showed a key other than the pinned one.
    fn identity_error(&self) -> Option<HostError> {
        let seen = self.seen.get()?;
        if self.pin.as_ref().is_some_and(|p| p.key == seen) {
            return None;
        }
        let seen = PublicKey { name: self.name.to_string(), key: seen }.to_string();
        Some(HostError::Identity {
            host: self.name.to_string(),
            pinned: self.pin.as_ref().map(ToString::to_string),
            fix: format!("{} {seen}", self.enroll),
            seen,
        })
    }

    /// Sends one signed request and decodes a JSON answer (or the agent's error).
    async fn call<T: DeserializeOwned>(
        &self,
        client: &Client,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, HostError> {
        let endpoint = format!("{method} {path}");
        let sha = body_sha256(body.as_deref().unwrap_or_default());
        let mut request = client
            .request(method.clone(), format!("{}{path}", self.base))
            .headers(signed_headers(&self.key, &self.name, &self.identity(), method.as_str(), path, &sha))
            .timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.map_err(|e| self.transport(&endpoint, &e))?;
        self.decode(&endpoint, response).await
    }

    async fn decode<T: DeserializeOwned>(&self, endpoint: &str, response: reqwest::Response) -> Result<T, HostError> {
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.transport(endpoint, &e))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| HostError::Protocol {
                host: self.name.to_string(),
                endpoint: endpoint.to_owned(),
                status: status.as_u16(),
                problem: format!("{e}; body starts with {:?}", head(&bytes)),
            });
        }
        let (code, message) = match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(api) => (Some(api.error), api.message),
            Err(_) => (None, head(&bytes)),
        };
        Err(HostError::Api {
            host: self.name.to_string(),
            endpoint: endpoint.to_owned(),
            status: status.as_u16(),
            code,
            message,
        })
    }

    fn transport(&self, endpoint: &str, e: &reqwest::Error) -> HostError {
        if let Some(identity) = self.identity_error() {
            return identity;
        }
        // reqwest's own text repeats the URL and wraps hyper's; the root cause
        // ("Connection refused (os error 111)") is what a reader needs.
        let message = if e.is_connect() {
            format!("cannot connect to {}: {}", self.base, root_cause(e))
        } else if e.is_timeout() {
            format!("no answer from {} in time ({})", self.base, root_cause(e))
        } else {
            error_chain(e)
        };
        HostError::Transport { host: self.name.to_string(), endpoint: endpoint.to_owned(), message }
    }

    fn json<T: serde::Serialize>(&self, endpoint: &str, value: &T) -> Result<Vec<u8>, HostError> {
        serde_json::to_vec(value).map_err(|e| HostError::Protocol {
            host: self.name.to_string(),
            endpoint: endpoint.to_owned(),
            status: 0,
            problem: format!("cannot encode the request: {e}"),
        })
    }
}

impl Host for HttpHost {
    fn name(&self) -> &HostName {
        &self.name
    }

    async fn status(&self) -> Result<StatusResponse, HostError> {
        self.call(&self.client, Method::GET, status::PATH, None).await
    }

    async fn missing(&self, paths: &[StorePath]) -> Result<Vec<StorePath>, HostError> {
        let body = self.json(paths::MISSING_PATH, &MissingRequest { paths: paths.to_vec() })?;
        let response: MissingResponse = self.call(&self.client, Method::POST, paths::MISSING_PATH, Some(body)).await?;
        Ok(response.missing)
    }

    async fn import(&self, store_paths: &[StorePath], body: ExportBody) -> Result<ImportResponse, HostError> {
        let path = paths::IMPORT_PATH;
        let endpoint = format!("POST {path}");
        let listed: Vec<&str> = store_paths.iter().map(StorePath::as_str).collect();
        let listed = HeaderValue::from_str(&listed.join(" ")).map_err(|e| HostError::Protocol {
            host: self.name.to_string(),
            endpoint: endpoint.clone(),
            status: 0,
            problem: format!("store paths do not fit in a header: {e}"),
        })?;
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .headers(signed_headers(&self.key, &self.name, &self.identity(), "POST", path, &body.sha256))
            .header(CONTENT_TYPE, "application/zstd")
            .header(paths::IMPORT_PATHS_HEADER, listed)
            .timeout(IMPORT_TIMEOUT)
            .body(Body::from(body.file))
            .send()
            .await
            .map_err(|e| self.transport(&endpoint, &e))?;
        self.decode(&endpoint, response).await
    }

    async fn deploy(&self, request: &DeploymentRequest) -> Result<Deployment, HostError> {
        let body = self.json(deployments::PATH, request)?;
        self.call(&self.client, Method::POST, deployments::PATH, Some(body)).await
    }

    async fn deployment(&self, id: &str) -> Result<Deployment, HostError> {
        self.call(&self.client, Method::GET, &deployments::path_of(id), None).await
    }

    async fn confirm(&self, id: &str) -> Result<Deployment, HostError> {
        let path = format!("{}/confirm", deployments::path_of(id));
        // A client of its own: no pooled connection from before the switch can carry
        // the confirmation, so it proves the new configuration accepts new connections.
        let fresh = new_client(&self.tls).map_err(|e| self.transport(&format!("POST {path}"), &e))?;
        self.call(&fresh, Method::POST, &path, Some(b"{}".to_vec())).await
    }

    async fn generations(&self) -> Result<GenerationsResponse, HostError> {
        self.call(&self.client, Method::GET, generations::PATH, None).await
    }

    async fn rollback(&self, request: &RollbackRequest) -> Result<Deployment, HostError> {
        let body = self.json(rollback::PATH, request)?;
        self.call(&self.client, Method::POST, rollback::PATH, Some(body)).await
    }

    async fn probe(&self, url: &str, timeout: Duration) -> Result<u16, String> {
        crate::probe::get(url, timeout).await
    }
}

/// The signature headers for one request to `host`'s agent with identity `identity`
/// (every other agent refuses it): now, a fresh 16-byte nonce, the body hash.
pub fn signed_headers(
    key: &SecretKey,
    host: &HostName,
    identity: &[u8; hostctl_schemas::key::PUBLIC_KEY_LEN],
    method: &str,
    path: &str,
    content_sha256: &str,
) -> HeaderMap {
    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let nonce = random_hex::<16>();
    let request = RequestToSign { host, identity, method, path, timestamp, nonce: &nonce, content_sha256 };
    let signed = key.sign_request(&request);
    to_header_map(&signed)
}

fn to_header_map(h: &SignatureHeaders) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in h.pairs() {
        // Every value is a key or host name, digits, hex or base64: always valid header text.
        if let Ok(value) = HeaderValue::from_str(value) {
            map.insert(HeaderName::from_static(name), value);
        }
    }
    map
}

/// `N` random bytes from the OS, in hex. Without randomness there is no safe nonce;
/// the fallback (time-based) still differs per call, and the agent refuses a repeat.
pub fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (nanos >> ((i % 16) * 8)) as u8;
        }
    }
    hex::encode(bytes)
}

/// A reqwest error with its causes ("error sending request: ... : connection refused").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// The innermost error of a chain.
pub(crate) fn root_cause(e: &dyn std::error::Error) -> String {
    let mut current = e;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// The start of a body, for messages about unexpected answers.
fn head(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(300).collect::<String>().trim().to_owned()
}

/// `hostctl gc`: the agent's garbage collection (not part of [`Host`]: only `gc` runs it).
impl HttpHost {
    /// Applies (or, with `dry_run`, reports) a retention policy now.
    pub async fn gc(
        &self,
        request: &hostctl_schemas::api::gc::GcRequest,
    ) -> Result<hostctl_schemas::api::gc::GcReport, HostError> {
        let path = hostctl_schemas::api::gc::PATH;
        let body = self.json(path, request)?;
        self.call(&self.client, Method::POST, path, Some(body)).await
    }
}

/// `hostctl logs`: the agent's log endpoint (not part of [`Host`]: only `logs` reads it).
impl HttpHost {
    /// A piece of deployment `id`'s activation log from byte `offset`.
    pub async fn deployment_log(&self, id: &str, offset: u64) -> Result<LogChunk, HostError> {
        self.call(&self.client, Method::GET, &logs::path_of(id, offset), None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostctl_schemas::api::headers;
    use hostctl_schemas::signing::verify_request;

    fn key() -> SecretKey {
        // `nix key generate-secret --key-name fleet-1` (Nix 2.8), as in schemas' tests.
        "fleet-1:KDMBMKAqiUJFbD3/iS4MPEYdsma2JqZ8GxXKR5OO2YCcbR9nUt4JMzyUabxepT0hySZ+UlrnUSHuxqIq00nETw=="
            .parse()
            .unwrap()
    }

    fn header(map: &HeaderMap, name: &str) -> String {
        map.get(name).unwrap_or_else(|| panic!("{name} missing")).to_str().unwrap().to_owned()
    }

    /// The signature headers as an agent reads them, through `get`.
    fn received(get: impl Fn(&'static str) -> String) -> SignatureHeaders {
        SignatureHeaders {
            version: get(headers::VERSION),
            key: get(headers::KEY),
            host: get(headers::HOST),
            identity: get(headers::IDENTITY),
            timestamp: get(headers::TIMESTAMP),
            nonce: get(headers::NONCE),
            content_sha256: get(headers::CONTENT_SHA256),
            signature: get(headers::SIGNATURE),
        }
    }

    #[test]
    fn signed_headers_verify_with_the_public_key() {
        let k = key();
        let body = br#"{"paths":[]}"#;
        let (web1, web2): (HostName, HostName) = ("web1".parse().unwrap(), "web2".parse().unwrap());
        let map = signed_headers(&k, &web1, &ID, "POST", "/v1/paths/missing", &body_sha256(body));
        let got = received(|name| header(&map, name));
        assert_eq!(got.key, "fleet-1");
        assert_eq!((got.version.as_str(), got.host.as_str()), ("3", "web1"));
        assert_eq!(got.nonce.len(), 32);
        assert_eq!(got.content_sha256, body_sha256(body));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let trusted = [k.public()];
        assert_eq!(verify_request(&trusted, &got, &web1, &ID, "POST", "/v1/paths/missing", now), Ok(()));
        assert!(verify_request(&trusted, &got, &web2, &ID, "POST", "/v1/paths/missing", now).is_err());
        assert!(verify_request(&trusted, &got, &web1, &[9; 32], "POST", "/v1/paths/missing", now).is_err());
        assert!(verify_request(&trusted, &got, &web1, &ID, "POST", "/v1/deployments", now).is_err());
        assert!(verify_request(&trusted, &got, &web1, &ID, "GET", "/v1/paths/missing", now).is_err());

        let again = signed_headers(&k, &web1, &ID, "POST", "/v1/paths/missing", &body_sha256(body));
        assert_ne!(header(&again, headers::NONCE), got.nonce, "a fresh nonce per request");
    }

    #[tokio::test]
    async fn unreachable_agent_is_a_transport_error_naming_host_and_endpoint() {
        // Port 9 on localhost (discard) is closed on any test machine.
        let host = HttpHost::new("web1".parse().unwrap(), target(9, Some(ID)), Arc::new(key())).unwrap();
        let err = host.status().await.unwrap_err();
        assert!(err.is_transport(), "{err}");
        let text = err.to_string();
        assert!(text.starts_with("web1: GET /v1/status: cannot connect to https://127.0.0.1:9"), "{text}");
    }

    /// The identity of the test agent ([`serve_once`]) and its public key.
    fn agent_identity() -> SecretKey {
        SecretKey::from_seed("web1", [3; 32])
    }
    const ID: [u8; 32] = [0xa4; 32];

    fn target(port: u16, pin: Option<[u8; 32]>) -> AgentTarget {
        AgentTarget {
            address: "127.0.0.1".parse().unwrap(),
            port,
            pin: pin.map(|key| PublicKey { name: "web1".into(), key }),
            enroll: "hostctl enroll web1 --expect".into(),
        }
    }

    /// A one-request HTTPS server on localhost with [`agent_identity`]'s certificate:
    /// answers `response` and hands back the request's headers (lowercased names) and body.
    async fn serve_once(response: String) -> (u16, tokio::task::JoinHandle<(String, Vec<(String, String)>, Vec<u8>)>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tokio_rustls::TlsAcceptor::from(hostctl_wire::server_config(&agent_identity()).unwrap());
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut socket = acceptor.accept(tcp).await.unwrap();
            let mut buf = Vec::new();
            let head_end = loop {
                let mut chunk = [0u8; 4096];
                let n = socket.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
            let mut lines = head.lines();
            let request_line = lines.next().unwrap().to_owned();
            let headers: Vec<(String, String)> =
                lines.filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned())).collect();
            let len: usize = headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
            while buf.len() < head_end + len {
                let mut chunk = [0u8; 4096];
                let n = socket.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            socket.write_all(response.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
            (request_line, headers, buf[head_end..].to_vec())
        });
        (port, task)
    }

    fn http_response(status: &str, body: &str) -> String {
        format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
    }

    fn local_host(port: u16) -> HttpHost {
        let pin = agent_identity().public().key;
        HttpHost::new("web1".parse().unwrap(), target(port, Some(pin)), Arc::new(key())).unwrap()
    }

    /// An agent showing another identity than the pinned one, or any when none is
    /// pinned: refused at the handshake, before a byte of the request, with both keys
    /// and the command that pins the one shown.
    #[tokio::test]
    async fn an_unpinned_or_changed_identity_fails_before_the_request() {
        let shown = PublicKey { name: "web1".into(), key: agent_identity().public().key }.to_string();
        for pin in [None, Some([5u8; 32])] {
            let (port, server) = serve_once(http_response("200 OK", "{}")).await;
            let err = HttpHost::new("web1".parse().unwrap(), target(port, pin), Arc::new(key()))
                .unwrap()
                .status()
                .await
                .unwrap_err();
            let HostError::Identity { ref seen, ref pinned, ref fix, .. } = err else { panic!("{err}") };
            assert_eq!(seen, &shown);
            assert_eq!(pinned, &pin.map(|key| PublicKey { name: "web1".into(), key }.to_string()));
            assert_eq!(fix, &format!("hostctl enroll web1 --expect {shown}"));
            let text = err.to_string();
            assert!(
                text.contains(&shown) && text.contains("nothing was sent") && text.contains(fix.as_str()),
                "{text}"
            );
            if pin.is_none() {
                assert!(text.contains("none pinned"), "{text}");
            }
            assert!(server.await.is_err(), "the server never got a request");
        }
    }

    #[tokio::test]
    async fn requests_on_the_wire_are_signed_over_their_body() {
        let (port, server) = serve_once(http_response("200 OK", r#"{"missing":[]}"#)).await;
        let p: StorePath = "/nix/store/22222222222222222222222222222222-x".parse().unwrap();
        assert_eq!(local_host(port).missing(&[p]).await.unwrap(), []);
        let (request_line, headers, body) = server.await.unwrap();
        assert_eq!(request_line, "POST /v1/paths/missing HTTP/1.1");
        let signed = received(|name| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap());
        assert_eq!(signed.content_sha256, body_sha256(&body), "the hash covers the bytes sent");
        assert_eq!(signed.host, "web1", "signed for the host it is sent to");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let web1 = "web1".parse().unwrap();
        let id = agent_identity().public().key;
        assert_eq!(verify_request(&[key().public()], &signed, &web1, &id, "POST", "/v1/paths/missing", now), Ok(()));
        let sent: MissingRequest = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent.paths.len(), 1);
    }

    #[tokio::test]
    async fn agent_errors_are_decoded() {
        let body = r#"{"error":"unauthorized","message":"nonce was already used (replayed request)"}"#;
        let (port, _server) = serve_once(http_response("401 Unauthorized", body)).await;
        let err = local_host(port).status().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "web1: GET /v1/status: HTTP 401 (unauthorized): nonce was already used (replayed request)"
        );
        assert!(matches!(
            err,
            HostError::Api { status: 401, code: Some(hostctl_schemas::api::ErrorCode::Unauthorized), .. }
        ));

        let (port, _server) = serve_once(http_response("502 Bad Gateway", "upstream down")).await;
        let err = local_host(port).deployment("web1-1-00000000").await.unwrap_err();
        assert_eq!(err.to_string(), "web1: GET /v1/deployments/web1-1-00000000: HTTP 502: upstream down");

        let (port, _server) = serve_once(http_response("200 OK", "{}")).await;
        let err = local_host(port).status().await.unwrap_err();
        assert!(matches!(err, HostError::Protocol { status: 200, .. }), "{err}");
    }

    #[test]
    fn api_errors_show_status_code_and_message() {
        let err = HostError::Api {
            host: "web1".into(),
            endpoint: "POST /v1/deployments".into(),
            status: 409,
            code: Some(hostctl_schemas::api::ErrorCode::Conflict),
            message: "a deployment is already running".into(),
        };
        assert_eq!(err.to_string(), "web1: POST /v1/deployments: HTTP 409 (conflict): a deployment is already running");
    }
}
