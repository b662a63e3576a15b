//! A fake `org.freedesktop.systemd1` for the agent's transient activation units.
//!
//! This is the one mock the tests allow: systemd is not PID 1 here and must never be
//! booted (it would take over the machine and wipe `/tmp` for everyone), so this stands
//! in for the part of its D-Bus API the agent uses, on a [`crate::private_bus`] bus.
//!
//! It behaves like systemd where the agent can tell: `StartTransientUnit` checks the unit
//! name and each property's name and D-Bus type as systemd does (an unknown property or
//! a wrong type is `org.freedesktop.DBus.Error.InvalidArgs`), refuses a name that is
//! loaded (`UnitExists`), and really runs `ExecStart`: in the mount and network namespaces
//! of the caller (the agent's host, as systemd of that host would), in a process group of
//! its own, with a clean environment (a default `PATH`, [`FakeSystemd1::set_environment`]
//! as the manager's environment, then the unit's `Environment`), cwd `/`. The unit is
//! `active`/`running` until its process exits, then `inactive`/`dead` (status 0) or
//! `failed` with `ExecMainCode`/`ExecMainStatus`, and is collected (its objects removed,
//! `GetUnit` says `NoSuchUnit`) per its `CollectMode`. `KillUnit` signals the process
//! group. Every call is recorded for the tests' assertions.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use zbus::message::Header;
use zbus::object_server::ObjectServer;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::Connection;

use crate::fail;
pub use units::unit_path;
use units::{kill_group, remove_objects, run_unit, ServiceIface, UnitIface, UnitObject};

mod units;

/// systemd's default `PATH` for services.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The properties the fake accepts, with the D-Bus type systemd expects for each.
const KNOWN_PROPERTIES: &[(&str, &str)] = &[
    ("Description", "s"),
    ("Type", "s"),
    ("ExecStart", "a(sasb)"),
    ("Environment", "as"),
    ("KillMode", "s"),
    ("CollectMode", "s"),
    ("RemainAfterExit", "b"),
    ("StandardOutput", "s"),
    ("StandardError", "s"),
];

/// One command of `ExecStart` (`(sasb)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    pub path: String,
    /// With argv\[0\].
    pub argv: Vec<String>,
    pub ignore_failure: bool,
}

/// A `StartTransientUnit` call systemd accepted.
#[derive(Debug, Clone)]
pub struct StartedUnit {
    pub name: String,
    pub mode: String,
    /// The pid of the caller (the agent), from the bus.
    pub caller_pid: Option<u32>,
    /// Property names in the order given.
    pub property_names: Vec<String>,
    pub description: Option<String>,
    pub service_type: Option<String>,
    pub exec_start: Vec<ExecCommand>,
    pub environment: Vec<String>,
    pub kill_mode: Option<String>,
    pub collect_mode: Option<String>,
}

/// A recorded call.
#[derive(Debug, Clone)]
pub enum Call {
    Start(StartedUnit),
    /// Also recorded when refused.
    StartRefused {
        name: String,
        error: String,
    },
    GetUnit {
        name: String,
        caller_pid: Option<u32>,
    },
    Kill {
        name: String,
        whom: String,
        signal: i32,
    },
    ResetFailed {
        name: String,
    },
}

/// What systemd would say about a unit (kept after it is collected, for the tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    pub active_state: String,
    pub sub_state: String,
    pub result: String,
    pub exec_main_code: i32,
    pub exec_main_status: i32,
    pub exec_main_pid: u32,
    /// Still loaded (not collected).
    pub loaded: bool,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    units: BTreeMap<String, UnitState>,
    collect_modes: BTreeMap<String, String>,
    environment: Vec<(String, String)>,
    jobs: u32,
}

