//! Reboots in a rollout (issue 16, steps 2 and 3) in the fast lane: the real controller
//! and agents, real Nix, and the fast lane's firmware fake (`tests/src/simhost/firmware.rs`:
//! a simulated ESP whose loader entries the example's `switch-to-configuration` writes,
//! a `bootctl` double keeping the EFI variables in files, and a simulated reboot that
//! boots the one-shot entry, else the default one). Which system each boot runs, which
//! entry is the default afterwards, and what status and history say are the checks.

#![expect(clippy::unwrap_used, reason = "test code throughout (helpers too): a failed step must fail the test")]

use hostctl_tests::livefleet::LiveFleet;
use serde_json::Value;

/// Hosts of the example fleet with the firmware fake, each running and booted into its
/// first system (deployed with `switch`, then a power cycle). Returns the fleet and
/// each host's first system.
fn booted_fleet(names: &[&str], inventory_extra: &str) -> (LiveFleet, Vec<String>) {
    let mut live = LiveFleet::start(names);
    if !inventory_extra.is_empty() {
        live.write_inventory(inventory_extra);
        live.fleet.commit("inventory");
    }
    for name in names {
        live.enable_reboots(name);
    }
    let first = live.hostctl(&["--json", "apply"]);
    first.expect_code(0);
    let mut systems = Vec::new();
    for name in names {
        let toplevel = first.json()["hosts"][name]["toplevel"].as_str().unwrap().to_owned();
        let boot = live.host_mut(name).firmware_boot();
        assert_eq!(boot.system, toplevel, "the first system is the loader's default");
        systems.push(toplevel);
    }
    (live, systems)
}

/// The system the host's loader boots by default now.
fn default_system(live: &LiveFleet, name: &str) -> String {
    let host = live.host(name);
    host.entry_system(&host.default_entry().unwrap()).unwrap()
}

fn status(live: &LiveFleet, name: &str) -> Value {
    live.hostctl(&["--json", "status", "--no-drift", "--on", name]).json()["hosts"][name].clone()
}

fn newest_deployment(live: &LiveFleet, name: &str) -> Value {
    live.hostctl(&["--json", "history", name]).json()["hosts"][name]["deployments"][0].clone()
}

#[test]
fn a_kernel_change_is_booted_once_confirmed_and_made_the_default() {
    let (mut live, old) = booted_fleet(&["web1"], "");
    let before = live.host("web1").boot_id();
    live.set_kernel("web1", "6.6.3", "console=ttyS0");

    let (run, boots) = live.hostctl_rebooting(&["--json", "apply", "--reboot"], &[]);
    run.expect_code(0);
    let web1 = &run.json()["hosts"]["web1"];
    let new = web1["toplevel"].as_str().unwrap().to_owned();
    assert_ne!(new, old[0]);
    assert_eq!(web1["result"], "activated", "{web1}");
    let reboot = &web1["reboot"];
    assert_eq!(reboot["why"], "kernel, initrd, kernel-modules changed", "{reboot}");
    assert_eq!((reboot["booted"].as_str(), reboot["booted_new"].as_bool()), (Some(new.as_str()), Some(true)));
    assert_eq!(reboot["boot_id_before"].as_str(), Some(before.as_str()));
    let after = live.host("web1").boot_id();
    assert_ne!(after, before);
    assert_eq!(reboot["boot_id_after"].as_str(), Some(after.as_str()));
    assert_eq!(boots.len(), 1, "{boots:?}");
    assert_eq!(boots[0].1.system, new, "the one-shot entry booted the new system: {boots:?}");

    // Confirmed: the new entry is the default now, the one-shot one is used up.
    let host = live.host("web1");
    assert_eq!(host.booted_system().as_deref(), Some(new.as_str()));
    assert_eq!(default_system(&live, "web1"), new);
    assert_eq!(host.efi_variable("LoaderEntryOneShot"), None);
    assert!(live.switch_log("web1").contains(&format!("boot web1 {new} exit=0")), "activated with boot");
    let s = status(&live, "web1");
    assert_eq!((s["toplevel"].as_str(), s["reboot_required"].as_bool()), (Some(new.as_str()), Some(false)), "{s}");
    assert_eq!(s["boot_id"].as_str(), Some(after.as_str()), "{s}");
    let d = newest_deployment(&live, "web1");
    assert_eq!((d["state"].as_str(), d["mode"].as_str()), (Some("confirmed"), Some("boot")), "{d}");
    let human = live.hostctl(&["apply", "--reboot"]);
    human.expect_code(0);
    assert!(!human.stdout.contains("rebooted"), "nothing to do the second time: {}", human.stdout);

    // Another power cycle boots it again: it is the default.
    assert_eq!(live.host_mut("web1").firmware_boot().system, new);

    // The confirmation left no EFI variable behind that would outlive later deployments:
    // after a plain switch to a newer system, the next power cycle boots that one.
    assert_eq!(live.host("web1").efi_variable("LoaderEntryDefault"), None, "loader.conf's default rules");
    live.change_host("web1", "after the reboot");
    let switched = live.hostctl(&["--json", "apply"]);
    switched.expect_code(0);
    let newest = switched.json()["hosts"]["web1"]["toplevel"].as_str().unwrap().to_owned();
    assert_ne!(newest, new);
    assert_eq!(live.host_mut("web1").firmware_boot().system, newest);
}

