//! The fault suite (issue 9), beyond the agent crashes of `crash.rs`: the controller
//! killed mid-rollout, the host's link cut during the push and flapping during the
//! confirmation window, the agent restarted by its own switch (as NixOS restarts a
//! changed unit), and `kill -9` of the agent in the phases `crash.rs` does not hold
//! (receiving the import body, between import and deployment, with the confirmation in
//! flight, rolling back after a failed health check). After each, every host must pass
//! [`invariants::check`] on the system the case expects (old or new), and the fleet must
//! take the next `hostctl apply`.
//!
//! Real agents on simulated hosts, real Nix, the real `hostctl`. Phases are held from
//! outside: [`SwitchGate`] (a switch), [`GcHold`] (an import), SIGSTOP (the agent), a
//! request body sent only in part, and a hook in this fleet copy's
//! `switch-to-configuration` that signals the agent the way a switch restarting its unit
//! would.

#![expect(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code throughout (helpers too): a failed step must fail the test"
)]

// The crate root of a test looks for modules beside it, not in a directory of its name.
#[path = "faults/restart.rs"]
mod restart;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use hostctl_tests::http::{tls_connect, Request, TlsStream};
use hostctl_tests::invariants::{self, Running};
use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::simhost::{GcHold, SwitchGate};
use hostctl_tests::{HostctlChild, HostctlRun, TestFleet};
use serde_json::Value;

type Systems = BTreeMap<String, String>;

fn is_final(state: &str) -> bool {
    matches!(state, "confirmed" | "failed" | "rolled-back")
}

fn dump(run: &HostctlRun) -> String {
    format!("exit {:?}\nstdout:\n{}\nstderr:\n{}", run.code, run.stdout, run.stderr)
}

/// A fleet of `names` (in rollout order) with confirmation window `window` and `rollout`
/// appended to fleet.yaml, `prepare`d and applied once. Returns it and each host's A.
fn applied(names: &[&str], window: &str, rollout: &str, prepare: impl FnOnce(&TestFleet)) -> (LiveFleet, Systems) {
    let live = LiveFleet::start_with(names, prepare);
    live.write_inventory_with(window, |_| String::new(), rollout);
    live.fleet.commit_allow_empty(&format!("confirm_timeout {window}"));
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(0);
    let v = run.json();
    let a: Systems =
        names.iter().map(|n| (n.to_string(), v["hosts"][n]["toplevel"].as_str().unwrap().to_owned())).collect();
    for name in names {
        assert_eq!(live.host(name).current_system(), a[*name], "{name} runs A");
    }
    (live, a)
}

/// Gives every host of `names` a new configuration (committed); returns each one's B.
fn changed(live: &LiveFleet, names: &[&str]) -> Systems {
    names
        .iter()
        .map(|n| {
            live.change_host(n, &format!("{n} B"));
            (n.to_string(), live.fleet.toplevel(n))
        })
        .collect()
}

/// Waits for `hostctl` to exit: it must not hang on a fault.
fn finished(apply: &mut HostctlChild, within: Duration) -> HostctlRun {
    apply.wait_timeout(within).unwrap_or_else(|| {
        let out = apply.kill();
        panic!("hostctl did not finish within {within:?}:\n{}", dump(&out))
    })
}

/// `hostctl --json apply` after a fault: exit 0, every host of `a` ends on its B (B
/// from `b`), and `results` says how each got there.
fn rerun_converges(live: &LiveFleet, a: &Systems, b: &Systems, results: &[(&str, &str)]) -> Value {
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(0);
    let v = run.json();
    for (host, result) in results {
        assert_eq!(v["hosts"][host]["result"], *result, "{host}: {}", v["hosts"][host]);
    }
    for host in a.keys() {
        invariants::check(live, host, &a[host], &b[host]).expect(Running::New, "after a fresh apply");
    }
    v
}

