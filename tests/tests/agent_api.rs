//! Agent API v1 security and input checks, over raw HTTP against a real agent on a
//! simulated host: unsigned, wrongly signed, stale and replayed requests get 401 and
//! change nothing; bad store paths get 400; a truncated import registers nothing.

use hostctl_schemas::signing::SecretKey;
use hostctl_tests::http::{now, Request};
use hostctl_tests::livefleet::LiveFleet;

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
