//! Guests resumed from a saved, already booted guest instead of booted: most of a lane
//! test's time under TCG is boots, and most tests need a running host, not a boot.
//!
//! The template: once per lane run (in `HOSTCTL_VM_RUN_DIR`, so per build of the agent),
//! a guest of the image boots with a seed disk that has everything but a host's identity
//! (no agent.yaml, hostname or identity key: tests/vm/guest-init.sh then leaves the agent
//! off), is saved with qemu's `migrate` to a file, and its overlay is frozen.
//! A resumed guest gets an overlay of its own over the frozen one, the template's seed
//! disk (read-only, shared) and qemu `-incoming` of the saved state; then, over ssh, its
//! own files (agent.yaml, identity key, hostname, secrets) and
//! `hostctl-vm-init --resumed`, which lays them over the seed, sets the clock from the
//! RTC, reseeds the kernel's random generator and starts the agent. At every later boot
//! of the guest (a reboot, a power cycle) guest-init lays its files over the seed again:
//! it stays that host.
//!
//! What resumed guests share with each other: the template's ssh host and client keys,
//! `/etc/machine-id` and the boot id of the first boot. Tests that need a cold boot (the
//! boot itself: UEFI, the first boot's units) use [`super::guest::Guest::create`].
//! `HOSTCTL_VM_COLD=1`, or no `HOSTCTL_VM_RUN_DIR`, makes [`create_resumed`] boot cold.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::guest::Guest;
use super::{ext4_of, shell_quote, Lane};
use crate::fail;

/// How long a resumed guest may take to answer ssh (qemu reads the saved state first).
const RESUME_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the template may take to boot (TCG on a busy machine).
const TEMPLATE_BOOT_TIMEOUT: Duration = Duration::from_secs(420);
/// How long saving the template may take (qemu writes the guest's memory to a file).
const SAVE_TIMEOUT: Duration = Duration::from_secs(300);

/// [`Guest::create`], resumed from the lane's template when there is one (see the module
/// docs): powered off; the next [`Guest::power_on`] resumes it, the next
/// [`Guest::wait_agent`] makes it this host.
pub fn create_resumed(lane: &Lane, name: &str, agent_yaml: &str, secrets: &[(&str, &str)]) -> Guest {
    let Some(template) = template(lane) else { return Guest::create(lane, name, agent_yaml, secrets) };
    let mut guest = Guest::blank(lane, name, &template.join("root.qcow2"), "qcow2");
    for file in ["seed.img", "ssh_key", "ssh_key.pub"] {
        let to = guest.path(file);
        std::fs::hard_link(template.join(file), &to)
            .or_else(|_| std::fs::copy(template.join(file), &to).map(|_| ()))
            .unwrap_or_else(|e| fail(&format!("{}: cannot link {} from the template: {e}", name, to.display())));
    }
    let identity_file = guest.path("identity.key");
    crate::identity::write_identity(&identity_file, name);
    let identity = std::fs::read_to_string(&identity_file)
        .unwrap_or_else(|e| fail(&format!("read {}: {e}", identity_file.display())));
    let mut files = vec![
        ("agent.yaml".to_owned(), agent_yaml.to_owned()),
        ("identity.key".to_owned(), identity),
        ("hostname".to_owned(), format!("{name}\n")),
    ];
    files.extend(secrets.iter().map(|(n, text)| ((*n).to_owned(), (*text).to_owned())));
    guest.incoming = Some(template.join("state"));
    guest.qmp = true;
    guest.pending_identity = Some(files);
    crate::identity::register(&guest.agent_addr(), crate::identity::test_identity_public(name).key);
    guest
}

