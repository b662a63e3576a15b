//! Issue 17's disk-space gate for the boot partition, against a real agent: a system whose
//! new kernel and initrd do not fit in the free space of the host's `/boot` (its own file
//! system, a small tmpfs mounted in the agent's mount namespace) is refused at step `push`
//! with both numbers and nothing sent; a kernel that fits deploys; a system that keeps its
//! kernel deploys however full `/boot` is.

#![expect(clippy::unwrap_used, reason = "test code throughout: a failed step must fail the test")]

use std::process::Command;

use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::TestFleet;

const HOST: &str = "web1";

/// Teaches the test fleet's copy of fleetlib a `kernelBytes` argument: the kernel's
/// `bzImage` padded by that many bytes (the example's kernels are a line of text); then
/// relocks. The system links `kernel` and `initrd` as NixOS does (lib/builders/toplevel.sh).
fn with_kernel_sizes(fleet: &TestFleet) {
    let patch = |file: &str, old: &str, new: &str| {
        let text = fleet.read(file);
        assert!(text.contains(old), "{file} lacks {old:?}");
        fleet.write(file, &text.replacen(old, new, 1));
    };
    patch(
        "lib/mksystem.nix",
        "kernelParams ? [ \"console=ttyS0\" ] }:",
        "kernelParams ? [ \"console=ttyS0\" ], kernelBytes ? 0 }:",
    );
    patch(
        "lib/mksystem.nix",
        "linux = mkBootPart system \"linux\" \"kernel\" kernel { };",
        "linux = mkBootPart system \"linux\" \"kernel\" kernel { padding = toString kernelBytes; };",
    );
    patch(
        "lib/builders/boot.sh",
        "> \"$out/bzImage\"\n",
        "> \"$out/bzImage\"\n    /bin/head -c \"$padding\" /dev/zero >> \"$out/bzImage\"\n",
    );
    set_kernel(fleet, "6.1.90", 3_000_000);
    hostctl_tests::git(&fleet.dir, &["add", "-A"]);
    let out = fleet.nix(&["flake", "lock", "--update-input", "fleetlib"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// web1's kernel: `version`, its bzImage padded by `bytes`.
fn set_kernel(fleet: &TestFleet, version: &str, bytes: u64) {
    let file = format!("hosts/{HOST}.nix");
    let text = fleet.read(&file);
    let kept: Vec<&str> = text.lines().filter(|l| !l.contains("kernel")).collect();
    let body = kept.join("\n");
    let end = body.rfind('}').unwrap();
    let attrs = format!("  kernel = \"{version}\";\n  kernelBytes = {bytes};\n");
    fleet.write(&file, &format!("{}{attrs}{}\n", &body[..end], &body[end..]));
}

/// The bytes a boot loader would copy to `/boot` for `toplevel`: its kernel and initrd.
fn boot_bytes(toplevel: &str) -> u64 {
    let size = |link: &str| std::fs::metadata(std::path::Path::new(toplevel).join(link)).unwrap().len();
    size("kernel") + size("initrd")
}

/// Runs `argv` in the mount namespace of web1's agent (where its `/boot` is).
fn in_agent_mounts(live: &LiveFleet, argv: &[&str]) {
    let pid = live.host(HOST).agent_pid().unwrap().to_string();
    let out = Command::new("nsenter").args(["-t", &pid, "-m", "--"]).args(argv).output().unwrap();
    assert!(out.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_new_kernel_that_does_not_fit_in_boot_is_refused_at_push_with_both_numbers() {
    let live = LiveFleet::start_with(&[HOST], with_kernel_sizes);
    // A 1 MiB boot partition, seen by the agent only.
    in_agent_mounts(&live, &["mount", "-t", "tmpfs", "-o", "size=1m", "hostctl-test-boot", "/boot"]);
    let free = live.agent_status(HOST)["boot_free_bytes"].as_u64().unwrap();
    assert_eq!(free, 1024 * 1024, "the agent reports its /boot");

    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(1);
    let entry = &run.json()["hosts"][HOST];
    assert_eq!((entry["result"].as_str(), entry["step"].as_str()), (Some("failed"), Some("push")), "{entry}");
    let error = entry["error"].as_str().unwrap();
    let wanted = boot_bytes(entry["toplevel"].as_str().unwrap());
    assert!(wanted > 3_000_000, "{wanted}");
    assert!(
        error.starts_with(&format!("{HOST}: not enough space on the boot partition for the new kernel and initrd: "))
            && error.contains(&format!("({wanted} bytes)"))
            && error.contains("/boot has 1.0 MiB free (1048576 bytes); nothing was sent"),
        "{error}"
    );
    assert!(live.deployments(HOST).is_empty(), "nothing deployed");
    assert_eq!(live.host(HOST).current_system(), "");

    // A smaller kernel fits.
    set_kernel(&live.fleet, "6.1.91", 500_000);
    live.fleet.commit("a kernel that fits");
    live.hostctl(&["--json", "apply"]).expect_code(0);
    let first = live.host(HOST).current_system();
    assert!(!first.is_empty());

    // /boot nearly full: a change that keeps the kernel needs no room there.
    in_agent_mounts(&live, &["sh", "-c", "head -c 1000000 /dev/zero > /boot/ballast"]);
    assert!(live.agent_status(HOST)["boot_free_bytes"].as_u64().unwrap() < 500_000);
    live.change_host(HOST, "same kernel, new motd");
    live.hostctl(&["--json", "apply"]).expect_code(0);
    assert_ne!(live.host(HOST).current_system(), first, "deployed");
}
