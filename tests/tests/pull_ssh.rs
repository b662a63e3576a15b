//! Pull mode over ssh: a real sshd (OpenSSH, `tests/src/sshd.rs`) inside the simulated
//! host serves the bare remote on its loopback; the agent fetches with libgit2/libssh2
//! using `pull.ssh_key_file`, and checks the server's host key against
//! `pull.ssh_known_hosts_file` (read at every fetch, so a test edits it between polls).
//! Real git, real Nix, the real binaries; the configuration check runs the real
//! `hostctl-agent check-config`.

use std::path::Path;
use std::time::Duration;

use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::sshd::Sshd;
use serde_json::Value;

const HOST: &str = "web1";

/// Building the example on a host takes a few seconds; generous for loaded machines.
const APPLY_TIMEOUT: Duration = Duration::from_secs(40);

/// `hostctl-agent check-config` on `yaml`: (exit code, stderr).
#[expect(clippy::unwrap_used, reason = "test helper: a panic is a test failure")]
fn check_config(dir: &Path, yaml: &str) -> (Option<i32>, String) {
    let file = dir.join("agent.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = std::process::Command::new(hostctl_tests::binary("hostctl-agent"))
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn check_config_wants_a_key_file_for_ssh_urls() {
    let dir = tempfile::tempdir().unwrap();
    let base = "hostname: web1\ntrusted_keys: [\"fleet-1:11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=\"]\npull:\n";
    for url in ["ssh://git@git.example.com:2222/infra.git", "git@git.example.com:infra.git"] {
        let (code, stderr) = check_config(dir.path(), &format!("{base}  url: {url}\n"));
        assert_eq!(code, Some(2), "{stderr}");
        let file = dir.path().join("agent.yaml");
        let want = format!("error: {}: pull.ssh_key_file: required with the ssh URL `{url}`", file.display());
        assert!(stderr.starts_with(&want), "{stderr}\nwanted: {want}");
    }
    let (code, stderr) = check_config(dir.path(), &format!("{base}  url: ssh://git.example.com/infra.git\n"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("pull.url: invalid git URL") && stderr.contains("must name the user"), "{stderr}");
    let ok = format!("{base}  url: git@git.example.com:infra.git\n  ssh_key_file: /run/keys/pull\n");
    let (code, stderr) = check_config(dir.path(), &ok);
    assert_eq!(code, Some(0), "{stderr}");
}

/// Waits until `pull.last_error` contains every one of `words`; returns the `pull` object.
fn wait_error(live: &LiveFleet, words: &[&str]) -> Value {
    let what = format!("reporting an error with {words:?}");
    live.wait_pull(HOST, &what, Duration::from_secs(15), |p| {
        let error = p["last_error"].as_str().unwrap_or_default();
        words.iter().all(|w| error.contains(w))
    })
}

#[expect(clippy::unwrap_used, reason = "test helper: a panic is a test failure")]
fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// scp-like URL on port 22 with the server's key known: HEAD is fetched, a new commit
/// applied. Then `ssh://…:2222/…`: unknown host key (only port 22's name is listed),
/// then a different key listed for `[127.0.0.1]:2222`, then a refused client key: each
/// refused with an error naming host and file, nothing fetched; with the right key
/// listed and authorized, the next commit is fetched and applied.
#[test]
fn an_agent_pulls_over_ssh_and_checks_the_host_key() {
    let mut live = LiveFleet::start(&[HOST]);
    live.hostctl(&["--json", "apply"]).expect_code(0);
    let remote = live.fleet.init_bare_remote();
    let sshd = Sshd::start_in(live.host(HOST), &[22, 2222]);
    let known = sshd.dir().join("known_hosts");
    write(&known, &sshd.known_hosts_line("127.0.0.1"));

    let url = format!("root@127.0.0.1:{}", remote.display());
    let mut settings = live.pull_settings(&url, "2s", "pinned");
    settings.ssh = Some((sshd.client_key(), known.clone()));
    live.enable_pull_with(HOST, settings);
    let head = live.fleet.head();
    live.wait_fetched_commit(HOST, &head, Duration::from_secs(20));
    let (commit, toplevel) = push_motd(&live, "web1 pulled over ssh");
    let p = live.wait_applied_commit(HOST, &commit, APPLY_TIMEOUT);
    assert_eq!((p["url"].as_str(), p["last_error"].clone()), (Some(url.as_str()), Value::Null), "{p}");
    assert_eq!(live.host(HOST).current_system(), toplevel);

    // Port 2222: known_hosts lists the key for `127.0.0.1` (port 22) only.
    let url = format!("ssh://root@127.0.0.1:2222{}", remote.display());
    let mut settings = live.pull_settings(&url, "2s", "pinned");
    settings.ssh = Some((sshd.client_key(), known.clone()));
    live.enable_pull_with(HOST, settings);
    let (blocked, blocked_toplevel) = push_motd(&live, "web1 behind an unknown host key");
    let known_s = known.to_string_lossy().into_owned();
    let p = wait_error(&live, &["[127.0.0.1]:2222", "is unknown", &known_s]);
    eprintln!("unknown host key: {}", p["last_error"]);
    assert_eq!(p["fetched_commit"], commit.as_str(), "nothing fetched: {p}");

    write(&known, &sshd.impostor_line("[127.0.0.1]:2222"));
    let p = wait_error(&live, &["[127.0.0.1]:2222", "does not match", &known_s]);
    eprintln!("changed host key: {}", p["last_error"]);
    assert_eq!(p["fetched_commit"], commit.as_str(), "nothing fetched: {p}");

    write(&known, &sshd.known_hosts_line("[127.0.0.1]:2222"));
    sshd.authorize("other_client_ed25519");
    let key_s = sshd.client_key().to_string_lossy().into_owned();
    let p = wait_error(&live, &["refused the key", &key_s, "root@[127.0.0.1]:2222"]);
    eprintln!("refused client key: {}", p["last_error"]);
    assert_eq!(p["fetched_commit"], commit.as_str(), "nothing fetched: {p}");
    assert_eq!(live.host(HOST).current_system(), toplevel, "the running system is unchanged");

    sshd.authorize("client_ed25519");
    let p = live.wait_applied_commit(HOST, &blocked, APPLY_TIMEOUT);
    assert_eq!(p["last_error"], Value::Null, "{p}");
    assert_eq!(live.host(HOST).current_system(), blocked_toplevel);
    let logins = sshd.log().lines().filter(|l| l.contains("Accepted publickey for root")).count();
    assert!(logins >= 2, "sshd saw the agent log in:\n{}", sshd.log());
}

/// Changes web1's motd, commits and pushes; returns (commit, its toplevel).
fn push_motd(live: &LiveFleet, motd: &str) -> (String, String) {
    live.change_host(HOST, motd);
    let toplevel = live.fleet.toplevel(HOST);
    live.fleet.push();
    (live.fleet.head(), toplevel)
}
