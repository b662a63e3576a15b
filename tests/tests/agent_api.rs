//! Agent API v1 security and input checks, over raw HTTP against a real agent on a
//! simulated host: unsigned, wrongly signed, stale and replayed requests get 401 and
//! change nothing; a request signed for one host is refused by another; bad store paths
//! get 400; a truncated import registers nothing.

use std::time::Duration;

use hostctl_schemas::signing::SecretKey;
use hostctl_tests::http::{now, Request, Response};
use hostctl_tests::livefleet::LiveFleet;
use serde_json::{json, Value};

fn addr(live: &LiveFleet) -> String {
    let h = live.host("web1");
    format!("{}:{}", h.addr, h.port)
}

/// A valid key in `nix key generate-secret`'s layout (seed, then public key) that the
/// agent does not trust.
fn other_key(seed: [u8; 32]) -> Result<SecretKey, &'static str> {
    use base64::Engine as _;
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let mut pair = seed.to_vec();
    pair.extend_from_slice(&signing.verifying_key().to_bytes());
    format!("intruder:{}", base64::engine::general_purpose::STANDARD.encode(pair)).parse()
}

fn deployment_body() -> Vec<u8> {
    br#"{"id":"intruder-1","toplevel":"/nix/store/00000000000000000000000000000000-x","rev":null,"lock":null,"mode":"switch","confirm_timeout":"0s"}"#.to_vec()
}

