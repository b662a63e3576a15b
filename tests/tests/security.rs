//! Security at start and in the logs (docs/SECURITY.md): secrets and state that other users
//! could read are refused with exit 2 and nothing changed; an agent with no trusted key does
//! not start; no secret (fleet key, webhook secret) ever reaches a log, an output or a record;
//! the fleet key changes over by trusting the old and the new key, then only the new.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hostctl_tests::http::{hub_signature, push_payload, Request};
use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::simhost::agent_config_trusting;
use hostctl_tests::{binary, run, write_secret, HostctlRun};

#[expect(clippy::unwrap_used, reason = "test helper: a panic is a test failure")]
fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `hostctl-agent serve --config FILE`, expected to refuse at once.
fn serve(config: &Path) -> HostctlRun {
    run(Command::new(binary("hostctl-agent")).args(["serve", "--config"]).arg(config)).into()
}

const TRUSTED: &str = "fleet-1:11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=";

/// An agent configuration in `dir` with state in `dir/state`, plus `extra` YAML.
#[expect(clippy::unwrap_used, reason = "test helper: a panic is a test failure")]
fn agent_yaml(dir: &Path, extra: &str) -> std::path::PathBuf {
    let yaml = format!(
        "hostname: web1\nlisten: 127.0.0.1:0\ntrusted_keys: [\"{TRUSTED}\"]\nstate_dir: {}\nprofile: {}\n{extra}",
        dir.join("state").display(),
        dir.join("profiles/system").display(),
    );
    let path = dir.join("agent.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Every entry under `dir`, to show a refusal created nothing.
#[expect(clippy::unwrap_used, reason = "test helper: a panic is a test failure")]
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            found.push(path.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    found.sort();
    found
}

#[test]
fn the_agent_refuses_shared_state_and_readable_secrets_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    chmod(&state, 0o755);
    let config = agent_yaml(dir.path(), "");
    let before = tree(dir.path());
    let out = serve(&config);
    out.expect_code(2);
    let shown = state.display();
    assert!(
        out.stderr.contains(&format!("refusing to start: state_dir {shown}: mode 0755 lets other users read it"))
            && out.stderr.contains(&format!("chmod 700 {shown}")),
        "{}",
        out.stderr
    );
    assert_eq!(tree(dir.path()), before, "a refused start created or removed something");
    assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o755, "the mode was changed");
    let checked: HostctlRun =
        run(Command::new(binary("hostctl-agent")).args(["check-config", "--config"]).arg(&config)).into();
    checked.expect_code(2);
    assert!(checked.stderr.contains(&format!("state_dir {shown}: mode 0755")), "{}", checked.stderr);

    // Each secret the configuration names, readable (or writable) by others.
    chmod(&state, 0o700);
    let secret = dir.path().join("hook.secret");
    let ssh_key = dir.path().join("id_ed25519");
    write_secret(&secret, "s3cret");
    write_secret(&ssh_key, "not really a key");
    let remote = dir.path().join("remote.git");
    for (key, file, mode) in [("webhook_secret_file", &secret, 0o644), ("ssh_key_file", &ssh_key, 0o640)] {
        let extra = format!(
            "pull:\n  url: {}\n  branch: main\n  webhook_secret_file: {}\n  ssh_key_file: {}\n",
            remote.display(),
            secret.display(),
            ssh_key.display()
        );
        let config = agent_yaml(dir.path(), &extra);
        chmod(file, mode);
        let before = tree(dir.path());
        let out = serve(&config);
        out.expect_code(2);
        let wanted =
            format!("refusing to start: pull.{key} {}: mode {mode:04o} lets other users read it", file.display());
        assert!(out.stderr.contains(&wanted), "{wanted}\n{}", out.stderr);
        assert!(!out.stderr.contains("s3cret"), "the secret was printed: {}", out.stderr);
        assert_eq!(tree(dir.path()), before, "a refused start created or removed something");
        chmod(file, 0o600);
    }
}

#[test]
fn an_agent_without_a_trusted_key_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    for keys in ["trusted_keys: []\n", ""] {
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, format!("hostname: web1\nstate_dir: {}\n{keys}", dir.path().join("state").display()))
            .unwrap();
        let out = serve(&path);
        out.expect_code(2);
        assert!(out.stderr.contains(&path.display().to_string()), "{}", out.stderr);
        assert!(out.stderr.contains("trusted_keys") || out.stderr.contains("trusted key"), "{}", out.stderr);
        assert!(!dir.path().join("state").exists(), "a refused start created its state directory");
    }
}

#[test]
fn hostctl_refuses_a_readable_fleet_key_before_contacting_any_host() {
    let live = LiveFleet::start(&["web1"]);
    chmod(&live.key_file, 0o644);
    let generations = live.host("web1").profile_generations();
    let out = live.hostctl(&["apply"]);
    out.expect_code(2);
    let wanted = format!("signing key file {}: mode 0644 lets other users read it", live.key_file.display());
    assert!(out.stderr.contains(&wanted) && out.stderr.contains("chmod 600"), "{}", out.stderr);
    chmod(&live.key_file, 0o600);
    assert!(live.deployments("web1").is_empty(), "a host was contacted");
    assert_eq!(live.host("web1").profile_generations(), generations);
    live.hostctl(&["apply"]).expect_code(0);
}

/// The base64 of the fleet's secret key (seed and public half), as the key file holds it.
#[expect(clippy::unwrap_used, reason = "test helper: a panic is a test failure")]
fn secret_material(live: &LiveFleet) -> String {
    let text = std::fs::read_to_string(&live.key_file).unwrap();
    text.trim().split_once(':').unwrap().1.to_owned()
}