/// Waits for `apply` and checks that it confirmed web1 on B: exit 0, `activated`, its
/// deployment `confirmed`, and the invariants on the new system.
fn confirmed_on_new(live: &LiveFleet, apply: &mut HostctlChild, a: &Systems, b: &Systems, why: &str) {
    let run = finished(apply, Duration::from_secs(60));
    run.expect_code(0);
    let v = run.json();
    assert_eq!(v["hosts"]["web1"]["result"], "activated", "{}", dump(&run));
    let id = v["hosts"]["web1"]["deployment"].as_str().unwrap();
    assert_eq!(live.deployment("web1", id)["state"], "confirmed");
    invariants::check(live, "web1", &a["web1"], &b["web1"]).expect(Running::New, why);
}

/// Polls `what` every 20 ms until it holds; fails after `within`.
fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pids of `comm` processes in `host`.
fn processes_named(live: &LiveFleet, host: &str, comm: &str) -> Vec<u32> {
    live.host(host)
        .netns_pids()
        .into_iter()
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim() == comm)
        .collect()
}

/// Whether process `pid` (a child of this test) has exited and waits to be reaped.
fn exited(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // `pid (comm) S ...`: the state follows the last `)`.
    stat.rsplit_once(')').is_none_or(|(_, rest)| matches!(rest.split_whitespace().next(), Some("Z" | "X") | None))
}

fn signal(pid: u32, signal: &str) {
    let out = std::process::Command::new("kill").args(["-s", signal, &pid.to_string()]).output().unwrap();
    assert!(out.status.success(), "kill -s {signal} {pid}: {}", String::from_utf8_lossy(&out.stderr));
}

// ---------------------------------------------------------------------------------------
// The controller killed mid-rollout.

#[test]
fn controller_killed_mid_switch_of_a_rollout_leaves_every_host_old_or_new() {
    // Batches of one in host order: db1 (done), web1 (held mid-switch), web2 (untouched).
    let names = ["db1", "web1", "web2"];
    let (live, a) = applied(&names, "5s", "rollout:\n  batch: 1\n  max_failures: 0\n", |_| {});
    let b = changed(&live, &names);
    let web2_log = live.switch_log("web2");
    let (mut gate, mut apply, id) = live.apply_held_at_switch("web1");
    let killed = apply.kill();
    assert!(killed.stdout.trim().is_empty(), "a killed controller printed no summary: {}", dump(&killed));
    gate.release();

    // web1's switch ends after the controller died: never confirmed, it rolls back.
    let done = live.wait_for_deployment("web1", &id, Duration::from_secs(30), is_final);
    assert_eq!(done["state"], "rolled-back", "{done}");
    assert_eq!(live.deployments("db1")[0]["state"], "confirmed", "db1's batch was done");
    assert_eq!(live.switch_log("web2"), web2_log, "web2's batch never started");
    for (host, expected) in [("db1", Running::New), ("web1", Running::Old), ("web2", Running::Old)] {
        invariants::check(&live, host, &a[host], &b[host]).expect(expected, "after the controller was killed");
    }
    rerun_converges(&live, &a, &b, &[("db1", "unchanged"), ("web1", "activated"), ("web2", "activated")]);
}

#[test]
fn controller_killed_while_pushing_to_a_batch_leaves_every_host_old_or_new() {
    // Batches of two: [db1, web1] in parallel, then [web2]. web1's import is held.
    let names = ["db1", "web1", "web2"];
    let (live, a) = applied(&names, "5s", "rollout:\n  batch: 2\n  max_failures: 0\n", |_| {});
    let b = changed(&live, &names);
    let known = live.deployment_ids("web1");
    let mut hold = GcHold::hold(live.host("web1"));
    let mut apply = live.spawn_hostctl(&["--json", "apply"]);
    hold.wait_for_waiter();
    wait_until("db1 confirmed", Duration::from_secs(30), || {
        let newest = live.deployments("db1").into_iter().next().unwrap_or_default();
        newest["state"] == "confirmed" && newest["toplevel"].as_str() == Some(b["db1"].as_str())
    });
    apply.kill();
    // The agent finishes the import it had started, or drops it whole.
    hold.release();
    wait_until("web1's import", Duration::from_secs(30), || processes_named(&live, "web1", "nix-store").is_empty());

    assert_eq!(live.deployment_ids("web1"), known, "web1 got no deployment");
    for (host, expected) in [("db1", Running::New), ("web1", Running::Old), ("web2", Running::Old)] {
        invariants::check(&live, host, &a[host], &b[host]).expect(expected, "after the controller was killed");
    }
    let v = rerun_converges(&live, &a, &b, &[("db1", "unchanged"), ("web1", "activated"), ("web2", "activated")]);
    // An import the agent had received whole runs to its end without the controller.
    assert_eq!(v["hosts"]["web1"]["paths_copied"], 0, "{}", v["hosts"]["web1"]);
}

