//! A private, permissive D-Bus bus for the systemd tests: `dbus-daemon --nofork` on a path
//! socket in a temporary directory (simulated hosts share `/tmp`, so an agent in its own
//! network namespace reaches it), session-like: anyone may own any name and call anything.
//! The fake `org.freedesktop.systemd1` ([`crate::fake_systemd1`]) and the agent meet there.
//!
//! The daemon is killed by pid and waited for on drop, also when the test failed.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, Command, Stdio};

use crate::fail;

/// A running private bus; see the module documentation.
#[derive(Debug)]
pub struct PrivateBus {
    _dir: tempfile::TempDir,
    daemon: Child,
    address: String,
}

impl PrivateBus {
    /// Starts the daemon and returns once it listens.
    pub fn start() -> PrivateBus {
        let dir = tempfile::Builder::new()
            .prefix("hostctl-bus-")
            .tempdir()
            .unwrap_or_else(|e| fail(&format!("cannot create a temp dir for the bus: {e}")));
        let socket = dir.path().join("bus");
        let address = format!("unix:path={}", socket.display());
        let config = dir.path().join("bus.conf");
        std::fs::write(&config, config_xml(&address))
            .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", config.display())));
        let mut daemon = Command::new("dbus-daemon")
            .arg("--nofork")
            .arg("--print-address=1")
            .arg(format!("--config-file={}", config.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot start dbus-daemon: {e}")));
        // The daemon prints its address once it listens, or exits (closing stdout).
        let mut line = String::new();
        if let Some(stdout) = daemon.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        if !line.starts_with("unix:") {
            let _ = daemon.kill();
            let _ = daemon.wait();
            let mut stderr = String::new();
            if let Some(mut pipe) = daemon.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            fail(&format!("dbus-daemon did not start (printed {line:?}): {stderr}"));
        }
        PrivateBus { _dir: dir, daemon, address }
    }

    /// `unix:path=…`, as the agent's `bus:` setting takes it.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        // Our own child, killed by its pid and reaped.
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// A session-like configuration listening on `address`, with a policy that allows
/// everything.
fn config_xml(address: &str) -> String {
    let escaped = address.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>{escaped}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
    <allow user="*"/>
  </policy>
</busconfig>
"#
    )
}
