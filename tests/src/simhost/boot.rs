//! What a simulated host booted: `/run/booted-system` inside the host, and a simulated
//! reboot (stop the agent, point `/run/booted-system` at another system, start the agent
//! again). Nothing boots: the kernel and init are this machine's; only what the agent
//! reads about the boot changes.

use std::path::PathBuf;

use super::SimHost;
use crate::fail;

impl SimHost {
    /// ROOT/run: mounted on `/run` for the processes started in the host once it exists.
    fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// Makes `/run/booted-system` inside the host point at `toplevel`, for the processes
    /// started in the host from now on (and at once for those started after an earlier
    /// call: ROOT/run is the same directory). Until the first call, the host has this
    /// machine's `/run`, which has no `/run/booted-system`.
    pub fn set_booted_system(&self, toplevel: &str) {
        let dir = self.run_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", dir.display())));
        let link = dir.join("booted-system");
        let new = dir.join("booted-system.new");
        let _ = std::fs::remove_file(&new);
        std::os::unix::fs::symlink(toplevel, &new)
            .and_then(|()| std::fs::rename(&new, &link))
            .unwrap_or_else(|e| fail(&format!("cannot point {} at {toplevel}: {e}", link.display())));
    }

    /// What `/run/booted-system` points at inside the host, if it was set.
    pub fn booted_system(&self) -> Option<String> {
        std::fs::read_link(self.run_dir().join("booted-system")).ok().map(|t| t.to_string_lossy().into_owned())
    }

    /// A simulated reboot into `toplevel`: the agent is stopped (SIGTERM, as systemd
    /// stops it at shutdown), `/run/booted-system` and ROOT/state/current-system (what
    /// the example's `switch-to-configuration` records as running) are pointed at
    /// `toplevel`, and the agent starts again with its last configuration.
    pub fn reboot_into(&mut self, toplevel: &str) {
        self.stop_agent();
        self.set_booted_system(toplevel);
        let running = self.state_dir().join("current-system");
        std::fs::write(&running, format!("{toplevel}\n"))
            .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", running.display())));
        self.restart_agent();
    }
}
