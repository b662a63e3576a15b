//! The fake's units: running a unit's command where the caller lives, following it to
//! its end and collection, and the unit's `Unit` and `Service` D-Bus objects.

use zbus::object_server::ObjectServer;
use zbus::zvariant::OwnedObjectPath;

use super::{lock, Shared, StartedUnit, UnitState, DEFAULT_PATH};

/// `kill -SIGNAL -- -PGID`.
pub(super) fn kill_group(pgid: u32, signal: i32) -> bool {
    if pgid == 0 {
        return false;
    }
    std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// systemd's object path of a unit (`bus_label_escape`: `_xx` for each byte but
/// alphanumerics, and for a leading digit).
pub fn unit_path(name: &str) -> String {
    let mut label = String::new();
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (b.is_ascii_digit() && i > 0) {
            label.push(char::from(b));
        } else {
            label.push_str(&format!("_{b:02x}"));
        }
    }
    format!("/org/freedesktop/systemd1/unit/{label}")
}

/// Spawns the unit's first command in the caller's namespaces and follows it.
pub(super) fn run_unit(shared: Shared, unit: StartedUnit, server: ObjectServer, path: OwnedObjectPath) {
    let name = unit.name.clone();
    let running = UnitState {
        active_state: "active".into(),
        sub_state: "running".into(),
        result: "success".into(),
        exec_main_code: 0,
        exec_main_status: 0,
        exec_main_pid: 0,
        loaded: true,
    };
    lock(&shared).units.insert(name.clone(), running);
    let mut child = match command_for(&shared, &unit).spawn() {
        Ok(child) => child,
        Err(e) => {
            // As systemd's EXIT_EXEC (203).
            eprintln!("fake systemd1: cannot start {name}: {e}");
            if finish(&shared, &name, 1, 203) {
                tokio::spawn(async move { remove_objects(&server, path.as_str()).await });
            }
            return;
        }
    };
    if let Some(unit) = lock(&shared).units.get_mut(&name) {
        unit.exec_main_pid = child.id().unwrap_or(0);
    }
    tokio::spawn(async move {
        use std::os::unix::process::ExitStatusExt as _;
        let (code, status) = match child.wait().await {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(code), _) => (1, code),
                (None, Some(signal)) => (2, signal),
                (None, None) => (1, 255),
            },
            Err(_) => (1, 255),
        };
        if finish(&shared, &name, code, status) {
            remove_objects(&server, path.as_str()).await;
        }
    });
}

/// `nsenter` into the caller's mount and network namespaces (where its files are) with
/// the unit's clean environment; own process group, as a unit's cgroup.
pub(super) fn command_for(shared: &Shared, unit: &StartedUnit) -> tokio::process::Command {
    let (path, args) = match unit.exec_start.first() {
        Some(exec) => (exec.path.clone(), exec.argv.iter().skip(1).cloned().collect::<Vec<_>>()),
        None => (String::new(), Vec::new()),
    };
    let mut command = match unit.caller_pid {
        Some(pid) => {
            let mut c = tokio::process::Command::new("nsenter");
            c.args(["--target", &pid.to_string(), "--mount", "--net", "--", &path]);
            c
        }
        None => tokio::process::Command::new(&path),
    };
    command.args(&args).env_clear().env("PATH", DEFAULT_PATH).current_dir("/");
    for (key, value) in &lock(shared).environment {
        command.env(key, value);
    }
    for assignment in &unit.environment {
        if let Some((key, value)) = assignment.split_once('=') {
            command.env(key, value);
        }
    }
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    command
}

/// Records how the main process ended; returns whether the unit is to be collected.
pub(super) fn finish(shared: &Shared, name: &str, code: i32, status: i32) -> bool {
    let mut state = lock(shared);
    let collect_mode = state.collect_modes.get(name).cloned().unwrap_or_default();
    let Some(unit) = state.units.get_mut(name) else { return false };
    let success = code == 1 && status == 0;
    unit.exec_main_code = code;
    unit.exec_main_status = status;
    unit.active_state = if success { "inactive" } else { "failed" }.into();
    unit.sub_state = if success { "dead" } else { "failed" }.into();
    unit.result = match (success, code) {
        (true, _) => "success",
        (false, 2) => "signal",
        (false, _) => "exit-code",
    }
    .into();
    let collect = success || collect_mode == "inactive-or-failed";
    if collect {
        unit.loaded = false;
    }
    collect
}

pub(super) async fn remove_objects(server: &ObjectServer, path: &str) {
    let _ = server.remove::<UnitIface, _>(path).await;
    let _ = server.remove::<ServiceIface, _>(path).await;
}

/// One unit's state, shared by its two interfaces.
#[derive(Clone)]
pub(super) struct UnitObject {
    pub(super) shared: Shared,
    pub(super) name: String,
}

impl UnitObject {
    fn state(&self) -> UnitState {
        lock(&self.shared).units.get(&self.name).cloned().unwrap_or(UnitState {
            active_state: "inactive".into(),
            sub_state: "dead".into(),
            result: "success".into(),
            exec_main_code: 0,
            exec_main_status: 0,
            exec_main_pid: 0,
            loaded: false,
        })
    }
}

pub(super) struct UnitIface(pub(super) UnitObject);

#[zbus::interface(name = "org.freedesktop.systemd1.Unit")]
impl UnitIface {
    #[zbus(property)]
    fn id(&self) -> String {
        self.0.name.clone()
    }

    #[zbus(property)]
    fn active_state(&self) -> String {
        self.0.state().active_state
    }

    #[zbus(property)]
    fn sub_state(&self) -> String {
        self.0.state().sub_state
    }

    /// No job is ever queued: units start within `StartTransientUnit`.
    #[zbus(property)]
    fn job(&self) -> (u32, OwnedObjectPath) {
        (0, OwnedObjectPath::from(zbus::zvariant::ObjectPath::from_static_str_unchecked("/")))
    }
}

pub(super) struct ServiceIface(pub(super) UnitObject);

#[zbus::interface(name = "org.freedesktop.systemd1.Service")]
impl ServiceIface {
    #[zbus(property)]
    fn result(&self) -> String {
        self.0.state().result
    }

    #[zbus(property, name = "ExecMainCode")]
    fn exec_main_code(&self) -> i32 {
        self.0.state().exec_main_code
    }

    #[zbus(property, name = "ExecMainStatus")]
    fn exec_main_status(&self) -> i32 {
        self.0.state().exec_main_status
    }

    #[zbus(property, name = "ExecMainPID")]
    fn exec_main_pid(&self) -> u32 {
        self.0.state().exec_main_pid
    }

    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> u32 {
        let state = self.0.state();
        if state.active_state == "active" {
            state.exec_main_pid
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_paths_are_escaped_as_systemd_does() {
        assert_eq!(
            unit_path("hostctl-activate-d1-17.service"),
            "/org/freedesktop/systemd1/unit/hostctl_2dactivate_2dd1_2d17_2eservice"
        );
        assert_eq!(unit_path("1a.service"), "/org/freedesktop/systemd1/unit/_31a_2eservice");
    }
}
