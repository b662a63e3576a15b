//! Webhook payloads (401/400/413/404 naming the header or problem; no fetch) and D-Bus
//! `Rollback` calls (InvalidArgs/NotFound/AccessDenied naming the argument; no deployment).

use std::time::Duration;

use hostctl_tests::dbus::{restart_on_bus, Policy, TestBus, NAME, NOBODY};
use hostctl_tests::http::{push_payload, Request};
use hostctl_tests::livefleet::LiveFleet;

use super::support::{dir_names, expect_api, host_state, start, text, HOST};

#[test]
fn bad_webhook_payloads_fetch_nothing() {
    let mut live = start();
    // A push-mode agent has no webhook at all.
    let body = push_payload("main", &live.fleet.head());
    let secret = LiveFleet::WEBHOOK_SECRET.as_bytes();
    let r = live.send_webhook(HOST, &Request::webhook(&body, Some(secret), Some("push-mode-1")));
    expect_api(&r, "push mode", 404, &["no webhook: the agent is not in pull mode"]);
    // Pull mode on a branch the remote does not have: every fetch fails, nothing builds.
    let remote = live.fleet.init_bare_remote();
    let mut settings = live.pull_settings(&remote.to_string_lossy(), "600s", "pinned");
    settings.branch = "release".to_owned();
    live.enable_pull_with(HOST, settings);
    let first = live.wait_pull(HOST, "fetched once", Duration::from_secs(20), |p| !p["last_fetch"].is_null());
    std::thread::sleep(Duration::from_millis(1100));

    let release = push_payload("release", &live.fleet.head());
    let big = format!("{{\"ref\":\"refs/heads/release\",\"pad\":\"{}\"}}", "x".repeat(1024 * 1024));
    let cases: Vec<(&str, Request, u16, &str)> = vec![
        ("no signature", Request::webhook(&release, None, Some("w-1")), 401, "missing X-Hub-Signature-256 header"),
        ("wrong secret", Request::webhook(&release, Some(b"guess"), Some("w-2")), 401, "bad webhook signature"),
        (
            "not sha256=",
            Request::new("POST", "/v1/hooks/git", &release).header("x-hub-signature-256", "sha1=00"),
            401,
            "X-Hub-Signature-256 must start with `sha256=`",
        ),
        (
            "signature not hex",
            Request::new("POST", "/v1/hooks/git", &release).header("x-hub-signature-256", "sha256=zz"),
            401,
            "X-Hub-Signature-256 is not hex",
        ),
        ("not JSON", Request::webhook(b"ref=refs/heads/release", Some(secret), Some("w-3")), 400, "not a push payload"),
        ("no ref", Request::webhook(b"{\"after\":\"abc\"}", Some(secret), Some("w-4")), 400, "missing field `ref`"),
        (
            "oversized",
            Request::webhook(big.as_bytes(), Some(secret), Some("w-5")),
            413,
            "larger than this endpoint's limit of 1048576 bytes",
        ),
    ];
    let deployments = dir_names(&live.host(HOST).root.join("state/agent/deployments"));
    for (what, request, status, expected) in cases {
        expect_api(&live.send_webhook(HOST, &request), what, status, &[expected]);
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = live.pull_status(HOST);
    assert_eq!(after["last_fetch"], first["last_fetch"], "a refused webhook triggered a fetch: {after}");
    assert!(!live.host(HOST).agent_log().contains("verified push webhook"), "no webhook was verified");
    assert_eq!(dir_names(&live.host(HOST).root.join("state/agent/deployments")), deployments);
    // A good one does fetch.
    let r = live.send_webhook(HOST, &Request::webhook(&release, Some(secret), Some("w-good")));
    assert_eq!(r.status, 202, "{}", r.body);
    live.wait_pull(HOST, "fetched again", Duration::from_secs(20), |p| p["last_fetch"] != first["last_fetch"]);
}

#[test]
fn bad_dbus_rollback_arguments_are_refused_naming_the_argument() {
    let bus = TestBus::start(Policy::Permissive);
    let mut live = start();
    restart_on_bus(live.host_mut(HOST), bus.address());
    bus.wait_for_owner(NAME, Duration::from_secs(40));
    let method = "org.hostctl.Agent1.Rollback";
    let invalid = "org.freedesktop.DBus.Error.InvalidArgs";
    let not_found = "org.hostctl.Agent1.Error.NotFound";
    let unknown_lock = "cd".repeat(32);
    let cases: Vec<(&str, Option<u32>, String, &str, String)> = vec![
        ("a word", None, "string:abc".into(), invalid, "Rollback target `abc`: expected".into()),
        ("negative", None, "string:-1".into(), invalid, "Rollback target `-1`".into()),
        ("empty", None, "string:".into(), invalid, "Rollback target ``".into()),
        ("too large", None, "string:18446744073709551616".into(), invalid, "`18446744073709551616`".into()),
        ("short lock", None, format!("string:{}", &unknown_lock[..63]), invalid, format!("`{}`", &unknown_lock[..63])),
        // zbus checks the signature before the agent sees the call.
        (
            "not a string",
            None,
            "int32:3".into(),
            "org.freedesktop.zbus.Error",
            "Signature mismatch: got `i`, expected `s`".into(),
        ),
        ("unknown generation", None, "string:99".into(), not_found, "generation 99 of the profile".into()),
        ("unknown lock", None, format!("string:{unknown_lock}"), not_found, format!("with lock {unknown_lock}")),
        ("nothing to go back to", None, "string:previous".into(), not_found, "no confirmed deployment".into()),
        (
            "not root",
            Some(NOBODY),
            "string:abc".into(),
            "org.freedesktop.DBus.Error.AccessDenied",
            "only root (uid 0) may call it; the caller".into(),
        ),
    ];
    let before = host_state(live.host(HOST));
    for (what, uid, arg, name, message) in &cases {
        let out = bus.call_agent(*uid, method, &[arg.as_str()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: {}", text(&out));
        assert!(stderr.contains(name) && stderr.contains(message.as_str()), "{what}: {}", text(&out));
        assert_eq!(host_state(live.host(HOST)), before, "{what}: the host changed");
    }
    let g = bus.call_agent(None, "org.hostctl.Agent1.Generations", &[]);
    assert!(String::from_utf8_lossy(&g.stdout).contains(r#""deployments":[]"#), "{}", text(&g));
}
