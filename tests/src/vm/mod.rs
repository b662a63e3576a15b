//! The VM lane's guests (tests/vm/run.sh): Debian 12 under qemu, systemd as PID 1, the
//! agent as a systemd service, reached from this machine only, on 127.0.77.<10+k> (qemu
//! user networking forwards the agent's port and ssh there).
//!
//! Each guest boots the lane's image (built by tests/vm/build-image.sh, named by
//! `HOSTCTL_VM_IMAGE`) through a qcow2 overlay of its own, plus a seed disk with this
//! checkout's agent, its unit (rendered from agent/nixos/module.nix by
//! tests/vm/agent-unit.nix), agent.yaml and the controller's ssh key, which the guest's
//! /sbin/hostctl-vm-init installs at every boot. The qemu process is killed (by pid) on
//! drop, also when the test failed; its files go with the guest's temp dir.
//!
//! Without `HOSTCTL_VM_IMAGE` (any run but tests/vm/run.sh's) the lane's tests skip.

pub mod checks;
pub mod cuts;
pub mod fleet;
pub mod gitd;
pub mod guest;
pub mod resume;
pub mod uefi;
pub mod upgrade;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::{fail, run, workspace_root};

/// What tests/vm/run.sh found: the image directory and the accelerator that works here.
#[derive(Debug, Clone)]
pub struct Lane {
    pub image: PathBuf,
    /// `kvm` or `tcg` (tests/vm/run.sh probes KVM and falls back).
    pub accel: String,
}

impl Lane {
    /// The lane, or `None` (with a skip message) when this is not a run of tests/vm/run.sh.
    pub fn from_env() -> Option<Lane> {
        let Some(image) = std::env::var_os("HOSTCTL_VM_IMAGE").filter(|v| !v.is_empty()) else {
            crate::skip("HOSTCTL_VM_IMAGE is not set: the VM lane runs from tests/vm/run.sh");
            return None;
        };
        let accel = std::env::var("HOSTCTL_VM_ACCEL").unwrap_or_else(|_| "tcg".to_owned());
        Some(Lane { image: PathBuf::from(image), accel })
    }
}

/// The agent's unit as the guests run it: agent/nixos/module.nix's service, rendered by
/// tests/vm/agent-unit.nix with the agent binary at /opt/hostctl/bin.
pub fn agent_unit() -> String {
    rendered_unit().unit.clone()
}

/// The scripts the module's unit runs (`pkgs.writeShellScript`: `ExecStartPre`'s identity
/// publisher), by name: the lane installs each as `/opt/hostctl/bin/<name>`, where the
/// rendered unit names it.
pub fn agent_unit_scripts() -> &'static BTreeMap<String, String> {
    &rendered_unit().scripts
}

/// What tests/vm/agent-unit.nix renders: the unit file and the scripts it names.
struct RenderedUnit {
    unit: String,
    scripts: BTreeMap<String, String>,
}

fn rendered_unit() -> &'static RenderedUnit {
    static UNIT: OnceLock<RenderedUnit> = OnceLock::new();
    UNIT.get_or_init(|| {
        let root = workspace_root();
        let out = run(Command::new("nix-instantiate")
            .args(["--eval", "--strict", "--json"])
            .arg(root.join("tests/vm/agent-unit.nix"))
            .arg("--argstr")
            .arg("module")
            .arg(root.join("agent/nixos/module.nix"))
            .args(["--argstr", "package", "/opt/hostctl"]));
        if !out.status.success() {
            fail(&format!("rendering tests/vm/agent-unit.nix: {}", String::from_utf8_lossy(&out.stderr)));
        }
        const BAD: &str = "tests/vm/agent-unit.nix did not give {unit, scripts}";
        let value: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| fail(&format!("{BAD}: {e}")));
        let unit = value["unit"].as_str().unwrap_or_else(|| fail(BAD)).to_owned();
        let scripts = value["scripts"].as_object().unwrap_or_else(|| fail(BAD));
        let scripts = scripts.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect();
        RenderedUnit { unit, scripts }
    })
}

/// A POSIX-shell single-quoted word: for building guest command lines from values.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// `cmd`'s output, failing the test (with argv, status and stderr) unless it succeeds.
fn checked(cmd: &mut Command) -> std::process::Output {
    let out = run(cmd);
    if !out.status.success() {
        fail(&format!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    out
}

/// An ext4 image of `dir` at `image` (`mkfs.ext4 -d`), sized for its contents.
fn ext4_of(dir: &Path, image: &Path) {
    let mut size_mib: u64 = 16;
    for entry in walk(dir) {
        size_mib += std::fs::metadata(&entry).map_or(0, |m| m.len()) / (1 << 20) + 1;
    }
    checked(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(dir).arg(image).arg(format!("{}M", size_mib * 2)));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
    }
    files
}
