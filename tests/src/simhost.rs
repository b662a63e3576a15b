//! Simulated hosts: each one a network namespace plus a mount namespace in which the
//! host's own `ROOT/nix` is bind-mounted on `/nix`, so an agent started inside sees a
//! normal `/nix/store`, `/nix/var/nix/db` and `/nix/var/nix/profiles` that belong to that
//! host only, and is reachable from the test process (the controller, which stays in the
//! root namespaces) over a veth pair.
//!
//! Needs root, `ip` (iproute2), `unshare` and `mount` (util-linux). systemd is not involved.
//!
//! Addresses come from 198.51.100.0/24 (TEST-NET-2), one /30 per host: slot `k` (0..=63)
//! has the root side at `.4k+1` and the host at `.4k+2`. A slot is claimed by creating the
//! netns `hostctl-sim-<k>` (race-free across test processes); a slot left behind by a
//! killed test process is reclaimed by the next claim (see [`crate::slots`]).
//!
//! Everything is torn down on drop, also when the test failed: the processes we started
//! (by pid), the veth, the netns, the host's root directory.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod background;
mod boot;
mod firmware;

pub use crate::agent_yaml::{agent_config, agent_config_trusting, agent_config_with, PullSettings};
pub use crate::gates::{GcHold, SwitchGate};
pub use background::Background;
pub use firmware::Boot;

use crate::slots::{claim_slot, netns_name, release_slot, subnet, FALLBACK_METRIC};
use crate::{fail, make_dirs_writable, run, NIX_CONFIG};

/// The agent port of every simulated host (the fleet default).
pub const AGENT_PORT: u16 = 7420;

/// The plain-HTTP `metrics_listen` port of every simulated host's agent.
pub const METRICS_PORT: u16 = 9420;

/// How long [`SimHost::start_agent`] waits for the port to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long [`SimHost::stop_agent`] waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Run inside `ip netns exec NS unshare --mount --propagation private`: mounts the
/// host's `nix` directory (`$1`) on `/nix`, and its `run` directory (`$2`) on `/run` if
/// it exists (see [`SimHost::set_booted_system`]), then execs the command. `ip netns
/// exec`, `unshare` and this `exec` all replace the process rather than fork, so the pid
/// of the spawned `ip` ends up being the pid of the command itself.
const ENTER_SCRIPT: &str =
    r#"mount --bind "$1" /nix && { [ ! -d "$2" ] || mount --bind "$2" /run; } && shift 2 && exec "$@""#;

/// One simulated host. See the module documentation.
#[derive(Debug)]
pub struct SimHost {
    /// The host name (as in the fleet inventory and the agent's `hostname`).
    pub name: String,
    /// ROOT: `nix/` (mounted on `/nix` inside), `state/`, `etc/`, `agent.log`. Paths
    /// outside `ROOT/nix` are the same inside the host and outside.
    pub root: PathBuf,
    /// The host's address (its side of the veth).
    pub addr: Ipv4Addr,
    /// The agent's port.
    pub port: u16,
    /// The root namespace's side of the veth: the only address the host can reach, e.g.
    /// a git or cache server the test runs for the agent.
    pub controller_addr: Ipv4Addr,
    /// The network namespace, `hostctl-sim-<k>`.
    pub netns: String,
    /// The veth end in the root namespace, `hsim<k>a`.
    pub veth: String,
    /// The veth end inside the host, `hsim<k>b`.
    host_veth: String,
    /// `198.51.100.4k/30`.
    subnet: String,
    /// k, see [`crate::slots`].
    slot: u8,
    /// Owns ROOT; taken on drop.
    tmp: Option<tempfile::TempDir>,
    /// The process started by [`SimHost::start_process`] (normally the agent).
    process: Option<Child>,
    /// `PATH` for processes started from now on (e.g. [`crate::watching_nix`]'s);
    /// `None`: the test's own.
    pub path: Option<std::ffi::OsString>,
}

