//! The real `hostctl-agent` binary killed with SIGKILL mid-import, mid-switch and while
//! waiting for confirmation, then started again on the same state: it must come back
//! consistent. Runs against a private `local?root=` store; every agent process started
//! here is killed by its pid (also when a test fails).

#![expect(clippy::unwrap_used, clippy::panic, reason = "test code: a failed step must fail the test")]

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hostctl_schemas::api::{deployments, paths, status};
use reqwest::Method;
use serde_json::{json, Value};
use support::{export, paths_header, tls_connect, write_identity, Client, TRUSTED_PUBLIC};

/// An agent process on a private root; SIGKILLed on drop if still running.
struct AgentProcess {
    dir: tempfile::TempDir,
    port: u16,
    /// Pre-provisioned (`identity_key_file`), so the clients can pin it before it starts.
    identity: [u8; 32],
    child: Option<Child>,
}

impl AgentProcess {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let identity = write_identity(&dir.path().join("identity.key"));
        let yaml = format!(
            "hostname: web1\nlisten: 127.0.0.1:{port}\ntrusted_keys: [\"{TRUSTED_PUBLIC}\"]\nstate_dir: {0}/state\n\
             profile: {0}/profiles/system\nconfirm_timeout: 30s\nstore: \"local?root={0}/root\"\n\
             identity_key_file: {0}/identity.key\n",
            dir.path().display()
        );
        std::fs::write(dir.path().join("agent.yaml"), yaml).unwrap();
        Self { dir, port, identity, child: None }
    }

    /// Starts the agent and waits until it answers.
    async fn start(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("agent.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hostctl-agent"))
            .arg("serve")
            .arg("--config")
            .arg(self.dir.path().join("agent.yaml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let client = self.client();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let answered = client.http.get(format!("{}{}", client.base, status::PATH)).send().await.is_ok();
            if answered {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the agent did not start: {}", self.log());
    }

    /// `kill -9`, by pid.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn client(&self) -> Client {
        Client::new(format!("https://127.0.0.1:{}", self.port), self.identity)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn ran(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.path().join("ran")).unwrap_or_default();
        text.lines().map(str::to_owned).collect()
    }

    /// Imports systems `old` (quick) and `slow` (its switch takes `slow_secs`); their
    /// `switch-to-configuration` appends `NAME MODE` to `ran` when it starts.
    async fn import_systems(&self, slow_secs: u32) -> (String, String) {
        let ran = self.dir.path().join("ran");
        let old = format!("#!/bin/sh\necho \"old $1\" >> {}\n", ran.display());
        let slow = format!("#!/bin/sh\necho \"slow $1\" >> {}\necho started\nsleep {slow_secs}\n", ran.display());
        let e = export(&[
            ("nixos-system-old", &[("bin/switch-to-configuration", old.as_str(), 0o755)]),
            ("nixos-system-slow", &[("bin/switch-to-configuration", slow.as_str(), 0o755)]),
        ])
        .await;
        let client = self.client();
        let header = vec![(paths::IMPORT_PATHS_HEADER, paths_header(&e.paths))];
        let body = zstd::encode_all(e.stream.as_slice(), 3).unwrap();
        let r = client.call_with(Method::POST, paths::IMPORT_PATH, &body, Some(client.signing()), &header).await;
        assert_eq!(r.status, 200, "{:?}", r.json);
        (e.paths[0].to_string(), e.paths[1].to_string())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn deploy(client: &Client, id: &str, toplevel: &str, confirm: &str) {
    let request = json!({"id": id, "toplevel": toplevel, "rev": null, "lock": null, "mode": "switch", "confirm_timeout": confirm});
    let r = client.post_json(deployments::PATH, &request).await;
    assert_eq!(r.status, 202, "{:?}", r.json);
}

async fn wait_state(client: &Client, id: &str, want: &str) -> Value {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        let d = client.get(&deployments::path_of(id)).await.json;
        if d["state"] == want {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("deployment {id} never became {want}: {:?}", client.get(&deployments::path_of(id)).await.json);
}

#[tokio::test]
async fn killed_while_switching_it_follows_the_activation_after_a_restart() {
    let mut agent = AgentProcess::new();
    agent.start().await;
    let (old, slow) = agent.import_systems(2).await;
    let client = agent.client();
    deploy(&client, "d1", &old, "0s").await;
    wait_state(&client, "d1", "confirmed").await;

    deploy(&client, "d2", &slow, "30s").await;
    let log = agent.state().join("deployments/d2.log");
    let started = Instant::now();
    while std::fs::read_to_string(&log).unwrap_or_default().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "the switch did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent.kill9();
    let journal: Value =
        serde_json::from_slice(&std::fs::read(agent.state().join("deployments/d2.json")).unwrap()).unwrap();
    assert_eq!((&journal["phase"], &journal["armed"]), (&json!("activating"), &json!(true)), "armed before the work");

    agent.start().await;
    let d = wait_state(&client, "d2", "awaiting-confirmation").await;
    assert_eq!(d["exit_code"], 0);
    let c = client.call(Method::POST, &deployments::confirm_path_of("d2"), b"").await;
    assert_eq!((c.status, &c.json["state"]), (200, &json!("confirmed")));
    assert_eq!(agent.ran(), ["old switch", "slow switch"], "the switch ran once, and no rollback");
    assert!(agent.log().contains("following an activation started before the restart"), "{}", agent.log());
}

#[tokio::test]
async fn killed_while_awaiting_confirmation_it_rolls_back_once_the_window_closed() {
    let mut agent = AgentProcess::new();
    agent.start().await;
    let (old, slow) = agent.import_systems(0).await;
    let client = agent.client();
    deploy(&client, "d1", &old, "0s").await;
    wait_state(&client, "d1", "confirmed").await;
    deploy(&client, "d2", &slow, "1s").await;
    let d = wait_state(&client, "d2", "awaiting-confirmation").await;
    let deadline = d["confirm_deadline"].as_u64().unwrap();
    agent.kill9();
    while hostctl_agent::unix_now() < deadline + 1 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let restarted = Instant::now();
    agent.start().await;
    let d = wait_state(&client, "d2", "rolled-back").await;
    assert!(restarted.elapsed() < Duration::from_secs(5));
    assert_eq!(
        d["error"],
        json!(format!("not confirmed within 1s (the window closed while the agent was down); re-activated the previous system {old}"))
    );
    assert_eq!(agent.ran(), ["old switch", "slow switch", "old switch"]);
    let s = client.get(status::PATH).await.json;
    assert_eq!((&s["toplevel"], &s["generation"], &s["state"]), (&json!(old), &json!(3), &json!("idle")));
}

#[tokio::test]
async fn killed_mid_import_it_keeps_no_partial_stream_and_no_path() {
    let mut agent = AgentProcess::new();
    agent.start().await;
    // Hex of a pseudo-random sequence: it does not compress away, so half the body is
    // a real partial upload.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let blob: String = (0..(1 << 20))
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            format!("{:02x}", x >> 56)
        })
        .collect();
    let e = export(&[("big", &[("blob", blob.as_str(), 0o644)])]).await;
    let body = zstd::encode_all(e.stream.as_slice(), 3).unwrap();
    let client = agent.client();
    let mut stream = tls_connect(agent.port, agent.identity);
    let mut head = format!(
        "POST {} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n{}: {}\r\n",
        paths::IMPORT_PATH,
        body.len(),
        paths::IMPORT_PATHS_HEADER,
        paths_header(&e.paths)
    );
    for (name, value) in client.signed_headers("POST", paths::IMPORT_PATH, &body) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..body.len() / 2]).unwrap();
    let tmp = agent.state().join("tmp");
    let started = Instant::now();
    while dir_is_empty(&tmp) {
        assert!(started.elapsed() < Duration::from_secs(10), "the import never reached state/tmp");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent.kill9();
    drop(stream);
    assert!(!dir_is_empty(&tmp), "the killed import left its stream behind");

    agent.start().await;
    assert!(dir_is_empty(&tmp), "leftover streams are removed at start");
    let r = client.post_json(paths::MISSING_PATH, &json!({"paths": e.paths})).await;
    assert_eq!(r.json["missing"], json!(e.paths), "nothing was registered");
}

fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|mut entries| entries.next().is_none()).unwrap_or(true)
}