#[test]
fn a_new_system_that_does_not_boot_is_rolled_back_on_the_previous_one() {
    let (mut live, old) = booted_fleet(&["web1"], "");
    live.set_kernel("web1", "6.6.3", "console=ttyS0 broken");
    let new = live.hostctl(&["--json", "build"]).json()["hosts"]["web1"]["toplevel"].as_str().unwrap().to_owned();
    live.host("web1").make_unbootable(&new);

    let (run, boots) = live.hostctl_rebooting(&["--json", "apply", "--reboot"], &[]);
    run.expect_code(1);
    let web1 = &run.json()["hosts"]["web1"];
    assert_eq!((web1["result"].as_str(), web1["step"].as_str()), (Some("rolled-back"), Some("reboot")), "{web1}");
    let error = web1["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("booted {} instead of {new}: the new generation did not come up", old[0])),
        "{error}"
    );
    assert_eq!(web1["reboot"]["booted_new"], false, "{web1}");
    assert_eq!(boots.len(), 1);
    assert_eq!(boots[0].1.system, old[0], "the panic's power cycle booted the default: {boots:?}");
    assert_eq!(boots[0].1.entries.len(), 2, "one-shot (panicked), then the default: {boots:?}");

    // The previous system is what runs, what the profile and the loader name, and what
    // status says; the history says why.
    let host = live.host("web1");
    assert_eq!(host.booted_system().as_deref(), Some(old[0].as_str()));
    assert_eq!(host.profile_system().as_deref(), Some(old[0].as_str()));
    assert_eq!(default_system(&live, "web1"), old[0]);
    let again = format!("boot web1 {} exit=0", old[0]);
    assert!(live.switch_log("web1").contains(&again), "the previous system's boot entry again");
    let s = status(&live, "web1");
    assert_eq!((s["toplevel"].as_str(), s["booted_system"].as_str()), (Some(old[0].as_str()), Some(old[0].as_str())));
    let d = newest_deployment(&live, "web1");
    assert_eq!((d["state"].as_str(), d["end_reason"].as_str()), (Some("rolled-back"), Some("booted-previous")), "{d}");
    let human = live.hostctl(&["history", "web1"]);
    assert!(human.stdout.contains("instead of"), "{}", human.stdout);
}

#[test]
fn a_failing_health_check_after_the_reboot_rolls_back_to_the_previous_default() {
    let (mut live, old) = booted_fleet(&["web1"], "");
    // Nothing listens there: the controller's check fails once the host is back.
    let unreachable = format!("http://{}:9/healthz", live.host("web1").addr);
    live.write_inventory_with(
        "30s",
        |_| format!("    health:\n      - http: {unreachable}\n        timeout: 1s\n"),
        "",
    );
    live.fleet.commit("a health check that fails");
    live.set_kernel("web1", "6.6.3", "console=ttyS0");

    let (run, boots) = live.hostctl_rebooting(&["--json", "apply", "--reboot"], &[]);
    run.expect_code(1);
    let web1 = &run.json()["hosts"]["web1"];
    let new = web1["toplevel"].as_str().unwrap().to_owned();
    assert_eq!((web1["result"].as_str(), web1["step"].as_str()), (Some("rolled-back"), Some("health")), "{web1}");
    let systems: Vec<&str> = boots.iter().map(|(_, b)| b.system.as_str()).collect();
    assert_eq!(systems, [new.as_str(), old[0].as_str()], "booted the new system, then rebooted into the previous");
    let host = live.host("web1");
    assert_eq!(host.booted_system().as_deref(), Some(old[0].as_str()));
    assert_eq!(default_system(&live, "web1"), old[0]);
    assert_eq!(host.profile_system().as_deref(), Some(old[0].as_str()));
    let s = status(&live, "web1");
    assert_eq!((s["toplevel"].as_str(), s["reboot_required"].as_bool()), (Some(old[0].as_str()), Some(false)), "{s}");
}

