//! Damaged journals: what [`Journal::open`] does with records it cannot load, leftovers of
//! interrupted writes, and writes that fail.

use std::fs;
use std::path::Path;

use hostctl_schemas::duration::Duration;

use super::tests::deployment;
use super::Journal;

/// A journal in `dir` with two good records, `a` and `b`; returns `b`'s bytes.
fn two_records(dir: &Path) -> Vec<u8> {
    let mut journal = Journal::open(dir).unwrap();
    journal.insert(deployment("a"), Duration::from_secs(0)).unwrap();
    journal.insert(deployment("b"), Duration::from_secs(30)).unwrap();
    fs::write(dir.join("a.log"), "log of a").unwrap();
    fs::read(dir.join("b.json")).unwrap()
}

/// The files in `dir` whose names start with `prefix`.
fn named(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Opens the journal with `bad` as `c.json`: the good records load, `c.json` is moved aside
/// with its bytes intact, and the problem names the file; returns the problem.
fn quarantines(bad: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    two_records(dir.path());
    fs::write(dir.path().join("c.json"), bad).unwrap();

    let journal = Journal::open(dir.path()).unwrap();
    let ids: Vec<_> = journal.records().iter().map(|r| r.deployment.id.clone()).collect();
    assert_eq!(ids, ["a", "b"], "the good records are kept, in order");
    assert_eq!(journal.next_seq(), 2);
    let [q] = journal.quarantined() else { panic!("one quarantined record: {:?}", journal.quarantined()) };
    assert_eq!(q.file, dir.path().join("c.json"));
    assert!(!q.file.exists(), "moved away");
    let aside = q.moved_to.file_name().unwrap().to_string_lossy().into_owned();
    assert!(aside.starts_with("c.json.corrupt-"), "{aside}");
    assert_eq!(fs::read(&q.moved_to).unwrap(), bad, "kept byte for byte");
    assert!(q.problem.starts_with(&format!("{}", dir.path().join("c.json").display())), "{}", q.problem);
    assert_eq!(fs::read_to_string(dir.path().join("a.log")).unwrap(), "log of a", "other files untouched");

    // Never loaded again, never moved again.
    let again = Journal::open(dir.path()).unwrap();
    assert_eq!(again.records().len(), 2);
    assert!(again.quarantined().is_empty());
    assert_eq!(named(dir.path(), "c.json"), [aside]);
    q.problem.clone()
}

#[test]
fn a_record_truncated_mid_json_is_moved_aside_with_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let good = two_records(dir.path());
    let text = String::from_utf8(good).unwrap().replace("\"b\"", "\"c\"");
    let cut = &text.as_bytes()[..text.len() / 2];
    let line = 1 + cut.iter().filter(|b| **b == b'\n').count();
    let problem = quarantines(cut);
    assert!(problem.contains(&format!("c.json:{line}:")), "{problem}");
    assert!(problem.contains("EOF while parsing"), "{problem}");
}

#[test]
fn garbage_bytes_an_unknown_phase_and_an_empty_file_are_moved_aside() {
    let problem = quarantines(b"{\"seq\": 7, \xff\xfe\x00\x01 garbage \x9b");
    assert!(problem.contains("c.json:1:"), "{problem}");

    let dir = tempfile::tempdir().unwrap();
    let good = String::from_utf8(two_records(dir.path())).unwrap();
    let unknown_phase = good.replace("\"b\"", "\"c\"").replace("\"phase\": \"accepted\"", "\"phase\": \"warp-drive\"");
    assert_ne!(unknown_phase, good.replace("\"b\"", "\"c\""), "the record has a phase to replace");
    let problem = quarantines(unknown_phase.as_bytes());
    assert!(problem.contains("unknown variant `warp-drive`"), "{problem}");

    let problem = quarantines(b"");
    assert!(problem.contains("c.json:1:0: EOF while parsing a value"), "{problem}");
}

#[test]
fn a_record_filed_under_another_id_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let good = two_records(dir.path());
    let problem = quarantines(&good);
    assert!(problem.contains("it holds deployment `b`, not `c`"), "{problem}");
}

