//! `binfmt:` of agent.yaml checked and resolved into a [`Plan`]: each system known, not
//! the host's own, with an existing executable interpreter (configured, or the default
//! qemu user-mode emulator) and its flags. Every refusal names the key.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use hostctl_schemas::agent_config::BinfmtConfig;
use hostctl_schemas::ids::System;

use super::table::{self, Arch};

/// Prefix of the entry names the agent manages (`hostctl-aarch64-linux`): entries with
/// other names (the distribution's `qemu-aarch64`, systemd-binfmt's) are never touched.
pub const NAME_PREFIX: &str = "hostctl-";

/// Where Debian's qemu-user-static installs its emulators.
const DEBIAN_QEMU_DIR: &str = "/usr/bin";

/// Longest interpreter path accepted: the kernel takes a registration of at most 1920
/// bytes, and magic and mask use 160 of them.
const MAX_INTERPRETER_LEN: usize = 1024;

/// The validated `binfmt:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub mount_point: PathBuf,
    pub nix_conf: PathBuf,
    /// In the order of `emulated_systems`, without duplicates.
    pub wanted: Vec<Wanted>,
}

/// One entry the agent wants registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub system: System,
    pub interpreter: PathBuf,
    /// `P` (the emulator gets the program's argv[0]), plus `F` (the kernel opens the
    /// emulator at registration, so it works in chroots and Nix sandboxes) when the
    /// interpreter is a static ELF executable.
    pub flags: &'static str,
    pub magic: Vec<u8>,
    pub mask: Vec<u8>,
}

impl Wanted {
    /// The entry's name under the mount point.
    pub fn name(&self) -> String {
        entry_name(self.system.as_str())
    }

    /// The line for `<mount>/register`.
    pub fn register_line(&self) -> String {
        super::kernel::register_line(&self.name(), &self.magic, &self.mask, &self.interpreter, self.flags)
    }
}

/// The managed entry name for `system`.
pub fn entry_name(system: &str) -> String {
    format!("{NAME_PREFIX}{system}")
}

/// The system a managed entry name stands for.
pub fn system_of(name: &str) -> Option<System> {
    name.strip_prefix(NAME_PREFIX).and_then(|s| s.parse().ok())
}

/// A `binfmt:` section the agent refuses; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    /// e.g. `binfmt.emulated_systems[1]` or `binfmt.interpreters.aarch64-linux`.
    pub key: String,
    pub problem: String,
}

/// What [`plan_for`] needs to know about the host.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// The host's own Nix system, e.g. `x86_64-linux`.
    pub system: String,
    /// The directory default emulators are looked for first.
    pub qemu_dir: PathBuf,
    /// `PATH`, searched next.
    pub path: Option<OsString>,
}

impl HostFacts {
    /// This host: its system, `/usr/bin`, the agent's `PATH`.
    pub fn current() -> Self {
        Self {
            system: crate::host::nix_system(),
            qemu_dir: PathBuf::from(DEBIAN_QEMU_DIR),
            path: std::env::var_os("PATH"),
        }
    }
}

/// Checks `config` for this host.
pub fn plan(config: &BinfmtConfig) -> Result<Plan, ConfigError> {
    plan_for(config, &HostFacts::current())
}

/// Checks `config` against `host`: every system known and not native, every interpreter
/// present, executable and expressible in a registration and in `nix.conf`.
pub fn plan_for(config: &BinfmtConfig, host: &HostFacts) -> Result<Plan, ConfigError> {
    let listed: BTreeSet<&System> = config.emulated_systems.iter().collect();
    if let Some(system) = config.interpreters.keys().find(|s| !listed.contains(s)) {
        return Err(ConfigError {
            key: format!("binfmt.interpreters.{system}"),
            problem: format!("`{system}` is not in binfmt.emulated_systems"),
        });
    }
    let mut seen = BTreeSet::new();
    let mut wanted = Vec::new();
    for (i, system) in config.emulated_systems.iter().enumerate() {
        if !seen.insert(system) {
            continue;
        }
        let key = format!("binfmt.emulated_systems[{i}]");
        let arch = table::arch(system.as_str()).ok_or_else(|| ConfigError {
            key: key.clone(),
            problem: format!("unknown system `{system}`: the agent can emulate {}", table::known_systems()),
        })?;
        if table::runs_natively(&host.system, system.as_str()) {
            return Err(ConfigError {
                key,
                problem: format!(
                    "`{system}` runs natively on this {} host: emulating it would run its own programs through qemu",
                    host.system
                ),
            });
        }
        let interpreter = match config.interpreters.get(system) {
            Some(path) => {
                let key = format!("binfmt.interpreters.{system}");
                check_interpreter(path).map_err(|problem| ConfigError { key, problem })?;
                path.clone()
            }
            None => default_interpreter(arch, host).map_err(|problem| ConfigError { key, problem })?,
        };
        let flags = if is_static_elf(&interpreter) { "PF" } else { "P" };
        wanted.push(Wanted {
            system: system.clone(),
            interpreter,
            flags,
            magic: arch.masked_magic(),
            mask: arch.mask.to_vec(),
        });
    }
    Ok(Plan { mount_point: config.mount_point.clone(), nix_conf: config.nix_conf.clone(), wanted })
}

