//! Test support: an agent running in-process on 127.0.0.1 (a random port), and a client
//! that signs requests as the controller does, or deliberately does not.

#![allow(dead_code, reason = "each test file that includes `support` uses a different part of it")]

use std::path::PathBuf;
use std::sync::Arc;

use hostctl_agent::activation::DetachedChild;
use hostctl_agent::serve::{Agent, Listeners};
use hostctl_nix::Nix;
use hostctl_schemas::agent_config::parse_agent_config;
use hostctl_schemas::ids::StorePath;
use hostctl_schemas::signing::{body_sha256, RequestToSign, SecretKey};
use reqwest::Method;

/// The controller key the agents trust (written by Nix 2.8's `nix key generate-secret`).
pub const TRUSTED_SECRET: &str =
    "fleet-1:KDMBMKAqiUJFbD3/iS4MPEYdsma2JqZ8GxXKR5OO2YCcbR9nUt4JMzyUabxepT0hySZ+UlrnUSHuxqIq00nETw==";
pub const TRUSTED_PUBLIC: &str = "fleet-1:nG0fZ1LeCTM8lGm8XqU9IckmflJa51Eh7saiKtNJxE8=";
/// Another key with the same name: its signatures must not verify.
pub const OTHER_SECRET: &str =
    "fleet-1:W68wNAcoWErWuKCWtIdZzxcJnJHRW9lslBcgH5VveZsVb3XOttWAYlGNhywHs7SJXnZ2L+U4ShpLzf7KvFmLUQ==";

