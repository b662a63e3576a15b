//! A second agent for scenario 4 (a new agent shipped inside a system): this checkout's
//! agent binary (symbols and debug info stripped) with another version written
//! into its version stamp (agent/src/version.rs: the bytes after a marker that occurs once
//! in the binary). Honest about what differs: the code is the same build; the version it
//! reports and the file (so the store path the system's unit starts) are not.

use std::path::Path;
use std::process::Command;

use super::checked;
use crate::fail;

/// agent/src/version.rs's `MARKER` and `VERSION_LEN`.
const MARKER: &[u8; 32] = b"\0hostctl-agent version stamp:\0\0\0";
const VERSION_LEN: usize = 32;

/// Writes the stamped agent to `to` (mode 0755).
pub fn stamped_agent(to: &Path, version: &str) {
    if version.len() >= VERSION_LEN {
        fail(&format!("version `{version}` is longer than the agent's {VERSION_LEN}-byte stamp"));
    }
    let dir = to.parent().unwrap_or_else(|| fail(&format!("{} has no parent", to.display())));
    std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(&format!("mkdir {}: {e}", dir.display())));
    // All symbols go too: the system carries it through an import, which costs time by size.
    checked(Command::new("objcopy").arg("--strip-all").arg(crate::binary("hostctl-agent")).arg(to));
    let mut bytes = std::fs::read(to).unwrap_or_else(|e| fail(&format!("read {}: {e}", to.display())));
    let found: Vec<usize> =
        bytes.windows(MARKER.len()).enumerate().filter(|(_, w)| *w == MARKER).map(|(i, _)| i).collect();
    let [at] = found.as_slice() else {
        fail(&format!("{}: the version marker occurs {} times, not once", to.display(), found.len()))
    };
    let field = &mut bytes[at + MARKER.len()..at + MARKER.len() + VERSION_LEN];
    field.fill(0);
    field[..version.len()].copy_from_slice(version.as_bytes());
    std::fs::write(to, &bytes).unwrap_or_else(|e| fail(&format!("write {}: {e}", to.display())));
}