// ---------------------------------------------------------------------------------------
// The host's link cut.

#[test]
fn link_cut_while_the_agent_imports_fails_the_host_and_a_rerun_succeeds() {
    let (live, a) = applied(&["web1"], "10s", "", |_| {});
    let b = changed(&live, &["web1"]);
    let known = live.deployment_ids("web1");
    let mut hold = GcHold::hold(live.host("web1"));
    let mut apply = live.spawn_hostctl(&["--json", "apply"]);
    // The stream is in; the controller waits for the import's answer.
    hold.wait_for_waiter();
    live.host("web1").set_link(false);
    let cut = Instant::now();
    let run = finished(&mut apply, Duration::from_secs(120));
    let noticed = cut.elapsed();
    run.expect_code(1);
    let v = run.json();
    let entry = &v["hosts"]["web1"];
    assert_eq!(entry["result"], "failed", "{entry}");
    assert_eq!(entry["step"], "push", "{entry}");
    let error = entry["error"].as_str().unwrap_or_default();
    assert!(error.contains("web1") && error.contains("/v1/paths/import"), "names the host and the call: {error}");
    // reqwest's TCP keepalive and user timeout (30 s) notice the silent link, not the
    // import's one-hour limit.
    assert!(noticed < Duration::from_secs(60), "gave up only {noticed:?} after the cut: {error}");
    eprintln!("the controller gave up {noticed:?} after the cut: {error}");

    hold.release();
    wait_until("web1's import", Duration::from_secs(30), || processes_named(&live, "web1", "nix-store").is_empty());
    live.host("web1").set_link(true);
    assert_eq!(live.deployment_ids("web1"), known, "web1 got no deployment");
    invariants::check(&live, "web1", &a["web1"], &b["web1"]).expect(Running::Old, "the push failed");
    let v = rerun_converges(&live, &a, &b, &[("web1", "activated")]);
    assert_eq!(v["hosts"]["web1"]["paths_copied"], 0, "the received import was finished: {}", v["hosts"]["web1"]);
}

#[test]
fn link_flapping_during_the_window_is_confirmed_once_it_is_back() {
    let (live, a) = applied(&["web1"], "20s", "", |_| {});
    let b = changed(&live, &["web1"]);
    let (mut gate, mut apply, id) = live.apply_held_at_switch("web1");
    live.host("web1").set_link(false);
    gate.release();
    // B runs, the controller cannot reach the agent for 3 s of the 20 s window.
    wait_until("B's switch", Duration::from_secs(20), || live.host("web1").current_system() == b["web1"]);
    std::thread::sleep(Duration::from_secs(3));
    live.host("web1").set_link(true);

    confirmed_on_new(&live, &mut apply, &a, &b, "confirmed after the flap");
    assert_eq!(live.deployment("web1", &id)["state"], "confirmed");
}

/// Signed headers for an import of `missing` (whose export, zstd, is `body`) followed by
/// the first `sent` bytes of the body, on a connection left open: a transfer cut short.
fn send_part_of_import(live: &LiveFleet, host: &str, missing: &[String], body: &[u8], sent: usize) -> TlsStream {
    let request = Request::new("POST", "/v1/paths/import", body)
        .header("x-hostctl-paths", &missing.join(" "))
        .header("content-type", "application/zstd")
        .signed(&live.secret_key(), host);
    let mut head = format!("POST /v1/paths/import HTTP/1.1\r\nhost: {}\r\n", live.agent_addr(host));
    for (name, value) in &request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut stream = tls_connect(&live.agent_addr(host), Duration::from_secs(10)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..sent]).unwrap();
    stream.flush().unwrap();
    stream
}