impl SimHost {
    /// Creates the namespaces, ROOT (under a temporary directory), and an empty Nix store
    /// in ROOT/nix with an initialised database.
    pub fn create(name: &str) -> SimHost {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            fail(&format!("simulated host name `{name}`: expected a host name like `web1`"));
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!("hostctl-sim-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| fail(&format!("cannot create a temp dir for host {name}: {e}")));
        let root = tmp.path().to_path_buf();
        for dir in ["nix", "state", "etc"] {
            std::fs::create_dir_all(root.join(dir))
                .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", root.join(dir).display())));
        }
        let k = claim_slot(&root);
        let base = 4 * k;
        // From here on `host` owns the netns and the veth: a failure below unwinds through
        // its Drop, which removes them.
        let host = SimHost {
            name: name.to_owned(),
            root,
            addr: Ipv4Addr::new(198, 51, 100, base + 2),
            port: AGENT_PORT,
            controller_addr: Ipv4Addr::new(198, 51, 100, base + 1),
            netns: netns_name(k),
            veth: format!("hsim{k}a"),
            host_veth: format!("hsim{k}b"),
            subnet: subnet(k),
            slot: k,
            tmp: Some(tmp),
            process: None,
            path: None,
        };
        host.configure_network();
        let init = host.run_in(&["nix-store", "--init"]);
        if !init.status.success() {
            fail(&format!("nix-store --init in host {name}: {}", String::from_utf8_lossy(&init.stderr)));
        }
        host
    }

    /// Addresses, links and routes of a freshly claimed slot.
    fn configure_network(&self) {
        let controller_cidr = format!("{}/30", self.controller_addr);
        let host_cidr = format!("{}/30", self.addr);
        ip_ok(&["addr", "add", &controller_cidr, "dev", &self.veth]);
        // When the root-side veth is down, the kernel drops its connected route and traffic
        // for the host would follow the default route out of this machine (where, on some
        // machines, a transparent proxy accepts any TCP connection). This fallback route,
        // shadowed while the link is up, keeps the host's /30 inside the machine always.
        ip_ok(&["route", "replace", "unreachable", &self.subnet, "metric", FALLBACK_METRIC]);
        ip_ok(&["link", "set", &self.veth, "up"]);
        let ns = self.netns.as_str();
        ip_ok(&["-n", ns, "link", "set", "lo", "up"]);
        ip_ok(&["-n", ns, "addr", "add", &host_cidr, "dev", &self.host_veth]);
        ip_ok(&["-n", ns, "link", "set", &self.host_veth, "up"]);
    }

    /// Writes `config_yaml` to ROOT/etc/agent.yaml and starts
    /// `hostctl-agent serve --config ROOT/etc/agent.yaml` inside the host; returns once
    /// its port accepts connections (fails after 20 s with the log's tail).
    pub fn start_agent(&mut self, config_yaml: &str) {
        let config = self.root.join("etc/agent.yaml");
        std::fs::write(&config, config_yaml)
            .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", config.display())));
        let agent = crate::binary("hostctl-agent");
        let argv = [agent.to_string_lossy(), "serve".into(), "--config".into(), config.to_string_lossy()];
        let argv: Vec<&str> = argv.iter().map(|a| a.as_ref()).collect();
        self.start_process(&argv);
        self.register_identity(config_yaml);
    }

    /// Registers the identity the agent published (`state_dir/identity.pub`) as the pin
    /// of its address, for the raw clients of [`crate::http`].
    fn register_identity(&self, config_yaml: &str) {
        use hostctl_schemas::agent_config::{parse_agent_config, IDENTITY_PUB_FILE};
        let Ok(config) = parse_agent_config(config_yaml, Path::new("agent.yaml")) else { return };
        let file = config.state_dir.join(IDENTITY_PUB_FILE);
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| fail(&format!("{}: {e}", file.display())));
        let key: hostctl_schemas::key::PublicKey =
            text.trim().parse().unwrap_or_else(|e| fail(&format!("{}: {e}", file.display())));
        crate::identity::register(&format!("{}:{}", self.addr, self.port), key.key);
    }

