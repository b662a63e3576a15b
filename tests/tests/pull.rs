//! Pull mode (GitOps, issue 5): an agent on a simulated host tracks `main` of a bare git
//! remote on disk, fetches on its poll interval and at once on a verified webhook,
//! builds `nixosConfigurations.web1` at the new commit in its own store and activates
//! it; lock changes are held while `pinned`. Real git, real Nix, the real binaries.
//!
//! Every test first applies the fleet in push mode (`hostctl apply`: the host is pinned
//! to the example's lock and runs HEAD), then restarts the agent with a `pull:` block
//! (state kept) and waits until it has fetched HEAD.
//!
//! The hosts' stores are never seeded with the example's relative `path:` inputs: on
//! Nix 2.8 the agent fetches them itself (`agent/src/pull/apply.rs`), so every pulled
//! commit here is evaluated on a store that has not seen its inputs before.

use std::time::{Duration, Instant};

use hostctl_tests::http::{push_payload, Request};
use hostctl_tests::livefleet::LiveFleet;
use serde_json::Value;

const HOST: &str = "web1";

/// Building the example on a host takes a few seconds; generous for loaded machines.
const APPLY_TIMEOUT: Duration = Duration::from_secs(40);

/// One pull test at a time in this process: each simulated host has its own
/// `/nix/var/nix/userpool`, so Nix builds in two hosts (or a host and the root store) may
/// take the same `nixbld` uid, and Nix kills every process of its build user around a
/// build: a concurrent build then dies of signal 9. Pull mode builds inside the host.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A one-host fleet in pull mode, settled: HEAD applied (by push) and fetched (by pull).
fn pull_fleet(interval: &str, lock: &str) -> LiveFleet {
    pull_fleet_of(&[HOST], interval, lock)
}

/// Hosts `names` applied by push; only web1 is then switched to pull mode.
fn pull_fleet_of(names: &[&str], interval: &str, lock: &str) -> LiveFleet {
    let mut live = LiveFleet::start(names);
    live.hostctl(&["--json", "apply"]).expect_code(0);
    live.enable_pull(HOST, interval, lock);
    wait_settled(&live);
    live
}

/// Waits until web1's agent has fetched the remote's HEAD (an agent may or may not fetch
/// at start; with a long interval, a webhook makes it).
fn wait_settled(live: &LiveFleet) {
    let head = live.fleet.head();
    let deadline = Instant::now() + Duration::from_secs(5);
    while live.pull_status(HOST)["fetched_commit"] != head.as_str() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if live.pull_status(HOST)["fetched_commit"] != head.as_str() {
        live.push_webhook(HOST, "main", &head);
    }
    live.wait_fetched_commit(HOST, &head, Duration::from_secs(20));
}

/// `current-system` as the example's switch script last wrote it.
fn running(live: &LiveFleet) -> String {
    live.host(HOST).current_system()
}

/// Changes web1's motd, commits and pushes; returns (commit, its toplevel).
fn push_motd(live: &LiveFleet, motd: &str) -> (String, String) {
    live.change_host(HOST, motd);
    let toplevel = live.fleet.toplevel(HOST);
    live.fleet.push();
    (live.fleet.head(), toplevel)
}

