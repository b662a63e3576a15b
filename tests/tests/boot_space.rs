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

/// Teaches the test fleet's copy of fleetlib a `kernel = { version; bytes; }` argument:
/// a `linux-VERSION` path with a `bzImage` of that many bytes and a 1000-byte `initrd`,
/// linked from the system as NixOS links them (`kernel`, `initrd`); then relocks.
fn with_kernels(fleet: &TestFleet) {
    let patch = |file: &str, old: &str, new: &str| {
        let text = fleet.read(file);
        assert!(text.contains(old), "{file} lacks {old:?}");
        fleet.write(file, &text.replacen(old, new, 1));
    };
    patch(
        "lib/mksystem.nix",
        "mkSystem = { name, system, roles ? [ ], motd ? \"\" }:",
        "mkSystem = { name, system, roles ? [ ], motd ? \"\", kernel ? null }:",
    );
    patch(
        "lib/mksystem.nix",
        "env = {\n          inherit hostName etc nixosVersion;",
        "env = (if kernel == null then { } else {\n          kernel = mkDerivation {\n            \
         name = \"linux-${kernel.version}\";\n            inherit system;\n            \
         builder = ./builders/kernel.sh;\n            env.bytes = toString kernel.bytes;\n          };\n        \
         }) // {\n          inherit hostName etc nixosVersion;",
    );
    fleet.write(
        "lib/builders/kernel.sh",
        "/bin/mkdir -p \"$out\"\n/bin/head -c \"$bytes\" /dev/zero > \"$out/bzImage\"\n\
         /bin/head -c 1000 /dev/zero > \"$out/initrd\"\n",
    );
    let toplevel = fleet.read("lib/builders/toplevel.sh");
    fleet.write(
        "lib/builders/toplevel.sh",
        &format!(
            "{toplevel}if [ -n \"${{kernel:-}}\" ]; then\n  /bin/ln -s \"$kernel/bzImage\" \"$out/kernel\"\n  \
             /bin/ln -s \"$kernel/initrd\" \"$out/initrd\"\nfi\n"
        ),
    );
    set_kernel(fleet, "6.1", 3_000_000);
    hostctl_tests::git(&fleet.dir, &["add", "-A"]);
    let out = fleet.nix(&["flake", "lock", "--update-input", "fleetlib"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// web1's kernel: `version`, a bzImage of `bytes`.
fn set_kernel(fleet: &TestFleet, version: &str, bytes: u64) {
    let file = format!("hosts/{HOST}.nix");
    let text = fleet.read(&file);
    let base = text.split("  kernel = ").next().unwrap().trim_end().trim_end_matches('}').trim_end();
    fleet.write(&file, &format!("{base}\n  kernel = {{ version = \"{version}\"; bytes = {bytes}; }};\n}}\n"));
}

/// Runs `argv` in the mount namespace of web1's agent (where its `/boot` is).
fn in_agent_mounts(live: &LiveFleet, argv: &[&str]) {
    let pid = live.host(HOST).agent_pid().unwrap().to_string();
    let out = Command::new("nsenter").args(["-t", &pid, "-m", "--"]).args(argv).output().unwrap();
    assert!(out.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_new_kernel_that_does_not_fit_in_boot_is_refused_at_push_with_both_numbers() {
    let live = LiveFleet::start_with(&[HOST], with_kernels);
    // A 1 MiB boot partition, seen by the agent only.
    in_agent_mounts(&live, &["mount", "-t", "tmpfs", "-o", "size=1m", "hostctl-test-boot", "/boot"]);
    let free = live.agent_status(HOST)["boot_free_bytes"].as_u64().unwrap();
    assert_eq!(free, 1024 * 1024, "the agent reports its /boot");

    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(1);
    let entry = &run.json()["hosts"][HOST];
    assert_eq!((entry["result"].as_str(), entry["step"].as_str()), (Some("failed"), Some("push")), "{entry}");
    let error = entry["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("{HOST}: not enough space on the boot partition for the new kernel and initrd: "))
            && error.contains("(3001000 bytes)")
            && error.contains("/boot has 1.0 MiB free (1048576 bytes); nothing was sent"),
        "{error}"
    );
    assert!(live.deployments(HOST).is_empty(), "nothing deployed");
    assert_eq!(live.host(HOST).current_system(), "");

    // A smaller kernel fits.
    set_kernel(&live.fleet, "6.1.1", 500_000);
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
