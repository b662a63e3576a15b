//! Unit tests of the evaluation cache's keys and entries (the wiring into `eval` is
//! tested end to end in `tests/tests/cli_eval_build.rs`).

use super::*;

fn base() -> KeyBase {
    KeyBase {
        format: FORMAT,
        rev: "a".repeat(40),
        subdir: PathBuf::from("fleet"),
        lock: Some("b".repeat(64)),
        nix: "2.8.0".into(),
        store: None,
    }
}

fn cache(dir: &Path, base: KeyBase) -> EvalCache {
    EvalCache { dir: Some(dir.to_path_buf()), base: Some(base) }
}

fn toplevel(c: char) -> Toplevel {
    let hash = c.to_string().repeat(32);
    Toplevel {
        drv_path: format!("/nix/store/{hash}-nixos-system-web1.drv").parse().unwrap(),
        out_path: format!("/nix/store/{hash}-nixos-system-web1").parse().unwrap(),
        system: Some("x86_64-linux".into()),
    }
}

fn attr(name: &str) -> AttrName {
    name.parse().unwrap()
}

#[test]
fn an_entry_is_found_only_under_its_whole_key() {
    let tmp = tempfile::tempdir().unwrap();
    cache(tmp.path(), base()).put(&attr("web1"), &toplevel('1'));
    assert_eq!(cache(tmp.path(), base()).get(&attr("web1")), Some(toplevel('1')));
    assert_eq!(cache(tmp.path(), base()).get(&attr("web2")), None, "another host");
    let changed: [fn(&mut KeyBase); 6] = [
        |b| b.rev = "c".repeat(40),
        |b| b.subdir = PathBuf::new(),
        |b| b.lock = None,
        |b| b.nix = "2.26.3".into(),
        |b| b.store = Some("local?root=/tmp/x".into()),
        |b| b.format += 1,
    ];
    for (i, change) in changed.iter().enumerate() {
        let mut other = base();
        change(&mut other);
        assert_eq!(cache(tmp.path(), other).get(&attr("web1")), None, "key change {i} must miss");
    }
}

#[test]
fn a_corrupt_entry_is_a_miss_and_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cache(tmp.path(), base());
    let file = c.file(&attr("web1")).unwrap();
    std::fs::write(&file, b"{not json").unwrap();
    assert_eq!(c.get(&attr("web1")), None);
    c.put(&attr("web1"), &toplevel('2'));
    assert_eq!(c.get(&attr("web1")), Some(toplevel('2')));
}

#[test]
fn a_disabled_cache_never_hits_or_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let c = EvalCache { dir: Some(tmp.path().to_path_buf()), base: None };
    assert!(!c.is_enabled());
    c.put(&attr("web1"), &toplevel('1'));
    assert_eq!(c.get(&attr("web1")), None);
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    assert!(!EvalCache::disabled().is_enabled());
}

#[test]
fn an_unwritable_cache_dir_does_not_fail() {
    let c = cache(Path::new("/proc/hostctl-no-such-dir"), base());
    c.put(&attr("web1"), &toplevel('1'));
    assert_eq!(c.get(&attr("web1")), None);
}

#[test]
fn a_reads_record_is_filed_without_the_revision_but_under_the_rest_of_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, key) = cache(tmp.path(), base()).reads_file(&attr("web1")).unwrap();
    assert!(file.to_string_lossy().ends_with(".reads.json"), "{}", file.display());
    let mut other_rev = base();
    other_rev.rev = "c".repeat(40);
    assert_eq!(cache(tmp.path(), other_rev).reads_file(&attr("web1")).unwrap(), (file.clone(), key.clone()));
    let mut other_lock = base();
    other_lock.lock = Some("d".repeat(64));
    assert_ne!(cache(tmp.path(), other_lock).reads_file(&attr("web1")).unwrap().0, file, "a new lock: no record");
    assert_ne!(cache(tmp.path(), base()).reads_file(&attr("web2")).unwrap().0, file);
    assert_eq!(cache(tmp.path(), base()).rev(), Some("a".repeat(40).as_str()));
    assert_eq!(EvalCache::disabled().reads_file(&attr("web1")), None);
}
