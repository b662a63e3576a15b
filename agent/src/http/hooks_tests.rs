//! `POST /v1/hooks/git` over in-process HTTP: good, bad and missing signatures (GitHub,
//! Gitea/Forgejo, GitLab), pings and other events, replayed deliveries, other branches,
//! a declared length over the limit, and 404 without pull mode. "Nothing fetched" is checked
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
    // Served as the plain `webhook_listen` listener serves it (a TLS-terminating proxy's
    // upstream), without the pull task, which would take the wake-ups the tests look for.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let served = crate::http::server::Listener {
        router: agent.webhook_router(),
        admission: crate::http::connections::Admission::new(16, 16),
        tls: None,
    };
    tokio::spawn(crate::http::server::serve(listener, served, std::future::pending()));
    Server { _dir: dir, base, agent_pull, client: reqwest::Client::new() }
}

fn sign(body: &[u8]) -> String {
    format!("sha256={}", hex_hmac(body))
}

fn hex_hmac(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
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

    /// A POST with exactly `headers`.
    async fn post_with(&self, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut request = self.client.post(format!("{}{PATH}", self.base)).body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
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

#[tokio::test]
async fn a_github_ping_is_answered_200_without_a_fetch() {
    let s = server(true).await;
    let ping = r#"{"zen":"Design for failure.","hook_id":1}"#;
    let signature = sign(ping.as_bytes());
    let (status, body) = s.post_with(ping, &[("X-Hub-Signature-256", &signature), ("X-GitHub-Event", "ping")]).await;
    assert_eq!(status, 200, "{body}");
    let response: HookResponse = serde_json::from_str(&body).unwrap();
    assert!(!response.accepted && response.reason.unwrap().contains("ping"));
    assert!(!s.woken().await);
    // Still signed: a ping with a wrong signature is refused.
    let wrong = sign(b"other");
    assert_eq!(s.post_with(ping, &[("X-Hub-Signature-256", &wrong), ("X-GitHub-Event", "ping")]).await.0, 401);
    // Another event than a push is acknowledged, not fetched.
    let (status, body) =
        s.post_with(MAIN, &[("X-Hub-Signature-256", &sign(MAIN.as_bytes())), ("X-GitHub-Event", "issues")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(!s.woken().await);
    // A push named as such is the push it always was.
    let (status, _) =
        s.post_with(MAIN, &[("X-Hub-Signature-256", &sign(MAIN.as_bytes())), ("X-GitHub-Event", "push")]).await;
    assert_eq!(status, 202);
    assert!(s.woken().await);
}

#[tokio::test]
async fn gitea_and_forgejo_pushes_are_accepted_with_their_hex_signature() {
    let s = server(true).await;
    let hmac = hex_hmac(MAIN.as_bytes());
    for (signature, event, delivery) in [
        ("X-Gitea-Signature", "X-Gitea-Event", "X-Gitea-Delivery"),
        ("X-Forgejo-Signature", "X-Forgejo-Event", "X-Forgejo-Delivery"),
    ] {
        let (status, body) = s.post_with(MAIN, &[(signature, &hmac), (event, "push"), (delivery, signature)]).await;
        assert_eq!(status, 202, "{signature}: {body}");
        assert!(s.woken().await, "{signature}");
        // With the `sha256=` prefix or over another body, it is not their signature.
        assert_eq!(s.post_with(MAIN, &[(signature, &sign(MAIN.as_bytes()))]).await.0, 401, "{signature}");
        assert_eq!(s.post_with(MAIN, &[(signature, &hex_hmac(b"other"))]).await.0, 401, "{signature}");
    }
    assert!(!s.woken().await);
}

#[tokio::test]
async fn gitlab_pushes_are_accepted_with_the_secret_token() {
    let s = server(true).await;
    let secret = std::str::from_utf8(SECRET).unwrap();
    let push = [("X-Gitlab-Token", secret), ("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Event-UUID", "g1")];
    let (status, body) = s.post_with(MAIN, &push).await;
    assert_eq!(status, 202, "{body}");
    assert!(s.woken().await);
    // The same delivery again is ignored.
    assert_eq!(s.post_with(MAIN, &push).await.0, 200);
    for wrong in ["s3cre", "s3cret2", "S3CRET", ""] {
        let (status, body) = s.post_with(MAIN, &[("X-Gitlab-Token", wrong), ("X-Gitlab-Event", "Push Hook")]).await;
        assert_eq!(status, 401, "token {wrong:?}: {body}");
    }
    assert!(!s.woken().await);
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_413_before_any_byte() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let s = server(true).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!("POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 2147483648\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}