/// The first of `<qemu_dir>/qemu-<cpu>-static`, then `qemu-<cpu>-static` and `qemu-<cpu>` on
/// `PATH` (NixOS puts `qemu-<cpu>` there) that exists and is executable.
fn default_interpreter(arch: &Arch, host: &HostFacts) -> Result<PathBuf, String> {
    let static_name = format!("qemu-{}-static", arch.qemu_cpu);
    let plain_name = format!("qemu-{}", arch.qemu_cpu);
    let first = host.qemu_dir.join(&static_name);
    if check_interpreter(&first).is_ok() {
        return Ok(first);
    }
    let dirs: Vec<PathBuf> = host.path.as_ref().map(|p| std::env::split_paths(p).collect()).unwrap_or_default();
    for name in [&static_name, &plain_name] {
        // Relative PATH entries would make the registration depend on the agent's cwd.
        if let Some(found) =
            dirs.iter().filter(|d| d.is_absolute()).map(|d| d.join(name)).find(|p| check_interpreter(p).is_ok())
        {
            return Ok(found);
        }
    }
    Err(format!(
        "no emulator for `{}`: {} does not exist and neither {static_name} nor {plain_name} is on PATH; \
         install qemu-user-static or set binfmt.interpreters.{}",
        arch.system,
        first.display(),
        arch.system
    ))
}

/// An interpreter the kernel can run and both the registration and `nix.conf` can name.
fn check_interpreter(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let text = path.to_str().ok_or_else(|| format!("{shown}: the path is not valid UTF-8"))?;
    if !path.is_absolute() {
        return Err(format!("{shown}: the interpreter must be an absolute path"));
    }
    // `:` separates the registration's fields; nix.conf splits values at whitespace and
    // reads `=` in a sandbox path as `target=source`.
    if let Some(c) = text.chars().find(|c| c.is_whitespace() || c.is_control() || matches!(c, ':' | '=')) {
        return Err(format!("{shown}: the interpreter path must not contain {c:?}"));
    }
    if text.len() > MAX_INTERPRETER_LEN {
        return Err(format!("{shown}: the interpreter path is longer than {MAX_INTERPRETER_LEN} bytes"));
    }
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{shown} does not exist"),
        _ => format!("{shown}: {e}"),
    })?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a file"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("{shown} is not executable"));
    }
    Ok(())
}

/// Whether `path` is an ELF executable without a program interpreter (`PT_INTERP`), i.e.
/// statically linked: only such an emulator works in a chroot once the kernel holds it
/// open (`F`). Anything unreadable or not ELF counts as dynamic.
pub fn is_static_elf(path: &Path) -> bool {
    let mut bytes = Vec::new();
    // Program headers follow the ELF header closely in every linker's output.
    let read = std::fs::File::open(path).and_then(|f| f.take(64 * 1024).read_to_end(&mut bytes));
    read.is_ok() && elf_has_no_interp(&bytes) == Some(true)
}

/// `Some(true)` when `elf` (a file's first bytes) is an ELF image with program headers
/// and none of type `PT_INTERP`; `None` when it is not ELF or its headers are cut off.
fn elf_has_no_interp(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..4)? != b"\x7fELF" {
        return None;
    }
    let wide = match elf.get(4)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let big = match elf.get(5)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u64> {
        let b: [u8; 2] = elf.get(at..at + 2)?.try_into().ok()?;
        Some(u64::from(if big { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) }))
    };
    let u32_at = |at: usize| -> Option<u64> {
        let b: [u8; 4] = elf.get(at..at + 4)?.try_into().ok()?;
        Some(u64::from(if big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }))
    };
    let u64_at = |at: usize| -> Option<u64> {
        let b: [u8; 8] = elf.get(at..at + 8)?.try_into().ok()?;
        Some(if big { u64::from_be_bytes(b) } else { u64::from_le_bytes(b) })
    };
    // e_phoff, e_phentsize, e_phnum per the ELF32/ELF64 header layouts.
    let (phoff, phentsize, phnum) =
        if wide { (u64_at(32)?, u16_at(54)?, u16_at(56)?) } else { (u32_at(28)?, u16_at(42)?, u16_at(44)?) };
    if phnum == 0 {
        return None;
    }
    for i in 0..phnum {
        let at = usize::try_from(phoff.checked_add(i.checked_mul(phentsize)?)?).ok()?;
        if u32_at(at)? == u64::from(PT_INTERP) {
            return Some(false);
        }
    }
    Some(true)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
