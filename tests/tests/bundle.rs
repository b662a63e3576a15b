//! Airgapped hosts: `hostctl bundle HOST -o FILE` on the controller, the file carried to a
//! simulated host whose network is cut, `hostctl-agent import FILE` there (real agent,
//! real Nix): deployed with the usual journal; tampered, foreign and older bundles are
//! refused and change nothing.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code throughout (helpers too): a failed step must fail the test"
)]

use std::path::{Path, PathBuf};
use std::process::Output;

use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::simhost::{agent_config, SimHost};

/// Writes `host`'s bundle to the fleet's temp dir; its path and the toplevel.
fn bundle(live: &LiveFleet, host: &str, name: &str) -> (PathBuf, String) {
    let file = live.fleet.tmp.path().join(name);
    let run = live.hostctl(&["--json", "bundle", host, "-o", &file.display().to_string()]);
    run.expect_code(0);
    let entry = &run.json()["hosts"][host];
    assert_eq!(entry["result"], "built", "{entry}");
    assert!(entry["paths"].as_u64().unwrap() >= 2, "{entry}");
    (file, entry["toplevel"].as_str().unwrap().to_owned())
}

/// `hostctl-agent import FILE` run inside the host.
fn import(host: &SimHost, file: &Path) -> Output {
    let agent = hostctl_tests::binary("hostctl-agent").display().to_string();
    let config = host.root.join("etc/agent.yaml").display().to_string();
    host.run_in(&[&agent, "import", &file.display().to_string(), "--config", &config])
}

/// Deployment ids in the host's journal, read from disk (the host is unreachable).
fn journal_ids(host: &SimHost) -> Vec<String> {
    let dir = host.root.join("state/agent/deployments");
    let mut ids: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".json").map(str::to_owned)).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A copy of `file` with `change` applied to its bytes.
fn tampered(file: &Path, name: &str, change: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(file).unwrap();
    change(&mut bytes);
    let out = file.with_file_name(name);
    std::fs::write(&out, bytes).unwrap();
    out
}

#[test]
fn a_bundle_deploys_a_host_without_network_and_bad_ones_change_nothing() {
    let mut live = LiveFleet::start(&["web1", "db1"]);
    // The agent listens on every address, so `import` reaches it over loopback once the
    // host's own link is down.
    let yaml = agent_config(live.host("web1"), &live.public_key);
    let listen = format!("listen: \"{}:7420\"", live.host("web1").addr);
    assert!(yaml.contains(&listen), "{yaml}");
    let host = live.host_mut("web1");
    host.stop_agent();
    host.start_agent(&yaml.replace(&listen, "listen: \"0.0.0.0:7420\""));
    let (first, toplevel) = bundle(&live, "web1", "web1-a.bundle");
    let (foreign, _) = bundle(&live, "db1", "db1.bundle");

    live.host("web1").set_link(false);
    let route = live.host("web1").run_in(&["ip", "route", "get", &live.host("web1").controller_addr.to_string()]);
    assert!(!route.status.success(), "the host has no route out: {}", text(&route));

    // Refused before anything is imported: a changed export, a changed manifest, another
    // host's bundle.
    let h = live.host("web1");
    for (file, why) in [
        (tampered(&first, "export.bundle", |b| *b.last_mut().unwrap() ^= 1), "does not match its signed manifest"),
        (
            tampered(&first, "manifest.bundle", |b| {
                let at = b.windows(6).position(|w| w == b"switch").unwrap();
                b[at..at + 4].copy_from_slice(b"test");
            }),
            "signature does not verify",
        ),
        (foreign, "is for host `db1`"),
    ] {
        let out = import(h, &file);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(why), "{why}: {}", text(&out));
        assert_eq!(h.current_system(), "", "nothing was activated");
        assert!(journal_ids(h).is_empty(), "nothing was journaled");
    }

    // The real one: imported and activated, journaled like any deployment.
    let out = import(h, &first);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("confirmed"), "{}", text(&out));
    assert_eq!(h.current_system(), toplevel);
    assert!(h.is_valid(&toplevel));
    let ids = journal_ids(h);
    assert!(ids.len() == 1 && ids[0].starts_with("bundle-"), "{ids:?}");
    // Who asked: the key that signed the bundle, and the uploader's (loopback) address.
    let record = std::fs::read(h.root.join(format!("state/agent/deployments/{}.json", ids[0]))).unwrap();
    let by = serde_json::from_slice::<serde_json::Value>(&record).unwrap()["deployment"]["requested_by"].clone();
    let key_name = live.public_key.split(':').next().unwrap();
    assert_eq!(by["key"], key_name, "{by}");
    assert!(by["address"].as_str().is_some_and(|a| a.starts_with("127.")), "{by}");
    // The same bundle again is the same deployment.
    assert!(import(h, &first).status.success());
    assert_eq!(journal_ids(h), ids);

    // A newer bundle replaces it; the older one can then no longer roll the host back.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    live.change_host("web1", "second system, carried by hand");
    let (second, second_toplevel) = bundle(&live, "web1", "web1-b.bundle");
    assert!(import(h, &second).status.success());
    assert_eq!(h.current_system(), second_toplevel);
    let out = import(h, &first);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("an older bundle would roll it back"), "{}", text(&out));
    assert_eq!(h.current_system(), second_toplevel);
}
