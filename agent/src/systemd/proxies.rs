//! zbus proxies for the part of `org.freedesktop.systemd1` the agent uses: the manager's
//! transient-unit calls and the unit/service properties that say whether an activation
//! still runs and how it ended.
//!
//! Properties are never cached: the manager does not promise `PropertiesChanged` for all
//! of them, and a poll must see systemd's current answer.

use zbus::zvariant::{OwnedObjectPath, Value};

/// `org.freedesktop.systemd1.Manager` on `/org/freedesktop/systemd1`.
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_blocking = false
)]
pub(crate) trait Manager {
    /// Creates and starts a unit from `properties` (`a(sv)`); `aux` (`a(sa(sv))`) holds
    /// further units, none here. Returns the start job.
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Value<'_>)],
        aux: &[(&str, &[(&str, Value<'_>)])],
    ) -> zbus::Result<OwnedObjectPath>;

    /// Starts a unit (`mode`: `replace-irreversibly` for `reboot.target`, as
    /// `systemctl reboot` does). Returns the start job.
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// The object of a loaded unit; `org.freedesktop.systemd1.NoSuchUnit` otherwise.
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    /// Sends `signal` to the unit's processes (`whom`: `main`, `control` or `all`).
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;
}

/// `org.freedesktop.systemd1.Unit` of one unit (path from [`ManagerProxy::get_unit`]).
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1",
    gen_blocking = false
)]
pub(crate) trait Unit {
    /// `active`, `reloading`, `inactive`, `failed`, `activating`, `deactivating`.
    #[zbus(property(emits_changed_signal = "false"))]
    fn active_state(&self) -> zbus::Result<String>;

    /// The queued job (id 0 when none): a unit whose start job has not run yet is still
    /// `inactive`.
    #[zbus(property(emits_changed_signal = "false"))]
    fn job(&self) -> zbus::Result<(u32, OwnedObjectPath)>;
}

/// `org.freedesktop.systemd1.Service` of one service unit.
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1",
    gen_blocking = false
)]
pub(crate) trait Service {
    /// How the main process ended: `CLD_EXITED` (1), `CLD_KILLED` (2), `CLD_DUMPED` (3);
    /// 0 while it runs or if it never did.
    #[zbus(property(emits_changed_signal = "false"), name = "ExecMainCode")]
    fn exec_main_code(&self) -> zbus::Result<i32>;

    /// Its exit status (`CLD_EXITED`) or signal number.
    #[zbus(property(emits_changed_signal = "false"), name = "ExecMainStatus")]
    fn exec_main_status(&self) -> zbus::Result<i32>;
}
