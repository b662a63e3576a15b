//! Test support: an agent running in-process on 127.0.0.1 (a random port), and a client
//! that signs requests as the controller does, or deliberately does not.

#![allow(dead_code, reason = "each test file that includes `support` uses a different part of it")]

use std::path::PathBuf;
use std::sync::Arc;

use hostctl_agent::activation::DetachedChild;
use hostctl_agent::serve::Agent;
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(agent.run(listener, async move {
            let _ = stopped.await;
        }));
        Self { base, dir, stop: Some(stop) }
    }

    pub fn client(&self) -> Client {
        Client { base: self.base.clone(), secret: TRUSTED_SECRET, http: reqwest::Client::new() }
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
    pub http: reqwest::Client,
}

impl Client {
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