#[test]
fn unauthenticated_requests_get_401_and_change_nothing() {
    let live = LiveFleet::start(&["web1"]);
    let a = addr(&live);
    let key = live.secret_key();

    let ok = Request::new("GET", "/v1/status", b"").signed(&key, "web1").send(&a).unwrap();
    assert_eq!(ok.status, 200, "{}", ok.body);

    let cases = [
        ("unsigned", Request::new("POST", "/v1/deployments", &deployment_body()), "missing header x-hostctl-key"),
        (
            "wrong key",
            Request::new("POST", "/v1/deployments", &deployment_body()).signed(&other_key([7; 32]).unwrap(), "web1"),
            "key `intruder` is not among the agent's trusted keys",
        ),
        (
            "stale",
            Request::new("POST", "/v1/deployments", &deployment_body()).signed_at(&key, "web1", now() - 3600),
            "away from the agent's clock",
        ),
        (
            "future",
            Request::new("POST", "/v1/deployments", &deployment_body()).signed_at(&key, "web1", now() + 3600),
            "away from the agent's clock",
        ),
    ];
    for (what, request, message) in cases {
        let r = request.send(&a).unwrap();
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert!(r.body.contains("\"error\":\"unauthorized\"") && r.body.contains(message), "{what}: {}", r.body);
    }

    let mut tampered = Request::new("POST", "/v1/paths/missing", br#"{"paths":[]}"#).signed(&key, "web1");
    tampered.body = br#"{"paths":[ ]}"#.to_vec();
    let r = tampered.send(&a).unwrap();
    assert_eq!(r.status, 401, "body changed after signing: {}", r.body);
    assert!(r.body.contains("body does not match its x-hostctl-content-sha256"), "{}", r.body);

    let once = Request::new("GET", "/v1/generations", b"").signed(&key, "web1");
    assert_eq!(once.send(&a).unwrap().status, 200);
    let replay = once.send(&a).unwrap();
    assert_eq!(replay.status, 401, "replayed: {}", replay.body);
    assert!(replay.body.contains("nonce was already used (replayed request)"), "{}", replay.body);

    let gens = Request::new("GET", "/v1/generations", b"").signed(&key, "web1").send(&a).unwrap();
    assert!(!gens.body.contains("intruder"), "no deployment was created: {}", gens.body);
    let dep = Request::new("GET", "/v1/deployments/intruder-1", b"").signed(&key, "web1").send(&a).unwrap();
    assert_eq!(dep.status, 404, "{}", dep.body);
}

#[test]
fn bad_store_paths_get_400() {
    let live = LiveFleet::start(&["web1"]);
    let a = addr(&live);
    let key = live.secret_key();
    for bad in
        ["/nix/store/../etc/passwd", "/etc/passwd", "/nix/store/00000000000000000000000000000000-x/bin", "relative"]
    {
        let body = format!(r#"{{"paths":["{bad}"]}}"#);
        let r = Request::new("POST", "/v1/paths/missing", body.as_bytes()).signed(&key, "web1").send(&a).unwrap();
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.body.contains("bad-request"), "{bad}: {}", r.body);
        assert!(r.body.contains(&format!("paths[0]: invalid store path `{bad}`")), "{bad}: {}", r.body);
    }
}

#[test]
fn a_truncated_import_registers_nothing() {
    let live = LiveFleet::start(&["web1"]);
    let a = addr(&live);
    let key = live.secret_key();
    // A real path of this machine's store, exported and compressed like hostctl does.
    let build = live.fleet.hostctl(&["--json", "build", "--on", "web1"]);
    build.expect_code(0);
    let toplevel = build.json()["hosts"]["web1"]["toplevel"].as_str().unwrap().to_owned();
    let closure =
        std::process::Command::new("nix-store").args(["--query", "--requisites", &toplevel]).output().unwrap();
    let paths: Vec<String> = String::from_utf8_lossy(&closure.stdout).lines().map(str::to_owned).collect();
    let compressed = hostctl_tests::livefleet::compressed_export(&paths);
    for cut in [compressed.len() / 2, compressed.len() - 8] {
        let r = Request::new("POST", "/v1/paths/import", &compressed[..cut])
            .header("x-hostctl-paths", &paths.join(" "))
            .signed(&key, "web1")
            .send(&a)
            .unwrap();
        assert_eq!(r.status, 400, "truncated at {cut}: {}", r.body);
        assert!(r.body.contains("the import stream is truncated"), "truncated at {cut}: {}", r.body);
        for p in &paths {
            let valid = live.host("web1").run_in(&["nix-store", "--check-validity", p]).status.success();
            assert!(!valid, "{p} must not be registered after a truncated import");
        }
    }
    let r = Request::new("POST", "/v1/paths/import", &compressed)
        .header("x-hostctl-paths", &paths.join(" "))
        .signed(&key, "web1")
        .send(&a)
        .unwrap();
    assert_eq!(r.status, 200, "the whole stream imports: {}", r.body);
    assert!(live.host("web1").run_in(&["nix-store", "--check-validity", &toplevel]).status.success());
}

/// A store path of this machine that an agent takes for a NixOS system: its
/// `switch-to-configuration` exits 0.
#[expect(clippy::unwrap_used, reason = "test helper: a panic is a test failure")]
fn fake_system(tag: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join(format!("bound-system-{tag}")).join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("switch-to-configuration"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(bin.join("switch-to-configuration"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("nix-store").arg("--add").arg(bin.parent().unwrap()).output().unwrap();
    assert!(out.status.success(), "nix-store --add: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Imports `system` into host `name` and deploys it there, confirmed.
fn deployed(live: &LiveFleet, name: &str, system: &str, id: &str) {
    live.import_closure(name, system);
    let body = json!({"id": id, "toplevel": system, "mode": "switch", "confirm_timeout": "0s"}).to_string();
    live.agent_json(name, "POST", "/v1/deployments", body.as_bytes());
    live.wait_for_deployment(name, id, Duration::from_secs(30), |s| s == "confirmed");
}

/// What a refused request must leave alone on a host: its agent's status (but the free
/// space of the store's file system, which the machine's other processes change),
/// generations and deployments.
fn observed(live: &LiveFleet, name: &str) -> (Value, Vec<Value>, Vec<String>) {
    let mut status = live.agent_status(name);
    status["store_free_bytes"] = Value::Null;
    (status, live.generations(name), live.deployment_ids(name))
}

#[expect(clippy::unwrap_used, reason = "test helper: a panic is a test failure")]
fn message(r: &Response) -> String {
    serde_json::from_str::<Value>(&r.body).unwrap()["message"].as_str().unwrap_or_default().to_owned()
}

/// Issue 14, defect 1: a deployment, its confirmation and a rollback signed for web1 (as
/// the controller sent them, captured on the way) are sent byte for byte to web2, which
/// trusts the same fleet key and has the same systems: refused with 401, nothing changes
/// on web2, and web1 still accepts them afterwards (nothing was recorded on web2, and
/// the requests are web1's own). Replayed to web1 again, as a compromised web1 could:
/// refused as replayed.
#[test]
fn a_request_signed_for_one_host_is_refused_by_another_and_changes_nothing() {
    let live = LiveFleet::start(&["web1", "web2"]);
    let (a, b) = (fake_system("a"), fake_system("b"));
    for name in ["web1", "web2"] {
        deployed(&live, name, &a, "a-1");
        live.import_closure(name, &b);
    }

    let key = live.secret_key();
    let deploy = json!({"id": "b-1", "toplevel": b, "mode": "switch", "confirm_timeout": "60s"}).to_string();
    let captured = [
        Request::new("POST", "/v1/deployments", deploy.as_bytes()).signed(&key, "web1"),
        Request::new("POST", "/v1/deployments/b-1/confirm", b"").signed(&key, "web1"),
        Request::new("POST", "/v1/rollback", br#"{"to":"previous","id":"back-1","confirm_timeout":"0s"}"#)
            .signed(&key, "web1"),
    ];
    let (web1, web2) = (live.agent_addr("web1"), live.agent_addr("web2"));
    let before = observed(&live, "web2");
    for request in &captured {
        let r = request.send(&web2).unwrap();
        assert_eq!(r.status, 401, "{} {} replayed to web2: {}", request.method, request.path, r.body);
        assert_eq!(message(&r), r#"request is for host "web1", this is "web2""#);
    }
    assert_eq!(observed(&live, "web2"), before, "a request for web1 changed web2");
    assert_eq!(live.host("web2").profile_system(), Some(a.clone()));

    // web1 takes each of them, in its window, as the controller meant it.
    let [deploy, confirm, rollback] = &captured;
    let r = deploy.send(&web1).unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    live.wait_for_deployment("web1", "b-1", Duration::from_secs(30), |s| s == "awaiting-confirmation");
    let r = confirm.send(&web1).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    live.wait_for_deployment("web1", "b-1", Duration::from_secs(30), |s| s == "confirmed");
    assert_eq!(live.host("web1").profile_system(), Some(b.clone()));
    let r = rollback.send(&web1).unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    live.wait_for_deployment("web1", "back-1", Duration::from_secs(30), |s| s == "confirmed");
    assert_eq!(live.host("web1").profile_system(), Some(a));

    // Forwarded by web1 itself, a second time: its nonce is spent.
    let r = deploy.send(&web1).unwrap();
    assert_eq!((r.status, message(&r)), (401, "nonce was already used (replayed request)".to_owned()));
}
