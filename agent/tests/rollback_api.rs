//! Magic rollback and `POST /v1/rollback` over HTTP, in-process, against a private
//! `local?root=` store: what a controller sees in deployments, generations and status.

#![expect(clippy::unwrap_used, clippy::panic, reason = "test code: a failed step must fail the test")]

mod support;

use std::time::Duration;

use hostctl_schemas::api::{deployments, generations, rollback, status};
use reqwest::Method;
use serde_json::{json, Value};
use support::{export, paths_header, Client, TestAgent};

/// Imports two systems `a` and `b` (their `switch-to-configuration` appends `NAME MODE`
/// to `ran`) and returns their toplevels.
async fn two_systems(agent: &TestAgent, client: &Client) -> (String, String) {
    let ran = agent.dir.path().join("ran");
    let script = |name: &str| format!("#!/bin/sh\necho \"{name} $1\" >> {}\n", ran.display());
    let (sa, sb) = (script("a"), script("b"));
    let e = export(&[
        ("nixos-system-a", &[("bin/switch-to-configuration", sa.as_str(), 0o755)]),
        ("nixos-system-b", &[("bin/switch-to-configuration", sb.as_str(), 0o755)]),
    ])
    .await;
    let header = vec![(hostctl_schemas::api::paths::IMPORT_PATHS_HEADER, paths_header(&e.paths))];
    let compressed = zstd::encode_all(e.stream.as_slice(), 3).unwrap();
    let path = hostctl_schemas::api::paths::IMPORT_PATH;
    let r = client.call_with(Method::POST, path, &compressed, Some(client.signing()), &header).await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    (e.paths[0].to_string(), e.paths[1].to_string())
}

