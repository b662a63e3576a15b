//! Unit tests of rollback target parsing and resolution, against a made-up deployment
//! history and a fake git history (the real git2 search is tested in `hostctl-nix`).

use super::*;
use hostctl_schemas::api::deployments::DeploymentRequest;
use hostctl_schemas::api::generations::Generation;
use hostctl_schemas::inventory::Mode;

const TOP: &str = "/nix/store/22222222222222222222222222222222-nixos-system-web";

fn lock(c: char) -> LockId {
    c.to_string().repeat(64).parse().unwrap()
}

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

fn deployment(id: &str, state: DeploymentState, lock: &LockId, rev: &str) -> Deployment {
    let request = DeploymentRequest {
        id: id.into(),
        toplevel: TOP.parse().unwrap(),
        rev: Some(rev.into()),
        lock: Some(lock.clone()),
        mode: Mode::Switch,
        confirm_timeout: hostctl_schemas::duration::Duration::from_secs(30),
        health: Vec::new(),
        cache: None,
        commit_signature: None,
        retention: None,
        reboot: false,
    };
    Deployment { state, ..Deployment::queued(&request, None, 0) }
}

/// Newest first: lock b (current), a failed lock c, lock b again, lock a.
fn history() -> GenerationsResponse {
    use DeploymentState::*;
    let generation = |number, current, l: char| Generation {
        number,
        toplevel: TOP.parse().unwrap(),
        time: 0,
        current,
        deployment: None,
        rev: None,
        lock: Some(lock(l)),
        result: Some(Confirmed),
        mode: Some(Mode::Switch),
    };
    GenerationsResponse {
        generations: vec![generation(3, true, 'b'), generation(2, false, 'b'), generation(1, false, 'a')],
        deployments: vec![
            deployment("d4", Confirmed, &lock('b'), &sha('4')),
            deployment("d3", RolledBack, &lock('c'), &sha('3')),
            deployment("d2", Confirmed, &lock('b'), &sha('2')),
            deployment("d1", Confirmed, &lock('a'), &format!("{}-dirty", sha('1'))),
        ],
    }
}

/// Commits by name: `v1` -> commit 1 with lock a; `main` -> commit 9 with lock 9;
/// `nolock` -> commit 5 without flake.lock. Lock e is in commit e only.
#[derive(Debug)]
struct FakeGit;

impl GitHistory for FakeGit {
    fn resolve(&self, spec: &str) -> Result<Option<String>, GitLockError> {
        Ok(match spec {
            "v1" => Some(sha('1')),
            "main" => Some(sha('9')),
            "nolock" => Some(sha('5')),
            s if s.len() >= 4 && sha('d').starts_with(s) => Some(sha('d')),
            _ => None,
        })
    }
    fn lock_at(&self, rev: &str) -> Result<Option<LockId>, GitLockError> {
        Ok(match rev.chars().next() {
            Some('1') => Some(lock('a')),
            Some('9') => Some(lock('9')),
            Some('d') => Some(lock('d')),
            _ => None,
        })
    }
    fn find_lock(&self, l: &LockId, _hint: Option<&str>) -> Result<LockSearch, GitLockError> {
        let commit = (*l == lock('e')).then(|| sha('e'));
        Ok(LockSearch { commit, searched: 42 })
    }
    fn describe(&self) -> String {
        "the git repository /srv/infra (flake.lock)".into()
    }
}

fn web1() -> HostName {
    "web1".parse().unwrap()
}

fn resolve_with(wanted: Wanted) -> Result<Resolved, String> {
    resolve(&web1(), &wanted, &history(), Ok(&FakeGit)).map_err(|e| {
        assert_eq!(e.exit_code(), crate::error::EXIT_BAD_INPUT, "{e}");
        e.to_string()
    })
}

fn spec(s: &str) -> Wanted {
    Wanted::Lock(parse_lock_spec(s).unwrap())
}

#[test]
fn lock_specs_are_classified_by_syntax() {
    let full = "AB".repeat(32);
    assert_eq!(parse_lock_spec(&full), Ok(LockSpec::Lock(full.to_lowercase().parse().unwrap())));
    assert_eq!(parse_lock_spec("0123456789AB"), Ok(LockSpec::Prefix("0123456789ab".into())));
    assert_eq!(parse_lock_spec(&"f".repeat(63)), Ok(LockSpec::Prefix("f".repeat(63))));
    assert_eq!(parse_lock_spec("0123abc"), Ok(LockSpec::Rev("0123abc".into())), "a short commit id");
    assert_eq!(parse_lock_spec(&"f".repeat(65)), Ok(LockSpec::Rev("f".repeat(65))));
    for rev in ["v1.2", "main", "HEAD~2", "release/2024-05"] {
        assert_eq!(parse_lock_spec(rev), Ok(LockSpec::Rev(rev.into())));
    }
    for (bad, why) in [
        ("", "empty"),
        ("main branch", "whitespace"),
        ("a\tb", "whitespace"),
        ("--all", "must not start with `-`"),
        ("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", "64 hex digits"),
    ] {
        let err = parse_lock_spec(bad).unwrap_err();
        assert!(err.contains(why) && err.starts_with("--to-lock `"), "{bad:?}: {err}");
    }
    assert!(parse_lock_spec(&"x".repeat(300)).unwrap_err().contains("longer than 256"));
    assert_eq!(Wanted::from_args(None, None).unwrap(), Wanted::Previous);
    assert_eq!(Wanted::from_args(None, Some(3)).unwrap(), Wanted::Generation(3));
    assert_eq!(Wanted::from_args(Some("-x"), None).unwrap_err().exit_code(), crate::error::EXIT_BAD_INPUT);
}

