//! VM lane (tests/vm/run.sh), scenario 8: power cuts. qemu gets SIGKILL (the guest loses
//! every write it had not flushed) at named points of a deployment, the guest boots
//! again, the guest-side invariants of `tests/src/vm/checks.rs` must hold and the outcome
//! must be the recovery table's for that point (`tests/src/vm/cuts.rs` runs a point).
//! CI runs the points marked `ci`; `tests/vm/run.sh --full` (HOSTCTL_VM_FULL=1) all of
//! them. One guest takes the controller's points one after the other, a second one the
//! pull-mode points. Results: docs/RELIABILITY.md. Skips unless run by tests/vm/run.sh.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code throughout: a failed step must fail the test")]

use std::time::{Duration, Instant};

use hostctl_tests::http::{push_payload, Request};
use hostctl_tests::vm::checks::check;
use hostctl_tests::vm::cuts::{cut, services, Change, Expect, Point, Stop};
use hostctl_tests::vm::fleet::VmFleet;
use hostctl_tests::vm::gitd::GitDaemon;
use hostctl_tests::vm::Lane;

const FAILED: &[&str] = &["failed"];
const ROLLED_BACK: &[&str] = &["rolled-back"];
const ENDED: &[&str] = &["failed", "rolled-back"];

/// `(ci, point)`: the controller's points, in the order one guest takes them.
const CONTROLLER_POINTS: &[(bool, Point)] = &[
    (
        false,
        p(
            "upload:mid-stream",
            "the closure's upload, part received",
            Change::Switch,
            Stop::Pause("upload:mid-stream"),
            Expect::Old(FAILED),
        ),
    ),
    (
        false,
        p(
            "import:validated",
            "import: stream checked, nix-store --import next",
            Change::Switch,
            Stop::Pause("import:validated"),
            Expect::Old(FAILED),
        ),
    ),
    (
        true,
        p(
            "import:registered",
            "import: paths registered, not yet synced",
            Change::Switch,
            Stop::Pause("import:registered"),
            Expect::Old(FAILED),
        ),
    ),
    (
        false,
        p(
            "import:synced",
            "import: synced, the answer not sent",
            Change::Switch,
            Stop::Pause("import:synced"),
            Expect::Old(FAILED),
        ),
    ),
    (
        true,
        p(
            "journal:insert",
            "deployment registered (accepted), not answered",
            Change::Switch,
            Stop::Pause("journal:insert"),
            Expect::Old(FAILED),
        ),
    ),
    (
        false,
        p(
            "journal:set-profile",
            "journal: setting-profile written",
            Change::Switch,
            Stop::Pause("journal:set-profile"),
            Expect::Old(FAILED),
        ),
    ),
    (
        false,
        p(
            "profile:before-set",
            "nix-env --set about to run",
            Change::Switch,
            Stop::Pause("profile:before-set"),
            Expect::Old(FAILED),
        ),
    ),
    (
        true,
        p(
            "profile:after-set",
            "nix-env --set done, not journaled",
            Change::Switch,
            Stop::Pause("profile:after-set"),
            Expect::Old(FAILED),
        ),
    ),
    (
        false,
        p(
            "journal:profile-set",
            "journal: profile-set written",
            Change::Switch,
            Stop::Pause("journal:profile-set"),
            Expect::Old(FAILED),
        ),
    ),
    (
        false,
        p(
            "journal:activate",
            "journal: activation handle written, not launched",
            Change::Switch,
            Stop::Pause("journal:activate"),
            Expect::Old(FAILED),
        ),
    ),
    (
        false,
        p(
            "activation:launched",
            "transient unit launched",
            Change::Switch,
            Stop::Pause("activation:launched"),
            Expect::Old(FAILED),
        ),
    ),
    (
        true,
        p(
            "hold:switch",
            "switch-to-configuration running (held before its work)",
            Change::Switch,
            Stop::HoldSwitch,
            Expect::Old(FAILED),
        ),
    ),
    (
        false,
        p(
            "unit:starting",
            "a new unit starting (60 s oneshot)",
            Change::SlowUnit,
            Stop::UnitStarting,
            Expect::Old(FAILED),
        ),
    ),
    (
        false,
        p(
            "activation:finished",
            "activation exited, exit not journaled",
            Change::Switch,
            Stop::Pause("activation:finished"),
            Expect::Old(ENDED),
        ),
    ),
    (
        false,
        p(
            "journal:update@Activating",
            "journal: exit code and log written",
            Change::Switch,
            Stop::Pause("journal:update@Activating"),
            Expect::Old(ENDED),
        ),
    ),
    (
        true,
        p(
            "journal:activated",
            "confirmation window open (awaiting-confirmation written)",
            Change::Switch,
            Stop::Pause("journal:activated"),
            Expect::Old(ROLLED_BACK),
        ),
    ),
    (
        false,
        p(
            "confirm:received",
            "the controller's confirm arrived, not journaled",
            Change::Switch,
            Stop::Pause("confirm:received"),
            Expect::Old(ROLLED_BACK),
        ),
    ),
    (
        true,
        p(
            "journal:confirm",
            "confirmed in the journal, not answered",
            Change::Switch,
            Stop::Pause("journal:confirm"),
            Expect::New,
        ),
    ),
    (false, p("acknowledged", "hostctl apply reported success", Change::Switch, Stop::Acknowledged, Expect::New)),
    (
        false,
        p(
            "rollback:journal:roll-back",
            "exit 4; rollback decided",
            Change::FailingUnit,
            Stop::Pause("journal:roll-back"),
            Expect::Old(FAILED),
        ),
    ),
    (
        false,
        p(
            "rollback:journal:rollback-step",
            "rollback: first step journaled",
            Change::FailingUnit,
            Stop::Pause("journal:rollback-step"),
            Expect::Old(FAILED),
        ),
    ),
    (
        false,
        p(
            "rollback:journal:rollback-activation",
            "rollback: its activation journaled, not launched",
            Change::FailingUnit,
            Stop::Pause("journal:rollback-activation"),
            Expect::Old(FAILED),
        ),
    ),
    (
        true,
        p(
            "rollback:hold:switch",
            "rollback: switch-to-configuration of the old system running",
            Change::FailingUnit,
            Stop::PauseThenHold("journal:rollback-activation"),
            Expect::Old(FAILED),
        ),
    ),
    (
        false,
        p(
            "rollback:journal:rollback-done",
            "rollback: old system active, end not written",
            Change::FailingUnit,
            Stop::Pause("journal:rollback-done"),
            Expect::Old(FAILED),
        ),
    ),
    (
        false,
        p(
            "rollback:journal:end",
            "rollback: failed written, not answered",
            Change::FailingUnit,
            Stop::Pause("journal:end"),
            Expect::Old(FAILED),
        ),
    ),
    (
        false,
        p(
            "boot:journal:profile-set",
            "mode boot: profile-set written",
            Change::Boot,
            Stop::Pause("journal:profile-set"),
            Expect::Old(FAILED),
        ),
    ),
    (
        false,
        p(
            "boot:journal:activate",
            "mode boot: activation handle written",
            Change::Boot,
            Stop::Pause("journal:activate"),
            Expect::Old(FAILED),
        ),
    ),
    (
        true,
        p(
            "boot:journal:activated",
            "mode boot: confirmed in the journal, not answered",
            Change::Boot,
            Stop::Pause("journal:activated"),
            Expect::New,
        ),
    ),
];

