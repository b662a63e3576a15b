//! Fault suite (issue 9), storage faults: a closure refused before the push because it
//! cannot fit in the host's free store space, a host's store that fills up during an import
//! anyway (many small files: more pages than NAR bytes),
//! an agent `state_dir` that is full when a deployment must be journaled, and journal
//! records damaged on disk. Real agents on simulated hosts, real Nix, real tmpfs mounts
//! (`hostctl_tests::tmpfs`); after each fault the invariants of
//! `hostctl_tests::invariants` are checked.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code throughout (helpers too): a failed step must fail the test"
)]

use std::path::{Path, PathBuf};

use hostctl_tests::invariants::{self, Running};
use hostctl_tests::livefleet::LiveFleet;
use hostctl_tests::simhost::agent_config;
use hostctl_tests::tmpfs::{Tmpfs, PAGE};
use serde_json::Value;

const HOST: &str = "web1";
/// web1's motd in the example fleet: its first system.
const FIRST_MOTD: &str = "web1: web frontend, eu";

fn toplevel(v: &Value) -> String {
    v["hosts"][HOST]["toplevel"].as_str().unwrap_or_default().to_owned()
}

/// `hostctl --json apply` that must activate web1; returns its toplevel.
fn apply_ok(live: &LiveFleet) -> String {
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(0);
    let v = run.json();
    assert_eq!(v["hosts"][HOST]["result"], "activated", "{}", v["hosts"][HOST]);
    toplevel(&v)
}

/// Makes web1's system carry the output of a derivation `name` built by `/bin/sh -c
/// script`, referenced from its motd; commits.
fn add_built(live: &LiveFleet, name: &str, script: &str) {
    let host_file = format!(
        r#"{{
  system = "x86_64-linux";
  roles = [ "nginx" ];
  motd = "web1 with {name} ${{builtins.derivation {{
    name = "{name}";
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" {script} ];
  }}}}";
}}
"#,
        script = serde_json::Value::String(script.to_owned()),
    );
    live.fleet.write("hosts/web1.nix", &host_file);
    live.fleet.commit(&format!("web1: {name}"));
}

/// `bytes` random (incompressible) bytes.
fn add_ballast(live: &LiveFleet, bytes: u64) {
    add_built(live, &format!("ballast-{bytes}"), &format!("/bin/head -c {bytes} /dev/urandom > $out"));
}

/// `count` one-byte files. Their NAR is small (a few hundred bytes each) but each takes
/// a whole page of a tmpfs: a closure that passes `apply`'s free-space check and still
/// fills the store.
fn add_small_files(live: &LiveFleet, count: u64) {
    let script = format!("/bin/mkdir $out; i=0; while [ $i -lt {count} ]; do echo > $out/$i; i=$((i+1)); done");
    add_built(live, &format!("files-{count}"), &script);
}

/// The agent's journal directory for a `state_dir`.
fn journal_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("deployments")
}

/// Files in `dir` whose names contain `part`.
fn files_with(dir: &Path, part: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(part))
        .collect();
    names.sort();
    names
}

/// web1 with its `/nix` on `store`.
fn on_store(store: &Tmpfs) -> LiveFleet {
    let mut live = LiveFleet::start(&[HOST]);
    let host = live.host_mut(HOST);
    host.stop_agent();
    store.hold_nix_of(host);
    host.restart_agent();
    live
}

