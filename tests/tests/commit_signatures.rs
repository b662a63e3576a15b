//! The commit-signature policy (issue 19) on commits made by real `git commit -S`, with
//! keys from real `ssh-keygen` and real `gpg`: what `hostctl-commits` decides for each
//! case the agent (pull) and `hostctl apply` (push) rely on. The end-to-end behaviour of
//! both sides is in `commit_signatures_pull.rs` and `commit_signatures_push.rs`.

use std::path::{Path, PathBuf};

use hostctl_commits::Trust;
use hostctl_schemas::commits::{CommitPolicy, RefusalReason, SignatureKind};
use hostctl_tests::git;
use hostctl_tests::signed_git::{commit, with_other_tree, Gpg, Signing, SshKey};

struct Repo {
    tmp: tempfile::TempDir,
    dir: PathBuf,
}

#[expect(clippy::unwrap_used, reason = "test helper: a panic is a test failure")]
impl Repo {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("repo");
        std::fs::create_dir(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        Self { tmp, dir }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn commit(&self, signing: Signing<'_>, message: &str) -> String {
        std::fs::write(self.dir.join("file"), message).unwrap();
        commit(&self.dir, signing, message)
    }

    fn check(
        &self,
        policy: &CommitPolicy,
        commit: &str,
    ) -> Result<Option<hostctl_schemas::commits::Signer>, hostctl_schemas::commits::CommitRefusal> {
        let trust = Trust::load(policy).unwrap();
        let repo = git2::Repository::open(&self.dir).unwrap();
        trust.check(&repo, git2::Oid::from_str(commit).unwrap(), hostctl_commits::unix_now())
    }
}

fn ssh_policy(signers: &Path) -> CommitPolicy {
    CommitPolicy { require_signature: true, allowed_signers: Some(signers.to_owned()), ..CommitPolicy::default() }
}

#[expect(clippy::expect_used, reason = "test helper: a panic is a test failure")]
fn refused(
    result: Result<Option<hostctl_schemas::commits::Signer>, hostctl_schemas::commits::CommitRefusal>,
    reason: RefusalReason,
    commit: &str,
) -> String {
    let refusal = result.expect_err("refused");
    assert_eq!((refusal.reason, refusal.commit.as_str()), (reason, commit), "{}", refusal.message);
    assert!(refusal.message.contains(commit), "{}", refusal.message);
    refusal.message
}

#[test]
fn ssh_signatures_by_allowed_keys_pass_and_all_others_are_refused() {
    let repo = Repo::new();
    let alice = SshKey::generate(repo.tmp.path(), "alice");
    let mallory = SshKey::generate(repo.tmp.path(), "mallory");
    let signers = repo.file("allowed_signers", &alice.allowed_line("alice@example.com", "namespaces=\"git\""));
    let policy = ssh_policy(&signers);

    let good = repo.commit(Signing::Ssh(&alice), "by alice");
    let signer = repo.check(&policy, &good).unwrap().unwrap();
    assert_eq!((signer.kind, signer.name.as_str()), (SignatureKind::Ssh, "alice@example.com"));
    assert!(signer.fingerprint.starts_with("SHA256:"), "{signer:?}");

    let unknown = repo.commit(Signing::Ssh(&mallory), "by mallory");
    let why = refused(repo.check(&policy, &unknown), RefusalReason::UnknownSigner, &unknown);
    assert!(why.contains("is not in") && why.contains("allowed_signers"), "{why}");

    let unsigned = repo.commit(Signing::Unsigned, "unsigned");
    let why = refused(repo.check(&policy, &unsigned), RefusalReason::Unsigned, &unsigned);
    assert!(why.contains("not signed"), "{why}");

    // The signed commit with its content changed afterwards: the signature stays, the
    // object it signed does not.
    let forged = with_other_tree(&repo.dir, &good, &unsigned);
    assert_ne!(forged, good);
    let why = refused(repo.check(&policy, &forged), RefusalReason::BadSignature, &forged);
    assert!(why.contains("does not match"), "{why}");

    // Without require_signature nothing is refused, but a good signer is still named.
    let lenient = CommitPolicy { require_signature: false, ..policy };
    assert_eq!(repo.check(&lenient, &unsigned).unwrap(), None);
    assert_eq!(repo.check(&lenient, &good).unwrap().unwrap().name, "alice@example.com");
}

#[test]
fn ssh_keys_outside_their_validity_or_namespace_are_refused() {
    let repo = Repo::new();
    let alice = SshKey::generate(repo.tmp.path(), "alice");
    let commit = repo.commit(Signing::Ssh(&alice), "by alice");
    let retired = repo.file("retired", &alice.allowed_line("alice@example.com", "valid-before=20200101"));
    let why = refused(repo.check(&ssh_policy(&retired), &commit), RefusalReason::Expired, &commit);
    assert!(why.contains("valid only before 2020-01-01T00:00:00Z") && why.contains("retired:1"), "{why}");
    let future = repo.file("future", &alice.allowed_line("alice@example.com", "valid-after=29990101"));
    refused(repo.check(&ssh_policy(&future), &commit), RefusalReason::NotYetValid, &commit);
    let other_ns = repo.file("other_ns", &alice.allowed_line("alice@example.com", "namespaces=\"file\""));
    let why = refused(repo.check(&ssh_policy(&other_ns), &commit), RefusalReason::UnknownSigner, &commit);
    assert!(why.contains("namespaces"), "{why}");
    let window =
        repo.file("window", &alice.allowed_line("alice@example.com", "valid-after=20200101,valid-before=29990101Z"));
    assert!(repo.check(&ssh_policy(&window), &commit).unwrap().is_some());
}

#[test]
fn openpgp_signatures_by_valid_keys_pass_expired_and_revoked_keys_are_refused() {
    let repo = Repo::new();
    let gpg = Gpg::new(repo.tmp.path(), None);
    let alice = gpg.generate("Alice <alice@example.com>", "1y");
    let good = repo.commit(Signing::Openpgp(&gpg, &alice), "by alice");
    let keyring = repo.file("keyring.asc", &gpg.export(&alice));
    let policy = CommitPolicy { require_signature: true, openpgp_keyring: Some(keyring), ..CommitPolicy::default() };
    let signer = repo.check(&policy, &good).unwrap().unwrap();
    assert_eq!((signer.kind, signer.name.as_str()), (SignatureKind::Openpgp, "Alice <alice@example.com>"));
    assert_eq!(signer.fingerprint, alice);

    // Signed by a key outside the keyring.
    let bob = gpg.generate("Bob <bob@example.com>", "1y");
    let by_bob = repo.commit(Signing::Openpgp(&gpg, &bob), "by bob");
    refused(repo.check(&policy, &by_bob), RefusalReason::UnknownSigner, &by_bob);

    // Revoked after it signed: the keyring now carries the revocation.
    gpg.revoke(&alice);
    let revoked =
        CommitPolicy { openpgp_keyring: Some(repo.file("revoked.asc", &gpg.export(&alice))), ..policy.clone() };
    refused(repo.check(&revoked, &good), RefusalReason::Revoked, &good);

    // A key made in 2020 that expired a day later, signing (in 2020) while it was valid.
    let old = Gpg::new(&repo.tmp.path().join("old"), Some("20200101T000000"));
    let carol = old.generate("Carol <carol@example.com>", "1d");
    let by_carol = repo.commit(Signing::Openpgp(&old, &carol), "by carol");
    let expired = CommitPolicy { openpgp_keyring: Some(repo.file("carol.asc", &old.export(&carol))), ..policy };
    let why = refused(repo.check(&expired, &by_carol), RefusalReason::Expired, &by_carol);
    assert!(why.contains("expired at 2020-01-02"), "{why}");
}

#[test]
fn the_first_parent_chain_since_since_must_be_signed_throughout() {
    let repo = Repo::new();
    let alice = SshKey::generate(repo.tmp.path(), "alice");
    let signers = repo.file("allowed_signers", &alice.allowed_line("alice@example.com", ""));
    let old = repo.commit(Signing::Unsigned, "history before the policy");
    let anchor = repo.commit(Signing::Unsigned, "the last unsigned commit");
    let signed = repo.commit(Signing::Ssh(&alice), "signed");
    let sneaked = repo.commit(Signing::Unsigned, "unsigned, pushed by someone");
    let head = repo.commit(Signing::Ssh(&alice), "signed on top");

    let since = |c: &str| CommitPolicy { since: Some(c.to_owned()), ..ssh_policy(&signers) };
    let why = refused(repo.check(&since(&anchor), &head), RefusalReason::ChainBroken, &sneaked);
    assert!(why.starts_with(&format!("chain broken at {sneaked}")), "{why}");
    assert_eq!(repo.check(&since(&anchor), &signed).unwrap().unwrap().name, "alice@example.com");
    assert!(repo.check(&since(&sneaked), &head).is_ok(), "only commits after `since` are checked");
    // Without `since` the whole history counts.
    refused(repo.check(&ssh_policy(&signers), &signed), RefusalReason::ChainBroken, &anchor);
    // A `since` that is not on the chain.
    git(&repo.dir, &["checkout", "-q", "--orphan", "other"]);
    let elsewhere = repo.commit(Signing::Unsigned, "another root");
    let why = refused(repo.check(&since(&elsewhere), &head), RefusalReason::SinceNotFound, &head);
    assert!(why.contains("not a first-parent ancestor"), "{why}");
    let _ = old;
}

#[test]
fn unusable_key_files_are_named() {
    let repo = Repo::new();
    let missing = ssh_policy(&repo.tmp.path().join("nope"));
    let err = Trust::load(&missing).unwrap_err().to_string();
    assert!(err.contains("nope: cannot read"), "{err}");
    let bad = repo.file("bad_signers", "alice@example.com cert-authority ssh-ed25519 AAAA\n");
    let err = Trust::load(&ssh_policy(&bad)).unwrap_err().to_string();
    assert!(err.contains("bad_signers:1: `cert-authority`"), "{err}");
    let keyring = repo.file("keyring.asc", "not a key\n");
    let err = Trust::load(&CommitPolicy { openpgp_keyring: Some(keyring), ..CommitPolicy::default() })
        .unwrap_err()
        .to_string();
    assert!(err.contains("keyring.asc: "), "{err}");
}

#[test]
fn bad_agent_policies_exit_2_naming_the_file_and_key() {
    let repo = Repo::new();
    let alice = SshKey::generate(repo.tmp.path(), "alice");
    let good = repo.file("allowed_signers", &alice.allowed_line("alice@example.com", ""));
    let bad = repo.file("bad_signers", &alice.allowed_line("alice@example.com", "valid-after=yesterday"));
    let base = "hostname: web1\ntrusted_keys: [\"fleet-1:DVtPvRyvUPbu/+Sn4hlrm4Lt/mYSsmlDciUrSupuJ3s=\"]\npull:\n  url: /srv/fleet.git\n  commits:\n";
    let missing = repo.tmp.path().join("missing");
    let cases = [
        (
            format!("    allowed_signers: {}\n    since: main\n", good.display()),
            "7:12: pull.commits.since: `main` is not a full commit id".to_owned(),
        ),
        (
            "    require_signature: true\n".to_owned(),
            "pull.commits: require_signature needs `allowed_signers` or `openpgp_keyring`".to_owned(),
        ),
        (
            format!("    allowed_signers: {}\n", missing.display()),
            format!("pull.commits: {}: cannot read", missing.display()),
        ),
        (
            format!("    allowed_signers: {}\n", bad.display()),
            format!("{}:1: `yesterday` is not a time", bad.display()),
        ),
        ("    signers: x\n".to_owned(), "6:5: pull.commits.signers: unknown field".to_owned()),
    ];
    for (commits, expected) in cases {
        let path = repo.file("agent.yaml", &format!("{base}{commits}"));
        let out = hostctl_tests::run(
            std::process::Command::new(hostctl_tests::binary("hostctl-agent"))
                .arg("check-config")
                .arg("--config")
                .arg(&path),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{commits}: {stderr}");
        assert!(stderr.contains(&path.display().to_string()) && stderr.contains(&expected), "{commits}: {stderr}");
    }
}

#[test]
fn bad_fleet_policies_exit_2_before_anything_runs() {
    let fleet = hostctl_tests::TestFleet::new();
    let key = fleet.tmp.path().join("fleet.sec");
    let out = fleet.nix(&["key", "generate-secret", "--key-name", "test-1"]);
    hostctl_tests::write_secret(&key, &String::from_utf8_lossy(&out.stdout));
    let file = fleet.path("fleet.yaml").display().to_string();
    let hosts = "hosts:\n  web1:\n    address: 192.0.2.11\n";
    let cases = [
        (
            format!("commits:\n  require_signature: true\n  allowed_signers: nowhere\n{hosts}"),
            format!("{file}: commits: {}: cannot read", fleet.path("nowhere").display()),
        ),
        (
            format!("commits:\n  since: v1.0\n{hosts}"),
            format!("{file}:2:10: commits.since: `v1.0` is not a full commit id"),
        ),
        (
            format!("{hosts}    commits:\n      require_signature: true\n"),
            format!("{file}: hosts.web1.commits: require_signature needs"),
        ),
        (
            format!(
                "tag_commits:\n  db: {{allowed_signers: a}}\n  eu: {{allowed_signers: b}}\n{hosts}    tags: [db, eu]\n"
            ),
            format!("{file}: hosts.web1: its tags `db` and `eu` have different `tag_commits` policies"),
        ),
    ];
    for (yaml, expected) in cases {
        fleet.write("fleet.yaml", &yaml);
        let run = fleet.hostctl(&["--key", &key.display().to_string(), "apply"]);
        run.expect_code(2);
        assert!(run.stderr.contains(&expected), "expected {expected:?} in:\n{}", run.stderr);
        assert!(!run.stderr.contains("evaluat"), "nothing was evaluated: {}", run.stderr);
    }
}
