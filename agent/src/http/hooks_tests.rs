//! `POST /v1/hooks/git` over in-process HTTP: good, bad and missing signatures, replayed
//! deliveries, other branches, and 404 without pull mode. "Nothing fetched" is checked
//! as "the pull task was not woken" (the server runs without the pull task).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use hostctl_schemas::agent_config::parse_agent_config;
use hostctl_schemas::api::hooks::{HookResponse, PATH};
use sha2::Sha256;

use crate::activation::DetachedChild;
use crate::serve::Agent;

const SECRET: &[u8] = b"s3cret";

struct Server {
    _dir: tempfile::TempDir,
    base: String,
    agent_pull: Option<Arc<crate::pull::Puller>>,
    client: reqwest::Client,
}

async fn server(pull: bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, [SECRET, b"\n"].concat()).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut yaml = format!(
        "hostname: web1\ntrusted_keys: [\"fleet-1:11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=\"]\n\
         state_dir: {}\nprofile: {}\n",
        dir.path().join("state").display(),
        dir.path().join("profiles/system").display()
    );
    if pull {
        yaml.push_str(&format!(
            "pull:\n  url: {}\n  branch: main\n  webhook_secret_file: {}\n",
            dir.path().join("remote.git").display(),
            secret.display()
        ));
    }
    let config = parse_agent_config(&yaml, Path::new("agent.yaml")).unwrap();
    let agent = Agent::new(config, Arc::new(DetachedChild)).unwrap();
    let agent_pull = agent.puller();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = agent.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server { _dir: dir, base, agent_pull, client: reqwest::Client::new() }
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Server {
    async fn post(&self, body: &str, signature: Option<String>, delivery: Option<&str>) -> (u16, String) {
        let mut request = self.client.post(format!("{}{PATH}", self.base)).body(body.to_owned());
        if let Some(signature) = signature {
            request = request.header("X-Hub-Signature-256", signature);
        }
        if let Some(delivery) = delivery {
            request = request.header("X-GitHub-Delivery", delivery);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Whether the pull task was woken (consumes the wake-up).
    async fn woken(&self) -> bool {
        let puller = self.agent_pull.as_ref().unwrap();
        tokio::time::timeout(Duration::from_millis(100), puller.triggered()).await.is_ok()
    }
}

const MAIN: &str = r#"{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000"}"#;

#[tokio::test]
async fn good_signature_triggers_a_fetch() {
    let s = server(true).await;
    let (status, body) = s.post(MAIN, Some(sign(MAIN.as_bytes())), Some("d1")).await;
    assert_eq!(status, 202, "{body}");
    let response: HookResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(response, HookResponse { accepted: true, reason: None });
    assert!(s.woken().await);
}

#[tokio::test]
async fn bad_or_missing_signature_is_401() {
    let s = server(true).await;
    let other = sign(b"another body");
    assert_eq!(s.post(MAIN, Some(other), Some("d1")).await.0, 401);
    assert_eq!(s.post(MAIN, None, Some("d2")).await.0, 401);
    assert_eq!(s.post(MAIN, Some("sha256=zz".into()), None).await.0, 401);
    assert_eq!(s.post(MAIN, Some("sha1=00".into()), None).await.0, 401);
    assert!(!s.woken().await);
    // A delivery id from a rejected request is not remembered.
    assert_eq!(s.post(MAIN, Some(sign(MAIN.as_bytes())), Some("d1")).await.0, 202);
}

#[tokio::test]
async fn replayed_delivery_is_ignored() {
    let s = server(true).await;
    let signature = sign(MAIN.as_bytes());
    assert_eq!(s.post(MAIN, Some(signature.clone()), Some("d1")).await.0, 202);
    assert!(s.woken().await);
    let (status, body) = s.post(MAIN, Some(signature), Some("d1")).await;
    assert_eq!(status, 200);
    let response: HookResponse = serde_json::from_str(&body).unwrap();
    assert!(!response.accepted && response.reason.unwrap().contains("d1"));
    assert!(!s.woken().await);
}

#[tokio::test]
async fn other_branch_is_ignored_and_bad_json_is_400() {
    let s = server(true).await;
    let other = r#"{"ref":"refs/heads/dev"}"#;
    let (status, body) = s.post(other, Some(sign(other.as_bytes())), Some("d1")).await;
    assert_eq!(status, 200);
    assert!(!serde_json::from_str::<HookResponse>(&body).unwrap().accepted);
    let junk = "not json";
    assert_eq!(s.post(junk, Some(sign(junk.as_bytes())), None).await.0, 400);
    assert!(!s.woken().await);
}

#[tokio::test]
async fn no_pull_mode_is_404() {
    let s = server(false).await;
    assert_eq!(s.post(MAIN, Some(sign(MAIN.as_bytes())), None).await.0, 404);
}
