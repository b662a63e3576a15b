//! Holding a simulated host in the middle of an operation, so tests can act while it
//! waits: [`SwitchGate`] (a switch blocked before it changes the running system) and
//! [`GcHold`] (every store-registering Nix operation blocked on the GC lock).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::simhost::{Background, SimHost, GATE_TIMEOUT};
use crate::{fail, run};

/// `O_NONBLOCK` on Linux (x86, arm, riscv): opening a FIFO for reading without waiting
/// for a writer. The crate has no `libc`; this value is what those targets use.
const O_NONBLOCK: i32 = 0o4000;

/// Holds the example's `switch-to-configuration` on a host in the middle of a switch:
/// ROOT/state/switch.log becomes a FIFO, and the script's `printf ... >> switch.log`
/// (before it touches `current-system`) blocks opening it until [`SwitchGate::release`]
/// reads it. The log's earlier lines are kept and the held line is appended on release,
/// after which switch.log is a regular file again (later switches, e.g. a rollback, are
/// not held). Dropping an unreleased gate releases it.
#[derive(Debug)]
pub struct SwitchGate {
    host: String,
    netns: String,
    log: PathBuf,
    fifo: PathBuf,
    saved: String,
    armed: bool,
}

impl SwitchGate {
    /// Turns `host`'s switch.log into a FIFO: the next switch on that host blocks.
    pub fn arm(host: &SimHost) -> SwitchGate {
        let log = host.state_dir().join("switch.log");
        let fifo = host.state_dir().join("switch.log.held");
        let saved = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        let out = run(Command::new("mkfifo").arg(&log));
        if !out.status.success() {
            fail(&format!("mkfifo {}: {}", log.display(), String::from_utf8_lossy(&out.stderr)));
        }
        SwitchGate { host: host.name.clone(), netns: host.netns.clone(), log, fifo, saved, armed: true }
    }

    /// Pids of processes in the host that are blocked opening a FIFO (the kernel's
    /// `wait_for_partner`): with the gate armed, that is the held switch.
    pub fn blocked_pids(&self) -> Vec<u32> {
        let out = Command::new("ip").args(["netns", "pids", &self.netns]).output();
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        text.split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .filter(|pid| {
                let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
                match wchan.trim() {
                    "wait_for_partner" => true,
                    // wchan hidden (e.g. kptr_restrict): a switch script inside open(2).
                    "" | "0" => {
                        let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
                        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                        let opening = matches!(syscall.split_whitespace().next(), Some("2" | "257"));
                        opening && String::from_utf8_lossy(&cmdline).contains("switch-to-configuration")
                    }
                    _ => false,
                }
            })
            .collect()
    }

