//! Pull mode with a signature policy (issue 19): an agent whose `pull.commits` requires
//! signatures by an `allowed_signers` key builds a correctly signed commit (and records
//! its signer), and refuses an unsigned one, and a signed one on top of it, before any
//! evaluation: journaled as a refused pull (history), shown in status and `/metrics`,
//! the host keeps what it runs, and a webhook for it starts no `nix` evaluation.
//! Real git, real ssh-keygen, real Nix, the real binaries.

use std::time::Duration;

use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::signed_git::{commit, Signing, SshKey};
use serde_json::Value;

const HOST: &str = "web1";

/// Changes web1's motd and commits it as `signing` says; returns the commit.
fn push_motd(live: &LiveFleet, motd: &str, signing: Signing<'_>) -> String {
    live.set_motd(HOST, motd);
    let id = commit(&live.fleet.dir, signing, motd);
    live.fleet.push();
    id
}

#[expect(clippy::unwrap_used, reason = "test helper: a panic is a test failure")]
fn history(live: &LiveFleet) -> Vec<Value> {
    let run = live.hostctl(&["--json", "history", HOST]);
    run.expect_code(0);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    v["hosts"][HOST]["deployments"].as_array().cloned().unwrap_or_default()
}

#[test]
fn unsigned_commits_are_refused_before_evaluation_and_signed_ones_deploy() {
    let mut live = LiveFleet::start(&[HOST]);
    live.hostctl(&["--json", "apply"]).expect_code(0);
    let since = live.fleet.head();
    let alice = SshKey::generate(live.fleet.tmp.path(), "alice");
    let signers = live.fleet.tmp.path().join("allowed_signers");
    std::fs::write(&signers, alice.allowed_line("alice@example.com", "namespaces=\"git\"")).unwrap();
    let (path, evaluated) = hostctl_tests::watching_nix(live.fleet.tmp.path());
    live.host_mut(HOST).path = Some(path);
    let remote = live.fleet.init_bare_remote();
    let mut settings = live.pull_settings(&remote.to_string_lossy(), "300s", "pinned");
    settings.commits = Some(format!(
        "    require_signature: true\n    allowed_signers: {}\n    since: {since}\n",
        serde_json::Value::String(signers.to_string_lossy().into_owned())
    ));
    live.enable_pull_with(HOST, settings);

    // Signed by an allowed key: built, activated, signer recorded.
    let signed = push_motd(&live, "signed by alice", Signing::Ssh(&alice));
    live.push_webhook(HOST, "main", &signed);
    live.wait_applied_commit(HOST, &signed, Duration::from_secs(60));
    let running = live.host(HOST).current_system();
    let newest = &history(&live)[0];
    assert_eq!(newest["rev"], signed.as_str());
    assert_eq!(newest["signer"]["name"], "alice@example.com", "{newest}");
    assert_eq!(newest["signer"]["kind"], "ssh");
    let human = live.hostctl(&["history", HOST]);
    assert!(human.stdout.contains("signed by alice@example.com"), "{}", human.stdout);

    // Unsigned: refused, journaled, shown; nothing evaluated, the host runs what it ran.
    let evaluations = std::fs::read_to_string(&evaluated).unwrap_or_default();
    let unsigned = push_motd(&live, "unsigned", Signing::Unsigned);
    live.push_webhook(HOST, "main", &unsigned);
    let pull =
        live.wait_pull(HOST, "refused", Duration::from_secs(30), |p| p["refused"]["commit"] == unsigned.as_str());
    assert_eq!(pull["refused"]["reason"], "unsigned", "{pull}");
    assert!(pull["last_error"].as_str().unwrap().contains("not signed"), "{pull}");
    assert_eq!(pull["applied_commit"], signed.as_str());
    let newest = &history(&live)[0];
    assert_eq!((&newest["rev"], &newest["state"]), (&Value::from(unsigned.as_str()), &Value::from("failed")));
    assert_eq!(newest["end_reason"], "commit-refused", "{newest}");
    assert_eq!(newest["commit_refusal"]["reason"], "unsigned");
    let metrics = live.agent_request(HOST, "GET", "/metrics", b"").unwrap().body;
    assert!(
        metrics.contains(&format!("hostctl_pull_commit_refused_info{{commit=\"{unsigned}\",reason=\"unsigned\"}} 1")),
        "{metrics}"
    );
    assert!(metrics.contains("hostctl_pull_last_verify_success 0"), "{metrics}");

    // Signed on top of the unsigned one: the chain since `since` is broken.
    let on_top = push_motd(&live, "signed on top", Signing::Ssh(&alice));
    live.push_webhook(HOST, "main", &on_top);
    let pull = live.wait_pull(HOST, "refused", Duration::from_secs(30), |p| {
        p["refused"]["commit"] == unsigned.as_str()
            && p["fetched_commit"] == on_top.as_str()
            && p["last_error"].as_str().is_some_and(|e| e.contains("chain broken"))
    });
    assert_eq!(pull["refused"]["reason"], "chain-broken", "{pull}");
    let status = live.hostctl(&["status", "--no-drift"]);
    assert!(status.stdout.contains("refused"), "{}", status.stdout);
    assert_eq!(std::fs::read_to_string(&evaluated).unwrap_or_default(), evaluations, "a refused commit was evaluated");
    assert_eq!(live.host(HOST).current_system(), running, "the host kept what it ran");
}
