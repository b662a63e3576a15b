//! One guest: its disks, its qemu process, ssh into it, power cuts and reboots.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use super::{agent_unit, checked, ext4_of, shell_quote, Lane};
use crate::{fail, run};

/// The agent's port, in the guest and on the forwarded address.
pub const AGENT_PORT: u16 = 7420;
/// How long a guest may take from power-on to its agent answering (TCG on a busy machine).
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

/// A guest of the lane; see the module docs of [`super`].
#[derive(Debug)]
pub struct Guest {
    pub name: String,
    /// Where this machine reaches it: the agent at `addr:7420`, sshd at `addr:22`.
    pub addr: Ipv4Addr,
    lane: Lane,
    dir: tempfile::TempDir,
    qemu: Option<Child>,
    /// The serial console of the running qemu (one file per power-on).
    console: PathBuf,
    /// Boots through OVMF and systemd-boot from its ESP ([`super::uefi`]) instead of
    /// qemu's `-kernel`.
    uefi: bool,
    /// How long a boot may take (power-on or reboot to the agent answering).
    boot_timeout: Duration,
    /// A saved guest ([`super::resume`]) the next power-on resumes (`-incoming`) instead of
    /// booting; taken by that power-on, so a power cycle after it boots from the disk.
    pub(super) incoming: Option<PathBuf>,
    /// What makes a resumed guest this host (its files, sent over ssh by
    /// [`super::resume::become_host`] once it runs); taken by the next [`Guest::wait_agent`].
    pub(super) pending_identity: Option<Vec<(String, String)>>,
    /// A QMP socket (`qmp.sock` in the guest's dir), for saving the template.
    pub(super) qmp: bool,
}

impl Guest {
    /// A guest named `name` (its hostname and the agent's) with `agent_yaml`, powered off:
    /// a fresh overlay of the lane's image and a seed disk, which also carries
    /// `secrets` (`(name, text)`, mode 0600; /opt/hostctl/<name> in the guest).
    pub fn create(lane: &Lane, name: &str, agent_yaml: &str, secrets: &[(&str, &str)]) -> Guest {
        let guest = Guest::blank(lane, name, &lane.image.join("root.img"), "raw");
        checked(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(guest.path("ssh_key")));
        guest.write_seed(agent_yaml, secrets);
        // Raw requests of the tests pin the agent at this address, as hostctl does.
        crate::identity::register(&guest.agent_addr(), crate::identity::test_identity_public(name).key);
        guest
    }

