//! The UEFI variant of a guest: Debian's OVMF as its firmware, with a copy of
//! `OVMF_VARS_4M.fd` of its own (so EFI variables such as systemd-boot's
//! `LoaderEntryOneShot` and `LoaderEntryDefault` survive its reboots and power cycles, as
//! NVRAM does), and a third disk, a qcow2 overlay of the image's `esp.img` (a GPT with
//! one EFI system partition: systemd-boot as the removable-media loader, loader.conf and
//! the image's own entry; tests/vm/build-image.sh). The guest mounts it on /boot
//! (tests/vm/guest-init.sh); the test systems' `switch-to-configuration boot|switch`
//! writes their entries there (tests/vm/fleet).
//!
//! It only adds qemu arguments and files beside the guest's others; it never reads or
//! writes the ESP or the variables from this machine (the tests ask the guest: bootctl,
//! /boot).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::checked;
use crate::fail;

/// How long a UEFI guest's boot may take: the firmware adds its own, and a reboot may
/// include a failed boot of a bad generation (its initramfs waiting for a root, a panic, a
/// reset) before the good one (TCG on a busy machine).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(480);

/// Debian's `ovmf` package: the firmware's code (read-only) and its empty variable store.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Writes the guest's own files into `dir`: `OVMF_VARS.fd` (a copy) and `esp.qcow2` (an
/// overlay of the image's ESP).
pub fn create_disks(image: &Path, dir: &Path) {
    let vars = dir.join("OVMF_VARS.fd");
    std::fs::copy(OVMF_VARS, &vars)
        .unwrap_or_else(|e| fail(&format!("copying {OVMF_VARS} to {}: {e} (is `ovmf` installed?)", vars.display())));
    checked(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(image.join("esp.img"))
            .arg(dir.join("esp.qcow2")),
    );
}

/// The firmware and the ESP, first in the boot order (so OVMF does not try the network
/// first), on a PCI slot after the guest's root and seed disks (so the ESP is /dev/vdc:
/// an explicit device would otherwise take the first slot, before them).
pub fn qemu_args(cmd: &mut Command, dir: &Path) {
    cmd.arg("-drive").arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"));
    cmd.arg("-drive").arg(format!("if=pflash,format=raw,file={}", dir.join("OVMF_VARS.fd").display()));
    cmd.arg("-drive").arg(format!("file={},if=none,id=esp,format=qcow2", dir.join("esp.qcow2").display()));
    cmd.args(["-device", "virtio-blk-pci,drive=esp,bootindex=0,addr=0x10"]);
}

/// systemd-boot's vendor GUID: its variables (`LoaderEntrySelected`, ...) in efivarfs.
const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// systemd-boot's EFI variable `name` as the guest's kernel shows it (efivarfs: 4 bytes
/// of attributes, then UTF-16LE; the values read here are ASCII), or `None` when unset.
pub fn loader_variable(guest: &super::guest::Guest, name: &str) -> Option<String> {
    let file = format!("/sys/firmware/efi/efivars/{name}-{LOADER_GUID}");
    // efivarfs files cannot seek: `tail` reads them through a pipe.
    let out = guest.ssh(&format!("test -e {0} && cat {0} | tail -c +5 | tr -d '\\000'", super::shell_quote(&file)));
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The loader entry this boot of the guest was started from (`LoaderEntrySelected`).
pub fn booted_entry(guest: &super::guest::Guest) -> String {
    loader_variable(guest, "LoaderEntrySelected")
        .unwrap_or_else(|| fail(&format!("{}: no LoaderEntrySelected: not booted by systemd-boot", guest.name)))
}

/// NixOS's name of generation `generation`'s loader entry.
pub fn generation_entry(generation: u64) -> String {
    format!("nixos-generation-{generation}.conf")
}
