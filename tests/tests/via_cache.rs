//! `hostctl apply --via-cache URL` (and `cache:` in fleet.yaml): the closures go once to
//! a `file://` binary cache signed with the fleet key and the agents fetch them from it,
//! against real agents on simulated hosts (a cache directory outside ROOT/nix is the same
//! inside every host's mount namespace). Also `--builders`, and bad input.

use std::path::{Path, PathBuf};

use hostctl_tests::livefleet::{nix_stdout, LiveFleet};
use hostctl_tests::simhost::agent_config_with;
use hostctl_tests::TestFleet;
use serde_json::Value;

/// Restarts every agent with `caches: [urls...]` in its configuration.
fn allow_caches(live: &mut LiveFleet, hosts: &[&str], urls: &[&str]) {
    let quoted: Vec<String> = urls.iter().map(|u| Value::String((*u).to_owned()).to_string()).collect();
    let extra = format!("caches: [{}]\n", quoted.join(", "));
    let key = live.public_key.clone();
    for name in hosts {
        let host = live.host_mut(name);
        let yaml = agent_config_with(host, &key, &extra);
        host.stop_agent();
        host.start_agent(&yaml);
    }
}

/// A directory for caches next to the fleet (outside every host's `/nix`).
fn cache_dir(live: &LiveFleet, name: &str) -> PathBuf {
    live.fleet.tmp.path().join(name)
}

fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

fn narinfo(dir: &Path, store_path: &str) -> String {
    let hash = store_path.trim_start_matches("/nix/store/").split('-').next().unwrap_or_default();
    std::fs::read_to_string(dir.join(format!("{hash}.narinfo"))).unwrap_or_default()
}

#[test]
fn apply_via_a_file_cache_activates_hosts_that_fetch_from_it() {
    let mut live = LiveFleet::start(&["web1", "web2", "db1"]);
    let dir = cache_dir(&live, "cache");
    let url = file_url(&dir);
    allow_caches(&mut live, &["web1", "web2", "db1"], &[&url]);

    let run = live.hostctl(&["--json", "apply", "--via-cache", &url]);
    run.expect_code(0);
    let v = run.json();
    assert_eq!(v["via_cache"]["url"], url.as_str());
    assert_eq!((v["via_cache"]["pushed"].as_bool(), &v["via_cache"]["error"]), (Some(true), &Value::Null));
    assert!(run.stderr.contains(&format!("pushing 3 closures to the cache {url}")), "{}", run.stderr);
    let key_name = live.public_key.split(':').next().unwrap_or_default().to_owned();
    for host in ["web1", "web2", "db1"] {
        let h = &v["hosts"][host];
        assert_eq!(h["result"], "activated", "{host}: {h}");
        assert_eq!((h["paths_copied"].as_u64(), h["wire_bytes"].as_u64()), (Some(0), Some(0)), "no stream: {h}");
        let toplevel = h["toplevel"].as_str().unwrap();
        assert!(live.host(host).is_valid(toplevel), "{host} fetched its closure");
        assert_eq!(live.host(host).current_system(), toplevel);
        let info = narinfo(&dir, toplevel);
        assert!(info.contains(&format!("Sig: {key_name}:")), "signed with the fleet key:\n{info}");
        assert!(info.contains("Compression: zstd"), "{info}");
        let log = live.host(host).agent_log();
        assert!(log.contains("fetched the system from the cache"), "{log}");
        assert!(!log.contains("import stream received"), "the controller sent no import: {log}");
    }

    // Nothing changed: no host needs the cache, so nothing is pushed.
    let again = live.hostctl(&["--json", "apply", "--via-cache", &url]);
    again.expect_code(0);
    let v2 = again.json();
    assert_eq!(v2["via_cache"]["pushed"], false, "{}", v2["via_cache"]);
    for host in ["web1", "web2", "db1"] {
        assert_eq!(v2["hosts"][host]["result"], "unchanged");
    }
}

