//! Debug builds only: named points where the agent stops the world, for the VM lane's
//! power cuts (tests/tests/vm_power*.rs). When `pause-at` in the pause directory names a
//! point the agent reaches, it writes the name to `paused-at` there and blocks the thread
//! that reached it until `pause-at` names something else; the test sees `paused-at` over
//! ssh and kills qemu, so the cut falls exactly there.
//!
//! The pause directory is `HOSTCTL_AGENT_PAUSE_DIR`, else systemd's `RUNTIME_DIRECTORY`
//! (`/run/hostctl-agent` under the module's unit: a tmpfs, so no request survives the
//! power cut and the recovering agent never pauses on the same point). In release builds
//! [`point`] is empty: no file is read and the point names are not in the binary.
//!
//! Points (see docs/RELIABILITY.md for what a cut at each must leave): `upload:mid-stream`,
//! `import:validated`, `import:registered`, `import:synced`, `journal:insert`,
//! `journal:<transition>` (after each journaled transition, named as in `transition.rs`),
//! `journal:update@<Phase>` (after a data-only write, the phase as in `journal::Phase`), `profile:before-set`,
//! `profile:after-set`, `activation:launched`, `activation:finished`, `confirm:received`,
//! `pull:fetched-objects`, `pull:evaluated`, `pull:built`.

/// Blocks here while the pause file names `name` (debug builds); see the module docs.
#[cfg(debug_assertions)]
pub fn point(name: &str) {
    if let Some(dir) = std::env::var_os("HOSTCTL_AGENT_PAUSE_DIR").or_else(|| std::env::var_os("RUNTIME_DIRECTORY")) {
        point_in(std::path::Path::new(&dir), name);
    }
}

/// [`point`] with the pause directory `dir`.
#[cfg(debug_assertions)]
fn point_in(dir: &std::path::Path, name: &str) {
    use std::time::Duration;
    let wanted = || std::fs::read_to_string(dir.join("pause-at")).is_ok_and(|t| t.trim() == name);
    if !wanted() {
        return;
    }
    tracing::warn!(point = name, "paused at a debug pause point until pause-at names another");
    if let Err(e) = std::fs::write(dir.join("paused-at"), name) {
        tracing::error!(point = name, error = %e, "cannot write paused-at");
    }
    while wanted() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(dir.join("paused-at"));
}

/// Release builds: no pause points.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn point(_name: &str) {}

#[cfg(all(test, debug_assertions))]
mod tests {
    #[test]
    fn a_named_point_blocks_until_the_request_names_another() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pause-at"), "journal:confirm\n").unwrap();
        super::point_in(dir.path(), "journal:insert");
        assert!(!dir.path().join("paused-at").exists(), "another point does not pause");
        let path = dir.path().to_owned();
        let paused = std::thread::spawn(move || super::point_in(&path, "journal:confirm"));
        let marker = dir.path().join("paused-at");
        while !marker.exists() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "journal:confirm");
        assert!(!paused.is_finished(), "blocked while named");
        std::fs::write(dir.path().join("pause-at"), "none").unwrap();
        paused.join().unwrap();
        assert!(!marker.exists(), "the marker goes when it resumes");
    }
}
