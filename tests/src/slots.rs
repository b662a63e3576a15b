//! Simulated-host slots: which of the 64 `hostctl-sim-<k>` network namespaces a test
//! process owns, and reclaiming the ones a killed test process left behind.
//!
//! A slot is claimed by creating its netns (`ip netns add` is `O_EXCL` on
//! `/run/netns/<name>`, so the claim is race-free across processes), then recording the
//! owner in `/run/hostctl-sim/<k>.owner`: pid, start time (clock ticks since boot, so a
//! recycled pid is not mistaken for the owner) and the host's root directory. A test
//! process killed from outside (SIGKILL, `timeout`) never runs `Drop`; the next claim
//! that meets such a slot (owner dead, no process left in the netns) removes its route,
//! veth, netns and root directory, and takes it. A slot without an owner file (being
//! claimed right now, or left by an older harness) is reclaimed only when its netns is
//! older than [`UNOWNED_GRACE`] and empty.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::{fail, make_dirs_writable, run};

/// Slots 0..=63: 64 /30 networks fill 198.51.100.0/24.
pub const SLOTS: u8 = 64;

/// Metric of the per-host `unreachable` fallback route (see `SimHost::create`).
pub const FALLBACK_METRIC: &str = "4242";

/// Where owner files live (tmpfs: gone after a reboot, as the namespaces are).
const OWNERS: &str = "/run/hostctl-sim";

/// How old an unowned netns must be before it counts as abandoned.
const UNOWNED_GRACE: Duration = Duration::from_secs(600);

pub fn netns_name(k: u8) -> String {
    format!("hostctl-sim-{k}")
}

/// The /30 of slot `k`.
pub fn subnet(k: u8) -> String {
    format!("198.51.100.{}/30", 4 * u16::from(k))
}

/// Claims the first free slot for a host whose root is `root`: its netns plus a veth pair
/// whose host end is already inside it. A slot whose netns exists belongs to someone else
/// (skipped) or to a dead test process (reclaimed); one whose veth name is taken is
/// skipped after giving its netns back.
pub fn claim_slot(root: &Path) -> u8 {
    let mut last_error = String::new();
    for k in 0..SLOTS {
        let netns = netns_name(k);
        let mut add = ip(&["netns", "add", &netns]);
        if !add.status.success() && reclaim_if_abandoned(k) {
            add = ip(&["netns", "add", &netns]);
        }
        if !add.status.success() {
            last_error = String::from_utf8_lossy(&add.stderr).into_owned();
            continue;
        }
        write_owner(k, root);
        let (a, b) = (format!("hsim{k}a"), format!("hsim{k}b"));
        let veth = ip(&["link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &netns]);
        if veth.status.success() {
            return k;
        }
        last_error = String::from_utf8_lossy(&veth.stderr).into_owned();
        release_slot(k);
    }
    fail(&format!("no free simulated-host slot (netns hostctl-sim-0..{}); last error: {last_error}", SLOTS - 1))
}

/// Gives slot `k` back: its netns and owner file (the caller removed route and veth).
pub fn release_slot(k: u8) {
    let _ = ip(&["netns", "del", &netns_name(k)]);
    let _ = std::fs::remove_file(owner_file(k));
}

fn owner_file(k: u8) -> PathBuf {
    Path::new(OWNERS).join(format!("{k}.owner"))
}

fn write_owner(k: u8, root: &Path) {
    let me = std::process::id();
    let line = format!("{me} {} {}\n", start_time(me).unwrap_or(0), root.display());
    // Without the file the slot is merely harder to reclaim later; not worth failing for.
    let _ = std::fs::create_dir_all(OWNERS).and_then(|()| std::fs::write(owner_file(k), line));
}

/// A process's start time in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// What an owner file says.
#[derive(Debug, PartialEq, Eq)]
struct Owner {
    pid: u32,
    start_time: u64,
    root: PathBuf,
}

fn parse_owner(text: &str) -> Option<Owner> {
    let mut parts = text.trim_end().splitn(3, ' ');
    let pid = parts.next()?.parse().ok()?;
    let start_time = parts.next()?.parse().ok()?;
    let root = PathBuf::from(parts.next()?);
    Some(Owner { pid, start_time, root })
}

fn owner_alive(owner: &Owner) -> bool {
    start_time(owner.pid).is_some_and(|t| owner.start_time == 0 || t == owner.start_time)
}

/// Reclaims slot `k` if its owner is gone and nothing runs in its netns; true if the
/// slot was freed (the caller then races for it like anyone else).
fn reclaim_if_abandoned(k: u8) -> bool {
    let netns = netns_name(k);
    let owner = std::fs::read_to_string(owner_file(k)).ok().and_then(|t| parse_owner(&t));
    let abandoned = match &owner {
        Some(owner) => !owner_alive(owner),
        None => netns_age(&netns).is_some_and(|age| age > UNOWNED_GRACE),
    };
    let pids = ip(&["netns", "pids", &netns]);
    if !abandoned || !pids.status.success() || !pids.stdout.iter().all(u8::is_ascii_whitespace) {
        return false;
    }
    eprintln!("note: reclaiming simulated-host slot {k} ({netns}), left behind by a test process that died");
    let _ = ip(&["route", "del", "unreachable", &subnet(k), "metric", FALLBACK_METRIC]);
    let _ = ip(&["link", "del", &format!("hsim{k}a")]);
    if let Some(root) = owner.map(|o| o.root).filter(|r| is_sim_root(r)) {
        make_dirs_writable(&root);
        let _ = std::fs::remove_dir_all(&root);
    }
    release_slot(k);
    true
}

fn netns_age(netns: &str) -> Option<Duration> {
    let modified = std::fs::metadata(Path::new("/run/netns").join(netns)).ok()?.modified().ok()?;
    modified.elapsed().ok()
}

/// Only a simulated host's own temp root is ever removed by a reclaim.
fn is_sim_root(root: &Path) -> bool {
    root.starts_with(std::env::temp_dir())
        && root.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("hostctl-sim-"))
}

fn ip(args: &[&str]) -> Output {
    run(Command::new("ip").args(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_files_round_trip() {
        let owner = parse_owner("123 456 /tmp/hostctl-sim-web1-abc def\n").unwrap();
        assert_eq!(owner, Owner { pid: 123, start_time: 456, root: PathBuf::from("/tmp/hostctl-sim-web1-abc def") });
        assert_eq!(parse_owner("x 1 /tmp"), None);
        assert_eq!(parse_owner("1"), None);
    }

    #[test]
    fn the_owner_is_alive_only_with_its_own_start_time() {
        let me = std::process::id();
        let t = start_time(me).unwrap();
        assert!(owner_alive(&Owner { pid: me, start_time: t, root: PathBuf::new() }));
        assert!(!owner_alive(&Owner { pid: me, start_time: t + 1, root: PathBuf::new() }), "a recycled pid");
        assert!(!owner_alive(&Owner { pid: u32::MAX, start_time: 1, root: PathBuf::new() }));
    }

    #[test]
    fn only_simulated_host_roots_are_removed() {
        let tmp = std::env::temp_dir();
        assert!(is_sim_root(&tmp.join("hostctl-sim-web1-x1")));
        assert!(!is_sim_root(&tmp.join("other")));
        assert!(!is_sim_root(Path::new("/nix/hostctl-sim-web1")));
        assert_eq!(subnet(1), "198.51.100.4/30");
        assert_eq!(subnet(63), "198.51.100.252/30");
    }
}
