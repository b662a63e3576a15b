//! The agent restarted by its own switch, as NixOS restarts `hostctl-agent.service` when
//! its unit changed: stopped or killed mid-activation, then started again (the test stands
//! in for systemd), with and without a controller still waiting to confirm.

use std::time::Duration;

use hostctl_tests::invariants::{self, Running};
use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::TestFleet;

use super::{applied, changed, confirmed_on_new, exited, finished, is_final, rerun_converges, wait_until};

/// Adds to this fleet copy's `switch-to-configuration`, before it changes anything, what
/// a switch restarting the agent's unit does: when ROOT/state/restart-agent holds
/// `SIGNAL PID [wait]`, it signals the agent (once) and, with `wait`, goes on only once
/// the agent runs again (the test, standing in for systemd, creates
/// ROOT/state/agent-started). The hook is inert otherwise.
fn with_restart_hook(fleet: &TestFleet) {
    let file = "lib/builders/switch-to-configuration.sh";
    let script = fleet.read(file);
    let anchor = "printf '%s %s %s exit=%s\\n'";
    let at = script.find(anchor).expect("the example's switch-to-configuration logs its switch");
    let hook = r#"restart=$state/restart-agent
if [ -e "$restart" ]; then
  read -r signal agent_pid wait_for_start < "$restart" || :
  /bin/rm -f -- "$restart"
  kill -s "$signal" "$agent_pid"
  if [ "${wait_for_start-}" = wait ]; then
    while [ ! -e "$state/agent-started" ]; do /bin/sleep 0.1; done
  fi
fi
"#;
    fleet.write(file, &format!("{}{hook}{}", &script[..at], &script[at..]));
    // `lib/` is the locked input `fleetlib`: lock its new content (flakes see tracked files).
    hostctl_tests::git(&fleet.dir, &["add", "-A"]);
    let out = fleet.nix(&["flake", "lock", "--update-input", "fleetlib"]);
    assert!(out.status.success(), "nix flake lock: {}", String::from_utf8_lossy(&out.stderr));
}

/// Arms the hook on web1 (see [`with_restart_hook`]) against its running agent.
fn arm_restart(live: &LiveFleet, signal: &str, wait: bool) -> u32 {
    let pid = live.host("web1").agent_pid().unwrap();
    let line = format!("{signal} {pid}{}\n", if wait { " wait" } else { "" });
    std::fs::write(live.host("web1").state_dir().join("restart-agent"), line).unwrap();
    pid
}

/// Waits until the switch took the agent down, reaps it and starts it again, as systemd
/// would; `before_start` runs in between.
fn restart_like_systemd(live: &mut LiveFleet, pid: u32, before_start: impl FnOnce(&LiveFleet)) {
    wait_until("the switch stopping the agent", Duration::from_secs(30), || exited(pid));
    live.host_mut("web1").kill_agent();
    before_start(live);
    live.host_mut("web1").restart_agent();
    std::fs::write(live.host("web1").state_dir().join("agent-started"), "").unwrap();
}

#[test]
fn agent_stopped_by_its_own_switch_is_confirmed_once_it_is_back() {
    let (mut live, a) = applied(&["web1"], "20s", "", with_restart_hook);
    let b = changed(&live, &["web1"]);
    let pid = arm_restart(&live, "TERM", false);
    let mut apply = live.spawn_hostctl(&["--json", "apply"]);
    // Started again once the activation is over, as NixOS starts stopped units.
    restart_like_systemd(&mut live, pid, |live| {
        wait_until("B's switch", Duration::from_secs(20), || live.host("web1").current_system() == b["web1"]);
    });
    confirmed_on_new(&live, &mut apply, &a, &b, "confirmed after the restart");
    assert!(live.host("web1").agent_log().contains("SIGTERM"), "the switch stopped the agent");
}

#[test]
fn agent_stopped_by_its_own_switch_with_no_controller_left_rolls_back() {
    let (mut live, a) = applied(&["web1"], "5s", "", with_restart_hook);
    let b = changed(&live, &["web1"]);
    let known = live.deployment_ids("web1");
    let pid = arm_restart(&live, "TERM", false);
    let mut apply = live.spawn_hostctl(&["--json", "apply"]);
    restart_like_systemd(&mut live, pid, |live| {
        wait_until("B's switch", Duration::from_secs(20), || live.host("web1").current_system() == b["web1"]);
        apply.kill();
    });
    let id = live.wait_for_new_deployment("web1", &known, Duration::from_secs(10))["id"].as_str().unwrap().to_owned();
    let done = live.wait_for_deployment("web1", &id, Duration::from_secs(30), is_final);
    assert_eq!(done["state"], "rolled-back", "{done}");
    invariants::check(&live, "web1", &a["web1"], &b["web1"]).expect(Running::Old, "nobody confirmed");
    rerun_converges(&live, &a, &b, &[("web1", "activated")]);
}

#[test]
fn agent_killed_and_restarted_by_its_own_switch_mid_activation_is_confirmed() {
    let (mut live, a) = applied(&["web1"], "20s", "", with_restart_hook);
    let b = changed(&live, &["web1"]);
    let known = live.deployment_ids("web1");
    let pid = arm_restart(&live, "KILL", true);
    let mut apply = live.spawn_hostctl(&["--json", "apply"]);
    // `systemctl restart` semantics: the agent is back while the switch still runs.
    restart_like_systemd(&mut live, pid, |_| {});
    let id = live.wait_for_new_deployment("web1", &known, Duration::from_secs(10))["id"].as_str().unwrap().to_owned();
    confirmed_on_new(&live, &mut apply, &a, &b, "confirmed after the restart");
    assert_eq!(live.deployment("web1", &id)["state"], "confirmed");
}

#[test]
fn agent_restarted_by_a_switch_that_then_fails_rolls_back() {
    let (mut live, a) = applied(&["web1"], "20s", "", with_restart_hook);
    let b = changed(&live, &["web1"]);
    let fail_file = live.host("web1").state_dir().join("fail-switch-web1");
    std::fs::write(&fail_file, "4").unwrap();
    let pid = arm_restart(&live, "TERM", true);
    let mut apply = live.spawn_hostctl(&["--json", "apply"]);
    // B's switch has read the fail file (before the hook): A's re-activation must not.
    restart_like_systemd(&mut live, pid, |_| std::fs::remove_file(&fail_file).unwrap());
    let run = finished(&mut apply, Duration::from_secs(60));
    run.expect_code(1);
    let v = run.json();
    let entry = &v["hosts"]["web1"];
    assert_eq!(entry["result"], "failed", "{entry}");
    assert_eq!(entry["step"], "activate", "{entry}");
    assert!(entry["error"].as_str().unwrap_or_default().contains('4'), "names the exit code: {entry}");
    invariants::check(&live, "web1", &a["web1"], &b["web1"]).expect(Running::Old, "B's switch failed");
}