const fn p(id: &'static str, what: &'static str, change: Change, stop: Stop, expect: Expect) -> Point {
    Point { id, what, change, stop, expect }
}

/// `tests/vm/run.sh --full`.
fn full() -> bool {
    std::env::var_os("HOSTCTL_VM_FULL").is_some_and(|v| v == "1")
}

#[test]
fn power_cuts_during_controller_deployments_leave_the_guest_consistent_and_recovered() {
    let Some(lane) = Lane::from_env() else { return };
    let mut vm = VmFleet::start_resumed(&lane, &["web1"], &services(Change::Switch, 0), "", &[]);
    let first = vm.hostctl(&["--json", "apply"]);
    first.expect_code(0);
    let mut acknowledged = vec![first.json()["hosts"]["web1"]["deployment"].as_str().unwrap().to_owned()];
    let full = full();
    let started = Instant::now();
    let (mut count, mut surprises) = (0, Vec::new());
    // A run split over guests (HOSTCTL_VM_POWER_FROM=<id>, HOSTCTL_VM_POWER_TO=<id>,
    // the latter not included): this one takes the points from..to.
    let at = |var: &str, none: usize| {
        std::env::var(var).ok().map_or(none, |id| CONTROLLER_POINTS.iter().position(|(_, p)| p.id == id).unwrap())
    };
    let (skip, to) = (at("HOSTCTL_VM_POWER_FROM", 0), at("HOSTCTL_VM_POWER_TO", CONTROLLER_POINTS.len()));
    for (seq, (ci, point)) in CONTROLLER_POINTS.iter().enumerate().take(to).skip(skip) {
        if full || *ci {
            surprises.extend(cut(&mut vm, "web1", point, seq + 1, &mut acknowledged).surprise);
            count += 1;
        }
    }
    eprintln!("vm power cut: {count} controller points in {:.0} s", started.elapsed().as_secs_f64());
    assert!(surprises.is_empty(), "outcomes not as the recovery table says:\n{}", surprises.join("\n"));
}