#[test]
fn a_cache_signed_by_another_key_is_refused_and_nothing_is_activated() {
    let mut live = LiveFleet::start(&["web1"]);
    let dir = cache_dir(&live, "cache");
    let url = file_url(&dir);
    allow_caches(&mut live, &["web1"], &[&url]);
    live.hostctl(&["apply"]).expect_code(0);
    let running = live.host("web1").current_system();
    let generations = live.host("web1").profile_generations();

    // The new system is already in the cache, signed by another key only: the push skips
    // it (a cache keeps what it has), and the agent must refuse it.
    live.change_host("web1", "web1 from a foreign cache");
    let built = live.hostctl(&["--json", "build"]);
    built.expect_code(0);
    let new = built.json()["hosts"]["web1"]["toplevel"].as_str().unwrap().to_owned();
    let other = live.fleet.tmp.path().join("other.sec");
    let secret = nix_stdout(&live.fleet, &["key", "generate-secret", "--key-name", "someone-else"], None);
    hostctl_tests::write_secret(&other, &secret);
    let target = format!("{url}?secret-key={}", other.display());
    nix_stdout(&live.fleet, &["copy", "--to", &target, &new], None);

    let run = live.hostctl(&["--json", "apply", "--via-cache", &url]);
    run.expect_code(1);
    let h = &run.json()["hosts"]["web1"];
    assert_eq!((h["result"].as_str(), h["step"].as_str()), (Some("failed"), Some("push")), "{h}");
    let error = h["error"].as_str().unwrap();
    assert!(error.starts_with(&format!("web1: cache {url}: fetching {new} failed:")), "{error}");
    assert!(error.contains("lacks a valid signature"), "Nix's own words: {error}");
    assert_eq!(live.host("web1").current_system(), running, "still the old system");
    assert_eq!(live.host("web1").profile_generations(), generations, "the profile was not touched");
    assert!(!live.host("web1").is_valid(&new));
}

#[test]
fn a_missing_cache_or_one_the_agent_does_not_list_fails_naming_it() {
    let mut live = LiveFleet::start(&["web1", "db1"]);
    let (pushed, missing) = (cache_dir(&live, "written"), cache_dir(&live, "nowhere"));
    let (pushed_url, missing_url) = (file_url(&pushed), file_url(&missing));
    allow_caches(&mut live, &["web1"], &[&missing_url]);
    // From fleet.yaml: the controller writes one cache, the agents are told another.
    live.write_inventory(&format!("cache:\n  url: {pushed_url}\n  substituter: {missing_url}\n"));
    live.fleet.commit("serve through a cache");

    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(1);
    let v = run.json();
    assert_eq!(v["via_cache"]["substituter"], missing_url.as_str());
    assert!(pushed.join("nix-cache-info").is_file(), "the push went to `url`");
    let web1 = &v["hosts"]["web1"];
    assert_eq!(web1["step"], "push", "{web1}");
    let error = web1["error"].as_str().unwrap();
    assert!(error.starts_with(&format!("web1: cache {missing_url}: fetching ")), "{error}");
    assert!(error.contains(&format!("there is no binary cache at {}", missing.display())), "{error}");
    assert_eq!(live.host("web1").current_system(), "", "nothing activated");
    assert!(!missing.exists(), "no cache directory was made up on the way");

    let db1 = &v["hosts"]["db1"];
    assert_eq!(db1["step"], "deploy", "{db1}");
    let error = db1["error"].as_str().unwrap();
    assert!(error.contains(&format!("cache: `{missing_url}` is not one of this agent's `caches`")), "{error}");
    assert_eq!(live.host("db1").current_system(), "", "nothing activated");
}

#[test]
fn bad_cache_urls_are_refused_before_anything_runs() {
    let fleet = TestFleet::new();
    let run = fleet.hostctl(&["apply", "--via-cache", "ftp://cache.example.com"]);
    run.expect_code(2);
    assert!(run.stderr.contains("--via-cache"), "{}", run.stderr);
    assert!(
        run.stderr.contains("invalid cache URL `ftp://cache.example.com`: expected a binary cache URL starting with"),
        "{}",
        run.stderr
    );
    let run = fleet.hostctl(&["apply", "--via-cache", "file:///c?secret-key=/tmp/k"]);
    run.expect_code(2);
    assert!(run.stderr.contains("the store parameter `secret-key` is not allowed here"), "{}", run.stderr);

    let text = fleet.read("fleet.yaml");
    fleet.write("fleet.yaml", &format!("{text}cache:\n  url: relative/dir\n"));
    let run = fleet.hostctl(&["apply"]);
    run.expect_code(2);
    let line = text.lines().count() + 2;
    assert!(
        run.stderr.contains(&format!("fleet.yaml:{line}:8: cache.url: invalid cache URL `relative/dir`")),
        "{}",
        run.stderr
    );
}

