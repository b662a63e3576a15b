//! Shared by the bad-input tests: what "nothing changed" means for a host and a fleet,
//! how an answer is checked, and store paths of this machine made and exported for them.

use std::path::Path;
use std::process::{Command, Output};

use hostctl_schemas::signing::SecretKey;
use hostctl_tests::http::{Request, Response};
use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::simhost::SimHost;
use hostctl_tests::{git, run, HostctlRun};
use serde_json::{json, Value};

/// The one simulated host of these tests.
pub const HOST: &str = "web1";

/// A one-host live fleet.
pub fn start() -> LiveFleet {
    LiveFleet::start(&[HOST])
}

/// What a bad input must leave alone on a host: profile generations, running system,
/// journal files and store entries on disk (registered or not).
#[derive(Debug, PartialEq, Eq)]
pub struct HostState {
    pub generations: Vec<(u64, String)>,
    pub running: String,
    pub journal: Vec<String>,
    pub store: Vec<String>,
}

pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned())).collect())
        .unwrap_or_default();
    names.retain(|n| !n.ends_with(".lock"));
    names.sort();
    names
}

pub fn host_state(h: &SimHost) -> HostState {
    HostState {
        generations: h.profile_generations(),
        running: h.current_system(),
        journal: dir_names(&h.root.join("state/agent/deployments")),
        store: dir_names(&h.root.join("nix/store")),
    }
}

/// The fleet's files as the controller must leave them: `git status` and the bytes of
/// `fleet.yaml` and `flake.lock`.
pub fn fleet_files(live: &LiveFleet) -> (String, String, String) {
    let f = &live.fleet;
    (git(&f.dir, &["status", "--porcelain"]), f.read("fleet.yaml"), f.read("flake.lock"))
}

pub fn dump(run: &HostctlRun) -> String {
    format!("exit {:?}\nstdout: {}\nstderr: {}", run.code, run.stdout, run.stderr)
}

pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts exit 2, no report on stdout (under `--json`, only the error document with the
/// message of stderr), and every `expected` part in stderr.
pub fn expect_bad(run: &HostctlRun, what: &str, expected: &[&str]) {
    assert_eq!(run.code, Some(2), "{what}: {}", dump(run));
    if !run.stdout.trim().is_empty() {
        let v: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
        let message = v["error"]["message"].as_str().unwrap_or("(no error document)");
        assert!(run.stderr.contains(&format!("error: {message}\n")), "{what}: no report for bad input: {}", dump(run));
        assert_eq!(v["error"]["exit_code"], 2, "{what}: {}", dump(run));
        assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{what}: only the error: {}", dump(run));
    }
    for part in expected {
        assert!(run.stderr.contains(part), "{what}: expected {part:?} in:\n{}", dump(run));
    }
}

/// Asserts an API answer: status, the `error` code, and every `expected` part in its message.
pub fn expect_api(r: &Response, what: &str, status: u16, expected: &[&str]) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    assert!(v["error"].is_string(), "{what}: not an API error: {}", r.body);
    let message = v["message"].as_str().unwrap_or_default();
    for part in expected {
        assert!(message.contains(part), "{what}: expected {part:?} in {message:?}");
    }
}

// Store paths of this machine, made for the tests, exported as the controller would.

/// `nix-store --add` of a directory named `name` holding `files` (path, content, executable).
pub fn local_path(name: &str, files: &[(&str, &str, bool)]) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::Builder::new().prefix("hostctl-bad-input-").tempdir().unwrap();
    let dir = tmp.path().join(name);
    for (rel, content, exec) in files {
        let file = dir.join(rel);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, content).unwrap();
        let mode = if *exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let out = run(Command::new("nix-store").arg("--add").arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A store path the agent takes for a NixOS system: its `switch-to-configuration` exits 0.
pub fn fake_system(tag: &str) -> String {
    local_path(&format!("bad-input-system-{tag}"), &[("bin/switch-to-configuration", "#!/bin/sh\nexit 0\n", true)])
}

pub use hostctl_tests::livefleet::compressed_export;

pub fn import_request(body: &[u8], header_paths: &str, key: &SecretKey) -> Request {
    Request::new("POST", "/v1/paths/import", body).header("x-hostctl-paths", header_paths).signed(key, HOST)
}

/// Imports `path` into the host over the API (as `hostctl apply` pushes it).
pub fn import(live: &LiveFleet, path: &str) {
    let r = import_request(&compressed_export(&[path]), path, &live.secret_key()).send(&live.agent_addr(HOST)).unwrap();
    assert_eq!(r.status, 200, "import of {path}: {}", r.body);
}

pub fn deployment_body(id: &str, toplevel: &str) -> Vec<u8> {
    json!({"id": id, "toplevel": toplevel, "rev": null, "lock": null, "mode": "switch", "confirm_timeout": "0s"})
        .to_string()
        .into_bytes()
}

/// A key in `nix key generate-secret`'s layout from a fixed seed, named `name`.
pub fn key_from_seed(name: &str, seed: u8) -> SecretKey {
    use base64::Engine as _;
    let signing = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let mut pair = vec![seed; 32];
    pair.extend_from_slice(&signing.verifying_key().to_bytes());
    format!("{name}:{}", base64::engine::general_purpose::STANDARD.encode(pair)).parse().unwrap()
}

pub fn replace_all(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}