#[test]
fn store_filling_up_during_import_fails_the_host_cleanly_and_apply_works_once_there_is_room() {
    // Declared first, dropped last: unmounted once the host's processes are gone.
    let store = Tmpfs::mount("4m", "0755");
    let live = on_store(&store);
    let old = apply_ok(&live);

    // 1500 files of a page each cannot fit in a 4 MiB store, though their NAR (what the
    // free-space check before the push counts) is far smaller than the free space.
    add_small_files(&live, 1500);
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(1);
    let v = run.json();
    let entry = &v["hosts"][HOST];
    let new = toplevel(&v);
    assert_eq!(entry["result"], "failed", "{entry}");
    assert_eq!(entry["step"], "push", "{entry}");
    let error = entry["error"].as_str().unwrap_or_default();
    assert!(error.contains("No space left on device"), "names the cause: {error}");
    eprintln!("ENOSPC error: {error}");
    assert!(error.contains(HOST), "names the host: {error}");

    // No partial path, on disk or in the database; old system running and reported.
    let report = invariants::check(&live, HOST, &old, &new);
    report.expect(Running::Old, "a failed import changes nothing");
    assert!(!live.host(HOST).is_valid(&new));
    assert_eq!(live.deployments(HOST).len(), 1, "no deployment was started");
    let verify = live.host(HOST).run_in(&["nix-store", "--verify", "--check-contents"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    assert!(store.available() > 3 * 1024 * 1024, "the partial import gave its space back: {}", store.available());

    // An operator grows the volume: the same apply goes through.
    store.resize("64m");
    assert_eq!(apply_ok(&live), new);
    invariants::check(&live, HOST, &old, &new).expect(Running::New, "applied once there was room");
}

#[test]
fn a_closure_larger_than_the_free_store_space_is_refused_before_the_push() {
    let store = Tmpfs::mount("4m", "0755");
    let live = on_store(&store);
    let old = apply_ok(&live);
    let status = live.agent_status(HOST);
    let free = status["store_free_bytes"].as_u64().unwrap_or_else(|| panic!("no free space reported: {status}"));
    assert!(free > 0 && free <= 4 * 1024 * 1024, "the tmpfs's free space: {free}");

    // 6 MB of random bytes cannot fit in a 4 MiB store: refused with both numbers.
    add_ballast(&live, 6_000_000);
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(1);
    let v = run.json();
    let entry = &v["hosts"][HOST];
    assert_eq!((entry["result"].as_str(), entry["step"].as_str()), (Some("failed"), Some("push")), "{entry}");
    let error = entry["error"].as_str().unwrap_or_default();
    assert!(error.starts_with(&format!("{HOST}: not enough space for the closure: ")), "{error}");
    let nar: u64 = error.split(" bytes of NAR").next().unwrap().rsplit('(').next().unwrap().parse().unwrap();
    assert!(nar >= 6_000_000, "the closure's NAR size: {error}");
    let said_free: u64 = error.split(" bytes); nothing was sent").next().unwrap().rsplit('(').next().unwrap().parse().unwrap();
    assert!(said_free < nar && said_free.abs_diff(store.available()) < 64 * PAGE, "the host's free space: {error}");
    assert!(!error.contains("No space left"), "refused before anything was sent: {error}");
    let new = toplevel(&v);
    invariants::check(&live, HOST, &old, &new).expect(Running::Old, "a refused push changes nothing");
    assert_eq!(live.deployments(HOST).len(), 1, "no deployment was started");

    store.resize("64m");
    assert_eq!(apply_ok(&live), new, "fits once the volume grew");
}

/// Restarts web1's agent with its `state_dir` at `state_dir`.
fn move_state_dir(live: &mut LiveFleet, state_dir: &Path) {
    let key = live.public_key.clone();
    let host = live.host_mut(HOST);
    let quote = |p: &Path| serde_json::Value::String(p.to_string_lossy().into_owned()).to_string();
    let yaml = agent_config(host, &key).replace(&quote(&host.root.join("state/agent")), &quote(state_dir));
    assert!(yaml.contains(&quote(state_dir)), "{yaml}");
    host.stop_agent();
    host.start_agent(&yaml);
}

#[test]
fn a_full_state_dir_refuses_the_deployment_and_never_activates_without_a_record() {
    let state = Tmpfs::mount("2m", "0700");
    let mut live = LiveFleet::start(&[HOST]);
    let state_dir = state.dir.join("agent");
    move_state_dir(&mut live, &state_dir);
    let first = apply_ok(&live);
    live.change_host(HOST, "web1 second system");
    let second = apply_ok(&live);
    // Back to the first system: its closure is on the host, so nothing needs importing
    // and the journal record is the first thing the deployment writes.
    live.change_host(HOST, FIRST_MOTD);
    let journal = journal_dir(&state_dir);
    let records_before = files_with(&journal, ".json");

    // (1) Not a byte free: the deployment is refused.
    let filler = state.fill("filler");
    let run = live.hostctl(&["--json", "apply"]);
    run.expect_code(1);
    let v = run.json();
    let entry = &v["hosts"][HOST];
    assert_eq!(toplevel(&v), first);
    assert_eq!(entry["result"], "failed", "{entry}");
    assert_eq!(entry["step"], "deploy", "{entry}");
    let error = entry["error"].as_str().unwrap_or_default();
    eprintln!("state_dir full, refused: {error}");
    assert!(error.contains("No space left on device") && error.contains("journal"), "{error}");
    assert_eq!(files_with(&journal, ".json"), records_before, "no record, no leftover .tmp");
    invariants::check(&live, HOST, &second, &first).expect(Running::Old, "refused: nothing activated");

    // (2) Room for the record but not for its next version: accepted, then it must end
    // without running anything, and the agent must take deployments again.
    let record_pages =
        records_before.iter().map(|n| std::fs::metadata(journal.join(n)).unwrap().len().div_ceil(PAGE)).max().unwrap();
    state.leave_free(&filler, record_pages);
    let switches = |log: String| log.matches(&format!("switch web1 {first}")).count();
    let switched_before = switches(live.switch_log(HOST));
    let run = live.hostctl(&["--json", "apply"]);
    let v = run.json();
    let entry = &v["hosts"][HOST];
    assert_eq!(entry["result"], "failed", "{entry}");
    let error = entry["error"].as_str().unwrap_or_default();
    eprintln!("state_dir full after the record: {error}");
    assert!(error.contains("No space left on device"), "{error}");
    assert_eq!(files_with(&journal, ".json").len(), records_before.len() + 1, "the record was written");
    assert!(error.contains("journaling this end failed too"), "ended although its end is not on disk: {error}");
    assert_eq!(switches(live.switch_log(HOST)), switched_before, "not activated");
    assert_eq!(live.host(HOST).current_system(), second, "still the second system");

    // Room again: the same apply goes through.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(apply_ok(&live), first);
    invariants::check(&live, HOST, &second, &first).expect(Running::New, "applied once there was room");
}

/// A host that ran two deployments (`first`, then `second`), its agent stopped so the
/// journal can be damaged.
struct Journaled {
    live: LiveFleet,
    first: String,
    second: String,
    /// Ids of the two good records.
    ids: Vec<String>,
    journal: PathBuf,
}

impl Journaled {
    fn new() -> Self {
        let mut live = LiveFleet::start(&[HOST]);
        let first = apply_ok(&live);
        live.change_host(HOST, "web1 second system");
        let second = apply_ok(&live);
        let ids = live.deployment_ids(HOST);
        assert_eq!(ids.len(), 2);
        live.host_mut(HOST).stop_agent();
        let journal = journal_dir(&live.host(HOST).root.join("state/agent"));
        Self { live, first, second, ids, journal }
    }

    /// The newest good record as JSON.
    fn newest_record(&self) -> Value {
        let text = std::fs::read_to_string(self.journal.join(format!("{}.json", self.ids[0]))).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// The newest good record under another id (and the highest seq), pretty JSON.
    fn record_as(&self, id: &str) -> Value {
        let mut record = self.newest_record();
        record["deployment"]["id"] = Value::from(id);
        record["seq"] = Value::from(99);
        record
    }

    /// Restarts the agent on the damaged journal (it must start) and checks the invariants:
    /// both good records listed, the second system running and reported.
    fn restart_and_check(&mut self) {
        self.live.host_mut(HOST).restart_agent();
        let listed = self.live.deployment_ids(HOST);
        for id in &self.ids {
            assert!(listed.contains(id), "good record {id} still listed: {listed:?}");
        }
        invariants::check(&self.live, HOST, &self.first, &self.second).expect(Running::New, "nothing changed");
    }

    /// A deployment after the damage works.
    fn deploy_again(&self) {
        self.live.change_host(HOST, "web1 third system");
        let third = apply_ok(&self.live);
        invariants::check(&self.live, HOST, &self.second, &third).expect(Running::New, "deployed after the damage");
    }

    /// Checks that `<name>` was moved aside byte for byte and the log names it, with
    /// `location` (`line:column`) in the problem; returns the log line.
    fn expect_quarantined(&self, name: &str, bytes: &[u8], location: &str) -> String {
        assert!(!self.journal.join(name).exists(), "{name} no longer loaded");
        let aside = files_with(&self.journal, &format!("{name}.corrupt-"));
        assert_eq!(aside.len(), 1, "{name} moved aside once: {aside:?}");
        assert_eq!(std::fs::read(self.journal.join(&aside[0])).unwrap(), bytes, "kept byte for byte");
        let log = self.live.host(HOST).agent_log();
        let file = self.journal.join(name).display().to_string();
        let line = log
            .lines()
            .find(|l| l.contains("ERROR") && l.contains(&format!("{file}:{location}")) && l.contains(&aside[0]))
            .unwrap_or_else(|| panic!("no error naming {file}:{location} and {}:\n{log}", aside[0]));
        // Reported, not only logged: in the agent's status and in `hostctl status`.
        let status = self.live.agent_status(HOST);
        let damaged = status["damaged_records"].as_array().unwrap();
        assert_eq!(damaged.len(), 1, "{status:#}");
        let moved_to = self.journal.join(&aside[0]).display().to_string();
        assert_eq!((damaged[0]["file"].as_str(), damaged[0]["moved_to"].as_str()), (Some(&*file), Some(&*moved_to)));
        assert!(damaged[0]["problem"].as_str().unwrap().contains(&format!("{file}:{location}")), "{status:#}");
        let shown = self.live.hostctl(&["status"]);
        let wanted = format!("journal: damaged record moved aside to {moved_to} (");
        assert!(shown.stdout.contains(&wanted), "{wanted}\n{}{}", shown.stdout, shown.stderr);
        line.to_owned()
    }
}

#[test]
fn journal_record_truncated_mid_json_is_moved_aside_and_the_agent_goes_on() {
    let mut h = Journaled::new();
    let text = serde_json::to_string_pretty(&h.record_as("cut-short")).unwrap();
    let cut = &text.as_bytes()[..text.len() / 2];
    std::fs::write(h.journal.join("cut-short.json"), cut).unwrap();
    h.restart_and_check();
    let lines = 1 + cut.iter().filter(|b| **b == b'\n').count();
    let line = h.expect_quarantined("cut-short.json", cut, &format!("{lines}:"));
    assert!(line.contains("EOF while parsing"), "{line}");
    h.deploy_again();
}

#[test]
fn journal_record_with_garbage_bytes_is_moved_aside_and_the_agent_goes_on() {
    let mut h = Journaled::new();
    let mut bytes = serde_json::to_vec_pretty(&h.record_as("garbled")).unwrap();
    let middle = bytes.len() / 2;
    bytes.splice(middle..middle + 16, (0u8..16).map(|b| b.wrapping_mul(37) ^ 0xa5));
    std::fs::write(h.journal.join("garbled.json"), &bytes).unwrap();
    h.restart_and_check();
    h.expect_quarantined("garbled.json", &bytes, "");
    h.deploy_again();
}

#[test]
fn empty_journal_record_is_moved_aside_and_the_agent_goes_on() {
    let mut h = Journaled::new();
    std::fs::write(h.journal.join("empty.json"), b"").unwrap();
    h.restart_and_check();
    let line = h.expect_quarantined("empty.json", b"", "1:0");
    assert!(line.contains("EOF while parsing a value"), "{line}");
    h.deploy_again();
}

#[test]
fn leftover_json_tmp_from_a_crash_mid_write_is_discarded_and_the_last_record_kept() {
    let mut h = Journaled::new();
    let good = std::fs::read(h.journal.join(format!("{}.json", h.ids[0]))).unwrap();
    // An update of the newest record cut short, and an insert cut short (never answered).
    let mut update = h.newest_record();
    update["deployment"]["state"] = Value::from("failed");
    let update = serde_json::to_vec_pretty(&update).unwrap();
    let tmp = format!("{}.json.tmp", h.ids[0]);
    std::fs::write(h.journal.join(&tmp), &update[..update.len() / 2]).unwrap();
    std::fs::write(h.journal.join("never-answered.json.tmp"), &update).unwrap();
    h.restart_and_check();
    assert_eq!(std::fs::read(h.journal.join(format!("{}.json", h.ids[0]))).unwrap(), good, "last complete version");
    assert!(files_with(&h.journal, ".tmp").is_empty() && files_with(&h.journal, ".corrupt-").is_empty());
    let newest = h.live.deployment(HOST, &h.ids[0]);
    assert_eq!(newest["state"], "confirmed", "{newest}");
    assert!(!h.live.deployment_ids(HOST).iter().any(|id| id == "never-answered"));
    let log = h.live.host(HOST).agent_log();
    for name in [tmp.as_str(), "never-answered.json.tmp"] {
        assert!(log.lines().any(|l| l.contains("discarded an interrupted journal write") && l.contains(name)), "{log}");
    }
    h.deploy_again();
}

/// A store path that is nowhere.
const GHOST: &str = "/nix/store/00000000000000000000000000000000-nixos-system-ghost";

#[test]
fn journal_records_naming_a_missing_system_are_kept_closed_and_never_activated() {
    let mut h = Journaled::new();
    // Says the host runs a system that is not in its store.
    let mut running_ghost = h.record_as("ghost-confirmed");
    running_ghost["deployment"]["toplevel"] = Value::from(GHOST);
    running_ghost["deployment"]["previous_toplevel"] = Value::from(GHOST);
    // Left open while setting the profile to that system, coming from it.
    let mut open_ghost = h.record_as("ghost-open");
    open_ghost["seq"] = Value::from(100);
    open_ghost["deployment"]["toplevel"] = Value::from(GHOST);
    open_ghost["deployment"]["previous_toplevel"] = Value::from(GHOST);
    open_ghost["deployment"]["state"] = Value::from("activating");
    open_ghost["phase"] = Value::from("setting-profile");
    open_ghost["previous_profile"] = Value::from(GHOST);
    open_ghost["activation"] = Value::Null;
    for (id, record) in [("ghost-confirmed", &running_ghost), ("ghost-open", &open_ghost)] {
        std::fs::write(h.journal.join(format!("{id}.json")), serde_json::to_vec_pretty(record).unwrap()).unwrap();
    }
    h.restart_and_check();
    assert!(files_with(&h.journal, ".corrupt-").is_empty(), "valid records are not moved aside");
    let closed = h.live.deployment(HOST, "ghost-open");
    assert_eq!(closed["state"], "failed", "{closed}");
    let error = closed["error"].as_str().unwrap_or_default();
    assert!(error.contains(GHOST), "{error}");
    assert_eq!(h.live.deployment(HOST, "ghost-confirmed")["state"], "confirmed", "history kept as it is");

    // A deployment that fails must return to what really runs, not to the ghost.
    let state = h.live.host(HOST).state_dir();
    std::fs::write(state.join("fail-switch-web1"), "4").unwrap();
    h.live.change_host(HOST, "web1 failing system");
    let run = h.live.hostctl(&["--json", "apply"]);
    run.expect_code(1);
    let v = run.json();
    let id = v["hosts"][HOST]["deployment"].as_str().unwrap_or_default().to_owned();
    let failed = h.live.deployment(HOST, &id);
    assert_eq!(failed["previous_toplevel"], h.second.as_str(), "returns to what runs: {failed}");
    invariants::check(&h.live, HOST, &h.second, &toplevel(&v)).expect(Running::Old, "rolled back");
    std::fs::remove_file(state.join("fail-switch-web1")).unwrap();
    h.deploy_again();
}