/// Builds web1's B here (not on the host); returns it.
fn build_b(live: &LiveFleet) -> String {
    let build = live.hostctl(&["--json", "build", "--on", "web1"]);
    build.expect_code(0);
    build.json()["hosts"]["web1"]["toplevel"].as_str().unwrap().to_owned()
}

/// The agent's spool of import streams being received.
fn import_spool(live: &LiveFleet, host: &str) -> Vec<String> {
    let dir = live.host(host).root.join("state/agent/tmp");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn link_cut_mid_import_body_registers_nothing_and_blocks_no_later_import() {
    let (live, a) = applied(&["web1"], "10s", "", |_| {});
    let b = changed(&live, &["web1"]);
    assert_eq!(build_b(&live), b["web1"]);
    let (missing, body) = live.export_missing("web1", &b["web1"]);
    let stream = send_part_of_import(&live, "web1", &missing, &body, body.len() / 2);
    wait_until("the agent spooling the stream", Duration::from_secs(10), || !import_spool(&live, "web1").is_empty());
    live.host("web1").set_link(false);
    std::thread::sleep(Duration::from_secs(2));
    live.host("web1").set_link(true);

    // The half stream is still open: nothing of it is in the store.
    assert!(!live.host("web1").is_valid(&b["web1"]));
    invariants::check(&live, "web1", &a["web1"], &b["web1"]).expect(Running::Old, "half an import body");
    // And it holds nothing up: a whole deployment goes through meanwhile.
    rerun_converges(&live, &a, &b, &[("web1", "activated")]);
    drop(stream);
    wait_until("the spool emptied once the connection closed", Duration::from_secs(10), || {
        import_spool(&live, "web1").is_empty()
    });
}

#[test]
fn link_cut_for_good_mid_import_body_frees_the_spool_without_the_controller() {
    let (live, a) = applied(&["web1"], "10s", "", |_| {});
    let b = changed(&live, &["web1"]);
    assert_eq!(build_b(&live), b["web1"]);
    let (missing, body) = live.export_missing("web1", &b["web1"]);
    let stream = send_part_of_import(&live, "web1", &missing, &body, body.len() / 2);
    wait_until("the agent spooling the stream", Duration::from_secs(10), || !import_spool(&live, "web1").is_empty());
    live.host("web1").set_link(false);
    // The sender never closes its end: only the agent's keepalive probes (15 s idle, then
    // 3 × 5 s) can tell that the peer is gone, and then the half body is dropped.
    wait_until("the agent giving up on the dead connection", Duration::from_secs(90), || {
        import_spool(&live, "web1").is_empty()
    });
    live.host("web1").set_link(true);
    assert!(!live.host("web1").is_valid(&b["web1"]));
    invariants::check(&live, "web1", &a["web1"], &b["web1"]).expect(Running::Old, "a dead half import");
    drop(stream);
    rerun_converges(&live, &a, &b, &[("web1", "activated")]);
}

// ---------------------------------------------------------------------------------------
// `kill -9` of the agent in phases crash.rs does not hold.

#[test]
fn killed_while_receiving_the_import_body_registers_nothing() {
    let (mut live, a) = applied(&["web1"], "10s", "", |_| {});
    let b = changed(&live, &["web1"]);
    assert_eq!(build_b(&live), b["web1"]);
    let (missing, body) = live.export_missing("web1", &b["web1"]);
    let stream = send_part_of_import(&live, "web1", &missing, &body, body.len() / 2);
    wait_until("the agent spooling the stream", Duration::from_secs(10), || !import_spool(&live, "web1").is_empty());
    live.host_mut("web1").kill_agent();
    drop(stream);
    live.host_mut("web1").restart_agent();

    assert_eq!(import_spool(&live, "web1"), Vec::<String>::new(), "the half stream's spool was removed");
    assert!(!live.host("web1").is_valid(&b["web1"]));
    invariants::check(&live, "web1", &a["web1"], &b["web1"]).expect(Running::Old, "killed mid-body");
    rerun_converges(&live, &a, &b, &[("web1", "activated")]);
}

#[test]
fn killed_between_import_and_deployment_keeps_the_imported_closure() {
    let (mut live, a) = applied(&["web1"], "10s", "", |_| {});
    let b = changed(&live, &["web1"]);
    assert_eq!(build_b(&live), b["web1"]);
    let (missing, body) = live.export_missing("web1", &b["web1"]);
    let r = Request::new("POST", "/v1/paths/import", &body)
        .header("x-hostctl-paths", &missing.join(" "))
        .signed(&live.secret_key(), "web1")
        .send(&live.agent_addr("web1"))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    live.host_mut("web1").kill_agent();
    live.host_mut("web1").restart_agent();

    assert!(live.host("web1").is_valid(&b["web1"]), "the import was whole before the crash");
    invariants::check(&live, "web1", &a["web1"], &b["web1"]).expect(Running::Old, "nothing was deployed");
    let v = rerun_converges(&live, &a, &b, &[("web1", "activated")]);
    assert_eq!(v["hosts"]["web1"]["paths_copied"], 0, "the closure survived the crash: {v}");
}

#[test]
fn killed_with_the_confirmation_in_flight_is_confirmed_after_the_restart() {
    let (mut live, a) = applied(&["web1"], "30s", "", |_| {});
    let _server = live.host("web1").start_health_server(8080);
    live.host("web1").set_healthy(false);
    let url = live.host("web1").health_url(8080);
    live.write_inventory_with(
        "30s",
        |_| {
            format!(
                "    health:\n      - http: {url}\n        timeout: 2s\n        retries: 40\n        interval: 300ms\n"
            )
        },
        "",
    );
    live.fleet.commit("web1 is checked before it is confirmed");
    let b = changed(&live, &["web1"]);
    let mut apply = live.spawn_hostctl(&["--json", "apply"]);
    // The controller probes (B awaits confirmation); the agent freezes; the probe passes
    // and the controller sends its confirmation to the frozen agent, which dies unread.
    wait_until("a first probe", Duration::from_secs(30), || live.host("web1").health_log().contains("GET /healthz"));
    let pid = live.host("web1").agent_pid().unwrap();
    signal(pid, "STOP");
    live.host("web1").set_healthy(true);
    wait_until("a passing probe", Duration::from_secs(10), || {
        live.host("web1").health_log().lines().any(|l| l.contains("GET /healthz") && l.contains(" 200 "))
    });
    std::thread::sleep(Duration::from_millis(500));
    live.host_mut("web1").kill_agent();
    live.host_mut("web1").restart_agent();

    confirmed_on_new(&live, &mut apply, &a, &b, "confirmed after the restart");
}

#[test]
fn killed_while_rolling_back_after_a_failed_health_check_finishes_the_rollback() {
    let (mut live, a) = applied(&["web1"], "30s", "", |_| {});
    live.write_inventory_with(
        "30s",
        |_| "    health:\n      - command: [\"sh\", \"-c\", \"sleep 3; exit 1\"]\n        timeout: 20s\n        retries: 0\n"
            .to_owned(),
        "",
    );
    live.fleet.commit("a health check that fails after 3 s");
    let b = changed(&live, &["web1"]);
    let known = live.deployment_ids("web1");
    let mut apply = live.spawn_hostctl(&["--json", "apply"]);
    wait_until("B's switch", Duration::from_secs(30), || live.host("web1").current_system() == b["web1"]);
    // Hold the rollback's switch back to A once the check has failed.
    let mut gate = SwitchGate::arm(live.host("web1"));
    gate.wait_blocked();
    let id = live.wait_for_new_deployment("web1", &known, Duration::from_secs(10))["id"].as_str().unwrap().to_owned();
    live.host_mut("web1").kill_agent();
    live.host_mut("web1").restart_agent();
    let held = gate.release();
    assert!(held.starts_with(&format!("switch web1 {} ", a["web1"])), "the held switch is the rollback: {held:?}");

    let done = live.wait_for_deployment("web1", &id, Duration::from_secs(30), is_final);
    assert_eq!(done["state"], "rolled-back", "{done}");
    let run = finished(&mut apply, Duration::from_secs(60));
    run.expect_code(1);
    let v = run.json();
    assert_eq!(v["hosts"]["web1"]["result"], "rolled-back", "{v}");
    assert_eq!(v["hosts"]["web1"]["step"], "health", "{v}");
    invariants::check(&live, "web1", &a["web1"], &b["web1"]).expect(Running::Old, "the rollback was finished");
}

// ---------------------------------------------------------------------------------------
// The invariants themselves can fail.

/// Whether `invariants::check` fails on web1 (running `a`) as it is now.
fn check_fails(live: &LiveFleet, a: &str, b: &str) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| invariants::check(live, "web1", a, b))).is_err()
}

