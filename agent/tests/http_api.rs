//! The agent's HTTP API in-process on 127.0.0.1, with real Nix: read-only requests against
//! this machine's real store; imports and deployments against a private `local?root=`
//! store (never the real one).

#![expect(clippy::unwrap_used, clippy::panic, reason = "test code: a failed step must fail the test")]

mod support;

use std::time::Duration;

use hostctl_schemas::api::{deployments, generations, paths, status};
use hostctl_schemas::ids::StorePath;
use reqwest::Method;
use serde_json::json;
use support::{export, paths_header, Signing, TestAgent, OTHER_SECRET};

const MADE_UP: &str = "/nix/store/00000000000000000000000000000000-hostctl-made-up";

/// Up to `n` entries of the real `/nix/store` (most are valid paths). On a machine whose
/// store is still empty, one small text file is added first, so there is a valid path to
/// ask about.
fn real_store_entries(n: usize) -> Vec<StorePath> {
    let empty = std::fs::read_dir("/nix/store").map_or(true, |mut d| d.next().is_none());
    if empty {
        let file = tempfile::Builder::new().prefix("hostctl-http-api-").tempfile().unwrap();
        std::fs::write(file.path(), "a valid path for http_api.rs\n").unwrap();
        let out = std::process::Command::new("nix-store").arg("--add").arg(file.path()).output().unwrap();
        assert!(out.status.success(), "nix-store --add: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut entries: Vec<StorePath> =
        std::fs::read_dir("/nix/store").unwrap().filter_map(|e| e.ok()?.path().to_str()?.parse().ok()).collect();
    entries.sort();
    entries.truncate(n);
    entries
}

#[tokio::test]
async fn status_and_missing_paths_from_the_real_store() {
    let agent = TestAgent::start(false).await;
    let client = agent.client();

    let s = client.get(status::PATH).await;
    assert_eq!(s.status, 200, "{:?}", s.json);
    assert_eq!(s.json["hostname"], "web1");
    assert_eq!(s.json["state"], "idle");
    assert_eq!(s.json["generation"], serde_json::Value::Null);
    assert_eq!(s.json["version"], env!("CARGO_PKG_VERSION"));
    assert!(s.json["system"].as_str().unwrap().ends_with("-linux"));

    let mut asked = real_store_entries(20);
    asked.push(MADE_UP.parse().unwrap());
    let m = client.post_json(paths::MISSING_PATH, &json!({ "paths": asked })).await;
    assert_eq!(m.status, 200, "{:?}", m.json);
    let missing: Vec<&str> = m.json["missing"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(missing.contains(&MADE_UP), "{missing:?}");
    assert!(missing.len() < asked.len(), "the real store has some of them: {missing:?}");

    let g = client.get(generations::PATH).await;
    assert_eq!((g.status, &g.json["generations"]), (200, &json!([])), "no profile yet");
    let d = client.get(&deployments::path_of("nope")).await;
    assert_eq!((d.status, d.error()), (404, "not-found"));
    let r = client.get("/v1/nothing-here").await;
    assert_eq!((r.status, r.error()), (404, "not-found"));

    let t = client
        .post_json(deployments::PATH, &json!({"id": "d1", "toplevel": MADE_UP, "rev": null, "lock": null, "mode": "switch", "confirm_timeout": "0s"}))
        .await;
    assert_eq!((t.status, t.error()), (400, "bad-request"));
    assert!(t.message().contains("is not in this host's store"), "{}", t.message());
}

#[tokio::test]
async fn unsigned_wrongly_signed_stale_tampered_and_replayed_requests_are_401() {
    let agent = TestAgent::start(false).await;
    let client = agent.client();
    let body = json!({ "paths": [MADE_UP] }).to_string().into_bytes();
    let post = |signing: Option<Signing>| {
        let client = &client;
        let body = body.clone();
        async move { client.call_with(Method::POST, paths::MISSING_PATH, &body, signing, &[]).await }
    };

    let unsigned = post(None).await;
    assert_eq!((unsigned.status, unsigned.error()), (401, "unauthorized"));
    assert!(unsigned.message().contains("missing header x-hostctl-key"), "{}", unsigned.message());

    let wrong = post(Some(Signing { secret: OTHER_SECRET, ..client.signing() })).await;
    assert_eq!((wrong.status, wrong.message()), (401, "signature does not verify"));

    let stale = post(Some(Signing { timestamp: support::now() - 600, ..client.signing() })).await;
    assert_eq!(stale.status, 401);
    assert!(stale.message().contains("away from the agent's clock"), "{}", stale.message());

    let tampered = post(Some(Signing { signed_body: Some(b"{\"paths\":[]}".to_vec()), ..client.signing() })).await;
    assert_eq!((tampered.status, tampered.message()), (401, "body does not match its x-hostctl-content-sha256"));

    // Signed for another host of the fleet: refused before its nonce is recorded.
    let elsewhere = client.signing();
    let other = post(Some(Signing { host: "web2", ..elsewhere.clone() })).await;
    assert_eq!((other.status, other.message()), (401, r#"request is for host "web2", this is "web1""#));
    assert_eq!(post(Some(elsewhere)).await.status, 200, "the nonce was not burned");

    let once = client.signing();
    assert_eq!(post(Some(once.clone())).await.status, 200);
    let replay = post(Some(once)).await;
    assert_eq!((replay.status, replay.message()), (401, "nonce was already used (replayed request)"));

    // Mutating endpoints too: nothing is created without a valid signature.
    let create =
        json!({"id": "x", "toplevel": MADE_UP, "rev": null, "lock": null, "mode": "switch", "confirm_timeout": "0s"});
    let r = client.call_with(Method::POST, deployments::PATH, create.to_string().as_bytes(), None, &[]).await;
    assert_eq!(r.status, 401);
    let r = client.call_with(Method::POST, paths::IMPORT_PATH, b"x", None, &[]).await;
    assert_eq!(r.status, 401);
    let r = client.call_with(Method::POST, &deployments::confirm_path_of("x"), b"", None, &[]).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn bad_store_paths_are_400_and_huge_bodies_413() {
    let agent = TestAgent::start(false).await;
    let client = agent.client();
    for (bad, words) in [
        ("/nix/store/../etc/passwd", "`..` is not allowed"),
        ("/etc/passwd", "directly under /nix/store"),
        ("/nix/store/zr2knphxg8yyy2mkq8akf2hfknjvdiz7-x/bin/sh", "not `/bin/sh` inside it"),
    ] {
        let r = client.post_json(paths::MISSING_PATH, &json!({ "paths": [MADE_UP, bad] })).await;
        assert_eq!((r.status, r.error()), (400, "bad-request"), "{bad}");
        assert!(r.message().starts_with("paths[1]: "), "{}", r.message());
        assert!(r.message().contains(words), "{}", r.message());
    }
    let r = client.post_json(paths::MISSING_PATH, &json!({ "path": [] })).await;
    assert_eq!(r.status, 400);

    let huge = vec![b' '; paths::MISSING_BODY_LIMIT + 1];
    let r = client.call(Method::POST, paths::MISSING_PATH, &huge).await;
    assert_eq!((r.status, r.error()), (413, "payload-too-large"));

    let r = client
        .call_with(
            Method::POST,
            paths::IMPORT_PATH,
            b"",
            Some(client.signing()),
            &[(paths::IMPORT_PATHS_HEADER, "/nix/store/../etc".into())],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.message().contains("`..` is not allowed"), "{}", r.message());
}

#[tokio::test]
async fn imports_are_all_or_nothing() {
    let agent = TestAgent::start(true).await;
    let client = agent.client();
    let e = export(&[("one", &[("a", "first\n", 0o644)]), ("two", &[("bin/x", "#!/bin/sh\n", 0o755)])]).await;
    let header = vec![(paths::IMPORT_PATHS_HEADER, paths_header(&e.paths))];
    let ask = json!({ "paths": e.paths });
    let missing = || client.post_json(paths::MISSING_PATH, &ask);
    assert_eq!(missing().await.json["missing"].as_array().unwrap().len(), 2);

    // A stream cut after the first path: valid zstd, but an incomplete export. Nix 2.8's
    // `nix-store --import` would register the first path; the agent must not.
    for cut in [e.stream.len() / 2, e.stream.len() - 8] {
        let truncated = zstd::encode_all(&e.stream[..cut], 3).unwrap();
        let r = client.call_with(Method::POST, paths::IMPORT_PATH, &truncated, Some(client.signing()), &header).await;
        assert_eq!((r.status, r.error()), (400, "bad-request"), "{:?}", r.json);
        assert!(r.message().contains("truncated"), "{}", r.message());
        assert_eq!(missing().await.json["missing"].as_array().unwrap().len(), 2, "nothing registered");
    }
    let compressed = zstd::encode_all(e.stream.as_slice(), 3).unwrap();
    let r = client
        .call_with(
            Method::POST,
            paths::IMPORT_PATH,
            &compressed[..compressed.len() - 5],
            Some(client.signing()),
            &header,
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.json);

    let only_first = vec![(paths::IMPORT_PATHS_HEADER, paths_header(&e.paths[..1]))];
    let r = client.call_with(Method::POST, paths::IMPORT_PATH, &compressed, Some(client.signing()), &only_first).await;
    assert_eq!(r.status, 400);
    assert!(r.message().contains("which x-hostctl-paths does not list"), "{}", r.message());

    let tampered = Signing { signed_body: Some(b"other".to_vec()), ..client.signing() };
    let r = client.call_with(Method::POST, paths::IMPORT_PATH, &compressed, Some(tampered), &header).await;
    assert_eq!(r.status, 401);
    assert_eq!(missing().await.json["missing"].as_array().unwrap().len(), 2);

    let r = client.call_with(Method::POST, paths::IMPORT_PATH, &compressed, Some(client.signing()), &header).await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let mut imported: Vec<String> = serde_json::from_value(r.json["imported"].clone()).unwrap();
    let mut want: Vec<String> = e.paths.iter().map(|p| p.to_string()).collect();
    imported.sort();
    want.sort();
    assert_eq!(imported, want);
    assert_eq!(missing().await.json["missing"], json!([]));
    assert!(std::fs::read_dir(agent.dir.path().join("state/tmp")).unwrap().next().is_none(), "temporary files removed");
}

#[tokio::test]
async fn deploy_over_http_with_confirmation() {
    let agent = TestAgent::start(true).await;
    let client = agent.client();
    let e = export(&[(
        "nixos-system-web1",
        &[("bin/switch-to-configuration", "#!/bin/sh\necho \"switching to $1\"\n", 0o755)],
    )])
    .await;
    let header = vec![(paths::IMPORT_PATHS_HEADER, paths_header(&e.paths))];
    let compressed = zstd::encode_all(e.stream.as_slice(), 3).unwrap();
    let r = client.call_with(Method::POST, paths::IMPORT_PATH, &compressed, Some(client.signing()), &header).await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let toplevel = e.paths[0].to_string();
    let lock = "ab".repeat(32);

    let request = json!({"id": "web1-1", "toplevel": toplevel, "rev": "abc123", "lock": lock, "mode": "switch", "confirm_timeout": "30s"});
    let r = client.post_json(deployments::PATH, &request).await;
    assert_eq!((r.status, &r.json["state"]), (202, &json!("queued")), "{:?}", r.json);
    let d = wait_for(&client, "web1-1", "awaiting-confirmation").await;
    assert_eq!(
        (&d["generation"], &d["outcome"], &d["log_tail"]),
        (&json!(1), &json!("ok"), &json!("switching to switch"))
    );
    let busy = client.post_json(deployments::PATH, &json!({"id": "web1-2", "toplevel": toplevel, "rev": null, "lock": null, "mode": "test", "confirm_timeout": "0s"})).await;
    assert_eq!((busy.status, busy.error()), (409, "conflict"));
    assert_eq!(client.get(status::PATH).await.json["state"], "awaiting-confirmation");

    let c = client.call(Method::POST, &deployments::confirm_path_of("web1-1"), b"").await;
    assert_eq!((c.status, &c.json["state"]), (200, &json!("confirmed")), "{:?}", c.json);

    let s = client.get(status::PATH).await.json;
    assert_eq!((&s["state"], &s["generation"], &s["toplevel"]), (&json!("idle"), &json!(1), &json!(toplevel)));
    assert_eq!(
        (&s["rev"], &s["lock"], &s["pinned_lock"], &s["deployment"]),
        (&json!("abc123"), &json!(lock), &json!(lock), &json!("web1-1"))
    );
    let g = client.get(generations::PATH).await.json;
    let g0 = &g["generations"][0];
    assert_eq!(
        (&g0["number"], &g0["current"], &g0["deployment"], &g0["result"]),
        (&json!(1), &json!(true), &json!("web1-1"), &json!("confirmed"))
    );
    assert!(g0["time"].as_u64().unwrap() > 1_700_000_000);
}

/// Polls a deployment until it reaches `state` (fails on another final state).
async fn wait_for(client: &support::Client, id: &str, state: &str) -> serde_json::Value {
    for _ in 0..200 {
        let d = client.get(&deployments::path_of(id)).await;
        assert_eq!(d.status, 200, "{:?}", d.json);
        if d.json["state"] == state {
            return d.json;
        }
        if ["failed", "confirmed", "rolled-back"].contains(&d.json["state"].as_str().unwrap_or_default()) {
            panic!("deployment {id} ended {}: {:?}", d.json["state"], d.json);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("deployment {id} never reached {state}");
}
