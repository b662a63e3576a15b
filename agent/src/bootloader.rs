//! The boot loader, for booting a new generation once before it becomes the default
//! (issue 16): which loader entry belongs to a system, and setting the default and the
//! one-shot entry. systemd-boot only, through the `bootctl` of the host's systemd (its
//! EFI variables `LoaderEntryDefault` and `LoaderEntryOneShot`); any other loader is a
//! clear refusal. Never writes entries: `switch-to-configuration` does.
//!
//! Entries are found as NixOS's systemd-boot installer writes them:
//! `<esp>/loader/entries/nixos-generation-<N>.conf`, whose `options` line holds
//! `init=<toplevel>/init`; a system's entry is found by that, never by a generation number.

use std::path::{Path, PathBuf};

use hostctl_schemas::ids::StorePath;

/// The program that sets systemd-boot's EFI variables (looked up on PATH; the fast test
/// lane puts a double there that keeps the variables in a file).
const BOOTCTL: &str = "bootctl";

/// How much of a failed `bootctl`'s stderr an error keeps.
const STDERR_TAIL: usize = 2000;

/// Why the boot loader could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(
        "no supported boot loader: {} does not exist (systemd-boot keeps its loader.conf there; GRUB is not supported); a reboot could not be rolled back, so it is refused",
        .0.display()
    )]
    Unsupported(PathBuf),
    #[error("cannot read the boot loader entries in {}: {source}", dir.display())]
    Entries { dir: PathBuf, source: std::io::Error },
    #[error("no boot loader entry in {} boots {toplevel} (no `options` line with `init={toplevel}/init`)", dir.display())]
    NoEntry { dir: PathBuf, toplevel: StorePath },
    #[error("`{}` could not run: {source}", argv.join(" "))]
    Spawn { argv: Vec<String>, source: std::io::Error },
    #[error("`{}` exited with {status}: {stderr}", argv.join(" "))]
    Failed { argv: Vec<String>, status: std::process::ExitStatus, stderr: String },
}

/// systemd-boot on the EFI system partition mounted at `esp`.
#[derive(Debug, Clone)]
pub struct SystemdBoot {
    esp: PathBuf,
    /// `bootctl`, or another program for tests.
    program: PathBuf,
}

impl SystemdBoot {
    /// The loader at `esp`, if it is systemd-boot (its `loader/loader.conf` exists).
    pub fn detect(esp: &Path) -> Result<Self, BootError> {
        let conf = esp.join("loader/loader.conf");
        if conf.is_file() {
            Ok(Self { esp: esp.to_path_buf(), program: PathBuf::from(BOOTCTL) })
        } else {
            Err(BootError::Unsupported(conf))
        }
    }

    /// The same loader, with `program` in place of `bootctl`.
    pub fn with_program(self, program: PathBuf) -> Self {
        Self { program, ..self }
    }

    fn entries_dir(&self) -> PathBuf {
        self.esp.join("loader/entries")
    }

    /// The entry id (file name, `nixos-generation-7.conf`) that boots `toplevel`.
    pub fn entry_of(&self, toplevel: &StorePath) -> Result<String, BootError> {
        let dir = self.entries_dir();
        let wanted = format!("init={toplevel}/init");
        let read = std::fs::read_dir(&dir).map_err(|source| BootError::Entries { dir: dir.clone(), source })?;
        let mut found: Vec<String> = Vec::new();
        for entry in read.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".conf") {
                continue;
            }
            if entry_boots(&entry.path(), &wanted) {
                found.push(name);
            }
        }
        // Several entries can boot one system (it was deployed twice): the newest file
        // name sorts last only by chance, so take the highest generation number.
        found.sort_by_key(|n| generation_of(n));
        found.pop().ok_or_else(|| BootError::NoEntry { dir, toplevel: toplevel.clone() })
    }

    /// Makes `toplevel` what boots when nothing else is asked for, and says which entry
    /// that is. When loader.conf's own `default` already boots it, the EFI variable is
    /// removed rather than set: `LoaderEntryDefault` overrides loader.conf, so a variable
    /// left behind would keep the host booting this entry after a later
    /// `switch-to-configuration` moved loader.conf's default to a newer generation.
    pub fn make_default(&self, toplevel: &StorePath) -> Result<String, BootError> {
        let wanted = format!("init={toplevel}/init");
        if let Some(entry) = self.configured_default() {
            if entry_boots(&self.entries_dir().join(&entry), &wanted) {
                self.set_default("")?;
                return Ok(entry);
            }
        }
        let entry = self.entry_of(toplevel)?;
        self.set_default(&entry)?;
        Ok(entry)
    }

    /// The entry loader.conf names as `default`, if it names one.
    fn configured_default(&self) -> Option<String> {
        let conf = std::fs::read_to_string(self.esp.join("loader/loader.conf")).ok()?;
        conf.lines()
            .find_map(|l| l.trim_start().strip_prefix("default"))
            .map(|rest| rest.trim().to_owned())
            .filter(|entry| !entry.is_empty())
    }

    /// `bootctl set-default ENTRY`: what boots when nothing else is asked for (`""`:
    /// loader.conf's `default` again).
    pub fn set_default(&self, entry: &str) -> Result<(), BootError> {
        self.bootctl(&["set-default", entry])
    }

    /// `bootctl set-oneshot ENTRY`: what the next boot only runs (`""`: nothing).
    pub fn set_oneshot(&self, entry: &str) -> Result<(), BootError> {
        self.bootctl(&["set-oneshot", entry])
    }

    /// Runs `bootctl` and waits: it only writes an EFI variable, so it is quick, and a
    /// confirmation must know it worked before it answers.
    fn bootctl(&self, args: &[&str]) -> Result<(), BootError> {
        let esp = format!("--esp-path={}", self.esp.display());
        let program = self.program.display().to_string();
        let argv: Vec<String> =
            [program.as_str(), esp.as_str()].into_iter().chain(args.iter().copied()).map(str::to_owned).collect();
        run(&argv)
    }
}