/// A running agent; stopped (gracefully) on drop.
pub struct TestAgent {
    pub base: String,
    /// `http://ADDR` of its plain `metrics_listen` listener.
    pub metrics_base: String,
    /// The agent's identity public key, which clients pin.
    pub identity: [u8; 32],
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestAgent {
    /// An agent on the real store (`private_store` false) or on a fresh private one.
    pub async fn start(private_store: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = private_store.then(|| format!("local?root={}", dir.path().join("root").display()));
        let store_line = store.as_ref().map(|s| format!("store: \"{s}\"\n")).unwrap_or_default();
        let yaml = format!(
            "hostname: web1\nlisten: 127.0.0.1:0\ntrusted_keys: [\"{TRUSTED_PUBLIC}\"]\nstate_dir: {}\nprofile: {}\nconfirm_timeout: 0s\n{store_line}",
            dir.path().join("state").display(),
            dir.path().join("profiles/system").display(),
        );
        let config = parse_agent_config(&yaml, &PathBuf::from("agent.yaml")).unwrap();
        let agent = Agent::new(config, Arc::new(DetachedChild)).unwrap();
        let identity = agent.identity().key;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_base = format!("http://{}", metrics.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listeners = Listeners { api: listener, metrics: Some(metrics), webhook: None };
        tokio::spawn(agent.run(listeners, async move {
            let _ = stopped.await;
        }));
        Self { base, metrics_base, identity, dir, stop: Some(stop) }
    }

    pub fn client(&self) -> Client {
        Client::new(self.base.clone(), self.identity)
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A fresh random nonce (32 hex characters).
pub fn nonce() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn now() -> u64 {
    hostctl_agent::unix_now()
}

/// How to (mis)sign one request.
#[derive(Clone)]
pub struct Signing {
    pub secret: &'static str,
    /// The host the request is signed for (the test agent is `web1`).
    pub host: &'static str,
    pub timestamp: u64,
    pub nonce: String,
    /// The body the signature claims (may differ from the one sent).
    pub signed_body: Option<Vec<u8>>,
}

/// A response: status and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub json: serde_json::Value,
}

impl Answer {
    /// The `error` code of an error body.
    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or_default()
    }
    pub fn message(&self) -> &str {
        self.json["message"].as_str().unwrap_or_default()
    }
}

pub struct Client {
    pub base: String,
    pub secret: &'static str,
    /// The agent's identity: what the TLS connection is pinned to and requests are signed for.
    pub identity: [u8; 32],
    pub http: reqwest::Client,
}

/// A reqwest client speaking TLS pinned to `identity`, as the controller does.
pub fn pinned_http(identity: [u8; 32]) -> reqwest::Client {
    let (tls, _) = hostctl_wire::client_config(Some(identity)).unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .use_preconfigured_tls(hostctl_wire::ClientConfig::clone(&tls))
        .build()
        .unwrap()
}

/// A blocking TLS connection to the agent on 127.0.0.1:`port`, pinned to `identity`,
/// for tests that write raw HTTP.
pub fn tls_connect(
    port: u16,
    identity: [u8; 32],
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    let (tls, _) = hostctl_wire::client_config(Some(identity)).unwrap();
    let connection = rustls::ClientConnection::new(tls, hostctl_wire::server_name()).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    rustls::StreamOwned::new(connection, tcp)
}

/// Writes a fresh identity key for host `web1` (mode 0600) to `path`; its public key.
pub fn write_identity(path: &std::path::Path) -> [u8; 32] {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    let key = SecretKey::from_seed("web1", seed);
    std::fs::write(path, key.to_nix_text()).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    key.public().key
}

impl Client {
    /// A client of the agent at `base` (`https://ADDR:PORT`) whose identity is `identity`.
    pub fn new(base: String, identity: [u8; 32]) -> Self {
        Self { base, secret: TRUSTED_SECRET, identity, http: pinned_http(identity) }
    }

    pub fn signing(&self) -> Signing {
        Signing { secret: self.secret, host: "web1", timestamp: now(), nonce: nonce(), signed_body: None }
    }

    /// A request signed properly.
    pub async fn call(&self, method: Method, path: &str, body: &[u8]) -> Answer {
        self.call_with(method, path, body, Some(self.signing()), &[]).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, b"").await
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> Answer {
        self.call(Method::POST, path, body.to_string().as_bytes()).await
    }

    /// The signature headers for a request (for tests that write raw HTTP).
    pub fn signed_headers(&self, method: &str, path: &str, body: &[u8]) -> Vec<(&'static str, String)> {
        let key: SecretKey = self.secret.parse().unwrap();
        let sha = body_sha256(body);
        let (nonce, host) = (nonce(), "web1".parse().unwrap());
        let h = key.sign_request(&RequestToSign {
            host: &host,
            identity: &self.identity,
            method,
            path,
            timestamp: now(),
            nonce: &nonce,
            content_sha256: &sha,
        });
        h.pairs().into_iter().map(|(name, value)| (name, value.to_owned())).collect()
    }

    /// A request signed as `signing` says (or not at all), with extra headers.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: &[u8],
        signing: Option<Signing>,
        extra: &[(&str, String)],
    ) -> Answer {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base)).body(body.to_vec());
        if let Some(s) = signing {
            let key: SecretKey = s.secret.parse().unwrap();
            let sha = body_sha256(s.signed_body.as_deref().unwrap_or(body));
            let h = key.sign_request(&RequestToSign {
                host: &s.host.parse().unwrap(),
                identity: &self.identity,
                method: method.as_str(),
                path,
                timestamp: s.timestamp,
                nonce: &s.nonce,
                content_sha256: &sha,
            });
            for (name, value) in h.pairs() {
                request = request.header(name, value);
            }
        }
        for (name, value) in extra {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("status {status}: not JSON: {text}"));
        Answer { status, json }
    }
}

/// Paths exported from a private source store, with their export stream.
pub struct Export {
    _dir: tempfile::TempDir,
    pub paths: Vec<StorePath>,
    pub stream: Vec<u8>,
}

/// A file of a tree to add: relative path, content, permissions.
pub type TreeFile<'a> = (&'a str, &'a str, u32);

/// Builds directories in a private source store (one per `(name, files)`) and exports
/// them with the real `nix-store --export`.
pub async fn export(trees: &[(&str, &[TreeFile<'_>])]) -> Export {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let nix = Nix::new().with_store(format!("local?root={}", dir.path().join("root").display()));
    let mut paths = Vec::new();
    for (name, files) in trees {
        let src = dir.path().join("src").join(name);
        for (file, content, mode) in *files {
            let path = src.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        paths.push(nix.add_to_store(&src).await.unwrap());
    }
    let mut out = nix.export(&paths).unwrap();
    let mut stream = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(out.stdout(), &mut stream).await.unwrap();
    out.finish().await.unwrap();
    Export { _dir: dir, paths, stream }
}

/// The `x-hostctl-paths` header value for `paths`.
pub fn paths_header(paths: &[StorePath]) -> String {
    paths.iter().map(StorePath::as_str).collect::<Vec<_>>().join(" ")
}
