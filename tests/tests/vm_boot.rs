//! VM lane (tests/vm/run.sh), scenarios 6 and 7 on one guest (resumed from the lane's
//! template, so its first boot is the reboot below): binfmt registered by the agent in the
//! guest's own kernel when it starts (a static aarch64 program runs), then
//! `hostctl apply --mode boot` and a real reboot: the guest runs the new system, the
//! agent reports it, and aarch64 is registered again. Skips unless run by
//! tests/vm/run.sh.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code throughout: a failed step must fail the test")]

use hostctl_tests::vm::fleet::VmFleet;
use hostctl_tests::vm::guest::Guest;
use hostctl_tests::vm::Lane;

const FIRST: &str = "{ services = { vm-old = { exec = \"/bin/sleep infinity\"; }; }; }\n";
const SECOND: &str = "{ services = { vm-next-boot = { exec = \"/bin/sleep infinity\"; }; }; }\n";

/// The agent's binfmt entry for aarch64 is in the guest kernel, and the program runs.
fn assert_aarch64_runs(guest: &Guest, when: &str) {
    let entry = guest.sh("cat /proc/sys/fs/binfmt_misc/hostctl-aarch64-linux");
    assert!(entry.lines().next() == Some("enabled"), "{when}: {entry}");
    assert!(entry.contains("interpreter /usr/bin/qemu-aarch64-static"), "{when}: {entry}");
    // Debian's own registrations were taken out of the image: this one is the agent's.
    let others = guest.sh("ls /proc/sys/fs/binfmt_misc");
    assert!(!others.contains("qemu-aarch64"), "{when}: {others}");
    assert_eq!(guest.sh("/root/machine-aarch64"), "aarch64", "{when}");
}

#[test]
fn binfmt_at_boot_then_mode_boot_and_a_reboot_run_the_new_system() {
    let Some(lane) = Lane::from_env() else { return };
    let mut vm = VmFleet::start_resumed(&lane, &["web1"], FIRST, "", &[]);
    let dir = tempfile::tempdir().unwrap();
    let program = hostctl_tests::cross::aarch64_program(dir.path());
    vm.guest("web1").put(&program, "/root/machine-aarch64");
    assert_aarch64_runs(vm.guest("web1"), "resumed, the agent started");
    let status = vm.status("web1");
    assert_eq!(status["emulated_systems"], serde_json::json!(["aarch64-linux"]), "{status}");

    vm.hostctl(&["--json", "apply"]).expect_code(0);
    let old = vm.toplevel("web1");
    vm.set_host("web1", SECOND);
    let new = vm.toplevel("web1");
    let run = vm.hostctl(&["--json", "apply", "--mode", "boot"]);
    run.expect_code(0);
    let v = run.json();
    let entry = &v["hosts"]["web1"];
    assert_eq!(entry["result"], "activated", "{entry}");
    {
        let guest = vm.guest("web1");
        assert_eq!(guest.resolve("/run/current-system"), old, "mode boot leaves the running system alone");
        assert_eq!(guest.resolve("/nix/var/nix/hostctl-vm/next-boot"), new);
        assert_eq!(guest.unit_property("vm-next-boot", "LoadState"), "not-found");
        assert_eq!(guest.unit_property("vm-old", "ActiveState"), "active");
    }

    vm.guest_mut("web1").reboot();
    let guest = vm.guest("web1");
    assert_eq!(guest.resolve("/run/current-system"), new, "after the reboot");
    assert_eq!(guest.resolve("/run/booted-system"), new);
    assert_eq!(guest.unit_property("vm-next-boot", "ActiveState"), "active", "the new system's unit started at boot");
    assert_eq!(guest.unit_property("vm-old", "LoadState"), "not-found");
    assert_aarch64_runs(guest, "after the reboot");

    let status = vm.status("web1");
    assert_eq!(status["toplevel"].as_str(), Some(new.as_str()), "{status}");
    assert_eq!(status["current_system"].as_str(), Some(new.as_str()), "{status}");
    assert_eq!(status["booted_system"].as_str(), Some(new.as_str()), "{status}");
    assert_eq!(status["generation"], entry["generation"], "{status} vs {entry}");
    assert_eq!(status["rev"].as_str(), Some(vm.fleet.head().as_str()), "{status}");
    assert_eq!(status["lock"], entry["lock"], "{status} vs {entry}");
    let fleet_status = vm.hostctl(&["--json", "status"]);
    fleet_status.expect_code(0);
    assert_eq!(fleet_status.json()["hosts"]["web1"]["drift"], "in-sync", "{}", fleet_status.stdout);
}