#[test]
fn a_host_that_never_comes_back_fails_at_the_timeout_and_stops_the_rollout() {
    let rollout = "rollout:\n  batch: 1\n  max_failures: 0\n";
    let (mut live, _) = booted_fleet(&["web1", "web2"], rollout);
    live.set_kernel("web1", "6.6.3", "console=ttyS0");
    live.set_kernel("web2", "6.6.3", "console=ttyS0");
    // `hostctl_rebooting` fails the test if hostctl still runs after 600 s: it never hangs.
    let (run, _) = live.hostctl_rebooting(&["--json", "apply", "--reboot", "--reboot-timeout", "8s"], &["web1"]);
    run.expect_code(1);
    let hosts = &run.json()["hosts"];
    let web1 = &hosts["web1"];
    assert_eq!((web1["result"].as_str(), web1["step"].as_str()), (Some("failed"), Some("reboot")), "{web1}");
    let error = web1["error"].as_str().unwrap();
    assert!(error.starts_with("web1: did not come back within 8s of its reboot (--reboot-timeout)"), "{error}");
    assert!(web1["seconds"].as_f64().unwrap() >= 8.0, "it waited the whole timeout: {web1}");
    assert_eq!(hosts["web2"]["result"], "skipped", "{}", hosts["web2"]);
}

#[test]
fn reboot_never_leaves_a_kernel_change_pending() {
    let (mut live, _) = booted_fleet(&["web1"], "");
    live.write_inventory_with("30s", |_| "    reboot: never\n".to_owned(), "");
    live.fleet.commit("web1 never reboots");
    let before = live.host("web1").boot_id();
    live.set_kernel("web1", "6.6.3", "console=ttyS0");
    let (run, boots) = live.hostctl_rebooting(&["--json", "apply", "--reboot"], &[]);
    run.expect_code(0);
    let web1 = &run.json()["hosts"]["web1"];
    assert_eq!((web1["result"].as_str(), web1["reboot_required"].as_bool()), (Some("activated"), Some(true)));
    assert!(web1["reboot"].is_null(), "{web1}");
    assert!(boots.is_empty());
    assert_eq!(live.host("web1").boot_id(), before);
    let s = status(&live, "web1");
    assert_eq!(s["reboot_required"], true, "{s}");
    let human = live.hostctl(&["status", "--no-drift"]);
    assert!(human.stdout.contains("reboot required (kernel"), "{}", human.stdout);
}

#[test]
fn bad_reboot_settings_name_the_file_and_line() {
    let live = LiveFleet::start(&["web1"]);
    live.write_inventory_with("30s", |_| "    reboot: sometimes\n".to_owned(), "");
    let run = live.hostctl(&["apply", "--reboot"]);
    run.expect_code(2);
    assert!(run.stderr.contains("fleet.yaml:") && run.stderr.contains("sometimes"), "{}", run.stderr);
    assert!(run.stderr.contains("never") && run.stderr.contains("if-needed"), "{}", run.stderr);
    live.write_inventory_with("30s", |_| "    tags: [a, b]\n".to_owned(), "tag_reboot:\n  a: always\n  b: never\n");
    let run = live.hostctl(&["apply"]);
    run.expect_code(2);
    assert!(run.stderr.contains("hosts.web1") && run.stderr.contains("tag_reboot"), "{}", run.stderr);
    let run = live.hostctl(&["apply", "--reboot-timeout", "soon"]);
    run.expect_code(2);
    assert_eq!(live.host("web1").profile_generations().len(), 0, "nothing was deployed");
}

#[test]
fn hostctl_reboot_reboots_a_host_into_what_it_has_and_confirms_it() {
    let (mut live, old) = booted_fleet(&["web1"], "");
    let before = status(&live, "web1");
    let (run, boots) = live.hostctl_rebooting(&["--json", "reboot", "web1"], &[]);
    run.expect_code(0);
    let web1 = &run.json()["hosts"]["web1"];
    assert_eq!((web1["result"].as_str(), web1["toplevel"].as_str()), (Some("activated"), Some(old[0].as_str())));
    assert_eq!(
        (web1["reboot"]["why"].as_str(), web1["reboot"]["booted_new"].as_bool()),
        (Some("hostctl reboot"), Some(true))
    );
    let systems: Vec<&str> = boots.iter().map(|(_, b)| b.system.as_str()).collect();
    assert_eq!(systems, [old[0].as_str()]);
    let after = status(&live, "web1");
    assert_ne!(after["boot_id"], before["boot_id"], "{after}");
    assert_eq!(
        (&after["toplevel"], &after["rev"], &after["lock"]),
        (&before["toplevel"], &before["rev"], &before["lock"])
    );
    assert_eq!(default_system(&live, "web1"), old[0]);
    let human = live.hostctl_rebooting(&["reboot", "web1"], &[]).0;
    human.expect_code(0);
    assert!(human.stdout.contains("rebooted (hostctl reboot; boot "), "{}", human.stdout);
}