/// The running, just resumed `guest` becomes this host: `files` into
/// /var/lib/hostctl-vm/seed, then `hostctl-vm-init --resumed` (see the module docs).
pub(super) fn become_host(guest: &Guest, files: &[(String, String)], start: Instant) {
    let mut qmp = Qmp::connect(&guest.path("qmp.sock"), start);
    loop {
        let status = qmp.execute(json!({"execute": "query-status"}));
        match status["status"].as_str() {
            Some("running") => break,
            // A state saved paused resumes paused.
            Some("paused" | "postmigrate") => {
                qmp.execute(json!({"execute": "cont"}));
            }
            _ if start.elapsed() > RESUME_TIMEOUT => {
                fail(&format!("{}: not running {RESUME_TIMEOUT:?} after the resume: {status}", guest.name))
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    eprintln!("vm lane: {} running again {:.1} s after power-on", guest.name, start.elapsed().as_secs_f64());
    while !guest.ssh("true").status.success() {
        if start.elapsed() > RESUME_TIMEOUT {
            fail(&format!("{}: no ssh {RESUME_TIMEOUT:?} after the resume: {}", guest.name, guest.diagnostics()));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let own = "/var/lib/hostctl-vm/seed";
    let mut script = format!("set -e; umask 077; rm -rf {own}; mkdir -p {own}; chmod 0755 {own}; cd {own}\n");
    for (name, text) in files {
        script.push_str(&format!("printf %s {} >{}\n", shell_quote(text), shell_quote(name)));
    }
    let mut random = [0u8; 32];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random))
    {
        fail(&format!("reading /dev/urandom: {e}"));
    }
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    script.push_str(&format!("sync\n/sbin/hostctl-vm-init --resumed {hex}\n"));
    guest.sh(&script);
    eprintln!(
        "vm lane: {} resumed from the template, its own files in, {:.1} s after power-on",
        guest.name,
        start.elapsed().as_secs_f64()
    );
}

/// The lane run's template directory (root.qcow2, seed.img, ssh_key, state), made on first
/// use; `None` when guests boot cold (`HOSTCTL_VM_COLD=1`, no run directory).
fn template(lane: &Lane) -> Option<PathBuf> {
    if std::env::var("HOSTCTL_VM_COLD").is_ok_and(|v| v == "1") {
        return None;
    }
    let run_dir = PathBuf::from(std::env::var_os("HOSTCTL_VM_RUN_DIR").filter(|v| !v.is_empty())?);
    let dir = run_dir.join("template");
    if dir.join("state").exists() {
        return Some(dir);
    }
    let building = run_dir.join(format!("template.{}", std::process::id()));
    let took = save_template(lane, &building);
    // Another test process of the run may have saved one meanwhile: the first stays.
    if std::fs::rename(&building, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    if !dir.join("state").exists() {
        fail(&format!("no template at {} after saving one", dir.display()));
    }
    eprintln!("vm lane: template guest booted and saved in {:.1} s ({})", took.as_secs_f64(), dir.display());
    Some(dir)
}

/// Boots the template guest, waits until its boot is over, saves it to `to`/state and
/// moves its disks and key there.
fn save_template(lane: &Lane, to: &Path) -> Duration {
    let start = Instant::now();
    let mut guest = Guest::create(lane, "template", "", &[]);
    // The template's seed: everything but an identity (guest-init leaves the agent off).
    let seed = guest.path("seed");
    for file in ["agent.yaml", "identity.key", "hostname"] {
        let _ = std::fs::remove_file(seed.join(file));
    }
    ext4_of(&seed, &guest.path("seed.img"));
    guest.qmp = true;
    guest.power_on();
    loop {
        let out = guest.ssh("systemctl is-system-running --wait");
        let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if state == "running" || state == "degraded" {
            break;
        }
        if start.elapsed() > TEMPLATE_BOOT_TIMEOUT {
            fail(&format!("the template guest did not finish booting ({state}): {}", guest.diagnostics()));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    guest.sh("sync");
    let booted = start.elapsed();
    std::fs::create_dir_all(to).unwrap_or_else(|e| fail(&format!("mkdir {}: {e}", to.display())));
    save(&guest, &to.join("state"));
    guest.power_cut(); // qemu has quit; this reaps it
    let size = std::fs::metadata(to.join("state")).map_or(0, |m| m.len());
    eprintln!(
        "vm lane: template booted in {:.1} s, saved ({} MB) in {:.1} s",
        booted.as_secs_f64(),
        size >> 20,
        (start.elapsed() - booted).as_secs_f64()
    );
    for file in ["root.qcow2", "seed.img", "ssh_key", "ssh_key.pub"] {
        std::fs::rename(guest.path(file), to.join(file))
            .or_else(|_| std::fs::copy(guest.path(file), to.join(file)).map(|_| ()))
            .unwrap_or_else(|e| fail(&format!("moving the template's {file} to {}: {e}", to.display())));
    }
    start.elapsed()
}

/// Writes the guest's state to `state` (QMP `migrate` to a file), then quits qemu.
fn save(guest: &Guest, state: &Path) {
    let mut qmp = Qmp::connect(&guest.path("qmp.sock"), Instant::now());
    // Saved running (not `stop`ped first): qemu records the run state, and a guest saved
    // paused stays paused when resumed. The guest is idle; the last pass is made stopped,
    // its disk flushed. No bandwidth limit: the file is on this machine.
    let unlimited = json!({"execute": "migrate-set-parameters", "arguments": {"max-bandwidth": 1u64 << 40}});
    qmp.execute(unlimited);
    let uri = format!("exec:cat >{}", shell_quote(&state.display().to_string()));
    qmp.execute(json!({"execute": "migrate", "arguments": {"uri": uri}}));
    let start = Instant::now();
    loop {
        let info = qmp.execute(json!({"execute": "query-migrate"}));
        match info["status"].as_str() {
            Some("completed") => {
                qmp.execute(json!({"execute": "quit"}));
                return;
            }
            Some("failed" | "cancelled") => fail(&format!("saving the template failed: {info}")),
            _ if start.elapsed() > SAVE_TIMEOUT => fail(&format!("saving the template: not done in {SAVE_TIMEOUT:?}")),
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// A QMP connection: one command at a time, events skipped.
struct Qmp {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Qmp {
    /// Connects to qemu's QMP socket (retried until [`RESUME_TIMEOUT`] after `start`: qemu
    /// makes it when it starts) and enters command mode.
    fn connect(socket: &Path, start: Instant) -> Qmp {
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(e) if start.elapsed() > RESUME_TIMEOUT => fail(&format!("QMP {}: {e}", socket.display())),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        let reader = BufReader::new(stream.try_clone().unwrap_or_else(|e| fail(&format!("QMP: {e}"))));
        let mut qmp = Qmp { reader, stream };
        qmp.read_reply(); // the greeting
        qmp.execute(json!({"execute": "qmp_capabilities"}));
        qmp
    }

    /// Sends `command`; its `return` value (fails the test on an `error`).
    fn execute(&mut self, command: Value) -> Value {
        if let Err(e) = writeln!(self.stream, "{command}") {
            fail(&format!("QMP {command}: {e}"));
        }
        loop {
            let reply = self.read_reply();
            if let Some(error) = reply.get("error") {
                fail(&format!("QMP {command}: {error}"));
            }
            if let Some(value) = reply.get("return") {
                return value.clone();
            }
        }
    }

    /// The next message that is not an event.
    fn read_reply(&mut self) -> Value {
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => fail("QMP: qemu closed the connection"),
                Ok(_) => {}
                Err(e) => fail(&format!("QMP: {e}")),
            }
            let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| fail(&format!("QMP: {e}: {line}")));
            if value.get("event").is_none() {
                return value;
            }
        }
    }
}
