//! Reboot needed (issue 16, fast lane): a real agent on a simulated host whose
//! `/run/booted-system` (inside its mount namespace) names the system it "booted"; the
//! example fleet's systems have `kernel`, `initrd`, `kernel-modules`, `kernel-params` and
//! `systemd`. A kernel change is `reboot_required` with its reasons in `apply` (human and
//! `--json`), `status`, `history`, D-Bus and `/metrics`; a simulated reboot into it (the
//! agent stopped, `/run/booted-system` repointed, the agent started) clears it. Real
//! boots are the VM lane's.

#![expect(clippy::unwrap_used, reason = "test code throughout (helpers too): a failed step must fail the test")]

use std::time::Duration;

use hostctl_tests::dbus::{restart_on_bus, Policy, TestBus, NAME};
use hostctl_tests::http::Request;
use hostctl_tests::livefleet::LiveFleet;
use serde_json::Value;

const HOST: &str = "web1";

/// The parts a `reboot_reasons` array names, in order.
fn parts(reasons: &Value) -> Vec<String> {
    reasons.as_array().unwrap().iter().map(|r| r["part"].as_str().unwrap().to_owned()).collect()
}

/// `/metrics` of web1's agent (plain `metrics_listen`).
fn metrics(live: &LiveFleet) -> String {
    let r = Request::new("GET", "/metrics", b"").send_plain(&live.metrics_addr(HOST), Duration::from_secs(10)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// The agent's `RebootRequired` D-Bus property, read with `dbus-send`.
fn reboot_property(bus: &TestBus) -> String {
    let out = bus.dbus_send(
        None,
        &[
            &format!("--dest={NAME}"),
            "/org/hostctl/Agent1",
            "org.freedesktop.DBus.Properties.Get",
            "string:org.hostctl.Agent1",
            "string:RebootRequired",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_kernel_change_needs_a_reboot_everywhere_it_is_shown_until_the_host_boots_it() {
    let mut live = LiveFleet::start(&[HOST]);
    let bus = TestBus::start(Policy::Shipped);
    restart_on_bus(live.host_mut(HOST), bus.address());
    bus.wait_for_owner(NAME, Duration::from_secs(40));

    // No /run/booted-system (this machine has none): not known, and said so as null.
    let first = live.hostctl(&["--json", "apply"]);
    first.expect_code(0);
    let web1 = &first.json()["hosts"][HOST];
    assert!(web1["reboot_required"].is_null(), "{web1}");
    let old = web1["toplevel"].as_str().unwrap().to_owned();
    assert!(!metrics(&live).contains("hostctl_reboot_required"), "not known: no sample");

    // The host boots the system it runs; a change of its motd only needs no reboot.
    live.host_mut(HOST).reboot_into(&old);
    bus.wait_for_owner(NAME, Duration::from_secs(40));
    live.change_host(HOST, "new motd, same kernel");
    let motd = live.hostctl(&["--json", "apply"]);
    motd.expect_code(0);
    let web1 = &motd.json()["hosts"][HOST];
    assert_eq!(
        (web1["result"].as_str(), web1["reboot_required"].as_bool()),
        (Some("activated"), Some(false)),
        "{web1}"
    );
    assert_eq!(parts(&web1["reboot_reasons"]), Vec::<String>::new());

    // A new kernel: it, its modules and the initrd made for it differ (human output).
    live.set_kernel(HOST, "6.6.3", "console=ttyS0");
    let human = live.hostctl(&["apply"]);
    human.expect_code(0);
    let said = format!("{}{}", human.stdout, human.stderr);
    assert!(said.contains("reboot required (kernel, initrd, kernel-modules changed)"), "{said}");

    // And new kernel parameters (`--json`), compared with the booted system still.
    live.set_kernel(HOST, "6.6.3", "console=ttyS0 quiet");
    let apply = live.hostctl(&["--json", "apply"]);
    apply.expect_code(0);
    let web1 = &apply.json()["hosts"][HOST];
    let new = web1["toplevel"].as_str().unwrap().to_owned();
    assert_eq!((web1["result"].as_str(), web1["reboot_required"].as_bool()), (Some("activated"), Some(true)), "{web1}");
    assert_eq!(parts(&web1["reboot_reasons"]), ["kernel", "initrd", "kernel-modules", "kernel-params"]);
    let kernel = &web1["reboot_reasons"][0];
    assert!(kernel["booted"].as_str().unwrap().ends_with("-linux-6.1.55/bzImage"), "{kernel}");
    assert!(kernel["new"].as_str().unwrap().ends_with("-linux-6.6.3/bzImage"), "{kernel}");
    let params = &web1["reboot_reasons"][3];
    assert_eq!(
        (params["booted"].as_str(), params["new"].as_str()),
        (Some("console=ttyS0"), Some("console=ttyS0 quiet"))
    );
    let unchanged = live.hostctl(&["--json", "apply"]);
    let web1 = &unchanged.json()["hosts"][HOST];
    assert_eq!((web1["result"].as_str(), web1["reboot_required"].as_bool()), (Some("unchanged"), Some(true)), "{web1}");
    assert_eq!(parts(&web1["reboot_reasons"]).len(), 4, "an unchanged host says it too: {web1}");

    let status = live.hostctl(&["--json", "status", "--no-drift"]);
    let s = &status.json()["hosts"][HOST];
    assert_eq!((s["reboot_required"].as_bool(), s["booted_system"].as_str()), (Some(true), Some(old.as_str())), "{s}");
    assert_eq!(parts(&s["reboot_reasons"]).len(), 4, "{s}");
    let human = live.hostctl(&["status", "--no-drift"]);
    assert!(human.stdout.contains("reboot required (kernel, initrd"), "{}", human.stdout);
    let history = live.hostctl(&["--json", "history", HOST]);
    let newest = &history.json()["hosts"][HOST]["deployments"][0];
    assert_eq!((newest["toplevel"].as_str(), newest["reboot_required"].as_bool()), (Some(new.as_str()), Some(true)));
    let human = live.hostctl(&["history", HOST]);
    assert!(
        human.stdout.contains("  reboot required (kernel, initrd, kernel-modules, kernel-params changed)"),
        "{}",
        human.stdout
    );
    let text = metrics(&live);
    assert!(text.contains("hostctl_reboot_required 1\n"), "{text}");
    assert!(text.contains("hostctl_reboot_required_reason{part=\"kernel\"} 1\n"), "{text}");
    assert!(reboot_property(&bus).contains("boolean true"), "{}", reboot_property(&bus));

    // The host reboots into it: nothing differs from the booted system any more.
    live.host_mut(HOST).reboot_into(&new);
    bus.wait_for_owner(NAME, Duration::from_secs(40));
    let s = &live.hostctl(&["--json", "status", "--no-drift"]).json()["hosts"][HOST];
    assert_eq!((s["reboot_required"].as_bool(), s["booted_system"].as_str()), (Some(false), Some(new.as_str())), "{s}");
    assert!(metrics(&live).contains("hostctl_reboot_required 0\n"));
    assert!(reboot_property(&bus).contains("boolean false"), "{}", reboot_property(&bus));
    let again = live.hostctl(&["--json", "apply"]);
    let web1 = &again.json()["hosts"][HOST];
    assert_eq!(
        (web1["result"].as_str(), web1["reboot_required"].as_bool()),
        (Some("unchanged"), Some(false)),
        "{web1}"
    );
}