    /// A powered-off guest with an address, a temp dir and a root overlay over `backing`
    /// (of format `backing_format`): no seed disk, no ssh key yet.
    pub(super) fn blank(lane: &Lane, name: &str, backing: &Path, backing_format: &str) -> Guest {
        let addr = free_address();
        let dir = tempfile::Builder::new()
            .prefix(&format!("hostctl-vm-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| fail(&format!("cannot create a temp dir: {e}")));
        let guest = Guest {
            name: name.to_owned(),
            addr,
            lane: lane.clone(),
            dir,
            qemu: None,
            console: PathBuf::new(),
            uefi: false,
            boot_timeout: BOOT_TIMEOUT,
            incoming: None,
            pending_identity: None,
            qmp: false,
        };
        checked(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", backing_format, "-b"])
                .arg(backing)
                .arg(guest.path("root.qcow2")),
        );
        guest
    }

    /// [`Guest::create`], booting with UEFI firmware and systemd-boot ([`super::uefi`]).
    pub fn create_uefi(lane: &Lane, name: &str, agent_yaml: &str, secrets: &[(&str, &str)]) -> Guest {
        let mut guest = Guest::create(lane, name, agent_yaml, secrets);
        super::uefi::create_disks(&lane.image, guest.dir.path());
        guest.uefi = true;
        guest.boot_timeout = super::uefi::BOOT_TIMEOUT;
        guest
    }

    /// A file in the guest's temp dir (on this machine).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The seed disk (/dev/vdb): what /sbin/hostctl-vm-init installs at every boot.
    pub(super) fn write_seed(&self, agent_yaml: &str, secrets: &[(&str, &str)]) {
        let seed = self.path("seed");
        let write = |rel: &str, text: &str| {
            let file = seed.join(rel);
            if let Some(parent) = file.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            std::fs::write(&file, text).unwrap_or_else(|e| fail(&format!("write {}: {e}", file.display())));
        };
        write("agent.yaml", agent_yaml);
        for (name, text) in secrets {
            let _ = std::fs::create_dir_all(&seed);
            crate::write_secret(&seed.join(name), text);
        }
        write("hostctl-agent.service", &agent_unit());
        for (name, text) in super::agent_unit_scripts() {
            let script = seed.join("bin").join(name);
            write(&format!("bin/{name}"), &format!("#!/bin/sh\n{text}"));
            make_executable(&script);
        }
        // The agent's identity, pre-provisioned so fleet.yaml pins it before the first boot
        // (agent.yaml's `identity_key_file`), as a fleet that provisions its hosts would.
        crate::identity::write_identity(&seed.join("identity.key"), &self.name);
        write("hostname", &format!("{}\n", self.name));
        let key = std::fs::read_to_string(self.path("ssh_key.pub")).unwrap_or_default();
        write("authorized_keys", &key);
        let policy = crate::workspace_root().join("agent/dbus/org.hostctl.Agent1.conf");
        write("org.hostctl.Agent1.conf", &std::fs::read_to_string(&policy).unwrap_or_default());
        // The debug build carries ~150 MB of debug info the guest has no use for.
        let agent = crate::binary("hostctl-agent");
        let _ = std::fs::create_dir_all(seed.join("bin"));
        checked(Command::new("objcopy").arg("--strip-debug").arg(&agent).arg(seed.join("bin/hostctl-agent")));
        ext4_of(&seed, &self.path("seed.img"));
    }

    /// `host:port` of the agent, as fleet.yaml and the test's HTTP client name it.
    pub fn agent_addr(&self) -> String {
        SocketAddr::from((self.addr, AGENT_PORT)).to_string()
    }

    /// Starts qemu (the guest boots; returns at once).
    pub fn power_on(&mut self) {
        if self.qemu.is_some() {
            fail(&format!("{} is already on", self.name));
        }
        let image = &self.lane.image;
        let fwd = |port: u16| format!("hostfwd=tcp:{}:{port}-:{port}", self.addr);
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-name",
            &self.name,
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-m",
            "1024",
            "-smp",
            "2",
        ]);
        if self.lane.accel == "kvm" {
            cmd.args(["-accel", "kvm", "-cpu", "host"]);
        } else {
            cmd.args(["-accel", "tcg,thread=multi"]);
        }
        // no_timer_check: under TCG on a loaded machine the kernel's IO-APIC timer check
        // can fail and panic the boot (seen in the power-cut runs).
        if !self.uefi {
            cmd.arg("-kernel").arg(image.join("vmlinuz")).arg("-initrd").arg(image.join("initrd.img"));
            cmd.args([
                "-append",
                "root=/dev/vda rw console=ttyS0 init=/sbin/hostctl-vm-init quiet systemd.show_status=0 panic=-1 no_timer_check",
            ]);
        }
        cmd.arg("-drive").arg(format!("file={},if=virtio,format=qcow2", self.path("root.qcow2").display()));
        cmd.arg("-drive").arg(format!("file={},if=virtio,format=raw,readonly=on", self.path("seed.img").display()));
        if self.uefi {
            super::uefi::qemu_args(&mut cmd, self.dir.path());
        }
        if self.qmp {
            cmd.arg("-qmp").arg(format!("unix:{},server=on,wait=off", self.path("qmp.sock").display()));
        }
        if let Some(state) = self.incoming.take() {
            cmd.arg("-incoming").arg(format!("exec:cat {}", shell_quote(&state.display().to_string())));
        }
        cmd.args(["-netdev", &format!("user,id=net0,{},{}", fwd(AGENT_PORT), fwd(22))]);
        cmd.args(["-device", "virtio-net-pci,netdev=net0", "-device", "virtio-rng-pci"]);
        // tests/vm/run.sh kills what is left in its run directory when it ends (a test
        // process killed by a signal runs no Drop).
        if let Some(run_dir) = std::env::var_os("HOSTCTL_VM_RUN_DIR") {
            let pidfile = PathBuf::from(run_dir).join(format!("qemu-{}.pid", self.addr));
            cmd.arg("-pidfile").arg(pidfile);
        }
        let power_ons = std::fs::read_dir(self.dir.path())
            .map_or(0, |d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("console-")).count());
        self.console = self.path(&format!("console-{power_ons}.log"));
        cmd.arg("-serial").arg(format!("file:{}", self.console.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path("qemu.stderr")).map_or(Stdio::null(), Stdio::from))
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot start qemu-system-x86_64: {e}")));
        self.qemu = Some(child);
    }

    /// Powers on and waits until the agent answers; returns how long that took.
    pub fn boot(&mut self) -> Duration {
        let start = Instant::now();
        self.power_on();
        self.wait_agent(start)
    }

    /// Waits (from `start`) until the agent answers HTTP and sshd lets us in.
    pub fn wait_agent(&mut self, start: Instant) -> Duration {
        if let Some(files) = self.pending_identity.take() {
            super::resume::become_host(self, &files, start);
        }
        let probe = crate::http::Request::new("GET", "/v1/status", b"");
        loop {
            if let Some(qemu) = self.qemu.as_mut() {
                if let Ok(Some(status)) = qemu.try_wait() {
                    fail(&format!("{}: qemu exited ({status}): {}", self.name, self.diagnostics()));
                }
            }
            if probe.send_with_timeout(&self.agent_addr(), Duration::from_secs(2)).is_ok() {
                break;
            }
            if start.elapsed() > self.boot_timeout {
                fail(&format!("{}: no agent after {:?}: {}", self.name, self.boot_timeout, self.diagnostics()));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let took = start.elapsed();
        eprintln!(
            "vm lane: {} ({}) agent answering {:.1} s after power-on",
            self.name,
            self.lane.accel,
            took.as_secs_f64()
        );
        while !self.ssh("true").status.success() {
            if start.elapsed() > self.boot_timeout {
                fail(&format!("{}: no ssh after {:?}: {}", self.name, self.boot_timeout, self.diagnostics()));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        took
    }

    /// The console of the current boot and qemu's stderr, for failure messages.
    pub fn diagnostics(&self) -> String {
        let tail = |p: &Path| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!("\n--- console ---\n{}\n--- qemu stderr ---\n{}", tail(&self.console), tail(&self.path("qemu.stderr")))
    }

    /// The serial console of the current power-on so far (every boot of it: firmware,
    /// kernel, reboots).
    pub fn console_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// Runs `script` with the guest's /bin/sh as root over ssh. ssh's own failures (exit
    /// 255: no connection in time on a loaded machine) are retried twice.
    pub fn ssh(&self, script: &str) -> Output {
        let mut out = run(self.ssh_command(script).stdin(Stdio::null()));
        for _ in 0..2 {
            if out.status.code() != Some(255) || self.qemu.is_none() {
                break;
            }
            std::thread::sleep(Duration::from_secs(2));
            out = run(self.ssh_command(script).stdin(Stdio::null()));
        }
        out
    }

    fn ssh_command(&self, script: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-i")
            .arg(self.path("ssh_key"))
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5"])
            // A guest that reboots or loses power never closes the connection.
            .args(["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"])
            .arg(format!("root@{}", self.addr))
            .arg(script);
        cmd
    }

    /// Copies the local file `from` to `to` in the guest (mode 0755: test programs).
    pub fn put(&self, from: &Path, to: &str) {
        let file = std::fs::File::open(from).unwrap_or_else(|e| fail(&format!("open {}: {e}", from.display())));
        let to = shell_quote(to);
        let out = run(self.ssh_command(&format!("cat >{to} && chmod 0755 {to}")).stdin(file));
        if !out.status.success() {
            fail(&format!(
                "{}: copying {} in failed: {}",
                self.name,
                from.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }

    /// [`Guest::ssh`]'s stdout, failing the test unless `script` succeeds.
    pub fn sh(&self, script: &str) -> String {
        let out = self.ssh(script);
        if !out.status.success() {
            fail(&format!(
                "{}: `{script}` failed ({}): {}{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// `systemctl show -p PROP --value UNIT` in the guest.
    pub fn unit_property(&self, unit: &str, prop: &str) -> String {
        self.sh(&format!("systemctl show -p {} --value {}", shell_quote(prop), shell_quote(unit)))
    }

    /// `readlink -f LINK` in the guest ("" when it does not exist).
    pub fn resolve(&self, link: &str) -> String {
        String::from_utf8_lossy(&self.ssh(&format!("readlink -e {}", shell_quote(link))).stdout).trim().to_owned()
    }

    /// A power cut: qemu gets SIGKILL, so the guest loses every write it had not flushed.
    pub fn power_cut(&mut self) {
        if let Some(mut qemu) = self.qemu.take() {
            let _ = qemu.kill();
            let _ = qemu.wait();
        }
    }

    /// `systemctl reboot` in the guest (the same qemu process boots again); returns when
    /// the agent of the new boot answers.
    pub fn reboot(&mut self) -> Duration {
        let before = self.sh("cat /proc/sys/kernel/random/boot_id");
        let start = Instant::now();
        // In the background, so ssh returns before the connection goes down with the guest.
        self.sh("nohup sh -c 'sleep 1; systemctl reboot' >/dev/null 2>&1 &");
        loop {
            if start.elapsed() > self.boot_timeout {
                fail(&format!("{}: did not come back after a reboot: {}", self.name, self.diagnostics()));
            }
            std::thread::sleep(Duration::from_secs(1));
            let out = self.ssh("cat /proc/sys/kernel/random/boot_id");
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() != before {
                break;
            }
        }
        self.wait_agent(start)
    }
}

/// The next 127.0.77.<k> whose agent and ssh ports nothing holds (a qemu of an earlier
/// test process may still be going away). Each test process starts at its own k (from its
/// pid): a guest of another lane run in parallel frees its ports between a power cut and
/// its next boot, and must find them free again.
fn free_address() -> Ipv4Addr {
    static NEXT: AtomicU8 = AtomicU8::new(0);
    let _ = NEXT.compare_exchange(0, 10 + (std::process::id() % 20) as u8 * 10, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let k = NEXT.fetch_add(1, Ordering::SeqCst);
        if k == u8::MAX {
            fail("no free address in 127.0.77.10-254");
        }
        let addr = Ipv4Addr::new(127, 0, 77, k);
        if TcpListener::bind((addr, AGENT_PORT)).is_ok() && TcpListener::bind((addr, 22)).is_ok() {
            return addr;
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.power_cut();
    }
}

/// `chmod 0755`: the seed disk keeps modes, and systemd runs the file directly.
fn make_executable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| fail(&format!("chmod {}: {e}", path.display())));
}
