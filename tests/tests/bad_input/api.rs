//! Signature headers (401 naming the header) and request bodies (400/404/409/413 naming
//! the field, id or limit) against a real agent; the host keeps its one good deployment.

use std::time::Duration;

use hostctl_tests::http::{now, Request};
use serde_json::{json, Value};

use super::support::{
    deployment_body, expect_api, fake_system, host_state, import, key_from_seed, local_path, start, HOST,
};

#[test]
fn bad_signature_headers_are_401_naming_the_header_and_change_nothing() {
    let live = start();
    let addr = live.agent_addr(HOST);
    let key = live.secret_key();
    let system = fake_system("headers");
    import(&live, &system);
    let body = deployment_body("intruder-1", &system);
    let path = "/v1/deployments";
    let signed = || Request::new("POST", path, &body).signed(&key, HOST);
    let without = |name: &str| {
        let mut r = signed();
        r.headers.retain(|(n, _)| n != name);
        r
    };
    let with = |name: &str, value: &str| {
        let mut r = signed();
        r.headers.iter_mut().filter(|(n, _)| n == name).for_each(|(_, v)| *v = value.to_owned());
        r
    };
    let mut altered = signed();
    altered.body = deployment_body("intruder-2", &system);
    let replayed = signed();
    let cases: Vec<(&str, Request, &str)> = vec![
        ("unsigned", Request::new("POST", path, &body), "missing header x-hostctl-key"),
        ("no signature", without("x-hostctl-signature"), "missing header x-hostctl-signature"),
        ("no timestamp", without("x-hostctl-timestamp"), "missing header x-hostctl-timestamp"),
        ("no nonce", without("x-hostctl-nonce"), "missing header x-hostctl-nonce"),
        ("no body hash", without("x-hostctl-content-sha256"), "missing header x-hostctl-content-sha256"),
        ("timestamp not a number", with("x-hostctl-timestamp", "yesterday"), "header x-hostctl-timestamp is malformed"),
        ("nonce not hex", with("x-hostctl-nonce", "not-a-nonce"), "header x-hostctl-nonce is malformed"),
        ("body hash not hex", with("x-hostctl-content-sha256", "xyz"), "header x-hostctl-content-sha256 is malformed"),
        ("signature not base64", with("x-hostctl-signature", "!!!"), "header x-hostctl-signature is malformed"),
        ("no target host", without("x-hostctl-host"), "missing header x-hostctl-host"),
        ("target host not a host name", with("x-hostctl-host", "Web 1"), "header x-hostctl-host is malformed"),
        (
            "no scheme version (a v1 controller)",
            without("x-hostctl-signature-version"),
            "upgrade hostctl on the controller",
        ),
        ("unknown scheme version", with("x-hostctl-signature-version", "9"), "signed with scheme version `9`"),
        (
            "signed for another host",
            Request::new("POST", path, &body).signed(&key, "web2"),
            r#"request is for host "web2", this is "web1""#,
        ),
        (
            "signed for another host, relabelled",
            {
                let mut r = Request::new("POST", path, &body).signed(&key, "web2");
                r.headers.iter_mut().filter(|(n, _)| n == "x-hostctl-host").for_each(|(_, v)| *v = HOST.to_owned());
                r
            },
            "signature does not verify",
        ),
        (
            "unknown key",
            Request::new("POST", path, &body).signed(&key_from_seed("intruder", 7), HOST),
            "key `intruder` is not among the agent's trusted keys",
        ),
        (
            "trusted name, other key",
            Request::new("POST", path, &body).signed(&key_from_seed("hostctl-test", 7), HOST),
            "signature does not verify",
        ),
        (
            "too old",
            Request::new("POST", path, &body).signed_at(&key, HOST, now() - 600),
            "away from the agent's clock",
        ),
        (
            "in the future",
            Request::new("POST", path, &body).signed_at(&key, HOST, now() + 600),
            "away from the agent's clock",
        ),
        (
            "signed for another path",
            {
                let mut r = Request::new("POST", "/v1/rollback", &body).signed(&key, HOST);
                r.path = path.to_owned();
                r
            },
            "signature does not verify",
        ),
        (
            "signed for another method",
            {
                let mut r = Request::new("PUT", path, &body).signed(&key, HOST);
                r.method = "POST".to_owned();
                r
            },
            "signature does not verify",
        ),
        ("body altered after signing", altered, "body does not match its x-hostctl-content-sha256"),
    ];
    let before = host_state(live.host(HOST));
    assert_eq!(replayed.send(&addr).unwrap().status, 202, "the signed request is accepted once");
    let accepted = live.wait_for_deployment(HOST, "intruder-1", Duration::from_secs(30), |s| s == "confirmed");
    assert_eq!(accepted["toplevel"], system.as_str());
    let after_first = host_state(live.host(HOST));
    assert_ne!(after_first, before, "the accepted deployment made a generation");
    let r = replayed.send(&addr).unwrap();
    expect_api(&r, "replayed", 401, &["nonce was already used (replayed request)"]);
    for (what, request, expected) in cases {
        let r = request.send(&addr).unwrap();
        expect_api(&r, what, 401, &[expected]);
        assert!(r.body.contains("\"error\":\"unauthorized\""), "{what}: {}", r.body);
    }
    assert_eq!(host_state(live.host(HOST)), after_first, "a refused request changed the host");
    assert_eq!(live.deployment_ids(HOST), ["intruder-1"], "no deployment came from a refused request");
}

