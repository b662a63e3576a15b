//! The simulated-host harness (`hostctl_tests::simhost`) with real namespaces, veths and
//! Nix: a `python3 -m http.server` stands in for the agent, started the way the agent is.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code throughout (helpers too): a failed step must fail the test"
)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hostctl_tests::simhost::{agent_config, SimHost, AGENT_PORT};

/// A valid `name:base64` ed25519 public key (32 zero bytes).
const KEY: &str = "fleet-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// Starts the stand-in server on the host's address and port.
fn start_http_server(host: &mut SimHost) {
    let (port, addr) = (host.port.to_string(), host.addr.to_string());
    host.start_process(&["python3", "-m", "http.server", &port, "--bind", &addr]);
}

/// A plain HTTP/1.0 GET of `/` from the root namespace: the status line and body.
fn http_get(host: &SimHost) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&SocketAddr::from((host.addr, host.port)), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET / HTTP/1.0\r\nHost: {}\r\n\r\n", host.addr)?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Some path that is valid in the real (root namespace) Nix store.
fn real_valid_store_path() -> String {
    let mut entries: Vec<PathBuf> = std::fs::read_dir("/nix/store").unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries.iter().filter(|p| !p.to_string_lossy().ends_with(".lock")).take(50) {
        let out = Command::new("nix-store").arg("--check-validity").arg(path).output().unwrap();
        if out.status.success() {
            return path.to_string_lossy().into_owned();
        }
    }
    panic!("no valid path in the real /nix/store to compare with");
}

/// Adds a small file to the host's store; returns its store path.
fn add_to_store(host: &SimHost, content: &str) -> String {
    let file = host.root.join("etc/probe");
    std::fs::write(&file, content).unwrap();
    stdout(&host.run_in(&["nix-store", "--add", file.to_str().unwrap()])).trim().to_owned()
}

/// True if the host's store holds `path` (asked inside the host).
fn host_has(host: &SimHost, path: &str) -> bool {
    let out = stdout(&host.run_in(&["nix-store", "--check-validity", "--print-invalid", path]));
    out.trim().is_empty()
}

/// From inside `host`: can a TCP connection to `target` be opened within 1 s?
fn can_connect_from(host: &SimHost, target: SocketAddr) -> bool {
    let code = format!(
        "import socket\ns = socket.socket()\ns.settimeout(1)\ns.connect(('{}', {}))",
        target.ip(),
        target.port()
    );
    host.run_in(&["python3", "-c", &code]).status.success()
}

#[test]
fn serves_http_from_its_own_namespaces_and_restarts() {
    let mut host = SimHost::create("web1");
    assert_eq!(host.port, AGENT_PORT);
    assert_eq!(host.url(), format!("http://{}:{}", host.addr, AGENT_PORT));
    start_http_server(&mut host);
    let pid = host.agent_pid().unwrap();
    // The pid we hold is the server itself, in the host's namespaces, seeing its own /nix.
    assert_eq!(std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap().trim(), "python3");
    for ns in ["net", "mnt"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_ne!(theirs, std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap(), "{ns}");
    }
    let their_mounts = std::fs::read_to_string(format!("/proc/{pid}/mounts")).unwrap();
    assert!(their_mounts.lines().any(|l| l.split(' ').nth(1) == Some("/nix")), "{their_mounts}");
    let ours = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!ours.contains(host.root.to_str().unwrap()), "bind mount leaked:\n{ours}");

    let response = http_get(&host).unwrap();
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    // It runs in ROOT: the listing shows ROOT's entries.
    for entry in ["nix/", "state/", "etc/", "agent.log"] {
        assert!(response.contains(entry), "{entry} missing from:\n{response}");
    }
    assert!(host.agent_log().contains("\"GET / HTTP/1.0\" 200"), "{}", host.agent_log());

    host.stop_agent();
    host.stop_agent(); // idempotent
    assert_eq!(host.agent_pid(), None);
    let refused = http_get(&host).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "{refused}");

    // A restart appends to the same log.
    start_http_server(&mut host);
    assert!(http_get(&host).unwrap().starts_with("HTTP/1.0 200"));
    host.kill_agent();
    host.kill_agent();
    assert_eq!(host.agent_log().matches("--- hostctl-tests: starting").count(), 2, "{}", host.agent_log());
}

