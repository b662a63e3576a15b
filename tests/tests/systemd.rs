//! Activation through systemd transient units: a simulated host's agent with
//! `service_manager: systemd` on a private bus where a fake `org.freedesktop.systemd1`
//! runs the units in that host (systemd itself cannot run here: the fake is the one
//! allowed mock, see `hostctl_tests::fake_systemd1`). A deployment, a failed switch and
//! its rollback, the activation time limit (`KillUnit`) and an agent restart mid-switch
//! all go through units; the example's `switch-to-configuration` records what ran.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code throughout (helpers too): a failed step must fail the test"
)]

use std::time::Duration;

use hostctl_tests::fake_systemd1::{Call, FakeSystemd1, StartedUnit};
use hostctl_tests::invariants::{self, Running};
use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::private_bus::PrivateBus;
use hostctl_tests::simhost::{agent_config, SimHost, SwitchGate};
use hostctl_tests::HostctlRun;
use serde_json::Value;

/// web1 with its agent on the private bus; dropped fake first (it kills units still
/// running), then the bus, then the fleet.
struct SystemdHost {
    fake: FakeSystemd1,
    bus: PrivateBus,
    live: LiveFleet,
}

/// `agent_config` with `bus:` pointing at `bus`, `service_manager: systemd` and `extra`.
fn systemd_config(host: &SimHost, public_key: &str, bus: &str, extra: &str) -> String {
    let mut yaml: String = agent_config(host, public_key)
        .lines()
        .filter(|l| !l.starts_with("bus:") && !l.starts_with("service_manager:"))
        .map(|l| format!("{l}\n"))
        .collect();
    yaml.push_str(&format!("bus: {}\nservice_manager: systemd\n{extra}", serde_json::Value::String(bus.into())));
    yaml
}

impl SystemdHost {
    fn start(extra_yaml: &str) -> SystemdHost {
        let live = LiveFleet::start(&["web1"]);
        let bus = PrivateBus::start();
        let fake = FakeSystemd1::start(bus.address());
        let mut this = SystemdHost { fake, bus, live };
        let key = this.live.public_key.clone();
        let state = this.live.host("web1").state_dir().to_string_lossy().into_owned();
        // What every process of that host gets (SimHost sets it for the agent too).
        this.fake.set_environment(&[("HOSTCTL_EXAMPLE_STATE", &state)]);
        let address = this.bus.address().to_owned();
        let host = this.live.host_mut("web1");
        host.stop_agent();
        let yaml = systemd_config(host, &key, &address, extra_yaml);
        host.start_agent(&yaml);
        this
    }

    fn host(&self) -> &SimHost {
        self.live.host("web1")
    }

    /// `hostctl --json apply`, expecting `code`; returns web1's entry.
    fn apply(&self, code: i32) -> Value {
        let run = self.live.hostctl(&["--json", "apply"]);
        run.expect_code(code);
        run.json()["hosts"]["web1"].clone()
    }

    /// The journaled record of a deployment.
    fn journal(&self, id: &str) -> Value {
        let file = self.host().root.join(format!("state/agent/deployments/{id}.json"));
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap()
    }
}

fn finished(run: Option<HostctlRun>) -> Value {
    let run = run.unwrap_or_else(|| panic!("hostctl apply did not finish"));
    run.json()["hosts"]["web1"].clone()
}

/// The unit runs the example's `switch-to-configuration` of `toplevel` in `mode` through
/// the wrapper, with the properties the agent sets.
fn assert_activation_unit(unit: &StartedUnit, toplevel: &str, mode: &str, agent_pid: Option<u32>) {
    assert!(unit.name.starts_with("hostctl-activate-") && unit.name.ends_with(".service"), "{unit:?}");
    assert_eq!(unit.mode, "fail");
    assert_eq!(unit.service_type.as_deref(), Some("exec"));
    assert_eq!(unit.kill_mode.as_deref(), Some("control-group"));
    assert_eq!(unit.collect_mode.as_deref(), Some("inactive-or-failed"));
    assert!(unit.environment.contains(&"NIXOS_INSTALL_BOOTLOADER=".to_owned()), "{unit:?}");
    let description = unit.description.clone().unwrap_or_default();
    assert!(description.contains(mode) && description.contains(toplevel), "{description}");
    let [exec] = unit.exec_start.as_slice() else { panic!("one ExecStart: {unit:?}") };
    assert_eq!((exec.path.as_str(), exec.ignore_failure), ("/bin/sh", false));
    let program = format!("{toplevel}/bin/switch-to-configuration");
    assert!(exec.argv.windows(2).any(|w| w[0] == program && w[1] == mode), "{exec:?}");
    assert_eq!(unit.caller_pid, agent_pid, "started by the agent");
}

