//! Push mode with a signature policy (issue 19): fleet.yaml's `commits` makes `hostctl
//! apply` refuse an unsigned HEAD or a dirty tree (exit 2, naming the commit and why,
//! nothing changed on any host); `--allow-unsigned` deploys it and the host's journal
//! records the override with the key that asked; a signed HEAD deploys with its signer
//! in `history` and `status`. Real git, real ssh-keygen, real Nix, the real binaries.

use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::signed_git::{commit, Signing, SshKey};
use serde_json::Value;

const HOSTS: [&str; 2] = ["web1", "web2"];

#[expect(clippy::unwrap_used, reason = "test helper: a panic is a test failure")]
fn newest(live: &LiveFleet, host: &str) -> Value {
    let run = live.hostctl(&["--json", "history", host]);
    run.expect_code(0);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    v["hosts"][host]["deployments"][0].clone()
}

#[test]
fn apply_refuses_unsigned_heads_unless_allowed_and_records_signers() {
    let live = LiveFleet::start(&HOSTS);
    live.hostctl(&["--json", "apply"]).expect_code(0);
    let alice = SshKey::generate(live.fleet.tmp.path(), "alice");
    live.fleet.write("allowed_signers", &alice.allowed_line("alice@example.com", ""));
    let policy = |since: &str| {
        format!("commits:\n  require_signature: true\n  allowed_signers: allowed_signers\n  since: {since}\n")
    };
    live.write_inventory(&policy(&live.fleet.head()));
    live.change_host("web1", "an unsigned change");
    let unsigned = live.fleet.head();
    let before: Vec<String> = HOSTS.iter().map(|h| live.host(h).current_system()).collect();

    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(2);
    assert!(run.stderr.contains(&unsigned) && run.stderr.contains("not signed"), "{}", run.stderr);
    assert!(run.stderr.contains("web1, web2"), "{}", run.stderr);
    let after: Vec<String> = HOSTS.iter().map(|h| live.host(h).current_system()).collect();
    assert_eq!(after, before, "a refused apply changed a host");

    // A dirty tree is refused too, even on a signed HEAD.
    commit(&live.fleet.dir, Signing::Ssh(&alice), "signed");
    let signed = live.fleet.head();
    live.fleet.write("hosts/web1.nix", &live.fleet.read("hosts/web1.nix").replace("signed", "dirty"));
    let run = live.hostctl(&["apply", "--on", "web1"]);
    run.expect_code(2);
    assert!(run.stderr.contains("uncommitted changes"), "{}", run.stderr);
    hostctl_tests::git(&live.fleet.dir, &["checkout", "--", "."]);

    // Signed by an allowed key: deployed, signer recorded and shown.
    live.change_host("web2", "signed by alice");
    let unsigned_again = live.fleet.head();
    let run = live.hostctl(&["--json", "apply", "--allow-unsigned", "--on", "web2"]);
    run.expect_code(0);
    assert!(run.stderr.contains("--allow-unsigned"), "{}", run.stderr);
    let d = newest(&live, "web2");
    assert_eq!(d["rev"], unsigned_again.as_str());
    assert_eq!(d["unsigned_override"]["key"], "hostctl-test", "{d}");
    assert!(d["unsigned_override"]["refusal"].as_str().unwrap().contains("not signed"), "{d}");
    let human = live.hostctl(&["history", "web2"]);
    assert!(human.stdout.contains("deployed with --allow-unsigned (key hostctl-test)"), "{}", human.stdout);

    // The operator moves `since` past the unsigned commits, in a signed commit.
    live.write_inventory(&policy(&unsigned_again));
    for host in HOSTS {
        live.set_motd(host, "signed on top");
    }
    let head = commit(&live.fleet.dir, Signing::Ssh(&alice), "signed on top");
    live.hostctl(&["--json", "apply"]).expect_code(0);
    for host in HOSTS {
        let d = newest(&live, host);
        assert_eq!(
            (d["rev"].as_str(), d["signer"]["name"].as_str()),
            (Some(head.as_str()), Some("alice@example.com")),
            "{d}"
        );
    }
    let status = live.hostctl(&["status", "--no-drift"]);
    assert!(status.stdout.contains("signed by alice@example.com"), "{}", status.stdout);
    let _ = signed;
}