fn ran(agent: &TestAgent) -> Vec<String> {
    std::fs::read_to_string(agent.dir.path().join("ran")).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// Polls a deployment until it is in one of the final states or awaiting confirmation.
async fn wait_until(client: &Client, id: &str, states: &[&str]) -> Value {
    for _ in 0..300 {
        let d = client.get(&deployments::path_of(id)).await;
        assert_eq!(d.status, 200, "{:?}", d.json);
        if states.contains(&d.json["state"].as_str().unwrap_or_default()) {
            return d.json;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("deployment {id} never reached {states:?}");
}

fn deployment(id: &str, toplevel: &str, lock: char, confirm: &str) -> Value {
    json!({"id": id, "toplevel": toplevel, "rev": format!("rev-{lock}"), "lock": lock.to_string().repeat(64),
           "mode": "switch", "confirm_timeout": confirm})
}

#[tokio::test]
async fn an_unconfirmed_deployment_rolls_back_and_history_shows_it() {
    let agent = TestAgent::start(true).await;
    let client = agent.client();
    let (a, b) = two_systems(&agent, &client).await;
    let lock_a = "a".repeat(64);

    assert_eq!(client.post_json(deployments::PATH, &deployment("d1", &a, 'a', "0s")).await.status, 202);
    wait_until(&client, "d1", &["confirmed"]).await;
    assert_eq!(client.post_json(deployments::PATH, &deployment("d2", &b, 'b', "1s")).await.status, 202);
    let d = wait_until(&client, "d2", &["awaiting-confirmation", "failed", "rolled-back"]).await;
    assert_eq!(d["state"], "awaiting-confirmation");
    assert!(d["confirm_deadline"].as_u64().is_some());
    // The controller never confirms (it died, or the link is down).
    let d = wait_until(&client, "d2", &["confirmed", "failed", "rolled-back"]).await;
    assert_eq!(d["state"], "rolled-back");
    assert_eq!(d["error"], json!(format!("not confirmed within 1s; re-activated the previous system {a}")));
    let late = client.call(Method::POST, &deployments::confirm_path_of("d2"), b"").await;
    assert_eq!((late.status, late.error()), (409, "conflict"));
    assert_eq!(ran(&agent), ["a switch", "b switch", "a switch"]);

    let s = client.get(status::PATH).await.json;
    assert_eq!((&s["state"], &s["generation"], &s["toplevel"]), (&json!("idle"), &json!(3), &json!(a)));
    assert_eq!((&s["lock"], &s["pinned_lock"], &s["deployment"]), (&json!(lock_a), &json!(lock_a), &json!("d1")));

    let g = client.get(generations::PATH).await.json;
    let rows: Vec<(Value, Value, Value, Value, Value)> = g["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["number"].clone(),
                r["toplevel"].clone(),
                r["deployment"].clone(),
                r["result"].clone(),
                r["lock"].clone(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            // Made by d2's rollback: d2's result, the identity of the system it returned to.
            (json!(3), json!(a), json!("d2"), json!("rolled-back"), json!(lock_a)),
            (json!(2), json!(b), json!("d2"), json!("rolled-back"), json!("b".repeat(64))),
            (json!(1), json!(a), json!("d1"), json!("confirmed"), json!(lock_a)),
        ]
    );
    let history: Vec<&str> = g["deployments"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(history, ["d2", "d1"]);

    // "previous" from d1 (the host's first system, no other lock confirmed before it).
    let r = client.post_json(rollback::PATH, &json!({"to": "previous"})).await;
    assert_eq!((r.status, r.error()), (404, "not-found"), "{:?}", r.json);
    assert!(r.message().contains("nothing before deployment `d1`"), "{}", r.message());

    // Generation 2 is b: a new deployment with b's identity, joined to the new generation.
    let r =
        client.post_json(rollback::PATH, &json!({"to": {"generation": 2}, "id": "r1", "confirm_timeout": "0s"})).await;
    assert_eq!(r.status, 202, "{:?}", r.json);
    assert_eq!(
        (&r.json["state"], &r.json["toplevel"], &r.json["rollback_of"]),
        (&json!("queued"), &json!(b), &json!("generation 2"))
    );
    wait_until(&client, "r1", &["confirmed"]).await;
    let g = client.get(generations::PATH).await.json;
    let g0 = &g["generations"][0];
    assert_eq!(
        (&g0["number"], &g0["deployment"], &g0["result"], &g0["toplevel"]),
        (&json!(4), &json!("r1"), &json!("confirmed"), &json!(b))
    );
}

#[tokio::test]
async fn rollback_requests_are_signed_limited_and_checked() {
    let agent = TestAgent::start(true).await;
    let client = agent.client();
    let body = json!({"to": "previous"}).to_string();
    let r = client.call_with(Method::POST, rollback::PATH, body.as_bytes(), None, &[]).await;
    assert_eq!(r.status, 401);
    let huge = vec![b' '; rollback::BODY_LIMIT + 1];
    let r = client.call(Method::POST, rollback::PATH, &huge).await;
    assert_eq!((r.status, r.error()), (413, "payload-too-large"));
    let r = client.post_json(rollback::PATH, &json!({"to": "latest"})).await;
    assert_eq!((r.status, r.error()), (400, "bad-request"));
    let r = client.post_json(rollback::PATH, &json!({"to": {"lock": "c".repeat(64)}})).await;
    assert_eq!((r.status, r.error()), (404, "not-found"));
    let r = client.post_json(rollback::PATH, &json!({"to": "previous"})).await;
    assert_eq!((r.status, r.error()), (404, "not-found"));

    let (a, _) = two_systems(&agent, &client).await;
    let mut request = deployment("d1", &a, 'a', "0s");
    request["health"] = json!([{"command": ["true"]}, {"http": "http://127.0.0.1/healthz"}]);
    let r = client.post_json(deployments::PATH, &request).await;
    assert_eq!((r.status, r.error()), (400, "bad-request"));
    assert!(r.message().starts_with("health[1]: `http` health checks run on the controller"), "{}", r.message());
}

#[tokio::test]
async fn previous_rolls_the_pending_deployment_back_over_http() {
    let agent = TestAgent::start(true).await;
    let client = agent.client();
    let (a, b) = two_systems(&agent, &client).await;
    client.post_json(deployments::PATH, &deployment("d1", &a, 'a', "0s")).await;
    wait_until(&client, "d1", &["confirmed"]).await;
    let mut request = deployment("d2", &b, 'b', "30s");
    request["health"] = json!([{"command": ["true"], "timeout": "5s"}]);
    client.post_json(deployments::PATH, &request).await;
    wait_until(&client, "d2", &["awaiting-confirmation"]).await;

    // The controller's own (http) checks failed: it asks for the rollback at once.
    let r = client.post_json(rollback::PATH, &json!({"to": "previous"})).await;
    assert_eq!((r.status, &r.json["id"]), (202, &json!("d2")), "{:?}", r.json);
    let d = wait_until(&client, "d2", &["confirmed", "failed", "rolled-back"]).await;
    assert_eq!(d["state"], "rolled-back");
    assert_eq!(d["error"], json!(format!("rolled back on request; re-activated the previous system {a}")));
    assert_eq!(client.get(status::PATH).await.json["toplevel"], json!(a));
}