#[test]
fn deploys_through_a_unit_and_rolls_a_failed_switch_back_through_one() {
    let s = SystemdHost::start("");
    let first = s.apply(0);
    assert_eq!(first["result"], "activated", "{first}");
    let a = first["toplevel"].as_str().unwrap().to_owned();
    let started = s.fake.started();
    let [unit] = started.as_slice() else { panic!("one unit: {started:#?}") };
    assert_activation_unit(unit, &a, "switch", s.host().agent_pid());
    let state = s.fake.unit(&unit.name).unwrap();
    assert_eq!((state.active_state.as_str(), state.exec_main_code, state.exec_main_status), ("inactive", 1, 0));
    assert!(!state.loaded, "collected once it ended");
    let id = first["deployment"].as_str().unwrap();
    let handle = &s.journal(id)["activation"];
    assert_eq!(handle["manager"], "systemd", "{handle}");
    assert_eq!(handle["unit"], unit.name.as_str(), "{handle}");
    assert_eq!(s.host().current_system(), a);
    assert_eq!(s.host().profile_generations().last().map(|(_, t)| t.clone()), Some(a.clone()));

    // B's switch fails with 4 ("units failed"); A's re-activation must not, so the fail
    // file goes once B has read it (B is held right after, at switch.log).
    s.live.change_host("web1", "web1 with a failing switch");
    let mut gate = SwitchGate::arm(s.host());
    std::fs::write(s.host().state_dir().join("fail-switch-web1"), "4").unwrap();
    let mut apply = s.live.spawn_hostctl(&["--json", "apply"]);
    gate.wait_blocked();
    std::fs::remove_file(s.host().state_dir().join("fail-switch-web1")).unwrap();
    gate.release();
    let failed = finished(apply.wait_timeout(Duration::from_secs(90)));
    assert_eq!(failed["result"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("exited with 4"), "{error}");
    let b = failed["toplevel"].as_str().unwrap().to_owned();

    let started = s.fake.started();
    let [_, switch_b, back_to_a] = started.as_slice() else { panic!("A, B, then A again: {started:#?}") };
    assert_activation_unit(switch_b, &b, "switch", s.host().agent_pid());
    assert_activation_unit(back_to_a, &a, "switch", s.host().agent_pid());
    assert!(back_to_a.name.contains("-rollback-"), "{}", back_to_a.name);
    let b_state = s.fake.unit(&switch_b.name).unwrap();
    assert_eq!((b_state.active_state.as_str(), b_state.exec_main_code, b_state.exec_main_status), ("failed", 1, 4));
    assert_eq!(s.fake.unit(&back_to_a.name).unwrap().exec_main_status, 0);
    assert_eq!(s.host().current_system(), a, "A runs again");
    assert_eq!(s.host().profile_system().as_deref(), Some(a.as_str()));
    invariants::check(&s.live, "web1", &a, &b).expect(Running::Old, "B's switch failed");
}

#[test]
fn a_switch_past_the_activation_timeout_is_killed_through_kill_unit() {
    let s = SystemdHost::start("activation_timeout: 2s\n");
    let a = s.apply(0)["toplevel"].as_str().unwrap().to_owned();
    s.live.change_host("web1", "web1 with a hanging switch");
    let mut gate = SwitchGate::arm(s.host());
    let mut apply = s.live.spawn_hostctl(&["--json", "apply"]);
    gate.wait_blocked();
    let calls = s
        .fake
        .wait_for("KillUnit", Duration::from_secs(30), |calls| calls.iter().any(|c| matches!(c, Call::Kill { .. })));
    // The rollback's switch must not be held.
    gate.release();
    let started = s.fake.started();
    let b_unit = started[1].name.clone();
    let kill = calls.iter().find(|c| matches!(c, Call::Kill { .. })).unwrap();
    let Call::Kill { name, whom, signal } = kill else { unreachable!() };
    assert_eq!((name.as_str(), whom.as_str(), *signal), (b_unit.as_str(), "all", 9));

    let failed = finished(apply.wait_timeout(Duration::from_secs(90)));
    assert_eq!(failed["result"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("timed out"), "{error}");
    let b_state = s.fake.unit(&b_unit).unwrap();
    assert_eq!((b_state.active_state.as_str(), b_state.exec_main_code, b_state.exec_main_status), ("failed", 2, 9));
    let started = s.fake.started();
    assert_eq!(started.len(), 3, "A, B (killed), A again: {started:#?}");
    assert_eq!(s.host().current_system(), a, "A runs again");
    let b = failed["toplevel"].as_str().unwrap();
    invariants::check(&s.live, "web1", &a, b).expect(Running::Old, "B's switch was killed");
}

#[test]
fn an_agent_restarted_mid_switch_follows_the_unit() {
    let mut s = SystemdHost::start("");
    let a = s.apply(0)["toplevel"].as_str().unwrap().to_owned();
    s.live.change_host("web1", "web1 switched across a restart");
    let (mut gate, mut apply, id) = s.live.apply_held_at_switch("web1");

    let host = s.live.host_mut("web1");
    host.kill_agent();
    host.restart_agent();
    let agent = s.host().agent_pid();
    let unit = s.journal(&id)["activation"]["unit"].as_str().unwrap().to_owned();
    // The new agent asks systemd about the unit the journal names (a restarted agent
    // polls it while it runs); the switch is still held.
    s.fake.wait_for("GetUnit from the restarted agent", Duration::from_secs(10), |calls| {
        calls.iter().any(|c| matches!(c, Call::GetUnit { name, caller_pid } if *name == unit && *caller_pid == agent))
    });
    assert_eq!(s.live.deployment("web1", &id)["state"], "activating");
    gate.release();

    let done = finished(apply.wait_timeout(Duration::from_secs(90)));
    assert_eq!(done["result"], "activated", "{done}");
    let b = done["toplevel"].as_str().unwrap();
    assert_eq!(s.live.deployment("web1", &id)["state"], "confirmed");
    assert_eq!(s.host().current_system(), b);
    let started = s.fake.started();
    assert_eq!(started.len(), 2, "B's unit was followed, not started again: {started:#?}");
    assert_eq!(started[1].name, unit);
    assert_eq!(s.fake.unit(&unit).unwrap().exec_main_status, 0);
    invariants::check(&s.live, "web1", &a, b).expect(Running::New, "confirmed across the agent's restart");
}

/// The fake refuses what systemd refuses, so a wrongly typed property fails here too.
#[test]
fn the_fake_checks_property_names_and_types_like_systemd() {
    use zbus::zvariant::Value;
    let bus = PrivateBus::start();
    let fake = FakeSystemd1::start(bus.address());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let address = bus.address().to_owned();
    let start = |props: Vec<(&'static str, Value<'static>)>| {
        let address = address.clone();
        runtime.block_on(async move {
            let conn = zbus::connection::Builder::address(address.as_str()).unwrap().build().await.unwrap();
            let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
            conn.call_method(
                Some("org.freedesktop.systemd1"),
                "/org/freedesktop/systemd1",
                Some("org.freedesktop.systemd1.Manager"),
                "StartTransientUnit",
                &("hostctl-activate-t-1.service", "fail", props, aux),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        })
    };
    let exec =
        || Value::from(vec![("/bin/sh".to_owned(), vec!["/bin/sh".to_owned(), "-c".into(), "exit 3".into()], false)]);
    let e = start(vec![("ExecStart", exec()), ("Bogus", Value::from("x"))]).unwrap_err();
    assert!(e.contains("InvalidArgs") && e.contains("Bogus"), "{e}");
    let e = start(vec![("ExecStart", exec()), ("Environment", Value::from("A=1"))]).unwrap_err();
    assert!(e.contains("InvalidArgs") && e.contains("expected type as"), "{e}");
    let e = start(vec![("Type", Value::from("exec"))]).unwrap_err();
    assert!(e.contains("no ExecStart"), "{e}");
    start(vec![("ExecStart", exec())]).unwrap();
    for _ in 0..200 {
        if fake.unit("hostctl-activate-t-1.service").is_some_and(|u| u.active_state != "active") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let state = fake.unit("hostctl-activate-t-1.service").unwrap();
    assert_eq!((state.active_state.as_str(), state.exec_main_code, state.exec_main_status), ("failed", 1, 3));
    assert!(state.loaded, "CollectMode=inactive keeps a failed unit");
    let e = start(vec![("ExecStart", exec())]).unwrap_err();
    assert!(e.contains("UnitExists"), "{e}");
    let call = |method: &'static str| {
        let address = address.clone();
        runtime.block_on(async move {
            let conn = zbus::connection::Builder::address(address.as_str()).unwrap().build().await.unwrap();
            let manager = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager");
            conn.call_method(Some(manager.0), manager.1, Some(manager.2), method, &("hostctl-activate-t-1.service",))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    };
    call("GetUnit").unwrap();
    call("ResetFailedUnit").unwrap();
    let e = call("GetUnit").unwrap_err();
    assert!(e.contains("org.freedesktop.systemd1.NoSuchUnit"), "{e}");
    start(vec![("ExecStart", exec())]).unwrap();
}