    /// Starts `argv` inside the host (the same way as the agent: environment, ROOT as the
    /// working directory, output appended to ROOT/agent.log) and waits until it accepts
    /// connections on `addr:port`. Public so tests can stand in for the agent with any
    /// server; one process at a time.
    pub fn start_process(&mut self, argv: &[&str]) {
        if self.process.is_some() {
            fail(&format!("host {}: a process is already running; stop_agent() first", self.name));
        }
        let Some(program) = argv.first() else { fail("start_process: empty argv") };
        let log = self.open_log(argv);
        let (stdout, stderr) = match log.try_clone() {
            Ok(copy) => (Stdio::from(log), Stdio::from(copy)),
            Err(e) => fail(&format!("cannot duplicate the log file handle: {e}")),
        };
        let mut cmd = self.command_in(argv);
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        match cmd.spawn() {
            // Stored before waiting, so that a failure while waiting unwinds through Drop,
            // which kills it.
            Ok(child) => self.process = Some(child),
            Err(e) => fail(&format!("cannot start {argv:?} in host {}: {e}", self.name)),
        }
        self.wait_until_listening(argv);
        self.check_started_process(program);
    }

    /// Opens ROOT/agent.log for appending (a restarted agent's log follows the previous
    /// one's) and marks where this start begins.
    fn open_log(&self, argv: &[&str]) -> File {
        let path = self.root.join("agent.log");
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| fail(&format!("cannot open {}: {e}", path.display())));
        let _ = writeln!(log, "--- hostctl-tests: starting {argv:?} in {} ---", self.netns);
        log
    }

    /// Polls the port until it accepts a connection; fails at once if the process exits,
    /// and after [`START_TIMEOUT`] otherwise, with the log's tail either way.
    fn wait_until_listening(&mut self, argv: &[&str]) {
        let target = SocketAddr::from((self.addr, self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = match self.process.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => None,
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(e)) => Some(format!("cannot be waited for ({e})")),
                None => Some("is gone".to_owned()),
            };
            if let Some(how) = exited {
                self.process = None;
                fail(&format!(
                    "{argv:?} in host {} exited ({how}) before listening on {target}\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            if TcpStream::connect_timeout(&target, Duration::from_millis(250)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                self.kill_agent();
                fail(&format!(
                    "{argv:?} in host {} did not listen on {target} within {START_TIMEOUT:?}\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Checks what the design relies on: the pid we hold is the program itself (not a
    /// wrapper), it runs in the host's namespaces, and the host's `/nix` bind mount is not
    /// visible in ours.
    fn check_started_process(&self, program: &str) {
        let Some(pid) = self.agent_pid() else { fail("the started process is gone") };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let expected: String =
            Path::new(program).file_name().map(|n| n.to_string_lossy().chars().take(15).collect()).unwrap_or_default();
        if comm.trim_end() != expected {
            fail(&format!("pid {pid} is `{}`, not `{expected}`: a wrapper did not exec", comm.trim_end()));
        }
        for ns in ["net", "mnt"] {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok();
            let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).ok();
            if theirs.is_none() || theirs == ours {
                fail(&format!("pid {pid} ({expected}) is not in its own {ns} namespace"));
            }
        }
        let leaked = self.mounts_under_root();
        if !leaked.is_empty() {
            fail(&format!("host {}'s mounts leaked into the root mount namespace: {leaked:?}", self.name));
        }
    }

    /// SIGTERM, up to 10 s for it to exit, then SIGKILL. Does nothing when none is running.
    pub fn stop_agent(&mut self) {
        let Some(mut child) = self.process.take() else { return };
        if matches!(child.try_wait(), Ok(None)) {
            // The pid cannot have been reused: the child is not reaped until we wait.
            let _ = Command::new("kill").args(["-s", "TERM", &child.id().to_string()]).output();
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL (a crash, as far as the agent can tell), then reaps it.
    pub fn kill_agent(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The pid of the running agent (or stand-in), if one was started and not stopped.
    pub fn agent_pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }

    /// Everything the agents started in this host have written (ROOT/agent.log).
    pub fn agent_log(&self) -> String {
        std::fs::read(self.root.join("agent.log")).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.agent_log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("last lines of {}:\n{tail}", self.root.join("agent.log").display())
    }

    /// `http://ADDR:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.addr, self.port)
    }

    /// Runs `argv` inside the host's namespaces (its netns, and a mount namespace with its
    /// own `/nix`) with the agent's environment, in ROOT; fails only if it cannot be spawned.
    pub fn run_in(&self, argv: &[&str]) -> Output {
        run(&mut self.command_in(argv))
    }

    /// `ip netns exec NS unshare --mount --propagation private sh -c ENTER_SCRIPT sh
    /// ROOT/nix ROOT/run ARGV...` with the host's environment.
    fn command_in(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, "unshare", "--mount", "--propagation", "private"])
            .args(["sh", "-c", ENTER_SCRIPT, "sh"])
            .arg(self.root.join("nix"))
            .arg(self.root.join("run"))
            .args(argv)
            .current_dir(&self.root)
            // Every host has its own store but all share the machine's nixbld uids, and Nix
            // kills a build user's processes around each build: without build users, builds
            // in two hosts at once cannot kill each other.
            .env("NIX_CONFIG", format!("{NIX_CONFIG}build-users-group =\n"))
            .env("HOSTCTL_EXAMPLE_STATE", self.root.join("state"))
            // A daemon store would be whatever socket ROOT/nix/var/nix/daemon-socket holds
            // (none): the host's Nix must open its own store directly, as root.
            .env_remove("NIX_REMOTE");
        if let Some(path) = &self.path {
            cmd.env("PATH", path);
        }
        cmd
    }

    /// Cuts (`false`) or restores (`true`) the host's link, like pulling its cable: the
    /// host's end of the veth goes down, so the root side loses carrier but keeps its
    /// route, and packets to the host are dropped; connections time out. (Taking the root
    /// side down instead would remove that route; see [`SimHost::configure_network`].)
    pub fn set_link(&self, up: bool) {
        ip_ok(&["-n", &self.netns, "link", "set", &self.host_veth, if up { "up" } else { "down" }]);
    }

    /// Mount points under ROOT in our (the root) mount namespace; there should be none.
    fn mounts_under_root(&self) -> Vec<String> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let root = self.root.to_string_lossy();
        mounts
            .lines()
            .filter_map(|line| line.split(' ').nth(1))
            .filter(|mount_point| Path::new(mount_point).starts_with(root.as_ref()))
            .map(str::to_owned)
            .collect()
    }

    /// Kills what is left in the netns: processes the agent detached (activation runs
    /// detached by design) outlive it. Only our own processes can be in this namespace.
    fn kill_netns_processes(&self) {
        for _ in 0..50 {
            let out = Command::new("ip").args(["netns", "pids", &self.netns]).output();
            let pids = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            let pids: Vec<&str> = pids.split_whitespace().collect();
            if pids.is_empty() {
                return;
            }
            let _ = Command::new("kill").args(["-s", "KILL"]).args(&pids).output();
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: processes survive in {} after SIGKILL", self.netns);
    }
}

impl Drop for SimHost {
    /// Never panics (it may run while a failed test unwinds); problems become warnings.
    fn drop(&mut self) {
        self.kill_agent();
        self.kill_netns_processes();
        ip_quiet(&["route", "del", "unreachable", &self.subnet, "metric", FALLBACK_METRIC]);
        // Deleting one end deletes the pair at once; `ip netns del` alone would leave the
        // root-side end to the kernel's asynchronous namespace cleanup.
        ip_quiet(&["link", "del", &self.veth]);
        release_slot(self.slot);
        // The /nix bind mount only ever lived in the processes' private mount namespaces,
        // which died with them; this is a safety net should one ever show up in ours.
        for mount_point in self.mounts_under_root() {
            eprintln!("warning: unmounting {mount_point}, which leaked into the root mount namespace");
            let _ = Command::new("umount").args(["--lazy", &mount_point]).output();
        }
        if let Some(tmp) = self.tmp.take() {
            // Store paths are read-only (directories 0555).
            make_dirs_writable(tmp.path());
            if let Err(e) = tmp.close() {
                eprintln!("warning: cannot remove host {}'s root {}: {e}", self.name, self.root.display());
            }
        }
    }
}

fn ip(args: &[&str]) -> Output {
    run(Command::new("ip").args(args))
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    if !out.status.success() {
        fail(&format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)));
    }
}

/// For teardown: never fails, reports instead.
fn ip_quiet(args: &[&str]) {
    match Command::new("ip").args(args).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!("warning: ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim_end()),
        Err(e) => eprintln!("warning: cannot run ip {}: {e}", args.join(" ")),
    }
}

/// How long [`SwitchGate::wait_blocked`] and [`SimHost::start_health_server`] wait.
pub(crate) const GATE_TIMEOUT: Duration = Duration::from_secs(30);

impl SimHost {
    /// Restarts the agent with the configuration it was last started with
    /// (ROOT/etc/agent.yaml), e.g. after [`SimHost::kill_agent`].
    pub fn restart_agent(&mut self) {
        let config = self.root.join("etc/agent.yaml");
        let yaml = std::fs::read_to_string(&config)
            .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", config.display())));
        self.start_agent(&yaml);
    }

    /// ROOT/state: the example's `switch-to-configuration` records there what it did.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    /// What `switch-to-configuration` last made the running system
    /// (ROOT/state/current-system), trimmed; empty if nothing was activated yet.
    pub fn current_system(&self) -> String {
        std::fs::read_to_string(self.state_dir().join("current-system")).unwrap_or_default().trim().to_owned()
    }

    /// What `switch-to-configuration` last made the boot entry (ROOT/state/boot-system).
    pub fn boot_system(&self) -> String {
        std::fs::read_to_string(self.state_dir().join("boot-system")).unwrap_or_default().trim().to_owned()
    }

    /// The system profile's generations on disk (`system-<n>-link` in the host's
    /// `/nix/var/nix/profiles`) and the store path each points at, oldest first. Read
    /// without following links into the store (that would be this machine's store).
    pub fn profile_generations(&self) -> Vec<(u64, String)> {
        let dir = self.root.join("nix/var/nix/profiles");
        let mut generations = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(number) = name.strip_prefix("system-").and_then(|n| n.strip_suffix("-link")) else { continue };
            let Ok(number) = number.parse::<u64>() else { continue };
            let target = std::fs::read_link(entry.path()).map(|t| t.to_string_lossy().into_owned()).unwrap_or_default();
            generations.push((number, target));
        }
        generations.sort();
        generations
    }

    /// The store path the system profile currently points at (`system` ->
    /// `system-<n>-link` -> store path), if the profile exists.
    pub fn profile_system(&self) -> Option<String> {
        let profiles = self.root.join("nix/var/nix/profiles");
        let link = std::fs::read_link(profiles.join("system")).ok()?;
        let link = if link.is_absolute() {
            // `/nix/var/nix/profiles/system-<n>-link` as seen inside the host.
            let inside = link.strip_prefix("/nix").ok()?.to_path_buf();
            self.root.join("nix").join(inside)
        } else {
            profiles.join(link)
        };
        std::fs::read_link(link).ok().map(|t| t.to_string_lossy().into_owned())
    }

    /// Whether `path` is a valid path of the host's own store.
    pub fn is_valid(&self, path: &str) -> bool {
        self.run_in(&["nix-store", "--check-validity", path]).status.success()
    }

    /// Store objects on the host's disk (ROOT/nix/store) that its Nix database does not
    /// know as valid: what an interrupted import would leave behind. Lock files and
    /// names that are not store paths are ignored.
    pub fn invalid_store_entries(&self) -> Vec<String> {
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(self.root.join("nix/store")).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let hash_like = name.len() > 33
                && name.as_bytes()[32] == b'-'
                && name[..32].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if hash_like && !name.ends_with(".lock") {
                paths.push(format!("/nix/store/{name}"));
            }
        }
        if paths.is_empty() {
            return paths;
        }
        let mut argv = vec!["nix-store", "--check-validity", "--print-invalid"];
        argv.extend(paths.iter().map(String::as_str));
        let out = self.run_in(&argv);
        if !out.status.success() {
            fail(&format!(
                "nix-store --check-validity in host {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
    }

    /// Pids of the processes in the host's network namespace.
    pub fn netns_pids(&self) -> Vec<u32> {
        let out = Command::new("ip").args(["netns", "pids", &self.netns]).output();
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        text.split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }
}