#[test]
fn has_its_own_nix_store() {
    let host = SimHost::create("db1");
    let db = host.root.join("nix/var/nix/db/db.sqlite");
    assert!(db.is_file(), "create() did not initialise {}", db.display());

    // A path the real store has is unknown to the host's store.
    let real = real_valid_store_path();
    let out = stdout(&host.run_in(&["nix-store", "--check-validity", "--print-invalid", &real]));
    assert_eq!(out.trim(), real, "the host sees the real store's {real}");

    // /nix/var/nix inside is ROOT's: no daemon socket, unlike the real one.
    let listing = stdout(&host.run_in(&["sh", "-c", "ls /nix/var/nix"]));
    assert!(listing.contains("db") && listing.contains("profiles"), "{listing}");
    assert!(Path::new("/nix/var/nix/daemon-socket").exists() && !listing.contains("daemon-socket"), "{listing}");

    // What the host adds lands in ROOT/nix/store, not in the real store.
    let added = add_to_store(&host, "hello from db1\n");
    assert!(added.starts_with("/nix/store/") && added.ends_with("-probe"), "{added}");
    assert!(host_has(&host, &added));
    assert!(host.root.join(added.trim_start_matches('/')).is_file());
    assert!(!Path::new(&added).exists(), "{added} appeared in the real store");

    // The agent's environment reaches commands run inside.
    let env = stdout(&host.run_in(&["sh", "-c", "echo \"$HOSTCTL_EXAMPLE_STATE\"; echo \"$NIX_CONFIG\"; pwd"]));
    assert!(env.contains(&format!("{}\n", host.root.join("state").display())), "{env}");
    assert!(env.contains("experimental-features = nix-command flakes"), "{env}");
}

#[test]
fn set_link_cuts_and_restores_the_host() {
    let mut host = SimHost::create("edge1");
    start_http_server(&mut host);
    let target = SocketAddr::from((host.addr, host.port));

    host.set_link(false);
    let started = Instant::now();
    let err = TcpStream::connect_timeout(&target, Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // The agent itself is unaffected.
    assert!(host.agent_pid().is_some());

    host.set_link(true);
    let response = http_get(&host).unwrap();
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
}

#[test]
fn two_hosts_are_isolated() {
    let mut a = SimHost::create("web1");
    let mut b = SimHost::create("web2");
    assert_ne!(a.addr, b.addr);
    assert_ne!(a.netns, b.netns);
    assert_ne!(a.root, b.root);
    start_http_server(&mut a);
    start_http_server(&mut b);
    assert!(http_get(&a).unwrap().starts_with("HTTP/1.0 200"));
    assert!(http_get(&b).unwrap().starts_with("HTTP/1.0 200"));

    // Stores: what one host adds, the other lacks.
    let in_a = add_to_store(&a, "only in web1\n");
    let in_b = add_to_store(&b, "only in web2\n");
    assert!(host_has(&a, &in_a) && !host_has(&a, &in_b));
    assert!(host_has(&b, &in_b) && !host_has(&b, &in_a));

    // Network: a host reaches its controller side but not the other host.
    let listener = TcpListener::bind((a.controller_addr, 0)).unwrap();
    assert!(can_connect_from(&a, listener.local_addr().unwrap()));
    assert!(!can_connect_from(&a, SocketAddr::from((b.addr, b.port))));
    assert!(!can_connect_from(&b, SocketAddr::from((a.addr, a.port))));
}

/// What a host leaves behind, looked for after it is gone.
///
/// Names are not identities: once a host is gone, another test process may claim the
/// same slot (netns and veth names) at once. So the netns is recognised by its nsfs inode
/// and the veth by its interface index (allocated cyclically, not reused at once).
struct Traces {
    root: PathBuf,
    netns: String,
    netns_inode: Option<u64>,
    veth: String,
    veth_ifindex: Option<String>,
    pids: Vec<String>,
}

fn netns_inode(name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(Path::new("/run/netns").join(name)).ok().map(|m| m.ino())
}

fn ifindex(name: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("ifindex")).ok()
}