    /// Waits until a switch is held at the gate; fails after 30 s.
    pub fn wait_blocked(&self) {
        let deadline = Instant::now() + GATE_TIMEOUT;
        while self.blocked_pids().is_empty() {
            if Instant::now() > deadline {
                fail(&format!(
                    "no switch-to-configuration blocked on {}'s switch.log within {GATE_TIMEOUT:?}",
                    self.host
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lets the held switch (if any) go on and makes switch.log a regular file again
    /// with every line, the held one last. Returns the held line (empty if none).
    pub fn release(&mut self) -> String {
        self.try_release().unwrap_or_else(|e| fail(&e))
    }

    fn try_release(&mut self) -> Result<String, String> {
        use std::io::Read as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        if !self.armed {
            return Ok(String::new());
        }
        self.armed = false;
        // Later opens of switch.log find the regular file; the held writer already
        // resolved the FIFO's inode and keeps waiting on it.
        std::fs::rename(&self.log, &self.fifo)
            .map_err(|e| format!("cannot move the FIFO {} away: {e}", self.log.display()))?;
        std::fs::write(&self.log, &self.saved).map_err(|e| format!("cannot restore {}: {e}", self.log.display()))?;
        // Non-blocking: returns at once; a writer waiting in open() now proceeds (the
        // kernel counted it as a writer before it slept), and reads see EOF when it is
        // done, or at once when there was none.
        let mut reader = OpenOptions::new()
            .read(true)
            .custom_flags(O_NONBLOCK)
            .open(&self.fifo)
            .map_err(|e| format!("cannot open {}: {e}", self.fifo.display()))?;
        let mut held = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + GATE_TIMEOUT;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => held.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => {
                    if Instant::now() > deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => break,
            }
        }
        drop(reader);
        let _ = std::fs::remove_file(&self.fifo);
        let held = String::from_utf8_lossy(&held).into_owned();
        if !held.is_empty() {
            OpenOptions::new()
                .append(true)
                .open(&self.log)
                .and_then(|mut f| f.write_all(held.as_bytes()))
                .map_err(|e| format!("cannot append to {}: {e}", self.log.display()))?;
        }
        Ok(held)
    }
}

impl Drop for SwitchGate {
    fn drop(&mut self) {
        // Never panics (it may run while a failed test unwinds).
        if let Err(e) = self.try_release() {
            eprintln!("warning: switch gate of {}: {e}", self.host);
        }
    }
}

/// Makes every Nix operation in a host that registers a store path (`nix-store
/// --import`, `nix-env --set`, ...) wait, as if that host's garbage collector were
/// running: holds the host's GC lock (ROOT/nix/var/nix/gc.lock) exclusively and listens
/// on its GC socket, where Nix then sends the path and waits for an answer that only
/// comes on [`GcHold::release`]. Read-only queries are not held. Dropping it releases.
#[derive(Debug)]
pub struct GcHold {
    host: String,
    locker: Background,
    socket: PathBuf,
    /// Connections of the waiting Nix processes, in the order they came.
    waiting: std::sync::Arc<std::sync::Mutex<Vec<std::os::unix::net::UnixStream>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl GcHold {
    pub fn hold(host: &SimHost) -> GcHold {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let state = host.root.join("nix/var/nix");
        let lock = state.join("gc.lock");
        let socket_dir = state.join("gc-socket");
        let socket = socket_dir.join("socket");
        std::fs::create_dir_all(&socket_dir)
            .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", socket_dir.display())));
        let _ = std::fs::remove_file(&socket);
        let listener = std::os::unix::net::UnixListener::bind(&socket)
            .unwrap_or_else(|e| fail(&format!("cannot listen on {}: {e}", socket.display())));
        listener.set_nonblocking(true).unwrap_or_else(|e| fail(&format!("set_nonblocking: {e}")));
        // One process holds the lock on fd 9 for as long as it lives (`exec` keeps the pid).
        let child = Command::new("sh")
            .args(["-c", r#"exec 9>>"$1" && flock -x 9 && exec sleep 1000000"#, "sh"])
            .arg(&lock)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot start the GC lock holder: {e}")));
        let mut locker = Background { child: Some(child) };
        let deadline = Instant::now() + GATE_TIMEOUT;
        // Held once a shared lock cannot be had.
        while run(Command::new("flock").args(["-n", "-s"]).arg(&lock).arg("true")).status.success() {
            if !locker.is_running() || Instant::now() > deadline {
                fail(&format!("cannot take {} exclusively", lock.display()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let waiting = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (waiting, stop) = (Arc::clone(&waiting), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(stream);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        GcHold { host: host.name.clone(), locker, socket, waiting, stop, acceptor: Some(acceptor) }
    }

    /// How many Nix clients are waiting on the hold (connections to the GC socket).
    pub fn waiters(&self) -> usize {
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Waits until a Nix process of the host waits on the hold; fails after 30 s.
    pub fn wait_for_waiter(&self) {
        self.wait_for_waiters(1);
    }

    /// Waits until `n` Nix processes have come to the hold.
    pub fn wait_for_waiters(&self, n: usize) {
        let deadline = Instant::now() + GATE_TIMEOUT;
        while self.waiters() < n {
            if Instant::now() > deadline {
                fail(&format!("no Nix operation of {} waited on the GC hold within {GATE_TIMEOUT:?}", self.host));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lets everything go on: the lock is released first, then the waiting clients'
    /// connections are closed, which makes Nix retry and take the (now free) lock.
    pub fn release(&mut self) {
        self.locker.kill();
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for GcHold {
    fn drop(&mut self) {
        self.release();
    }
}