/// Whether the loader entry file at `path` has an `options` line with `wanted`
/// (`init=<toplevel>/init`) among its words.
fn entry_boots(path: &Path, wanted: &str) -> bool {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("options"))
        .any(|options| options.split_whitespace().any(|word| word == wanted))
}

/// Runs `argv` (stdin closed) and waits; an error keeps argv, the status and the stderr tail.
fn run(argv: &[String]) -> Result<(), BootError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(BootError::Spawn { argv: Vec::new(), source: std::io::Error::other("empty command") });
    };
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| BootError::Spawn { argv: argv.to_vec(), source })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let start = stderr.len().saturating_sub(STDERR_TAIL);
    let tail = stderr.get(start..).unwrap_or(&stderr).trim().to_owned();
    Err(BootError::Failed { argv: argv.to_vec(), status: out.status, stderr: tail })
}

/// Runs agent.yaml's `boot.reboot_command` (the fast test lane's simulated reboot): it
/// only has to start the reboot; the agent is stopped by it like by a real one.
pub fn run_reboot_command(argv: &[String]) -> Result<(), BootError> {
    run(argv)
}

/// The host's boot id (trimmed), `None` if it cannot be read.
pub fn read_boot_id(file: &Path) -> Option<String> {
    std::fs::read_to_string(file).ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

/// N of `nixos-generation-N.conf` (also `nixos-generation-N-specialisation-x.conf`), 0
/// for other names.
fn generation_of(name: &str) -> u64 {
    let rest = name.strip_prefix("nixos-generation-").unwrap_or_default();
    rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    const OLD: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-web1";
    const NEW: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-web1";

    /// An ESP with loader.conf and entries for generations 1 (OLD), 2 (NEW) and 10 (NEW
    /// again), and a `bootctl` double that appends its arguments to `calls`.
    fn esp(dir: &Path) -> SystemdBoot {
        let entries = dir.join("loader/entries");
        std::fs::create_dir_all(&entries).unwrap();
        std::fs::write(dir.join("loader/loader.conf"), "default nixos-generation-2.conf\ntimeout 0\n").unwrap();
        for (n, toplevel) in [(1, OLD), (2, NEW), (10, NEW)] {
            let text = format!(
                "title NixOS\nversion Generation {n}\nlinux /EFI/nixos/k.efi\ninitrd /EFI/nixos/i.efi\noptions init={toplevel}/init console=ttyS0\n"
            );
            std::fs::write(entries.join(format!("nixos-generation-{n}.conf")), text).unwrap();
        }
        let fake = dir.join("bootctl");
        let calls = dir.join("calls");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\n[ \"$3\" != fail ] || {{ echo no EFI >&2; exit 1; }}\n",
                calls.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        SystemdBoot::detect(dir).unwrap().with_program(fake)
    }

    #[test]
    fn an_entry_is_found_by_its_init_and_the_newest_generation_wins() {
        let dir = tempfile::tempdir().unwrap();
        let loader = esp(dir.path());
        assert_eq!(loader.entry_of(&OLD.parse().unwrap()).unwrap(), "nixos-generation-1.conf");
        assert_eq!(loader.entry_of(&NEW.parse().unwrap()).unwrap(), "nixos-generation-10.conf");
        let other: StorePath = "/nix/store/cccccccccccccccccccccccccccccccc-nixos-system-web1".parse().unwrap();
        let e = loader.entry_of(&other).unwrap_err().to_string();
        assert!(e.starts_with("no boot loader entry in ") && e.contains(&format!("init={other}/init")), "{e}");
    }

    #[test]
    fn making_loader_confs_default_the_default_removes_the_variable_instead() {
        let dir = tempfile::tempdir().unwrap();
        let loader = esp(dir.path());
        // loader.conf names generation 2, which boots NEW: the variable goes.
        assert_eq!(loader.make_default(&NEW.parse().unwrap()).unwrap(), "nixos-generation-2.conf");
        // OLD is not loader.conf's default: the variable names its entry.
        assert_eq!(loader.make_default(&OLD.parse().unwrap()).unwrap(), "nixos-generation-1.conf");
        let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
        let esp = format!("--esp-path={}", dir.path().display());
        assert_eq!(calls, format!("{esp} set-default \n{esp} set-default nixos-generation-1.conf\n"));
    }

    #[test]
    fn without_loader_conf_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = SystemdBoot::detect(dir.path()).unwrap_err().to_string();
        assert!(e.starts_with("no supported boot loader: ") && e.contains("loader/loader.conf"), "{e}");
    }

    #[test]
    fn bootctl_gets_the_esp_and_the_entry_and_its_failure_keeps_argv_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let loader = esp(dir.path());
        loader.set_default("nixos-generation-1.conf").unwrap();
        loader.set_oneshot("nixos-generation-10.conf").unwrap();
        let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
        let esp = format!("--esp-path={}", dir.path().display());
        assert_eq!(
            calls,
            format!("{esp} set-default nixos-generation-1.conf\n{esp} set-oneshot nixos-generation-10.conf\n")
        );
        let e = loader.set_default("fail").unwrap_err().to_string();
        assert!(e.contains("set-default fail` exited with exit status: 1: no EFI"), "{e}");
    }
}