/// `POST /v1/deployments` bodies: (case, the request as JSON text, status, parts of the message).
fn deployment_cases(system: &str, not_a_system: &str) -> Vec<(&'static str, String, u16, Vec<String>)> {
    let absent = "/nix/store/00000000000000000000000000000000-nixos-system-absent";
    let with = |field: &str, value: Value| {
        let mut v: Value = serde_json::from_slice(&deployment_body("bad-1", system)).unwrap();
        v[field] = value;
        v.to_string()
    };
    let without_mode = with("mode", Value::Null).replace(",\"mode\":null", "");
    let reused = with("id", json!("good-1")).replace("\"switch\"", "\"test\"");
    let s = |parts: &[&str]| parts.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
    vec![
        ("not JSON", "{\"id\": \"x\",".into(), 400, s(&["invalid request body: EOF", "at line 1 column 11"])),
        ("JSON error on line 2", "{\n  \"id\": x\n}".into(), 400, s(&["id: expected value at line 2 column 9"])),
        ("unknown field", with("host", json!("db1")), 400, s(&["host: unknown field `host`", "line 1 column"])),
        ("missing field", without_mode, 400, s(&["invalid request body: missing field `mode`"])),
        ("toplevel not a store path", with("toplevel", json!("/etc/passwd")), 400, s(&["toplevel: ", "`/etc/passwd`"])),
        ("toplevel not in the store", with("toplevel", json!(absent)), 400, s(&["toplevel: ", absent, "not in this"])),
        (
            "toplevel not a system",
            with("toplevel", json!(not_a_system)),
            400,
            s(&["toplevel: ", not_a_system, "has no bin/switch-to-configuration"]),
        ),
        ("bad id", with("id", json!("../x")), 400, s(&["id: `../x` is not a deployment id"])),
        ("bad mode", with("mode", json!("reboot")), 400, s(&["mode: unknown variant `reboot`"])),
        ("bad duration", with("confirm_timeout", json!("30x")), 400, s(&["confirm_timeout: invalid duration `30x`"])),
        ("bad lock", with("lock", json!("nothex")), 400, s(&["lock: invalid lock id `nothex`"])),
        (
            "http health check",
            with("health", json!([{"http": "http://127.0.0.1/"}])),
            400,
            s(&["health[0]: `http` health checks run on the controller"]),
        ),
        ("id reused, other content", reused, 409, s(&["deployment `good-1` exists with other content"])),
        ("oversized body", " ".repeat(64 * 1024 + 1), 413, s(&["larger than this endpoint's limit of 65536 bytes"])),
    ]
}

/// Other routes: (case, method, path, body, status, part of the message).
const OTHER_CASES: [(&str, &str, &str, &str, u16, &str); 10] = [
    (
        "paths/missing, unknown field",
        "POST",
        "/v1/paths/missing",
        r#"{"paths":[],"path":[]}"#,
        400,
        "path: unknown field `path`",
    ),
    ("confirm of an unknown id", "POST", "/v1/deployments/nosuch/confirm", "", 404, "no deployment `nosuch`"),
    ("confirm of a bad id", "POST", "/v1/deployments/a!b/confirm", "", 400, "`a!b` is not a deployment id"),
    ("state of an unknown id", "GET", "/v1/deployments/nosuch", "", 404, "no deployment `nosuch`"),
    (
        "rollback, missing generation",
        "POST",
        "/v1/rollback",
        r#"{"to":{"generation":99}}"#,
        404,
        "generation 99 of the profile",
    ),
    (
        "rollback, negative generation",
        "POST",
        "/v1/rollback",
        r#"{"to":{"generation":-1}}"#,
        400,
        "to: a rollback target: \"previous\"",
    ),
    (
        "rollback, unknown lock",
        "POST",
        "/v1/rollback",
        concat!(r#"{"to":{"lock":""#, "abababababababababababababababababababababababababababababababab", r#""}}"#),
        404,
        "no confirmed deployment with lock abababababab",
    ),
    (
        "rollback, made-up target",
        "POST",
        "/v1/rollback",
        r#"{"to":"latest"}"#,
        400,
        "to: a rollback target: \"previous\"",
    ),
    (
        "rollback, unknown field",
        "POST",
        "/v1/rollback",
        r#"{"to":"previous","force":true}"#,
        400,
        "force: unknown field `force`",
    ),
    ("unknown route", "POST", "/v1/reboot", "", 404, "no route POST /v1/reboot"),
];

#[test]
fn bad_api_bodies_are_refused_naming_the_field_and_change_nothing() {
    let live = start();
    let addr = live.agent_addr(HOST);
    let key = live.secret_key();
    let system = fake_system("bodies");
    import(&live, &system);
    let not_a_system = local_path("bad-input-not-a-system", &[("README", "no\n", false)]);
    import(&live, &not_a_system);
    let r = Request::new("POST", "/v1/deployments", &deployment_body("good-1", &system)).signed(&key, HOST).send(&addr);
    assert_eq!(r.unwrap().status, 202);
    live.wait_for_deployment(HOST, "good-1", Duration::from_secs(30), |s| s == "confirmed");
    let before = host_state(live.host(HOST));

    for (what, body, status, expected) in deployment_cases(&system, &not_a_system) {
        let r = Request::new("POST", "/v1/deployments", body.as_bytes()).signed(&key, HOST).send(&addr).unwrap();
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        expect_api(&r, what, status, &expected);
    }
    for (what, method, path, body, status, expected) in OTHER_CASES {
        let r = Request::new(method, path, body.as_bytes()).signed(&key, HOST).send(&addr).unwrap();
        expect_api(&r, what, status, &[expected]);
    }
    assert_eq!(host_state(live.host(HOST)), before, "a refused body changed the host");
    assert_eq!(live.deployment_ids(HOST), ["good-1"]);
}
