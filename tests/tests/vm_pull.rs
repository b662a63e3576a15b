//! VM lane (tests/vm/run.sh), scenario 9: pull mode. The guest's agent tracks `main` of
//! a repository on this machine (`git daemon`, reached from the guest over qemu's user
//! network); after a push and a signed webhook it fetches, evaluates and builds the
//! commit with the guest's own Nix, and switches its real systemd to it. Skips unless run
//! by tests/vm/run.sh.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code throughout: a failed step must fail the test")]

use std::time::{Duration, Instant};

use hostctl_tests::http::{push_payload, Request};
use hostctl_tests::vm::fleet::VmFleet;
use hostctl_tests::vm::gitd::GitDaemon;
use hostctl_tests::vm::Lane;
use serde_json::Value;

const SECRET: &str = "vm-lane-webhook-secret";
const FIRST: &str = "{ services = { vm-pulled = { exec = \"/bin/sleep infinity\"; version = \"1\"; }; }; }\n";
const SECOND: &str = "{ services = { vm-pulled = { exec = \"/bin/sleep infinity\"; version = \"2\"; }; }; }\n";
/// Evaluating and building in a TCG guest on a busy machine.
const APPLY_TIMEOUT: Duration = Duration::from_secs(300);

/// Sends the push webhook for `commit` and waits until the agent has applied it.
fn push_and_wait(vm: &VmFleet, commit: &str) -> Value {
    let guest = vm.guest("web1");
    let body = push_payload("main", commit);
    let r = Request::webhook(&body, Some(SECRET.as_bytes()), Some(&hostctl_tests::http::fresh_id()))
        .send_with_timeout(&guest.agent_addr(), Duration::from_secs(30))
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    let deadline = Instant::now() + APPLY_TIMEOUT;
    loop {
        let status = vm.status("web1");
        if status["pull"]["applied_commit"] == commit {
            return status;
        }
        assert!(Instant::now() < deadline, "{commit} not applied: {status}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn a_guest_in_pull_mode_deploys_a_pushed_commit_after_a_webhook() {
    let Some(lane) = Lane::from_env() else { return };
    let gitd = GitDaemon::start();
    let pull = format!(
        "pull:\n  url: {}\n  branch: main\n  interval: 3600s\n  lock: follow\n  webhook_secret_file: /opt/hostctl/webhook-secret\n",
        serde_json::to_string(&gitd.guest_url("fleet.git")).unwrap()
    );
    let vm = VmFleet::start_resumed(&lane, &["web1"], FIRST, &pull, &[("webhook-secret", SECRET)]);
    gitd.add_remote(&vm.fleet.dir, "fleet.git");
    hostctl_tests::git(&vm.fleet.dir, &["push", "-q", "origin", "main"]);

    let first = vm.fleet.head();
    let status = push_and_wait(&vm, &first);
    let guest = vm.guest("web1");
    let toplevel = vm.toplevel("web1");
    assert_eq!(status["toplevel"].as_str(), Some(toplevel.as_str()), "the guest built what this machine evaluates");
    assert_eq!(guest.resolve("/run/current-system"), toplevel);
    assert_eq!(guest.unit_property("vm-pulled", "ActiveState"), "active");
    let pid = guest.unit_property("vm-pulled", "MainPID");

    vm.set_host("web1", SECOND);
    hostctl_tests::git(&vm.fleet.dir, &["push", "-q", "origin", "main"]);
    let second = vm.fleet.head();
    let status = push_and_wait(&vm, &second);
    let toplevel = vm.toplevel("web1");
    assert_eq!(status["toplevel"].as_str(), Some(toplevel.as_str()), "{status}");
    assert_eq!(status["rev"].as_str(), Some(second.as_str()), "{status}");
    assert_eq!(guest.resolve("/run/current-system"), toplevel);
    assert!(guest.unit_property("vm-pulled", "Description").ends_with(" 2"), "the changed unit runs");
    assert_ne!(guest.unit_property("vm-pulled", "MainPID"), pid, "and was restarted");
}