#[test]
fn a_config_commit_is_applied_within_one_poll_interval() {
    let _serial = serial();
    let live = pull_fleet("2s", "pinned");
    let head = live.fleet.head();
    let before = running(&live);
    let p = live.pull_status(HOST);
    assert_eq!(p["url"], live.fleet.bare_remote().to_string_lossy().as_ref(), "{p}");
    assert_eq!(p["branch"], "main", "{p}");
    assert_eq!(p["lock_policy"], "pinned", "{p}");
    assert_eq!(p["applied_commit"], head.as_str(), "the push-applied commit is the applied one: {p}");
    assert_eq!(p["pending_commit"], Value::Null, "{p}");

    let (commit, toplevel) = push_motd(&live, "web1 pulled by polling");
    assert_ne!(toplevel, before);
    let pushed = Instant::now();
    live.wait_fetched_commit(HOST, &commit, Duration::from_secs(2 + 3));
    let fetched_after = pushed.elapsed();
    let p = live.wait_applied_commit(HOST, &commit, APPLY_TIMEOUT);
    eprintln!("poll: fetched after {fetched_after:?}, applied after {:?}", pushed.elapsed());
    assert_eq!(running(&live), toplevel, "{p}");
    assert!(live.switch_log(HOST).contains(&format!("switch {HOST} {toplevel} exit=0")), "{}", live.switch_log(HOST));
    assert_eq!(p["pending_commit"], Value::Null, "{p}");
    assert_eq!(p["last_error"], Value::Null, "{p}");
    let status = live.agent_status(HOST);
    assert_eq!(status["toplevel"], toplevel.as_str(), "{status}");
    assert_eq!(status["rev"], commit.as_str(), "{status}");
}

#[test]
fn a_webhook_triggers_the_fetch_at_once() {
    let _serial = serial();
    let live = pull_fleet("300s", "pinned");
    let (commit, toplevel) = push_motd(&live, "web1 pulled on a webhook");
    let sent = Instant::now();
    let r = live.push_webhook(HOST, "main", &commit);
    assert_eq!(r.status, 202, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["accepted"], true, "{v}");
    live.wait_fetched_commit(HOST, &commit, Duration::from_secs(3));
    let fetched_after = sent.elapsed();
    live.wait_applied_commit(HOST, &commit, Duration::from_secs(20));
    eprintln!("webhook: fetched after {fetched_after:?}, applied after {:?}", sent.elapsed());
    assert_eq!(running(&live), toplevel);
}

#[test]
fn a_lock_change_is_pending_while_pinned_until_hostctl_apply() {
    let _serial = serial();
    // web2 stays in push mode, for `hostctl status`.
    let live = pull_fleet_of(&[HOST, "web2"], "2s", "pinned");
    let old_commit = live.fleet.head();
    let before = running(&live);
    live.fleet.bump_nixpkgs("24.11-example");
    live.fleet.commit("nixpkgs: 24.11");
    let toplevel = live.fleet.toplevel(HOST);
    live.fleet.push();
    let commit = live.fleet.head();

    let p = live.wait_pending_commit(HOST, &commit, Duration::from_secs(20));
    assert!(p["pending_lock"].is_string(), "pending_lock is set: {p}");
    assert_eq!(p["applied_commit"], old_commit.as_str(), "{p}");
    assert_eq!(running(&live), before, "the running system is unchanged");
    // Still held after a few more polls.
    std::thread::sleep(Duration::from_secs(5));
    let p = live.pull_status(HOST);
    assert_eq!(p["pending_commit"], commit.as_str(), "{p}");
    assert_eq!(running(&live), before, "still unchanged after more polls");
    assert!(!live.switch_log(HOST).contains(&toplevel), "{}", live.switch_log(HOST));
    status_shows_the_pending_lock(&live, &p, &old_commit);

    // The operator approves: `hostctl apply` at that commit pins the new lock.
    live.hostctl(&["--json", "apply"]).expect_code(0);
    let p = live.wait_pull(HOST, "pending cleared and the lock change applied", APPLY_TIMEOUT, |p| {
        p["pending_commit"].is_null() && p["applied_commit"] == commit.as_str()
    });
    assert_eq!(p["pending_lock"], Value::Null, "{p}");
    assert_eq!(running(&live), toplevel);
    // And the next config-only commit on the new lock is applied by the agent.
    let (next, next_toplevel) = push_motd(&live, "web1 on the new lock");
    live.wait_applied_commit(HOST, &next, APPLY_TIMEOUT);
    assert_eq!(running(&live), next_toplevel);
}

