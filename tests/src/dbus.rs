//! A private system-like D-Bus bus for tests: `dbus-daemon --nofork` with a configuration
//! generated in a temporary directory (`<type>system</type>`, EXTERNAL authentication, the
//! system bus's default policy, and an `<include>` of the policy file the agent ships,
//! `agent/dbus/org.hostctl.Agent1.conf`), listening on a path socket, so simulated hosts
//! (which share `/tmp`) reach it from their own network namespace. The directory is
//! world-searchable so callers running as another uid (`setpriv`) can connect.
//!
//! The daemon is killed by pid and waited for on drop, also when the test failed.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::simhost::SimHost;
use crate::{fail, run, workspace_root};

/// The agent's well-known name and object.
pub const NAME: &str = "org.hostctl.Agent1";
pub const PATH: &str = "/org/hostctl/Agent1";

/// The uid and gid of `nobody`: an unprivileged caller.
pub const NOBODY: u32 = 65534;

/// Which policy the bus enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The system bus's default policy plus the agent's shipped policy file.
    Shipped,
    /// The same, plus a mandatory rule letting anyone call anything on the agent: calls
    /// reach the agent, so its own uid check is what refuses them.
    Permissive,
}

/// The system bus's default policy (from Debian's `/usr/share/dbus-1/system.conf`).
const DEFAULT_POLICY: &str = r#"  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
"#;

/// A private bus; see the module documentation.
#[derive(Debug)]
pub struct TestBus {
    dir: tempfile::TempDir,
    config: PathBuf,
    address: String,
    daemon: Option<(Child, ChildStdout)>,
}

impl TestBus {
    /// Writes the configuration; the daemon is not started yet (see [`TestBus::run`]),
    /// but [`TestBus::address`] is already known.
    pub fn new(policy: Policy) -> TestBus {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::Builder::new()
            .prefix("hostctl-dbus-")
            .tempdir()
            .unwrap_or_else(|e| fail(&format!("cannot create a temp dir for the bus: {e}")));
        if let Err(e) = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)) {
            fail(&format!("chmod 755 {}: {e}", dir.path().display()));
        }
        let socket = dir.path().join("system_bus_socket");
        let address = format!("unix:path={}", socket.display());
        let shipped = workspace_root().join("agent/dbus/org.hostctl.Agent1.conf");
        let permissive = match policy {
            Policy::Shipped => "",
            Policy::Permissive => {
                "  <policy context=\"mandatory\">\n    <allow send_destination=\"org.hostctl.Agent1\"/>\n  </policy>\n"
            }
        };
        let text = format!(
            "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n \
             \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n<busconfig>\n  \
             <type>system</type>\n  <listen>{address}</listen>\n  <auth>EXTERNAL</auth>\n{DEFAULT_POLICY}  \
             <include>{}</include>\n{permissive}</busconfig>\n",
            shipped.display()
        );
        let config = dir.path().join("bus.conf");
        std::fs::write(&config, text).unwrap_or_else(|e| fail(&format!("write {}: {e}", config.display())));
        TestBus { dir, config, address, daemon: None }
    }

    /// A bus with `policy`, running.
    pub fn start(policy: Policy) -> TestBus {
        let mut bus = TestBus::new(policy);
        bus.run();
        bus
    }

    /// `unix:path=<dir>/system_bus_socket`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether the daemon was started (and not stopped).
    pub fn is_running(&self) -> bool {
        self.daemon.is_some()
    }

    /// The generated daemon configuration.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Starts the daemon and returns once it listens (it prints its address then).
    pub fn run(&mut self) {
        if self.daemon.is_some() {
            fail("the test bus is already running");
        }
        let log_path = self.dir.path().join("daemon.log");
        let log = std::fs::File::create(&log_path).unwrap_or_else(|e| fail(&format!("create daemon.log: {e}")));
        let mut child = Command::new("dbus-daemon")
            .arg("--nofork")
            .arg("--print-address=1")
            .arg(format!("--config-file={}", self.config.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot start dbus-daemon: {e}")));
        let Some(stdout) = child.stdout.take() else { fail("dbus-daemon has no stdout pipe") };
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = reader.read_line(&mut line);
        // Kept (with its pipe) before anything can fail, so Drop kills it.
        self.daemon = Some((child, reader.into_inner()));
        if !matches!(read, Ok(n) if n > 0) || !line.starts_with("unix:") {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            fail(&format!("dbus-daemon did not start ({read:?}, printed {line:?}): {log}"));
        }
    }

    /// Kills the daemon (by pid) and waits for it; the socket file goes with it.
    pub fn stop(&mut self) {
        if let Some((mut child, _stdout)) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.dir.path().join("system_bus_socket"));
    }

    /// `dbus-send --bus=ADDRESS --print-reply ARGS...`, as root or as `uid` (its own
    /// group, no supplementary groups) through `setpriv`.
    pub fn dbus_send(&self, uid: Option<u32>, args: &[&str]) -> Output {
        let bus = format!("--bus={}", self.address);
        let mut cmd = match uid {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.args([&format!("--reuid={uid}"), &format!("--regid={uid}"), "--clear-groups", "dbus-send"]);
                c
            }
            None => Command::new("dbus-send"),
        };
        cmd.args([bus.as_str(), "--print-reply", "--reply-timeout=20000"]).args(args);
        run(&mut cmd)
    }

    /// `dbus-send` of `method` (e.g. `org.hostctl.Agent1.Rollback`) to the agent.
    pub fn call_agent(&self, uid: Option<u32>, method: &str, args: &[&str]) -> Output {
        let dest = format!("--dest={NAME}");
        let mut all = vec![dest.as_str(), PATH, method];
        all.extend_from_slice(args);
        self.dbus_send(uid, &all)
    }

    /// Whether someone owns `name` now.
    pub fn has_owner(&self, name: &str) -> bool {
        let arg = format!("string:{name}");
        let out = self.dbus_send(
            None,
            &["--dest=org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus.NameHasOwner", &arg],
        );
        String::from_utf8_lossy(&out.stdout).contains("boolean true")
    }

    /// Waits until `name` is owned; fails after `timeout`.
    pub fn wait_for_owner(&self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.has_owner(name) {
            if Instant::now() > deadline {
                fail(&format!("nobody owns {name} on {} after {timeout:?}", self.address));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Restarts `host`'s agent with `bus: <address>` in its configuration
/// (ROOT/etc/agent.yaml, whose other settings stay).
pub fn restart_on_bus(host: &mut SimHost, address: &str) {
    let path = host.root.join("etc/agent.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap_or_else(|e| fail(&format!("read {}: {e}", path.display())));
    let quoted = serde_json::Value::String(address.to_owned()).to_string();
    let mut lines: Vec<String> = yaml.lines().filter(|l| !l.starts_with("bus:")).map(str::to_owned).collect();
    lines.push(format!("bus: {quoted}"));
    host.stop_agent();
    host.start_agent(&(lines.join("\n") + "\n"));
}