#[test]
fn no_secret_reaches_a_log_an_output_or_a_record() {
    // Debug logging everywhere: a secret that leaks only at debug level still leaks.
    std::env::set_var("RUST_LOG", "debug");
    let mut live = LiveFleet::start(&["web1"]);
    let mut outputs = Vec::new();
    for args in [&["-vv", "apply"][..], &["-vv", "status"], &["-vv", "--json", "status"], &["-vv", "history", "web1"]] {
        let out = live.hostctl(args);
        out.expect_code(0);
        outputs.push(format!("{}\n{}", out.stdout, out.stderr));
    }
    live.enable_pull("web1", "1h", "pinned");
    let head = hostctl_tests::git(&live.fleet.dir, &["rev-parse", "HEAD"]).trim().to_owned();
    assert_eq!(live.push_webhook("web1", "main", &head).status, 202);
    // A wrong signature, and one made with the secret plus a newline (what a careless
    // `echo` would give): both refused, and neither the secret nor its HMAC is echoed.
    let body = push_payload("main", &head);
    let wrong = Request::webhook(&body, Some(b"not-the-secret"), Some("d-wrong"));
    assert_eq!(live.send_webhook("web1", &wrong).status, 401);
    let near = format!("{}\n", LiveFleet::WEBHOOK_SECRET);
    let signature = hub_signature(near.as_bytes(), &body);
    let near = Request::webhook(&body, None, Some("d-near")).header("x-hub-signature-256", &signature);
    let refused = live.send_webhook("web1", &near);
    assert_eq!(refused.status, 401);
    live.wait_fetched_commit("web1", &head, Duration::from_secs(30));
    outputs.push(live.agent_json("web1", "GET", "/v1/status", b"").to_string());
    outputs.push(live.agent_json("web1", "GET", "/v1/generations", b"").to_string());
    outputs.push(refused.body.clone());

    let host = live.host("web1");
    let mut places = vec![("the agent's log".to_owned(), host.agent_log())];
    places.extend(outputs.into_iter().enumerate().map(|(i, text)| (format!("output {i}"), text)));
    let records = host.root.join("state/agent");
    for file in tree(&records) {
        let path = records.join(&file);
        if path.is_file() {
            places.push((file, String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned()));
        }
    }
    assert!(places.iter().any(|(_, text)| text.contains("DEBUG")), "debug logging was not on");
    let key = secret_material(&live);
    for (place, text) in &places {
        for (name, secret) in [("fleet key", key.as_str()), ("webhook secret", LiveFleet::WEBHOOK_SECRET)] {
            assert!(!text.contains(secret), "the {name} appears in {place}:\n{text}");
        }
        assert!(!text.contains(&signature), "a webhook signature appears in {place}");
    }
}

/// `hostctl --key KEY --json status`: the run and web1's entry.
fn status_with(live: &LiveFleet, key: &Path) -> (HostctlRun, serde_json::Value) {
    let key = key.to_string_lossy();
    let out = live.fleet.hostctl(&["--key", &key, "--json", "status"]);
    let host = serde_json::from_str::<serde_json::Value>(&out.stdout).map(|v| v["hosts"]["web1"].clone());
    (out, host.unwrap_or_default())
}

/// Changing the fleet key (docs/SECURITY.md, "Rotating the fleet key"): an agent that
/// trusts the old and the new key takes requests signed with either; once the old key is
/// removed from `trusted_keys` and the agent restarted, requests signed with it are
/// refused (401, nothing done) and the new key keeps working, deployments included.
#[test]
fn the_fleet_key_changes_over_by_trusting_both_then_removing_the_old() {
    let mut live = LiveFleet::start(&["web1"]);
    let (old_file, old_public) = (live.key_file.clone(), live.public_key.clone());
    let (new_file, new_public) = live.new_key("hostctl-test-2");
    let restart_trusting = |live: &mut LiveFleet, keys: &[&str]| {
        let host = live.host_mut("web1");
        let yaml = agent_config_trusting(host, keys);
        host.stop_agent();
        host.start_agent(&yaml);
    };

    restart_trusting(&mut live, &[&old_public, &new_public]);
    for key in [&old_file, &new_file] {
        let (out, web1) = status_with(&live, key);
        out.expect_code(0);
        assert_eq!(web1["result"], "ok", "signed with {}: {web1}", key.display());
    }

    restart_trusting(&mut live, &[&new_public]);
    // The operator's signing key is the new one from now on (the harness's own requests too).
    live.key_file = new_file.clone();
    let generations = live.host("web1").profile_generations();
    let (out, web1) = status_with(&live, &old_file);
    out.expect_code(1);
    assert_eq!(web1["result"], "failed", "{web1}");
    let error = web1["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("HTTP 401") && error.contains("key `hostctl-test` is not among the agent's trusted keys"),
        "{error}"
    );
    let refused = live.fleet.hostctl(&["--key", &old_file.to_string_lossy(), "--json", "apply"]);
    refused.expect_code(1);
    assert_eq!(refused.json()["hosts"]["web1"]["step"], "connect", "{}", refused.stdout);
    assert!(live.deployments("web1").is_empty(), "a request signed with the old key did something");
    assert_eq!(live.host("web1").profile_generations(), generations);

    let (out, web1) = status_with(&live, &new_file);
    out.expect_code(0);
    assert_eq!(web1["result"], "ok", "{web1}");
    let applied = live.hostctl(&["--json", "apply"]);
    applied.expect_code(0);
    assert_eq!(applied.json()["hosts"]["web1"]["result"], "activated", "{}", applied.stdout);
}
