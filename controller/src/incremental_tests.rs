//! Unit tests of incremental evaluation's decision, records, record-time checks and
//! identity search, on real git repositories (the `git` CLI). The whole path, with real
//! Nix and strace, is tested end to end in `tests/tests/incremental.rs`.

use super::*;

/// A git repository in a temporary directory, committed with the `git` CLI.
struct Repo {
    tmp: tempfile::TempDir,
}

impl Repo {
    fn new() -> Self {
        let repo = Self { tmp: tempfile::tempdir().unwrap() };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    fn git(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .current_dir(self.tmp.path())
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn write(&self, rel: &str, text: &str) -> &Self {
        let path = self.tmp.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }

    fn remove(&self, rel: &str) -> &Self {
        std::fs::remove_file(self.tmp.path().join(rel)).unwrap();
        self
    }

    /// Commits everything; returns the commit id.
    fn commit(&self) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", "c"]);
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    fn trees(&self) -> RepoTrees {
        RepoTrees::open(self.tmp.path()).unwrap()
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn store_path(name: &str) -> StorePath {
    format!("/nix/store/{}-{name}", "a".repeat(32)).parse().unwrap()
}

/// The fleet of these tests: web1 imports its file, reads motd.txt and lists d/ (and may
/// have looked up any path: lookups are not recorded).
fn fleet() -> (Repo, String) {
    let repo = Repo::new();
    repo.write("flake.nix", "{ }")
        .write("hosts/web1.nix", "{ a = 1; }")
        .write("hosts/web2.nix", "{ b = 1; }")
        .write("motd.txt", "hello")
        .write("d/a", "a");
    let rev = repo.commit();
    (repo, rev)
}

fn web1_record(rev: &str) -> Record {
    Record {
        format: FORMAT,
        key: "k".into(),
        rev: rev.to_owned(),
        traced_rev: rev.to_owned(),
        drv: store_path("web1.drv"),
        out: store_path("web1"),
        system: Some("x86_64-linux".into()),
        read: set(&["flake.nix", "hosts/web1.nix", "motd.txt"]),
        listed: set(&["d", "hosts"]),
    }
}

fn decision(repo: &Repo, record: &Record, rev: &str) -> Decision {
    decide(&repo.trees(), record, rev)
}

fn evaluates(d: &Decision, why: &str) -> bool {
    matches!(d, Decision::Evaluate(w) if w.contains(why))
}

#[test]
fn an_unrelated_change_reuses_and_a_read_file_evaluates() {
    let (repo, first) = fleet();
    let record = web1_record(&first);
    assert_eq!(decision(&repo, &record, &first), Decision::Reuse, "the same commit");
    let empty = repo.commit();
    assert_eq!(decision(&repo, &record, &empty), Decision::Reuse, "an empty commit");
    let web2 = repo.write("hosts/web2.nix", "{ b = 2; }").write("d/a", "changed content").commit();
    assert_eq!(decision(&repo, &record, &web2), Decision::Reuse, "another host's file; d/ lists the same");

    let web1 = repo.write("hosts/web1.nix", "{ a = 2; }").commit();
    let d = decision(&repo, &record, &web1);
    assert!(evaluates(&d, "hosts/web1.nix changed"), "{d:?}");
    let motd = repo.write("hosts/web1.nix", "{ a = 1; }").write("motd.txt", "bye").commit();
    let d = decision(&repo, &record, &motd);
    assert!(evaluates(&d, "motd.txt changed"), "a file only read with readFile: {d:?}");
}

#[test]
fn adding_deleting_or_retyping_any_path_evaluates() {
    let (repo, first) = fleet();
    let record = web1_record(&first);
    let added = repo.write("d/b", "b").commit();
    assert!(evaluates(&decision(&repo, &record, &added), "d/b was added"));
    let removed = repo.remove("d/b").remove("d/a").write("d/c", "").commit();
    assert!(evaluates(&decision(&repo, &web1_record(&added), &removed), "d/a was deleted"));

    // Nothing recorded mentions these paths: a lookup (pathExists) might have.
    let (repo, first) = fleet();
    let appeared = repo.write("nothere", "now it is").commit();
    let d = decision(&repo, &web1_record(&first), &appeared);
    assert!(evaluates(&d, "nothere was added"), "pathExists of a new file: {d:?}");
    let renamed = repo.remove("nothere").write("elsewhere", "now it is").commit();
    assert!(evaluates(&decision(&repo, &web1_record(&appeared), &renamed), "was"), "a rename");
    let motd = repo.tmp.path().join("motd.txt");
    std::fs::set_permissions(&motd, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let exec = repo.commit();
    let d = decision(&repo, &web1_record(&renamed), &exec);
    assert!(evaluates(&d, "motd.txt was File, is Executable"), "a mode change: {d:?}");
    let typed = repo.remove("hosts/web2.nix").write("hosts/web2.nix/default.nix", "{ }").commit();
    let d = decision(&repo, &web1_record(&exec), &typed);
    assert!(evaluates(&d, "hosts/web2.nix"), "a file became a directory: {d:?}");
}

#[test]
fn a_content_change_of_a_file_never_opened_reuses() {
    let (repo, first) = fleet();
    // web1 may have seen d/a through a lookup or the listing of d/, never its content.
    let changed = repo.write("d/a", "other content").write("hosts/web2.nix", "{ b = 3; }").commit();
    assert_eq!(decision(&repo, &web1_record(&first), &changed), Decision::Reuse);
    let deleted = repo.remove("d/a").commit();
    assert!(evaluates(&decision(&repo, &web1_record(&changed), &deleted), "d/a was deleted"));
}

#[test]
fn links_attributes_and_unknown_commits_evaluate() {
    let (repo, first) = fleet();
    repo.remove("motd.txt");
    std::os::unix::fs::symlink("d/a", repo.tmp.path().join("motd.txt")).unwrap();
    let link = repo.commit();
    assert!(evaluates(&decision(&repo, &web1_record(&first), &link), "motd.txt was File, is Symlink"));
    std::fs::remove_file(repo.tmp.path().join("motd.txt")).unwrap();
    std::os::unix::fs::symlink("hosts/web2.nix", repo.tmp.path().join("motd.txt")).unwrap();
    let retargeted = repo.commit();
    let d = decision(&repo, &web1_record(&link), &retargeted);
    assert!(evaluates(&d, "motd.txt was Symlink, is Symlink"), "a link's target is a lookup: {d:?}");

    let (repo, _) = fleet();
    std::os::unix::fs::symlink("hosts", repo.tmp.path().join("machines")).unwrap();
    let mut behind = web1_record(&repo.commit());
    behind.read.insert("machines/web1.nix".into());
    let web2 = repo.write("hosts/web2.nix", "{ }").commit();
    assert!(evaluates(&decision(&repo, &behind, &web2), "lies behind a symlink"), "a content change only");

    let (repo, first) = fleet();
    let attrs = repo.write(".gitattributes", "*.nix export-ignore\n").commit();
    assert!(evaluates(&decision(&repo, &web1_record(&first), &attrs), ".gitattributes changed"));
    let nested = repo.write("sub/.gitattributes", "x export-subst\n").commit();
    assert!(evaluates(&decision(&repo, &web1_record(&attrs), &nested), "sub/.gitattributes changed"));

    let unknown = "0".repeat(40);
    let d = decision(&repo, &web1_record(&unknown), &nested);
    assert!(evaluates(&d, &format!("cannot compare {unknown}")), "{d:?}");
}

#[test]
fn records_are_loaded_only_under_their_key() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("x.reads.json");
    assert!(load(&file, "k").unwrap_err().contains("no earlier evaluation"), "a missing record");
    let record = web1_record(&"1".repeat(40));
    std::fs::write(&file, serde_json::to_vec(&record).unwrap()).unwrap();
    assert_eq!(load(&file, "k").unwrap(), record);
    assert!(load(&file, "another lock").unwrap_err().contains("another key"), "a lock change files elsewhere");
    // A format-1 record (lookups recorded in `stat`) is not used.
    let mut old = serde_json::to_value(&record).unwrap();
    old["format"] = 1.into();
    old["stat"] = serde_json::json!(["", "nothere"]);
    std::fs::write(&file, serde_json::to_vec(&old).unwrap()).unwrap();
    assert!(load(&file, "k").unwrap_err().contains("another version"), "another format");
    std::fs::write(&file, b"{\"format\": 1, \"read\": [").unwrap();
    assert!(load(&file, "k").unwrap_err().contains("not a usable record"), "a corrupt record");
    assert_eq!(record.toplevel().drv_path, record.drv);
}

/// A stand-in for Nix's copy of the repository at its HEAD (what `git archive` gives).
fn store_copy(repo: &Repo) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    let tar = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("git -C '{}' archive HEAD | tar -x -C '{}'", repo.tmp.path().display(), copy.path().display()))
        .status()
        .unwrap();
    assert!(tar.success());
    copy
}

fn access(root: &Path, record: &Record) -> SourceAccess {
    SourceAccess { root: root.to_path_buf(), read: record.read.clone(), listed: record.listed.clone() }
}

#[test]
fn a_trace_must_agree_with_git_at_every_recorded_path() {
    let (repo, rev) = fleet();
    let copy = store_copy(&repo);
    let seen = access(copy.path(), &web1_record(&rev));
    check_against_git(repo.tmp.path(), &rev, &seen, "flake.lock").unwrap();

    std::fs::write(copy.path().join("motd.txt"), "not what git has").unwrap();
    let err = check_against_git(repo.tmp.path(), &rev, &seen, "flake.lock").unwrap_err();
    assert!(err.contains("motd.txt: other content"), "{err}");
    std::fs::write(copy.path().join("motd.txt"), "hello").unwrap();
    std::fs::remove_file(copy.path().join("d/a")).unwrap();
    let err = check_against_git(repo.tmp.path(), &rev, &seen, "flake.lock").unwrap_err();
    assert!(err.contains("d: other entries"), "export-ignore-like: {err}");

    let repo2 = Repo::new();
    repo2.write("flake.nix", "{ outputs = { self }: { v = self.revCount; }; }").write("flake.lock", "revCount");
    let rev2 = repo2.commit();
    let copy2 = store_copy(&repo2);
    let mut seen2 = SourceAccess { root: copy2.path().to_path_buf(), ..SourceAccess::default() };
    seen2.read.insert("flake.lock".into());
    check_against_git(repo2.tmp.path(), &rev2, &seen2, "flake.lock").unwrap();
    seen2.read.insert("flake.nix".into());
    let err = check_against_git(repo2.tmp.path(), &rev2, &seen2, "flake.lock").unwrap_err();
    assert!(err.contains("flake.nix mentions revCount"), "{err}");
}

fn meta(rev: &str) -> FlakeMetadata {
    FlakeMetadata {
        path: "/nix/store/dz03myap4kl7dpw3hrwqw4r7013nw1fc-source".parse().unwrap(),
        rev: Some(rev.to_owned()),
        last_modified: Some(1_795_263_015),
        nar_hash: Some("sha256-a37SXv1QzcCzsLL8fKCX6isIWlc/SI2ZImuPq40RaKI=".into()),
        rev_count: Some(3),
    }
}

#[test]
fn the_commits_identity_is_searched_for_in_the_closure() {
    let rev = "fa370957d87f8fdbb2048660b6b09c2c63d5f787";
    let found = needles(&meta(rev)).unwrap();
    let texts: Vec<&[u8]> = found.iter().map(|(_, n)| n.as_slice()).collect();
    assert_eq!(
        texts,
        [
            b"dz03myap4kl7dpw3hrwqw4r7013nw1fc".as_slice(),
            b"fa37095",
            b"a37SXv1QzcCzsLL8fKCX6isIWlc/SI2ZImuPq40RaKI=",
            b"1795263015",
            b"20261121",
        ]
    );
    assert!(needles(&FlakeMetadata { rev: None, ..meta(rev) }).is_err());
    assert!(needles(&FlakeMetadata { last_modified: Some(1), ..meta(rev) }).is_err());

    let store = tempfile::tempdir().unwrap();
    let prefix = store.path().to_string_lossy().into_owned();
    let put = |name: &str, text: &str| {
        let path = store.path().join(format!("nix/store/{name}"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        format!("/nix/store/{name}")
    };
    let clean = put("a-etc.drv", "Derive([(\"out\",\"/nix/store/x-etc\")],[],[],\"x86_64-linux\")");
    let dir = put("b-src/sub/file", "nothing to see");
    let dir = dir.trim_end_matches("/sub/file").to_owned();
    let scanned = Mutex::new(HashSet::new());
    scan_closure(&[clean.clone(), dir], &prefix, &found, &scanned).unwrap();
    assert!(scanned.lock().unwrap().contains(&clean), "remembered for the next host");
    for (name, text, what) in [
        ("c-v.drv", "motd=db1 at fa370957d87f8fdbb2048660b6b09c2c63d5f787", "revision"),
        ("d-v.drv", "src=/nix/store/dz03myap4kl7dpw3hrwqw4r7013nw1fc-source/hosts", "store path"),
        ("e-v", "version=1.0.20261121.fa37095", "revision"),
        ("f-v", "built 1795263015", "lastModified"),
    ] {
        let path = put(name, text);
        let err = scan_closure(&[path], &prefix, &found, &scanned).unwrap_err();
        assert!(err.contains(&format!("holds the commit's {what}")), "{name}: {err}");
    }
    assert_eq!(yyyymmdd(0), "19700101");
    assert_eq!(yyyymmdd(951_782_400), "20000229");
    assert_eq!(yyyymmdd(1_795_263_015), "20261121");
}