#[test]
fn builders_reach_nix_build_as_one_argument() {
    let fleet = TestFleet::new();
    // A builder for another system: this machine's x86_64 builds stay local.
    let builders = "ssh://hostctl-test@192.0.2.1 aarch64-linux";
    let run = fleet.hostctl(&["-vv", "build", "--on", "web1", "--builders", builders]);
    run.expect_code(0);
    assert!(
        run.stderr.contains(&format!("build --json --no-link --keep-going --builders '{builders}'")),
        "{}",
        run.stderr
    );
}

/// Trixie's Nix 2.26 (see `tests/nix_layer.rs`); `None` outside CI when it is missing.
fn nix_2_26_bin() -> Option<PathBuf> {
    let root =
        std::env::var_os("HOSTCTL_NIX_TRIXIE").map_or_else(|| PathBuf::from("/opt/hostctl-nix-trixie"), PathBuf::from);
    let bin = root.join("bin");
    if bin.join("nix").is_file() {
        return Some(bin);
    }
    assert!(std::env::var_os("CI").is_none(), "{} is missing: run tests/support/install-nix-trixie.sh", bin.display());
    hostctl_tests::skip(&format!("the Nix 2.26 part: {} is missing", bin.display()));
    None
}

/// A fresh `name:base64` key pair in `dir`: (secret key file, public key).
#[expect(clippy::unwrap_used, reason = "test helper: a panic is a test failure")]
fn key_pair(fleet: &TestFleet, dir: &Path, name: &str) -> (PathBuf, hostctl_schemas::PublicKey) {
    let secret = nix_stdout(fleet, &["key", "generate-secret", "--key-name", name], None);
    let file = dir.join(format!("{name}.sec"));
    hostctl_tests::write_secret(&file, &secret);
    let public = nix_stdout(fleet, &["key", "convert-secret-to-public"], Some(&secret));
    (file, public.trim().parse().unwrap())
}

/// The typed `copy_to`/`copy_from` of `hostctl-nix` on both Nix versions, each way: a
/// cache written by one version (signing with `secret-key=`) is read by the other with
/// `require-sigs`, and a path signed by another key is refused. Nix 2.26 only ever runs
/// on private `local?root=` stores.
#[tokio::test]
async fn signed_caches_work_between_nix_2_8_and_2_26() {
    use hostctl_nix::Nix;
    use hostctl_schemas::StorePath;
    let fleet = TestFleet::new();
    let built = fleet.hostctl(&["--json", "build", "--on", "web1"]);
    built.expect_code(0);
    let toplevel: StorePath = built.json()["hosts"]["web1"]["toplevel"].as_str().unwrap().parse().unwrap();
    let tmp = fleet.tmp.path();
    let (fleet_key, fleet_public) = key_pair(&fleet, tmp, "fleet-1");
    let (_, other_public) = key_pair(&fleet, tmp, "other-1");
    let cache = |name: &str| format!("file://{}", tmp.join(name).display());
    let signed = |name: &str, key: &Path| format!("{}?secret-key={}&compression=zstd", cache(name), key.display());
    let toplevels = std::slice::from_ref(&toplevel);

    // Nix 2.8 (this machine's store) writes; a private store reads with the right key only.
    let nix28 = Nix::new().with_option("substituters", "");
    nix28.copy_to(&signed("c28", &fleet_key), toplevels).await.unwrap();
    let Some(bin) = nix_2_26_bin() else { return };
    let (reader, refused) = (hostctl_tests::StoreRoot::new(), hostctl_tests::StoreRoot::new());
    let nix26 = |store: &hostctl_tests::StoreRoot| {
        Nix::new().with_bin_dir(&bin).with_store(store.url()).with_option("substituters", "")
    };
    let err =
        nix26(&refused).copy_from(&cache("c28"), toplevels, std::slice::from_ref(&other_public)).await.unwrap_err();
    assert!(err.to_string().contains("lacks a signature by a trusted key"), "{err}");
    nix26(&reader).copy_from(&cache("c28"), toplevels, &[other_public, fleet_public.clone()]).await.unwrap();
    assert!(nix26(&reader).invalid_paths(toplevels).await.unwrap().is_empty());

    // Nix 2.26 writes from its private store; Nix 2.8 reads into another private store.
    nix26(&reader).copy_to(&signed("c26", &fleet_key), toplevels).await.unwrap();
    let back = hostctl_tests::StoreRoot::new();
    let nix28_private = Nix::new().with_store(back.url()).with_option("substituters", "");
    nix28_private.copy_from(&cache("c26"), toplevels, &[fleet_public]).await.unwrap();
    assert!(nix28_private.invalid_paths(toplevels).await.unwrap().is_empty());
}