type Shared = Arc<Mutex<State>>;

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The fake, serving on its own thread until dropped. See the module documentation.
#[derive(Debug)]
pub struct FakeSystemd1 {
    shared: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeSystemd1 {
    /// Connects to the bus at `address` and owns `org.freedesktop.systemd1` there.
    pub fn start(address: &str) -> FakeSystemd1 {
        let shared: Shared = Arc::default();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bus, state) = (address.to_owned(), Arc::clone(&shared));
        let thread = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return drop(ready_tx.send(Err(e.to_string()))),
            };
            runtime.block_on(async move {
                let served = serve(&bus, state).await;
                let connection = match served {
                    Ok(conn) => conn,
                    Err(e) => return drop(ready_tx.send(Err(e.to_string()))),
                };
                let _ = ready_tx.send(Ok(()));
                let _ = stopped.await;
                drop(connection);
            });
        });
        match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => fail(&format!("fake systemd1 on {address}: {e}")),
            Err(_) => fail(&format!("fake systemd1 on {address} did not start")),
        }
        FakeSystemd1 { shared, stop: Some(stop), thread: Some(thread) }
    }

    /// The manager's environment, given to every unit started from now on (on a
    /// simulated host: what that host's processes get, e.g. `HOSTCTL_EXAMPLE_STATE`).
    pub fn set_environment(&self, env: &[(&str, &str)]) {
        lock(&self.shared).environment = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.shared).calls.clone()
    }

    /// The units started so far, oldest first.
    pub fn started(&self) -> Vec<StartedUnit> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Start(unit) => Some(unit),
                _ => None,
            })
            .collect()
    }

    /// The last state of a unit started by this fake.
    pub fn unit(&self, name: &str) -> Option<UnitState> {
        lock(&self.shared).units.get(name).cloned()
    }

    /// Waits until `done` holds for the calls; fails after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&[Call]) -> bool) -> Vec<Call> {
        let start = Instant::now();
        loop {
            let calls = self.calls();
            if done(&calls) {
                return calls;
            }
            if start.elapsed() > timeout {
                fail(&format!("fake systemd1: no {what} within {timeout:?}; calls: {calls:#?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn running_groups(&self) -> Vec<u32> {
        let state = lock(&self.shared);
        state.units.values().filter(|u| u.active_state == "active").map(|u| u.exec_main_pid).collect()
    }
}

impl Drop for FakeSystemd1 {
    /// Kills the process groups of units still running (ours: the fake started them),
    /// lets the runtime see them exit, then stops it. Never panics.
    fn drop(&mut self) {
        for pgid in self.running_groups() {
            kill_group(pgid, 9);
        }
        let start = Instant::now();
        while !self.running_groups().is_empty() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(address: &str, shared: Shared) -> zbus::Result<Connection> {
    zbus::connection::Builder::address(address)?
        .name("org.freedesktop.systemd1")?
        .serve_at("/org/freedesktop/systemd1", Manager { shared })?
        .build()
        .await
}

/// The errors the fake answers with, under their systemd and D-Bus names.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.freedesktop")]
enum Systemd1Error {
    #[zbus(error)]
    ZBus(zbus::Error),
    #[zbus(name = "systemd1.NoSuchUnit")]
    NoSuchUnit(String),
    #[zbus(name = "systemd1.UnitExists")]
    UnitExists(String),
    #[zbus(name = "DBus.Error.InvalidArgs")]
    InvalidArgs(String),
}

fn object_path(path: &str) -> Result<OwnedObjectPath, Systemd1Error> {
    OwnedObjectPath::try_from(path.to_owned()).map_err(|e| Systemd1Error::InvalidArgs(e.to_string()))
}

/// Checks the name like systemd (`unit_name_is_valid`, services only here).
fn check_name(name: &str) -> Result<(), Systemd1Error> {
    let stem = name.strip_suffix(".service").unwrap_or("");
    let ok_char = |c: char| c.is_ascii_alphanumeric() || ":-_.\\".contains(c);
    if stem.is_empty() || name.len() > 255 || !stem.chars().all(ok_char) {
        return Err(Systemd1Error::InvalidArgs(format!("Invalid unit name or type: {name}")));
    }
    Ok(())
}

/// The pid of the connection that sent `header` (from the bus daemon).
async fn caller_pid(conn: &Connection, header: &Header<'_>) -> Option<u32> {
    let sender = header.sender()?.to_owned();
    let bus = zbus::fdo::DBusProxy::new(conn).await.ok()?;
    bus.get_connection_unix_process_id(sender.into()).await.ok()
}

/// Decodes the properties into a [`StartedUnit`], refusing what systemd would refuse.
fn parse_unit(
    name: &str,
    mode: &str,
    properties: Vec<(String, OwnedValue)>,
    caller_pid: Option<u32>,
) -> Result<StartedUnit, Systemd1Error> {
    let mut unit = StartedUnit {
        name: name.to_owned(),
        mode: mode.to_owned(),
        caller_pid,
        property_names: Vec::new(),
        description: None,
        service_type: None,
        exec_start: Vec::new(),
        environment: Vec::new(),
        kill_mode: None,
        collect_mode: None,
    };
    let invalid = |what: String| Systemd1Error::InvalidArgs(what);
    for (key, value) in properties {
        let signature = value.value_signature().to_string();
        match KNOWN_PROPERTIES.iter().find(|(known, _)| *known == key) {
            None => return Err(invalid(format!("Cannot set property {key}, or unknown property."))),
            Some((_, expected)) if *expected != signature => {
                return Err(invalid(format!("property {key}: expected type {expected}, got {signature}")))
            }
            Some(_) => {}
        }
        let value = Value::from(value);
        let text = || {
            String::try_from(value.try_clone().map_err(|e| invalid(e.to_string()))?).map_err(|e| invalid(e.to_string()))
        };
        match key.as_str() {
            "Description" => unit.description = Some(text()?),
            "Type" => unit.service_type = Some(text()?),
            "KillMode" => unit.kill_mode = Some(text()?),
            "CollectMode" => unit.collect_mode = Some(text()?),
            "Environment" => unit.environment = Vec::<String>::try_from(value).map_err(|e| invalid(e.to_string()))?,
            "ExecStart" => {
                let commands =
                    Vec::<(String, Vec<String>, bool)>::try_from(value).map_err(|e| invalid(e.to_string()))?;
                unit.exec_start = commands
                    .into_iter()
                    .map(|(path, argv, ignore_failure)| ExecCommand { path, argv, ignore_failure })
                    .collect();
            }
            _ => {}
        }
        unit.property_names.push(key);
    }
    if unit.exec_start.is_empty() {
        return Err(invalid(format!("Service {name} has no ExecStart= setting, refusing.")));
    }
    if unit.environment.iter().any(|e| !e.contains('=')) {
        return Err(invalid(format!("Invalid environment assignment in {:?}", unit.environment)));
    }
    Ok(unit)
}

/// `org.freedesktop.systemd1.Manager`: the subset the agent calls.
struct Manager {
    shared: Shared,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    #[expect(clippy::too_many_arguments, reason = "systemd's four arguments plus what zbus injects")]
    async fn start_transient_unit(
        &self,
        name: String,
        mode: String,
        properties: Vec<(String, OwnedValue)>,
        aux: Vec<(String, Vec<(String, OwnedValue)>)>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<OwnedObjectPath, Systemd1Error> {
        let pid = caller_pid(conn, &header).await;
        let parsed = check_name(&name)
            .and_then(|()| match mode.as_str() {
                "fail" | "replace" => Ok(()),
                other => Err(Systemd1Error::InvalidArgs(format!("Job mode {other} invalid"))),
            })
            .and_then(|()| match aux.is_empty() {
                true => Ok(()),
                false => Err(Systemd1Error::InvalidArgs("auxiliary units are not supported by the fake".into())),
            })
            .and_then(|()| parse_unit(&name, &mode, properties, pid))
            .and_then(|unit| match lock(&self.shared).units.get(&name) {
                Some(u) if u.loaded => Err(Systemd1Error::UnitExists(format!("Unit {name} was already loaded"))),
                _ => Ok(unit),
            });
        let unit = match parsed {
            Ok(unit) => unit,
            Err(e) => {
                lock(&self.shared).calls.push(Call::StartRefused { name, error: e.to_string() });
                return Err(e);
            }
        };
        let path = object_path(&unit_path(&name))?;
        let iface = UnitObject { shared: Arc::clone(&self.shared), name: name.clone() };
        server.at(&path, UnitIface(iface.clone())).await?;
        server.at(&path, ServiceIface(iface)).await?;
        let job = {
            let mut state = lock(&self.shared);
            state.jobs += 1;
            state.collect_modes.insert(name.clone(), unit.collect_mode.clone().unwrap_or_else(|| "inactive".into()));
            state.calls.push(Call::Start(unit.clone()));
            state.jobs
        };
        run_unit(Arc::clone(&self.shared), unit, server.clone(), path);
        object_path(&format!("/org/freedesktop/systemd1/job/{job}"))
    }

    async fn get_unit(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<OwnedObjectPath, Systemd1Error> {
        let caller_pid = caller_pid(conn, &header).await;
        let mut state = lock(&self.shared);
        state.calls.push(Call::GetUnit { name: name.clone(), caller_pid });
        match state.units.get(&name) {
            Some(unit) if unit.loaded => object_path(&unit_path(&name)),
            _ => Err(Systemd1Error::NoSuchUnit(format!("Unit {name} not loaded."))),
        }
    }

    async fn kill_unit(&self, name: String, whom: String, signal: i32) -> Result<(), Systemd1Error> {
        let mut state = lock(&self.shared);
        state.calls.push(Call::Kill { name: name.clone(), whom: whom.clone(), signal });
        if !matches!(whom.as_str(), "main" | "control" | "all") {
            return Err(Systemd1Error::InvalidArgs(format!("Invalid who argument {whom}")));
        }
        match state.units.get(&name) {
            Some(unit) if unit.loaded => {
                if unit.active_state == "active" {
                    // Every process of the unit: its process group stands in for the cgroup.
                    kill_group(unit.exec_main_pid, signal);
                }
                Ok(())
            }
            _ => Err(Systemd1Error::NoSuchUnit(format!("Unit {name} is not loaded."))),
        }
    }

    async fn reset_failed_unit(
        &self,
        name: String,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<(), Systemd1Error> {
        let collect = {
            let mut state = lock(&self.shared);
            state.calls.push(Call::ResetFailed { name: name.clone() });
            match state.units.get_mut(&name) {
                Some(unit) if unit.loaded => {
                    let failed = unit.active_state == "failed";
                    if failed {
                        unit.loaded = false;
                    }
                    failed
                }
                _ => return Err(Systemd1Error::NoSuchUnit(format!("Unit {name} not loaded."))),
            }
        };
        if collect {
            remove_objects(server, &unit_path(&name)).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_are_checked() {
        assert!(check_name("hostctl-activate-d1-1.service").is_ok());
        for bad in ["", ".service", "a b.service", "a.socket", "a+b.service"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