#[test]
fn the_invariants_catch_each_kind_of_damage() {
    let (live, a) = applied(&["web1"], "10s", "", |_| {});
    let (a, b) = (a["web1"].clone(), "/nix/store/00000000000000000000000000000000-nixos-system-web1-b".to_owned());
    let h = live.host("web1");
    invariants::check(&live, "web1", &a, &b).expect(Running::Old, "undamaged");
    let store = |p: &str| h.root.join(p.trim_start_matches('/'));
    let damage = |what: &str, break_it: &dyn Fn(), repair: &dyn Fn()| {
        break_it();
        assert!(check_fails(&live, &a, &b), "the invariants missed: {what}");
        repair();
        invariants::check(&live, "web1", &a, &b).expect(Running::Old, &format!("repaired: {what}"));
    };

    let half = store("/nix/store/11111111111111111111111111111111-half-imported");
    damage("a store object Nix does not know", &|| std::fs::create_dir(&half).unwrap(), &|| {
        std::fs::remove_dir(&half).unwrap()
    });
    // `etc` -> `/nix/store/<hash>-etc/etc`.
    let etc = std::fs::read_link(store(&a).join("etc")).unwrap().to_string_lossy().into_owned();
    let etc = etc.strip_suffix("/etc").unwrap().to_owned();
    let (etc_dir, moved) = (store(&etc), store(&format!("{etc}.moved")));
    damage("a valid path gone from disk", &|| std::fs::rename(&etc_dir, &moved).unwrap(), &|| {
        std::fs::rename(&moved, &etc_dir).unwrap()
    });
    let motd = etc_dir.join("etc/motd");
    let text = std::fs::read(&motd).unwrap();
    damage("a valid path's contents changed", &|| std::fs::write(&motd, b"tampered\n").unwrap(), &|| {
        std::fs::write(&motd, &text).unwrap()
    });
    let link = h.root.join("nix/var/nix/profiles/system-99-link");
    damage("a generation pointing at a missing path", &|| std::os::unix::fs::symlink(&b, &link).unwrap(), &|| {
        std::fs::remove_file(&link).unwrap()
    });
    let record = h.root.join("state/agent/deployments/web1-0-half.json");
    damage("a journal record cut short", &|| std::fs::write(&record, "{\"seq\": 1, \"deploym").unwrap(), &|| {
        std::fs::remove_file(&record).unwrap()
    });
    let current = h.state_dir().join("current-system");
    damage("a host running a third system", &|| std::fs::write(&current, format!("{b}x\n")).unwrap(), &|| {
        std::fs::write(&current, format!("{a}\n")).unwrap()
    });
    damage(
        "a running system the profile does not name",
        &|| std::fs::write(&current, format!("{b}\n")).unwrap(),
        &|| std::fs::write(&current, format!("{a}\n")).unwrap(),
    );
}