/// `hostctl status` (JSON and human) shows web1's GitOps state with the pending lock
/// change `pull` reports, and web2 in push mode.
#[expect(clippy::unwrap_used, reason = "test helper: a panic is a test failure")]
fn status_shows_the_pending_lock(live: &LiveFleet, pull: &Value, applied: &str) {
    let run = live.hostctl(&["--json", "status"]);
    run.expect_code(0);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    let web1 = &v["hosts"][HOST];
    assert_eq!(web1["mode"], "pull", "{web1}");
    for key in ["url", "branch", "lock_policy", "fetched_commit", "applied_commit", "pending_commit", "pending_lock"] {
        assert_eq!(web1["pull"][key], pull[key], "{key}: {web1}");
    }
    assert_eq!(web1["pull"]["applied_commit"], applied, "{web1}");
    assert_eq!(v["hosts"]["web2"]["mode"], "push", "{v}");
    assert_eq!(v["hosts"]["web2"]["pull"], Value::Null, "{v}");

    let human = live.hostctl(&["status"]);
    human.expect_code(0);
    eprintln!("hostctl status:\n{}", human.stdout);
    let line = |host: &str| human.stdout.lines().find(|l| l.starts_with(host)).unwrap_or_default().to_owned();
    assert!(line("web1").ends_with(", mode pull"), "{}", human.stdout);
    assert!(line("web2").ends_with(", mode push"), "{}", human.stdout);
    let short = |key: &str| pull[key].as_str().unwrap_or_default().chars().take(12).collect::<String>();
    let tracking = format!(
        "  pull: main of {} (lock pinned): fetched {}, applied {}, last fetch ",
        pull["url"].as_str().unwrap_or_default(),
        short("fetched_commit"),
        short("applied_commit")
    );
    assert!(human.stdout.contains(&tracking), "wanted {tracking:?} in:\n{}", human.stdout);
    let pending =
        format!("  pull: pending lock change to {} at commit {}", short("pending_lock"), short("pending_commit"));
    assert!(human.stdout.contains(&pending), "wanted {pending:?} in:\n{}", human.stdout);
}

#[test]
fn a_lock_change_is_applied_with_lock_follow() {
    let _serial = serial();
    let live = pull_fleet("2s", "follow");
    assert_eq!(live.pull_status(HOST)["lock_policy"], "follow");
    live.fleet.bump_nixpkgs("24.11-example");
    live.fleet.commit("nixpkgs: 24.11");
    let toplevel = live.fleet.toplevel(HOST);
    live.fleet.push();
    let commit = live.fleet.head();
    let p = live.wait_applied_commit(HOST, &commit, APPLY_TIMEOUT);
    assert_eq!(p["pending_commit"], Value::Null, "{p}");
    assert_eq!(running(&live), toplevel);
    let status = live.agent_status(HOST);
    assert_eq!(status["pinned_lock"], status["lock"], "follow re-pins to the applied lock: {status}");
}

