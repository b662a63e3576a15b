//! The restart-into-a-new-agent decision on real files: unit files as NixOS writes them,
//! programs linked and replaced, cgroup paths as systemd names them.

use std::path::{Path, PathBuf};

use super::{decide, service_unit, shipped_program, Decision};

/// A system with `etc/systemd/system/hostctl-agent.service` = `unit`, in `dir`.
fn system_with_unit(dir: &Path, unit: &str) -> PathBuf {
    let system = dir.join("system");
    std::fs::create_dir_all(system.join("etc/systemd/system")).unwrap();
    std::fs::write(system.join("etc/systemd/system/hostctl-agent.service"), unit).unwrap();
    system
}

fn program(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name).join("bin/hostctl-agent");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, name).unwrap();
    path
}

#[test]
fn the_shipped_program_is_the_first_word_of_exec_start_without_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let unit = "[Unit]\nDescription=hostctl agent\n[Service]\nExecStartPre=/nix/store/aaa-publish\n\
                ExecStart=@-/nix/store/bbb-hostctl-agent/bin/hostctl-agent serve --config /etc/hostctl/agent.yaml\n";
    let system = system_with_unit(dir.path(), unit);
    assert_eq!(
        shipped_program(&system, "hostctl-agent.service"),
        Some(PathBuf::from("/nix/store/bbb-hostctl-agent/bin/hostctl-agent"))
    );
    assert_eq!(shipped_program(&system, "other.service"), None, "a unit the system does not have");
    let relative = system_with_unit(dir.path(), "[Service]\nExecStart=hostctl-agent serve\n");
    assert_eq!(shipped_program(&relative, "hostctl-agent.service"), None, "no absolute program");
}

#[test]
fn the_unit_is_the_service_component_of_the_cgroup_path() {
    assert_eq!(service_unit("0::/system.slice/hostctl-agent.service\n").as_deref(), Some("hostctl-agent.service"));
    let v1 = "12:pids:/system.slice/agent2.service\n1:name=systemd:/system.slice/agent2.service\n";
    assert_eq!(service_unit(v1).as_deref(), Some("agent2.service"));
    assert_eq!(service_unit("0::/user.slice/user-0.slice/session-3.scope\n"), None, "a login session");
    assert_eq!(service_unit(""), None);
}

#[test]
fn another_program_restarts_only_when_idle_and_only_once_per_program() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (program(dir.path(), "old"), program(dir.path(), "new"));
    assert_eq!(decide(&old, Some(&old), true, None), Decision::Stay);
    assert_eq!(decide(&old, None, true, None), Decision::Stay, "no unit of the agent in the system");
    assert_eq!(decide(&old, Some(&new), false, None), Decision::Wait, "a deployment in flight");
    assert_eq!(decide(&old, Some(&new), true, None), Decision::Restart(new.clone()));
    assert_eq!(decide(&old, Some(&new), true, Some(&old)), Decision::Restart(new.clone()));
    assert_eq!(decide(&old, Some(&new), true, Some(&new)), Decision::AlreadyTried(new.clone()));
}

#[test]
fn links_to_the_running_program_are_it_and_a_replaced_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let running = program(dir.path(), "running");
    let link = dir.path().join("current-agent");
    std::os::unix::fs::symlink(&running, &link).unwrap();
    assert_eq!(decide(&running, Some(&link), true, None), Decision::Stay, "a link to the running program");
    let deleted = PathBuf::from(format!("{} (deleted)", running.display()));
    assert_eq!(decide(&deleted, Some(&running), true, None), Decision::Restart(running.clone()));
    let missing = dir.path().join("gone/bin/hostctl-agent");
    assert_eq!(decide(&running, Some(&missing), true, None), Decision::Stay, "a shipped program that is not there");
}

#[test]
fn a_unit_that_starts_something_else_than_an_agent_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let running = program(dir.path(), "agent");
    let runner = dir.path().join("ci/bin/Runner.Listener");
    std::fs::create_dir_all(runner.parent().unwrap()).unwrap();
    std::fs::write(&runner, "runner").unwrap();
    assert_eq!(decide(&running, Some(&runner), true, None), Decision::Stay);
    let store_file = dir.path().join("ijac5qpf-hostctl-agent");
    std::fs::write(&store_file, "agent").unwrap();
    assert_eq!(decide(&running, Some(&store_file), true, None), Decision::Restart(store_file.clone()));
}