/// Pull-mode points: where the agent stops, and whether the commit runs after the boot.
const PULL_POINTS: &[(&str, &str, bool)] = &[
    ("pull:fetched-objects", "pull: fetch received the objects, branch not moved", true),
    ("pull:evaluated", "pull: evaluated, build next", true),
    ("pull:built", "pull: built, deployment not registered", true),
    ("journal:insert", "pull: deployment registered", false),
];
const SECRET: &str = "vm-lane-webhook-secret";

/// Sends the push webhook for `commit` to the guest's agent.
fn webhook(vm: &VmFleet, commit: &str) {
    let body = push_payload("main", commit);
    let r = Request::webhook(&body, Some(SECRET.as_bytes()), Some(&hostctl_tests::http::fresh_id()))
        .send_with_timeout(&vm.guest("web1").agent_addr(), Duration::from_secs(30))
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
}

/// Waits until pull mode reports `commit` applied.
fn applied(vm: &VmFleet, commit: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while vm.status("web1")["pull"]["applied_commit"] != commit {
        assert!(Instant::now() < deadline, "{commit} not applied: {}", vm.status("web1"));
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn power_cuts_during_pull_mode_fetch_and_build_leave_the_guest_consistent() {
    let Some(lane) = Lane::from_env() else { return };
    if !full() {
        return eprintln!("vm power cut: pull-mode points run with tests/vm/run.sh --full");
    }
    let gitd = GitDaemon::start();
    let pull = format!(
        "pull:\n  url: {}\n  branch: main\n  interval: 3600s\n  lock: follow\n  webhook_secret_file: /opt/hostctl/webhook-secret\n",
        serde_json::to_string(&gitd.guest_url("fleet.git")).unwrap()
    );
    let mut vm =
        VmFleet::start_resumed(&lane, &["web1"], &services(Change::Switch, 0), &pull, &[("webhook-secret", SECRET)]);
    gitd.add_remote(&vm.fleet.dir, "fleet.git");
    hostctl_tests::git(&vm.fleet.dir, &["push", "-q", "origin", "main"]);
    webhook(&vm, &vm.fleet.head());
    applied(&vm, &vm.fleet.head());
    for (seq, (pause, what, runs_new)) in PULL_POINTS.iter().enumerate() {
        vm.set_host("web1", &services(Change::Switch, 100 + seq));
        hostctl_tests::git(&vm.fleet.dir, &["push", "-q", "origin", "main"]);
        let (commit, new) = (vm.fleet.head(), vm.toplevel("web1"));
        let old = vm.guest("web1").resolve("/run/current-system");
        vm.guest("web1").sh(&format!("echo {pause} > /run/hostctl-agent/pause-at"));
        webhook(&vm, &commit);
        let deadline = Instant::now() + Duration::from_secs(300);
        while vm.guest("web1").sh("cat /run/hostctl-agent/paused-at 2>/dev/null || true") != *pause {
            assert!(Instant::now() < deadline, "never reached {pause}: {}", vm.status("web1"));
            std::thread::sleep(Duration::from_millis(500));
        }
        let cut_at = Instant::now();
        vm.guest_mut("web1").power_cut();
        vm.guest_mut("web1").boot();
        if *runs_new {
            // The boot's first round may run before the guest's network is up (it then
            // waits the interval): the forge delivers the webhook again.
            webhook(&vm, &commit);
            applied(&vm, &commit);
        }
        let running = check(&vm, "web1", &[]);
        let expected = if *runs_new { &new } else { &old };
        assert_eq!(&running, expected, "after a power cut at pull {pause}");
        let id = format!("pull:{}", pause.trim_start_matches("pull:"));
        let runs = if running == new { "new" } else { "old" };
        eprintln!("vm power cut | {id} | {what} | - | runs {runs} | {:.0} s", cut_at.elapsed().as_secs_f64());
    }
}
