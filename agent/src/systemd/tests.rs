//! Unit tests of the systemd manager that need no bus: how a status is decided from what
//! systemd says and the files, compatibility of journaled handles, and behaviour with the
//! bus unreachable. The end-to-end tests (`tests/tests/systemd.rs`) run it against a
//! fake `org.freedesktop.systemd1` on a private bus.

use std::path::PathBuf;

use hostctl_schemas::inventory::Mode;

use super::*;

fn loaded(active_state: &str, job: u32, code: i32, status: i32) -> UnitView {
    UnitView::Loaded { active_state: active_state.into(), job, exec_main_code: code, exec_main_status: status }
}

struct Files {
    _dir: tempfile::TempDir,
    log: PathBuf,
    exit: PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let (log, exit) = (dir.path().join("d1.log"), dir.path().join("d1.exit"));
    Files { _dir: dir, log, exit }
}

#[test]
fn a_running_unit_or_a_queued_start_is_running() {
    let f = files();
    for view in [loaded("active", 0, 0, 0), loaded("activating", 0, 0, 0), loaded("inactive", 42, 0, 0)] {
        assert_eq!(decide(&view, &f.exit, &f.log).unwrap(), ActivationStatus::Running, "{view:?}");
    }
}

#[test]
fn an_ended_unit_is_judged_by_its_exit_file_then_its_main_status() {
    let f = files();
    std::fs::write(&f.log, "").unwrap();
    std::fs::write(&f.exit, "4\n").unwrap();
    assert_eq!(decide(&UnitView::Missing, &f.exit, &f.log).unwrap(), ActivationStatus::Finished(4));
    assert_eq!(decide(&loaded("failed", 0, CLD_EXITED, 4), &f.exit, &f.log).unwrap(), ActivationStatus::Finished(4));
    std::fs::remove_file(&f.exit).unwrap();
    // The wrapper could not write the exit file but exited with the switch's status.
    assert_eq!(decide(&loaded("failed", 0, CLD_EXITED, 2), &f.exit, &f.log).unwrap(), ActivationStatus::Finished(2));
    // Killed (`CLD_KILLED`), or collected: no result.
    assert_eq!(decide(&loaded("failed", 0, 2, 9), &f.exit, &f.log).unwrap(), ActivationStatus::Vanished);
    assert_eq!(decide(&UnitView::Missing, &f.exit, &f.log).unwrap(), ActivationStatus::Vanished);
    std::fs::write(&f.exit, "x").unwrap();
    assert!(decide(&UnitView::Missing, &f.exit, &f.log).is_err(), "a corrupt exit file is an error");
}

#[test]
fn a_unit_that_never_ran_is_cancelled() {
    let f = files();
    assert_eq!(decide(&UnitView::Missing, &f.exit, &f.log).unwrap(), ActivationStatus::Cancelled);
    assert_eq!(decide(&loaded("inactive", 0, 0, 0), &f.exit, &f.log).unwrap(), ActivationStatus::Cancelled);
}

#[test]
fn handles_journaled_before_units_existed_still_load() {
    let old = r#"{"manager":"detached-child","pid":12,"start_time":34,"log":"/s/d1.log","exit_file":"/s/d1.exit"}"#;
    let handle: ActivationHandle = serde_json::from_str(old).unwrap();
    assert_eq!((handle.manager.as_str(), handle.pid, handle.unit.as_deref()), ("detached-child", 12, None));
    let unit = ActivationHandle { unit: Some("hostctl-activate-d1-1.service".into()), ..handle.clone() };
    let text = serde_json::to_string(&unit).unwrap();
    assert!(text.contains(r#""unit":"hostctl-activate-d1-1.service""#), "{text}");
    assert_eq!(serde_json::from_str::<ActivationHandle>(&text).unwrap(), unit);
    assert!(!serde_json::to_string(&handle).unwrap().contains("unit"), "unchanged for detached children");
}

fn unreachable() -> SystemdUnits {
    SystemdUnits::new(Bus::Address("unix:path=/nonexistent/hostctl-test/bus".into()))
}

fn spec(f: &Files) -> ActivationSpec {
    ActivationSpec {
        program: PathBuf::from("/nonexistent/bin/switch-to-configuration"),
        mode: Mode::Switch,
        log: f.log.clone(),
        exit_file: f.exit.clone(),
    }
}

#[test]
fn prepare_only_names_the_unit_and_clears_the_previous_files() {
    let f = files();
    std::fs::write(&f.log, "an earlier attempt").unwrap();
    std::fs::write(&f.exit, "0\n").unwrap();
    let prepared = unreachable().prepare(&spec(&f)).unwrap();
    let handle = &prepared.handle;
    assert_eq!((handle.manager.as_str(), handle.pid, handle.start_time), (MANAGER, 0, None));
    let unit = handle.unit.clone().unwrap();
    assert!(unit.starts_with("hostctl-activate-d1-") && unit.ends_with(".service"), "{unit}");
    assert!(!f.log.exists() && !f.exit.exists());
}

#[tokio::test]
async fn without_a_bus_a_launch_fails_and_the_activation_never_ran() {
    let f = files();
    let systemd = unreachable();
    let prepared = systemd.prepare(&spec(&f)).unwrap();
    let handle = prepared.handle.clone();
    let e = prepared.launch().await.unwrap_err().to_string();
    assert!(e.contains("StartTransientUnit hostctl-activate-d1-") && e.contains("cannot connect"), "{e}");
    assert_eq!(systemd.status(&handle).await.unwrap(), ActivationStatus::Cancelled);
}

#[tokio::test]
async fn without_a_bus_the_exit_file_still_decides_and_otherwise_it_runs_on() {
    let f = files();
    let systemd = unreachable();
    let handle = systemd.prepare(&spec(&f)).unwrap().handle;
    // A restarted agent that cannot reach systemd: it must not declare a live switch gone.
    assert_eq!(systemd.status(&handle).await.unwrap(), ActivationStatus::Running);
    std::fs::write(&f.exit, "0\n").unwrap();
    assert_eq!(systemd.status(&handle).await.unwrap(), ActivationStatus::Finished(0));
    std::fs::remove_file(&f.exit).unwrap();
    let e = systemd.kill(&handle).await.unwrap_err().to_string();
    assert!(e.contains("KillUnit") && e.contains("cannot connect"), "{e}");
    let no_unit = ActivationHandle { unit: None, ..handle };
    assert!(systemd.status(&no_unit).await.unwrap_err().to_string().contains("names no unit"));
}

#[test]
fn prepare_fails_when_the_previous_log_cannot_go() {
    let f = files();
    std::fs::create_dir(&f.log).unwrap();
    let e = unreachable().prepare(&spec(&f)).unwrap_err().to_string();
    assert!(e.contains("cannot remove") && e.contains("d1.log"), "{e}");
}