#[test]
fn previous_is_the_newest_earlier_confirmed_deployment_with_another_lock() {
    assert_eq!(previous_lock(&history()), Some(lock('a')), "the rolled-back lock c does not count");
    let r = resolve_with(Wanted::Previous).unwrap();
    assert_eq!(r.to, RollbackTarget::Previous(Previous::Previous));
    assert_eq!((r.lock, r.rev_hint), (Some(lock('a')), Some(format!("{}-dirty", sha('1')))));
    assert_eq!(r.describe, "the previous lock (aaaaaaaaaaaa)");
    let mut only_b = GenerationsResponse { deployments: history().deployments[..1].to_vec(), ..history() };
    only_b.deployments[0].previous_toplevel = Some(TOP.parse().unwrap());
    let r = resolve(&web1(), &Wanted::Previous, &only_b, Ok(&FakeGit)).unwrap();
    assert_eq!((r.lock, r.describe.as_str()), (None, "the previous system"));
}

#[test]
fn previous_on_a_host_with_nothing_earlier_is_bad_input() {
    let first_only = GenerationsResponse { deployments: history().deployments[..1].to_vec(), ..history() };
    let e = resolve(&web1(), &Wanted::Previous, &first_only, Ok(&FakeGit)).unwrap_err();
    assert_eq!(e.exit_code(), crate::error::EXIT_BAD_INPUT);
    assert!(
        e.to_string().contains("web1: nothing to roll back to: deployment `d4` was the host's first system"),
        "{e}"
    );
    let fresh = GenerationsResponse { generations: Vec::new(), deployments: Vec::new() };
    let e = resolve(&web1(), &Wanted::Previous, &fresh, Ok(&FakeGit)).unwrap_err();
    assert!(e.to_string().contains("no confirmed deployment"), "{e}");
}

#[test]
fn full_lock_ids_and_prefixes() {
    let r = resolve_with(spec(&"a".repeat(64))).unwrap();
    assert_eq!(r.to, RollbackTarget::Lock { lock: lock('a') });
    assert_eq!(r.rev_hint, Some(format!("{}-dirty", sha('1'))), "the recorded revision");
    let r = resolve_with(spec(&"b".repeat(12))).unwrap();
    assert_eq!((r.lock, r.rev_hint), (Some(lock('b')), Some(sha('4'))), "newest confirmed deployment of b");
    let r = resolve_with(spec(&"c".repeat(20))).unwrap();
    assert_eq!((r.lock, r.rev_hint), (Some(lock('c')), Some(sha('3'))), "a lock seen only in a rolled-back one");
    // Not in the host's history but in git: rebuildable.
    let r = resolve_with(spec(&"e".repeat(64))).unwrap();
    assert_eq!((r.lock, r.rev_hint), (Some(lock('e')), Some(sha('e'))));
    // A hex prefix no lock has, but a commit id: that commit's lock.
    let r = resolve_with(spec(&"d".repeat(12))).unwrap();
    assert_eq!((r.to, r.rev_hint), (RollbackTarget::Lock { lock: lock('d') }, Some(sha('d'))));
}

#[test]
fn ambiguous_prefixes() {
    let mut h = history();
    let mut other = "b".repeat(63);
    other.push('0');
    h.deployments.push(deployment("d0", DeploymentState::Confirmed, &other.parse().unwrap(), &sha('0')));
    let err = resolve(&web1(), &spec(&"b".repeat(12)), &h, Ok(&FakeGit)).unwrap_err().to_string();
    assert!(err.contains("matches 2 locks in web1's history"), "{err}");
}

#[test]
fn revisions_resolve_to_their_commits_lock() {
    let r = resolve_with(spec("v1")).unwrap();
    assert_eq!((r.to, r.rev_hint), (RollbackTarget::Lock { lock: lock('a') }, Some(sha('1'))));
    assert_eq!(r.describe, "lock aaaaaaaaaaaa (revision v1 = 111111111111)");
    let r = resolve_with(spec("main")).unwrap();
    assert_eq!(r.lock, Some(lock('9')), "a lock the host never had is fine: it gets rebuilt");
    let err = resolve_with(spec("nolock")).unwrap_err();
    assert!(err.contains("has no flake.lock"), "{err}");
}

#[test]
fn unknown_targets_are_bad_input_naming_what_was_searched() {
    let err = resolve_with(spec(&"7".repeat(64))).unwrap_err();
    assert!(
        err.starts_with(&format!("lock {}: not in web1's deployment history (4 deployments)", "7".repeat(64))),
        "{err}"
    );
    assert!(
        err.contains("no commit of the git repository /srv/infra (flake.lock) has it (42 commits searched"),
        "{err}"
    );
    let err = resolve_with(spec("v9")).unwrap_err();
    assert_eq!(err, "--to-lock `v9`: not a revision of the git repository /srv/infra (flake.lock)");
    let err = resolve_with(spec(&"7".repeat(12))).unwrap_err();
    assert!(err.contains("no lock in web1's deployment history (4 deployments) starts with it"), "{err}");
    let err = resolve(&web1(), &spec("v1"), &history(), Err("the flake is remote".into())).unwrap_err().to_string();
    assert!(err.contains("the flake is remote"), "{err}");
    let err = resolve(&web1(), &spec(&"7".repeat(64)), &history(), Err("the flake is remote".into())).unwrap_err();
    assert!(err.to_string().contains("no git history to search: the flake is remote"), "{err}");
}

#[test]
fn generations_must_exist() {
    let r = resolve_with(Wanted::Generation(2)).unwrap();
    assert_eq!((r.to, r.lock), (RollbackTarget::Generation { generation: 2 }, None));
    let err = resolve_with(Wanted::Generation(7)).unwrap_err();
    assert_eq!(err, "web1 has no generation 7 (its generations: 3, 2, 1)");
}