#[test]
fn bad_or_foreign_webhooks_are_rejected_or_ignored_and_fetch_nothing() {
    let _serial = serial();
    let live = pull_fleet("300s", "pinned");
    let before = live.pull_status(HOST);
    let (commit, _) = push_motd(&live, "web1 behind webhooks");
    let body = push_payload("main", &commit);
    let secret = LiveFleet::WEBHOOK_SECRET.as_bytes();

    let bad = live.send_webhook(HOST, &Request::webhook(&body, Some(b"not-the-secret"), Some("bad-hmac-1")));
    assert_eq!(bad.status, 401, "bad HMAC: {}", bad.body);
    assert!(bad.body.contains("bad webhook signature"), "{}", bad.body);
    let unsigned = live.send_webhook(HOST, &Request::webhook(&body, None, Some("unsigned-1")));
    assert_eq!(unsigned.status, 401, "missing signature: {}", unsigned.body);
    assert!(unsigned.body.contains("missing X-Hub-Signature-256 header"), "{}", unsigned.body);
    // A valid signature of another body.
    let mut tampered = Request::webhook(&push_payload("main", "0000"), Some(secret), Some("tampered-1"));
    tampered.body = body.clone();
    let tampered = live.send_webhook(HOST, &tampered);
    assert_eq!(tampered.status, 401, "signature of another body: {}", tampered.body);
    assert!(tampered.body.contains("bad webhook signature"), "{}", tampered.body);
    let malformed = live.send_webhook(
        HOST,
        &Request::new("POST", "/v1/hooks/git", &body)
            .header("x-hub-signature-256", "sha256=zz")
            .header("x-github-delivery", "malformed-1"),
    );
    assert_eq!(malformed.status, 401, "malformed signature: {}", malformed.body);
    assert!(malformed.body.contains("X-Hub-Signature-256 is not hex"), "{}", malformed.body);
    let other = live
        .send_webhook(HOST, &Request::webhook(&push_payload("feature", &commit), Some(secret), Some("other-branch-1")));
    assert_eq!(other.status, 200, "other branch: {}", other.body);
    let v: Value = serde_json::from_str(&other.body).unwrap();
    assert_eq!(v["accepted"], false, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("`refs/heads/feature` is not the tracked branch `main`"), "{v}");

    std::thread::sleep(Duration::from_secs(3));
    let after = live.pull_status(HOST);
    assert_eq!(after["fetched_commit"], before["fetched_commit"], "nothing fetched: {after}");
    assert_eq!(after["last_fetch"], before["last_fetch"], "no fetch attempted: {after}");

    // A good delivery fetches; the same delivery again is ignored.
    let good = live.send_webhook(HOST, &Request::webhook(&body, Some(secret), Some("delivery-once")));
    assert_eq!(good.status, 202, "{}", good.body);
    live.wait_fetched_commit(HOST, &commit, Duration::from_secs(5));
    let (next, _) = push_motd(&live, "web1 after a replay");
    let replay = live.send_webhook(HOST, &Request::webhook(&body, Some(secret), Some("delivery-once")));
    assert_eq!(replay.status, 200, "replayed delivery: {}", replay.body);
    let v: Value = serde_json::from_str(&replay.body).unwrap();
    assert_eq!(v["accepted"], false, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("delivery `delivery-once` was already received"), "{v}");
    std::thread::sleep(Duration::from_secs(3));
    let p = live.pull_status(HOST);
    assert_eq!(p["fetched_commit"], commit.as_str(), "the replay fetched nothing (next is {next}): {p}");

    // A Gitea delivery id is honoured too (a fresh one triggers a fetch).
    let gitea = Request::new("POST", "/v1/hooks/git", &body)
        .header("content-type", "application/json")
        .header("x-gitea-event", "push")
        .header("x-hub-signature-256", &hostctl_tests::http::hub_signature(secret, &body))
        .header("x-gitea-delivery", "gitea-1");
    let r = live.send_webhook(HOST, &gitea);
    assert_eq!(r.status, 202, "gitea delivery: {}", r.body);
    live.wait_fetched_commit(HOST, &next, Duration::from_secs(5));
}

#[test]
fn a_force_push_is_refused_and_reported() {
    let _serial = serial();
    let live = pull_fleet("2s", "pinned");
    let applied = live.fleet.head();
    let before = running(&live);
    // An unrelated history: an orphan commit of a valid fleet with another motd.
    hostctl_tests::git(&live.fleet.dir, &["checkout", "-q", "--orphan", "rewritten"]);
    live.change_host(HOST, "web1 from a rewritten history");
    let rewritten_toplevel = live.fleet.toplevel(HOST);
    live.fleet.force_push("rewritten");
    let rewritten = live.fleet.head();

    let p = live.wait_pull(HOST, "reporting the force push", Duration::from_secs(15), |p| p["last_error"].is_string());
    eprintln!("force push reported as: {}", p["last_error"]);
    let error = p["last_error"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        ["force", "fast-forward", "fast forward", "ancestor", "history"].iter().any(|w| error.contains(w)),
        "the error names the force push: {p}"
    );
    std::thread::sleep(Duration::from_secs(5));
    let p = live.pull_status(HOST);
    assert_eq!(p["applied_commit"], applied.as_str(), "{p}");
    assert_ne!(p["applied_commit"], rewritten.as_str(), "{p}");
    assert_eq!(running(&live), before, "the running system is unchanged");
    assert!(!live.switch_log(HOST).contains(&rewritten_toplevel), "{}", live.switch_log(HOST));
}