#[test]
fn leftover_tmp_files_are_interrupted_writes_and_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let good = two_records(dir.path());
    // An update of `b` cut short, and the insert of `d` cut short (never acknowledged).
    fs::write(dir.path().join("b.json.tmp"), &good[..good.len() / 3]).unwrap();
    fs::write(dir.path().join("d.json.tmp"), b"").unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    assert_eq!(journal.records().len(), 2);
    assert!(journal.get("d").is_none());
    assert_eq!(fs::read(dir.path().join("b.json")).unwrap(), good, "the last complete version stays");
    assert!(journal.quarantined().is_empty());
    assert!(named(dir.path(), "b.json.").is_empty() && named(dir.path(), "d.").is_empty());
}

#[test]
fn two_quarantines_in_the_same_second_keep_both_files() {
    let dir = tempfile::tempdir().unwrap();
    two_records(dir.path());
    fs::write(dir.path().join("c.json"), "first").unwrap();
    Journal::open(dir.path()).unwrap();
    fs::write(dir.path().join("c.json"), "second").unwrap();
    Journal::open(dir.path()).unwrap();
    let aside = named(dir.path(), "c.json.corrupt-");
    assert_eq!(aside.len(), 2, "{aside:?}");
    let mut contents: Vec<String> = aside.iter().map(|n| fs::read_to_string(dir.path().join(n)).unwrap()).collect();
    contents.sort();
    assert_eq!(contents, ["first", "second"]);
}

#[test]
fn a_failed_write_leaves_no_tmp_and_changes_nothing_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    two_records(dir.path());
    let mut journal = Journal::open(dir.path()).unwrap();
    // The rename onto `e.json` fails (a directory is in the way), as a full disk fails
    // the write: either way the insert is refused and leaves nothing behind.
    fs::create_dir(dir.path().join("e.json")).unwrap();
    let err = journal.insert(deployment("e"), Duration::from_secs(0)).unwrap_err().to_string();
    assert!(err.contains("cannot write journal file") && err.contains("e.json"), "{err}");
    assert!(journal.get("e").is_none());
    assert_eq!(journal.next_seq(), 2);
    assert!(!dir.path().join("e.json.tmp").exists());
}

#[test]
fn an_end_that_cannot_be_written_is_kept_in_memory_and_written_before_the_next_insert() {
    use hostctl_schemas::api::deployments::DeploymentState;
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path()).unwrap();
    journal.insert(deployment("a"), Duration::from_secs(0)).unwrap();
    let on_disk = fs::read(dir.path().join("a.json")).unwrap();
    // A directory where the write goes makes every write of `a` fail, as a full disk does.
    fs::create_dir(dir.path().join("a.json.tmp")).unwrap();
    use crate::transition::{Ending, Transition};
    let fail = Transition::End(Ending {
        state: DeploymentState::Failed,
        reason: hostctl_schemas::api::deployments::EndReason::AgentRestarted,
        error: "x".into(),
    });
    assert!(journal.transition("a", fail.clone()).is_err());
    assert!(journal.get("a").unwrap().is_open(), "a failed update changes nothing");
    let still_open = journal.close_unwritten("a", Transition::Substitute).unwrap_err().to_string();
    assert!(still_open.contains("would still be open"), "{still_open}");

    journal.close_unwritten("a", fail).unwrap();
    assert_eq!(journal.get("a").unwrap().deployment.state, DeploymentState::Failed);
    assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), on_disk, "memory only");
    let refused = journal.insert(deployment("b"), Duration::from_secs(0)).unwrap_err().to_string();
    assert!(refused.contains("a.json"), "the end of `a` goes first: {refused}");
    assert!(journal.get("b").is_none());

    fs::remove_dir(dir.path().join("a.json.tmp")).unwrap();
    journal.insert(deployment("b"), Duration::from_secs(0)).unwrap();
    let reloaded = Journal::open(dir.path()).unwrap();
    assert_eq!(reloaded.get("a").unwrap().deployment.state, DeploymentState::Failed, "written before `b`");
    assert_eq!(reloaded.records().len(), 2);
}
