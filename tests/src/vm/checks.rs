//! What must hold in a guest after a power cut, checked from inside it (the guest-side
//! counterpart of [`crate::invariants`], which reads a simulated host's files directly):
//!
//! - (a) no half-registered store path: `nix store verify --all --no-trust` passes (it
//!   never repairs), and every store object on disk is known to the database;
//! - (b) every generation of the system profile points at a valid path;
//! - (c) the agent answers, is idle, and every deployment the controller saw acknowledged
//!   is in its journal in a final state;
//! - (d) `/run/current-system`, the profile and the agent's status name the same system.

use std::time::{Duration, Instant};

use super::fleet::VmFleet;
use crate::fail;

/// How long the agent may take to finish recovering after a boot (TCG, busy machine).
const SETTLE: Duration = Duration::from_secs(180);

/// Store objects on disk the database does not know, and profile generations whose
/// target is not a valid path; each line names one. Empty when (a) and (b) hold.
const STORE_AND_PROFILE: &str = r#"
nix --extra-experimental-features nix-command store verify --all --no-trust >/tmp/verify.log 2>&1 \
  || { echo "nix store verify failed:"; cat /tmp/verify.log; }
nix --extra-experimental-features nix-command path-info --all | sort >/tmp/valid
ls -d /nix/store/* | grep -v -e '\.lock$' -e '/\.links$' | sort >/tmp/on-disk
comm -13 /tmp/valid /tmp/on-disk | sed 's/^/on disk, not registered: /'
for link in /nix/var/nix/profiles/system-*-link; do
  [ -e "$link" ] || [ -L "$link" ] || continue
  target=$(readlink -f "$link")
  nix-store --check-validity "$target" 2>/dev/null || echo "generation $link -> $target is not valid"
done
"#;

/// Checks (a) to (d) on guest `name`; `acknowledged` are deployment ids `hostctl apply`
/// reported. Returns the running toplevel.
pub fn check(vm: &VmFleet, name: &str, acknowledged: &[&str]) -> String {
    let guest = vm.guest(name);
    let problems = guest.sh(STORE_AND_PROFILE);
    if !problems.trim().is_empty() {
        fail(&format!("{name}: store or profile broken after a power cut:\n{problems}"));
    }
    // A just-booted agent may still be recovering a deployment the power cut left open.
    let deadline = Instant::now() + SETTLE;
    let mut status = vm.status(name);
    while status["state"] != "idle" {
        if Instant::now() > deadline {
            fail(&format!("{name}: the agent is not idle {SETTLE:?} after boot: {status}"));
        }
        std::thread::sleep(Duration::from_secs(1));
        status = vm.status(name);
    }
    for id in acknowledged {
        let record = vm.agent_get(name, &format!("/v1/deployments/{id}"));
        let state = record["state"].as_str().unwrap_or("");
        if !matches!(state, "confirmed" | "failed" | "rolled-back") {
            fail(&format!("{name}: acknowledged deployment {id} is not final in the journal: {record}"));
        }
    }
    let reported = status["toplevel"].as_str().unwrap_or("");
    let (mut running, mut profile) = (String::new(), String::new());
    // An empty reading (seen once at load > 20 right after a boot, while the agent reported
    // the same system; most likely the ssh round trip failing) is read again; a link that
    // is really missing stays empty and still fails below.
    for _ in 0..3 {
        running = guest.resolve("/run/current-system");
        profile = guest.resolve("/nix/var/nix/profiles/system");
        if !running.is_empty() && !profile.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    if running != profile || running != reported {
        fail(&format!("{name}: running {running}, profile {profile}, agent {reported} differ: {status}"));
    }
    running
}
