//! VM lane (tests/vm/run.sh), scenario 5: the agent on a guest's real system bus
//! (Debian's dbus-daemon, the project's policy file in /etc/dbus-1/system.d): `busctl`
//! reads its properties and sees its signals, and a non-root caller is refused by the
//! bus itself for the methods the policy keeps for root. Skips unless run by
//! tests/vm/run.sh.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code throughout: a failed step must fail the test")]

use hostctl_tests::vm::fleet::VmFleet;
use hostctl_tests::vm::Lane;

const SERVICES: &str = "{ services = { vm-web = { exec = \"/bin/sleep infinity\"; }; }; }\n";

/// `busctl ARGS` on the system bus, as `user` (root when `None`).
fn busctl(user: Option<&str>, args: &str) -> String {
    let prefix = user.map(|u| format!("runuser -u {u} -- ")).unwrap_or_default();
    format!("{prefix}busctl --system {args} 2>&1")
}

const OBJECT: &str = "org.hostctl.Agent1 /org/hostctl/Agent1 org.hostctl.Agent1";

#[test]
fn the_agent_is_on_the_real_system_bus_under_the_shipped_policy() {
    let Some(lane) = Lane::from_env() else { return };
    let vm = VmFleet::start_resumed(&lane, &["web1"], SERVICES, "", &[]);
    let guest = vm.guest("web1");

    // Root watches the agent's signals while hostctl deploys.
    guest.sh(&format!(
        "nohup timeout 300 busctl --system monitor --match {} >/root/signals 2>&1 </dev/null &",
        hostctl_tests::vm::shell_quote("type='signal',sender='org.hostctl.Agent1'")
    ));
    std::thread::sleep(std::time::Duration::from_secs(2));
    vm.hostctl(&["--json", "apply"]).expect_code(0);
    let toplevel = vm.toplevel("web1");

    let hostname = guest.sh(&busctl(None, &format!("get-property {OBJECT} Hostname")));
    assert_eq!(hostname, "s \"web1\"");
    let current = guest.sh(&busctl(None, &format!("get-property {OBJECT} CurrentSystem")));
    assert_eq!(current, format!("s \"{toplevel}\""), "the property follows the deployment");
    // Everyone may read the properties and call Status (the policy's default context).
    let as_tester = guest.sh(&busctl(Some("tester"), &format!("get-property {OBJECT} Hostname")));
    assert_eq!(as_tester, "s \"web1\"");
    let status = guest.sh(&busctl(Some("tester"), &format!("call {OBJECT} Status")));
    assert!(status.contains(&toplevel), "{status}");

    // Signals: the deployment's start and end, and the property changes.
    let mut signals = String::new();
    for _ in 0..20 {
        signals = guest.sh("cat /root/signals");
        if signals.contains("DeploymentFinished") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    for member in ["DeploymentStarted", "DeploymentFinished", "PropertiesChanged"] {
        assert!(signals.contains(&format!("Member={member}")), "no {member} seen by busctl monitor:\n{signals}");
    }

    // Rollback is root's: the bus refuses a non-root caller before the agent sees it.
    // dbus-send prints the error's text (busctl only its name): dbus-daemon's own words.
    let refused = guest.ssh(
        "runuser -u tester -- dbus-send --system --print-reply --dest=org.hostctl.Agent1 /org/hostctl/Agent1 \
         org.hostctl.Agent1.Rollback string:previous 2>&1",
    );
    let text = String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "{text}");
    assert!(text.contains("org.freedesktop.DBus.Error.AccessDenied"), "{text}");
    assert!(text.contains("Rejected send message"), "refused by dbus-daemon's policy, not by the agent: {text}");
    let journal = guest.sh("journalctl -u hostctl-agent --no-pager -o cat");
    assert!(!journal.contains("Rollback"), "the agent never saw the call: {journal}");
    // No one but root may take the agent's name.
    let own = guest.ssh("runuser -u tester -- dbus-send --system --print-reply --dest=org.freedesktop.DBus \
                         /org/freedesktop/DBus org.freedesktop.DBus.RequestName string:org.hostctl.Agent1 uint32:4 2>&1");
    let text = String::from_utf8_lossy(&own.stdout);
    assert!(!own.status.success() && text.contains("AccessDenied"), "{text}");
}
