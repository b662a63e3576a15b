//! VM lane (tests/vm/run.sh), issue 16 at the boot loader's level, on a UEFI guest (OVMF,
//! systemd-boot from the guest's ESP, the test systems' loader entries as NixOS writes
//! them): `bootctl set-oneshot` boots a new generation once; a power cycle then boots the
//! default again; a generation whose boot fails (its initrd cannot find the root, panic=5)
//! booted once comes back on the default by itself. Which generation runs is asserted
//! after each path (the loader's `LoaderEntrySelected`, `/run/booted-system`,
//! `/proc/cmdline`). Needs nothing of the agent's reboot logic. Skips unless run by
//! tests/vm/run.sh.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code throughout: a failed step must fail the test")]

use hostctl_tests::vm::fleet::VmFleet;
use hostctl_tests::vm::guest::Guest;
use hostctl_tests::vm::uefi::{booted_entry, generation_entry, loader_variable};
use hostctl_tests::vm::Lane;

const FIRST: &str = "{ services = { vm-web = { exec = \"/bin/sleep infinity\"; }; }; }\n";
/// A "kernel change": the same services, other kernel parameters.
const NEW_KERNEL: &str = r#"{
  services = { vm-web = { exec = "/bin/sleep infinity"; }; };
  kernelParams = "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=0 panic=5 hostctl.vm.kernel=2";
}
"#;
const BOOT_FAILS: &str = "{ services = { vm-web = { exec = \"/bin/sleep infinity\"; }; }; bootFails = true; }\n";

/// Deploys the host's configuration with `mode`; returns (toplevel, its generation).
fn deploy(vm: &VmFleet, mode: &str) -> (String, u64) {
    let run = vm.hostctl(&["--json", "apply", "--mode", mode]);
    run.expect_code(0);
    let generation = run.json()["hosts"]["web1"]["generation"].as_u64().unwrap();
    (vm.toplevel("web1"), generation)
}

/// The guest runs `toplevel`, booted from generation `generation`'s entry.
fn assert_runs(guest: &Guest, toplevel: &str, generation: u64, when: &str) {
    assert_eq!(booted_entry(guest), generation_entry(generation), "{when}: the entry systemd-boot started");
    assert_eq!(guest.resolve("/run/booted-system"), toplevel, "{when}: booted system");
    assert_eq!(guest.resolve("/run/current-system"), toplevel, "{when}: current system");
    let cmdline = guest.sh("cat /proc/cmdline");
    assert!(cmdline.contains(&format!("init={toplevel}/init ")), "{when}: {cmdline}");
    assert_eq!(guest.unit_property("vm-web", "ActiveState"), "active", "{when}");
}

/// `bootctl set-default <default>; bootctl set-oneshot <once>` in the guest, as the agent
/// does before a reboot into a new generation.
fn boot_once(guest: &Guest, default: u64, once: u64) {
    guest.sh(&format!(
        "bootctl set-default {} && bootctl set-oneshot {}",
        generation_entry(default),
        generation_entry(once)
    ));
    assert_eq!(loader_variable(guest, "LoaderEntryOneShot"), Some(generation_entry(once)));
}

#[test]
fn uefi_one_shot_boots_a_generation_once_a_power_cycle_and_a_failed_boot_return_to_the_default() {
    let Some(lane) = Lane::from_env() else { return };
    let mut vm = VmFleet::start_uefi(&lane, &["web1"], FIRST, "");
    {
        let guest = vm.guest("web1");
        assert_eq!(booted_entry(guest), "debian.conf", "the image's own entry, the ESP's default");
        assert_eq!(guest.sh("findmnt -n -o FSTYPE /boot"), "vfat", "the ESP is /boot");
    }

    // switch writes the entry and makes it loader.conf's default; a reboot boots it.
    let (first, first_gen) = deploy(&vm, "switch");
    {
        let guest = vm.guest("web1");
        let conf = guest.sh("cat /boot/loader/loader.conf");
        assert!(conf.lines().any(|l| l == format!("default {}", generation_entry(first_gen))), "{conf}");
        let entry = guest.sh(&format!("cat /boot/loader/entries/{}", generation_entry(first_gen)));
        assert!(entry.contains(&format!("\nversion Generation {first_gen}\n")), "{entry}");
        assert!(entry.contains(&format!("\noptions init={first}/init root=/dev/vda ")), "{entry}");
    }
    vm.guest_mut("web1").reboot();
    assert_runs(vm.guest("web1"), &first, first_gen, "after the first reboot");

    // A kernel change, booted once: the one-shot entry runs, the default stays.
    vm.set_host("web1", NEW_KERNEL);
    let (second, second_gen) = deploy(&vm, "boot");
    boot_once(vm.guest("web1"), first_gen, second_gen);
    vm.guest_mut("web1").reboot();
    let guest = vm.guest("web1");
    assert_runs(guest, &second, second_gen, "the one-shot boot");
    assert!(guest.sh("cat /proc/cmdline").contains(" hostctl.vm.kernel=2"), "the new kernel parameters");
    assert_eq!(loader_variable(guest, "LoaderEntryOneShot"), None, "systemd-boot consumed the one-shot entry");
    assert_eq!(loader_variable(guest, "LoaderEntryDefault"), Some(generation_entry(first_gen)));

    // A power cycle (qemu killed, started again with the same variables): the default.
    vm.guest_mut("web1").power_cut();
    vm.guest_mut("web1").boot();
    assert_runs(vm.guest("web1"), &first, first_gen, "after the power cycle");
    assert!(!vm.guest("web1").sh("cat /proc/cmdline").contains("hostctl.vm.kernel=2"));

    // A generation whose boot fails, booted once: it panics, reboots, and the default runs.
    vm.set_host("web1", BOOT_FAILS);
    let (bad, bad_gen) = deploy(&vm, "boot");
    assert_ne!(bad, first);
    boot_once(vm.guest("web1"), first_gen, bad_gen);
    vm.guest_mut("web1").reboot();
    let guest = vm.guest("web1");
    assert_runs(guest, &first, first_gen, "after the failed boot");
    let console = guest.console_text();
    assert!(console.contains("hostctl-vm-no-such-root"), "the bad generation's boot ran: {}", guest.diagnostics());
    assert!(
        console.contains("Rebooting automatically due to panic= boot argument"),
        "it rebooted by itself: {}",
        guest.diagnostics()
    );
    assert_eq!(loader_variable(guest, "LoaderEntryOneShot"), None);
}