impl Traces {
    /// Starts the server plus a detached process (as an activation would be), then
    /// records what should disappear.
    fn of(host: &mut SimHost) -> Traces {
        start_http_server(host);
        let detach = "setsid sleep 600 </dev/null >/dev/null 2>&1 &";
        assert!(host.run_in(&["sh", "-c", detach]).status.success());
        let pids = Command::new("ip").args(["netns", "pids", &host.netns]).output().unwrap();
        let pids: Vec<String> = String::from_utf8_lossy(&pids.stdout).split_whitespace().map(str::to_owned).collect();
        assert_eq!(pids.len(), 2, "expected the server and the sleep: {pids:?}");
        let (netns_inode, veth_ifindex) = (netns_inode(&host.netns), ifindex(&host.veth));
        assert!(netns_inode.is_some() && veth_ifindex.is_some());
        Traces {
            root: host.root.clone(),
            netns: host.netns.clone(),
            netns_inode,
            veth: host.veth.clone(),
            veth_ifindex,
            pids,
        }
    }

    fn assert_gone(&self) {
        let veth = ifindex(&self.veth);
        assert!(veth.is_none() || veth != self.veth_ifindex, "veth {} is left", self.veth);
        let netns = netns_inode(&self.netns);
        // Ours cannot be re-claimed while it exists: a different inode, or a new veth
        // (only a claimant of the netns creates one), means another process's host.
        let reclaimed = (netns.is_some() && netns != self.netns_inode) || veth.is_some();
        assert!(netns.is_none() || reclaimed, "netns {} is left", self.netns);
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        assert!(!mounts.contains(self.root.to_str().unwrap()), "{mounts}");
        assert!(!self.root.exists(), "{} was left behind", self.root.display());
        for pid in &self.pids {
            // Gone, or a zombie waiting for whoever adopted it.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(')').next().unwrap_or_default().split_whitespace().next();
            assert!(state.is_none() || state == Some("Z"), "pid {pid} survives: {stat}");
        }
    }
}

#[test]
fn drop_removes_everything() {
    let mut host = SimHost::create("app1");
    let traces = Traces::of(&mut host);
    // Store paths are read-only; removal must cope.
    add_to_store(&host, "read-only\n");
    drop(host);
    traces.assert_gone();
}

#[test]
fn drop_cleans_up_when_the_test_fails() {
    let mut traces = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut host = SimHost::create("app2");
        traces = Some(Traces::of(&mut host));
        panic!("the test failed");
    }));
    assert!(result.is_err());
    traces.unwrap().assert_gone();
}

#[test]
fn a_process_that_exits_early_fails_with_its_log() {
    let result = std::panic::catch_unwind(|| {
        let mut host = SimHost::create("bad1");
        host.start_process(&["sh", "-c", "echo no-such-config >&2; exit 3"]);
    });
    let message = *result.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("exit status: 3") && message.contains("no-such-config"), "{message}");
}

#[test]
fn agent_config_is_valid_for_the_host() {
    let host = SimHost::create("web3");
    let text = agent_config(&host, KEY);
    let config = hostctl_schemas::parse_agent_config(&text, Path::new("agent.yaml")).unwrap();
    assert_eq!(config.hostname.to_string(), "web3");
    assert_eq!(config.listen, SocketAddr::from((host.addr, host.port)));
    assert_eq!(config.trusted_keys.iter().map(ToString::to_string).collect::<Vec<_>>(), [KEY]);
    assert_eq!(config.state_dir, host.root.join("state/agent"));
    assert_eq!(config.profile, Path::new("/nix/var/nix/profiles/system"));
    assert_eq!(config.confirm_timeout, hostctl_schemas::Duration::from_secs(30));
    assert_eq!(config.bus.as_str(), "session");
    assert_eq!(config.store, None);
}

#[test]
fn a_slot_left_by_a_killed_test_process_is_reclaimed() {
    use std::io::BufRead as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_simhost-abandon"))
        .arg("gone")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let (netns, root) = line.trim_end().split_once(' ').unwrap_or_else(|| panic!("helper printed {line:?}"));
    let root = PathBuf::from(root);
    assert!(root.is_dir());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(Path::new("/run/netns").join(netns).exists(), "SIGKILL left the slot behind");

    // Claims go lowest slot first; hosts of concurrent tests may take lower free slots,
    // so keep claiming (holding what we got) until one reaches the abandoned slot.
    let mut held = Vec::new();
    while root.exists() {
        let host = SimHost::create("reclaim");
        assert!(held.len() < 64, "the abandoned slot {netns} was never reclaimed");
        let took_it = host.netns == netns;
        held.push(host);
        if took_it {
            break;
        }
    }
    assert!(!root.exists(), "the dead test's host root {} was removed", root.display());
    assert!(held.iter().any(|h| h.netns == netns), "a new host got the reclaimed slot {netns}");
}