#[test]
fn an_eval_error_fails_and_the_next_good_commit_applies() {
    let _serial = serial();
    let mut live = pull_fleet("2s", "pinned");
    let applied = live.fleet.head();
    let before = running(&live);
    let generations = live.generations(HOST).len();
    let good = live.fleet.read("hosts/web1.nix");
    live.fleet.write("hosts/web1.nix", &good.replace("[ \"nginx\" ]", "[ \"redis\" ]"));
    live.fleet.commit("web1: an unknown role");
    live.fleet.push();
    let broken = live.fleet.head();

    let p = live.wait_pull(HOST, "reporting the eval error", APPLY_TIMEOUT, |p| {
        p["fetched_commit"] == broken.as_str() && p["last_error"].is_string()
    });
    eprintln!("eval error reported as: {}", p["last_error"]);
    let error = p["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("redis") || error.contains("unknown role"), "names the cause: {p}");
    assert_eq!(p["applied_commit"], applied.as_str(), "{p}");
    assert_eq!(running(&live), before, "the running system is unchanged");

    // Journaled as a failed deployment of that commit: history shows it with the error.
    let failed = wait_failed_deployment(&live, &broken);
    assert_eq!(failed["error"], error.as_str(), "{failed}");
    assert_eq!(failed["toplevel"], before.as_str(), "an eval failure names the system that kept running: {failed}");
    assert_eq!((failed["generation"].clone(), failed["exit_code"].clone()), (Value::Null, Value::Null), "{failed}");
    assert_eq!(live.generations(HOST).len(), generations, "no new generation");
    let history = live.hostctl(&["--json", "history", HOST]);
    history.expect_code(0);
    let v: Value = serde_json::from_str(&history.stdout).unwrap();
    let listed = &v["hosts"][HOST]["deployments"][0];
    assert_eq!((listed["rev"].as_str(), listed["state"].as_str()), (Some(broken.as_str()), Some("failed")), "{v}");
    let human = live.hostctl(&["history", HOST]);
    let first_line = error.lines().next().unwrap_or_default();
    assert!(human.stdout.contains(&format!("  error: {first_line}")), "{}", human.stdout);
    assert!(human.stdout.contains(&broken[..12]), "{}", human.stdout);

    // A restarted agent remembers the failed commit: reported, not built again.
    let builds = |live: &LiveFleet| building_lines(live, &broken);
    assert_eq!(builds(&live), 1, "{}", live.host(HOST).agent_log());
    live.host_mut(HOST).stop_agent();
    live.host_mut(HOST).restart_agent();
    let p = live.wait_pull(HOST, "reporting the remembered failure", Duration::from_secs(10), |p| {
        p["fetched_commit"] == broken.as_str() && p["last_error"].is_string()
    });
    assert_eq!(p["last_error"], error.as_str(), "{p}");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(builds(&live), 1, "the failed commit was built again after the restart");
    let failures = live.deployments(HOST).iter().filter(|d| d["rev"] == broken.as_str()).count();
    assert_eq!(failures, 1, "journaled once");

    live.fleet.write("hosts/web1.nix", &good);
    let (fixed, toplevel) = push_motd(&live, "web1 fixed");
    let p = live.wait_applied_commit(HOST, &fixed, APPLY_TIMEOUT);
    eprintln!("after the good commit: {p}");
    assert_eq!(p["last_error"], Value::Null, "{p}");
    assert_eq!(running(&live), toplevel);
}

/// Waits for the agent's failed deployment of `commit`.
#[expect(clippy::panic, reason = "test helper: a panic is a test failure")]
fn wait_failed_deployment(live: &LiveFleet, commit: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = live.deployments(HOST).into_iter().find(|d| d["rev"] == commit && d["state"] == "failed");
        match found {
            Some(d) => return d,
            None if Instant::now() > deadline => {
                panic!("no failed deployment of {commit}: {:?}", live.deployments(HOST))
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// How often the agents of web1 started building `commit` (their log survives restarts).
fn building_lines(live: &LiveFleet, commit: &str) -> usize {
    live.host(HOST).agent_log().lines().filter(|l| l.contains("pull: building") && l.contains(commit)).count()
}

#[test]
fn of_two_quick_pushes_only_the_newest_is_activated() {
    let _serial = serial();
    let live = pull_fleet("300s", "pinned");
    let (middle, middle_toplevel) = push_motd(&live, "web1 middle");
    assert_eq!(live.push_webhook(HOST, "main", &middle).status, 202);
    std::thread::sleep(Duration::from_millis(300));
    let (newest, newest_toplevel) = push_motd(&live, "web1 newest");
    assert_eq!(live.push_webhook(HOST, "main", &newest).status, 202);
    live.wait_applied_commit(HOST, &newest, APPLY_TIMEOUT);
    // Give a discarded build time to (wrongly) activate after the newest.
    std::thread::sleep(Duration::from_secs(5));
    let p = live.pull_status(HOST);
    assert_eq!(p["applied_commit"], newest.as_str(), "{p}");
    assert_eq!(running(&live), newest_toplevel);
    let log = live.switch_log(HOST);
    let lines: Vec<&str> = log.lines().collect();
    let last_newest = lines.iter().rposition(|l| l.contains(&newest_toplevel));
    let last_middle = lines.iter().rposition(|l| l.contains(&middle_toplevel));
    assert!(last_newest.is_some(), "{log}");
    assert!(last_middle.is_none_or(|m| Some(m) < last_newest), "middle activated after the newest:\n{log}");
    eprintln!("middle activated at all: {}", last_middle.is_some());
}

/// The newer commit arrives while the older one is still being evaluated/built (every
/// Nix operation of the host that registers a store path is held, as if its garbage
/// collector ran): the older result is cancelled or discarded, never activated.
///
/// While the hold is on, the held Nix process may keep Nix's shared fetcher cache
/// (`~/.cache/nix`) locked, so nothing here runs Nix until it is released: both commits
/// and their toplevels are made first.
#[test]
fn a_commit_arriving_during_a_build_supersedes_it() {
    let _serial = serial();
    let live = pull_fleet("300s", "pinned");
    live.change_host(HOST, "web1 held in its build");
    let (middle, middle_toplevel) = (live.fleet.head(), live.fleet.toplevel(HOST));
    live.change_host(HOST, "web1 newest after a held build");
    let (newest, newest_toplevel) = (live.fleet.head(), live.fleet.toplevel(HOST));
    let push = |commit: &str| hostctl_tests::git(&live.fleet.dir, &["push", "-q", "origin", &format!("{commit}:main")]);

    let mut hold = hostctl_tests::simhost::GcHold::hold(live.host(HOST));
    push(&middle);
    assert_eq!(live.push_webhook(HOST, "main", &middle).status, 202);
    hold.wait_for_waiter();
    push(&newest);
    assert_eq!(live.push_webhook(HOST, "main", &newest).status, 202);
    live.wait_fetched_commit(HOST, &newest, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    hold.release();
    live.wait_applied_commit(HOST, &newest, APPLY_TIMEOUT);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(live.pull_status(HOST)["applied_commit"], newest.as_str());
    assert_eq!(running(&live), newest_toplevel);
    let log = live.switch_log(HOST);
    assert!(!log.contains(&middle_toplevel), "the superseded commit was activated:\n{log}");
}
