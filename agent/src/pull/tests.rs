//! Pull-mode tests on temporary git repositories made with git2: fetching (fast-forward,
//! force push), lock classification, supersession (with a FAKE builder that only sleeps;
//! real Nix builds are in the end-to-end tests), and the webhook over in-process HTTP.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration as StdDuration;

use git2::{Oid, Repository, Signature};
use hostctl_schemas::agent_config::{parse_agent_config, LockPolicy};
use hostctl_schemas::api::deployments::{Deployment, DeploymentRequest};
use hostctl_schemas::duration::Duration;

use super::apply::BuildFuture;
use super::*;
use crate::deploy::tests::TestHost;

/// A "remote" bare repository and commits on its `main`.
struct Remote {
    repo: Repository,
}

impl Remote {
    fn new(dir: &Path) -> Self {
        Self { repo: Repository::init_bare(dir).unwrap() }
    }

    fn url(&self) -> String {
        self.repo.path().to_str().unwrap().to_owned()
    }

    /// Commits `files` on `main` with `parent` (None: a new root, i.e. a force push).
    fn commit(&self, files: &[(&str, &str)], parent: Option<Oid>) -> Oid {
        let mut tree = self.repo.treebuilder(None).unwrap();
        for (name, content) in files {
            let blob = self.repo.blob(content.as_bytes()).unwrap();
            tree.insert(name, blob, 0o100644).unwrap();
        }
        let tree = self.repo.find_tree(tree.write().unwrap()).unwrap();
        let sig = Signature::now("t", "t@example.invalid").unwrap();
        let parents: Vec<_> = parent.map(|p| self.repo.find_commit(p).unwrap()).into_iter().collect();
        let refs: Vec<_> = parents.iter().collect();
        let oid = self.repo.commit(None, &sig, &sig, "c", &tree, &refs).unwrap();
        self.repo.reference("refs/heads/main", oid, true, "test").unwrap();
        oid
    }
}

fn mirror(dir: &Path) -> Mirror {
    Mirror::open(&dir.join("mirror"), "main").unwrap()
}

#[test]
fn fast_forward_is_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Remote::new(&dir.path().join("remote.git"));
    let m = mirror(dir.path());
    assert_eq!(m.head().unwrap(), None);
    let a = remote.commit(&[("flake.nix", "a")], None);
    let f = m.fetch(&remote.url(), false, None).unwrap();
    assert_eq!((f.commit.as_str(), f.changed), (a.to_string().as_str(), true));
    let b = remote.commit(&[("flake.nix", "b")], Some(a));
    assert_eq!(m.fetch(&remote.url(), false, None).unwrap().commit, b.to_string());
    assert!(!m.fetch(&remote.url(), false, None).unwrap().changed);
    assert_eq!(m.head().unwrap(), Some(b.to_string()));
}

#[test]
fn references_a_power_cut_left_empty_are_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Remote::new(&dir.path().join("remote.git"));
    let m = mirror(dir.path());
    let a = remote.commit(&[("flake.nix", "a")], None);
    m.fetch(&remote.url(), false, None).unwrap();
    // What the VM lane's power cut left: loose references of zero bytes.
    let git_dir = dir.path().join("mirror/.git");
    std::fs::create_dir_all(git_dir.join("refs/hostctl")).unwrap();
    std::fs::write(git_dir.join("refs/hostctl/incoming"), "").unwrap();
    std::fs::write(git_dir.join("refs/heads/main"), "").unwrap();
    let b = remote.commit(&[("flake.nix", "b")], Some(a));
    let f = m.fetch(&remote.url(), false, None).unwrap();
    assert_eq!(f.commit, b.to_string());
    assert_eq!(m.head().unwrap(), Some(b.to_string()));
}

#[test]
fn force_push_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Remote::new(&dir.path().join("remote.git"));
    let m = mirror(dir.path());
    let a = remote.commit(&[("flake.nix", "a")], None);
    m.fetch(&remote.url(), false, None).unwrap();
    let rewritten = remote.commit(&[("flake.nix", "x")], None);
    let err = m.fetch(&remote.url(), false, None).unwrap_err().to_string();
    assert!(err.starts_with("force push refused: "), "{err}");
    assert_eq!(m.head().unwrap(), Some(a.to_string()), "the last good commit stays");
    let f = m.fetch(&remote.url(), true, None).unwrap();
    assert!(f.forced && f.commit == rewritten.to_string());
}

#[test]
fn missing_branch_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Remote::new(&dir.path().join("remote.git"));
    let err = mirror(dir.path()).fetch(&remote.url(), false, None).unwrap_err();
    assert!(!err.to_string().is_empty());
}

#[test]
fn classify_follows_the_policy() {
    let (l1, l2) = (lock_id(b"1"), lock_id(b"2"));
    assert_eq!(classify(LockPolicy::Pinned, Some(&l1), Some(&l1)), Verdict::Apply);
    assert_eq!(classify(LockPolicy::Pinned, Some(&l1), Some(&l2)), Verdict::Hold);
    assert_eq!(classify(LockPolicy::Pinned, Some(&l1), None), Verdict::Hold);
    assert_eq!(classify(LockPolicy::Pinned, None, Some(&l2)), Verdict::Apply);
    assert_eq!(classify(LockPolicy::Follow, Some(&l1), Some(&l2)), Verdict::Apply);
}

fn lock_id(bytes: &[u8]) -> LockId {
    hostctl_nix::flake::lock::lock_id(bytes)
}

/// A builder that sleeps `slow` for commit `slow_commit`, notes whether that build
/// was dropped before finishing, fails to evaluate `failing_commit`, and counts builds.
/// FAKE: it builds nothing.
#[derive(Debug)]
struct FakeBuilder {
    slow_commit: Mutex<String>,
    failing_commit: Mutex<String>,
    builds: AtomicUsize,
    dropped: Arc<AtomicBool>,
    toplevel: StorePath,
}

struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Build for FakeBuilder {
    fn build<'a>(&'a self, commit: &'a str) -> BuildFuture<'a> {
        let slow = *self.slow_commit.lock().unwrap() == commit;
        let failing = *self.failing_commit.lock().unwrap() == commit;
        self.builds.fetch_add(1, Ordering::SeqCst);
        let flag = DropFlag(Arc::clone(&self.dropped));
        let toplevel = self.toplevel.clone();
        Box::pin(async move {
            if slow {
                tokio::time::sleep(StdDuration::from_secs(30)).await;
            }
            std::mem::forget(flag);
            if failing {
                return Err(BuildFailure { message: format!("evaluating at {commit} failed: boom"), toplevel: None });
            }
            Ok(toplevel)
        })
    }
}

const TOPLEVEL: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-web1";

struct Setup {
    _dir: tempfile::TempDir,
    _host: TestHost,
    remote: Remote,
    puller: Arc<Puller>,
    dropped: Arc<AtomicBool>,
    builder: Arc<FakeBuilder>,
    pull: PullConfig,
}

fn setup(policy: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let remote = Remote::new(&dir.path().join("remote.git"));
    let yaml = format!(
        "hostname: web1\ntrusted_keys: [\"fleet-1:11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=\"]\n\
         pull:\n  url: {}\n  interval: 1h\n  lock: {policy}\n",
        remote.url()
    );
    let config = parse_agent_config(&yaml, Path::new("agent.yaml")).unwrap();
    let host = TestHost::new();
    let dropped = Arc::new(AtomicBool::new(false));
    let builder = Arc::new(FakeBuilder {
        slow_commit: Mutex::new(String::new()),
        failing_commit: Mutex::new(String::new()),
        builds: AtomicUsize::new(0),
        dropped: Arc::clone(&dropped),
        toplevel: TOPLEVEL.parse().unwrap(),
    });
    let m = mirror(dir.path());
    let pull = config.pull.unwrap();
    let puller = Arc::new(Puller::new(pull.clone(), m, builder.clone(), host.deployer(), None).unwrap());
    Setup { _dir: dir, _host: host, remote, puller, dropped, builder, pull }
}

/// Journals a confirmed deployment of `rev` with `lock` (what `hostctl apply` leaves).
fn confirmed(s: &Setup, id: &str, rev: &str, lock: &LockId) {
    let request = DeploymentRequest {
        id: id.into(),
        toplevel: TOPLEVEL.parse().unwrap(),
        rev: Some(rev.into()),
        lock: Some(lock.clone()),
        mode: Mode::Switch,
        confirm_timeout: Duration::from_secs(0),
        health: Vec::new(),
        cache: None,
        commit_signature: None,
        retention: None,
        reboot: false,
    };
    let mut deployment = Deployment::queued(&request, None, 1);
    deployment.state = DeploymentState::Confirmed;
    s.puller.deployer.journal().insert_record(Record::new(deployment, request.confirm_timeout)).unwrap();
}

#[tokio::test]
async fn lock_policy_decides_on_a_temp_repo() {
    let s = setup("pinned");
    let a = s.remote.commit(&[("flake.lock", "L1"), ("flake.nix", "a")], None);
    let head = s.puller.fetch().await.unwrap();
    // Nothing pinned yet: the first commit is applied (and pins).
    assert_eq!(s.puller.plan(&head), Some(Some(lock_id(b"L1"))));
    confirmed(&s, "first", &a.to_string(), &lock_id(b"L1"));
    assert!(s.puller.settled(&head), "already running it");
    let b = s.remote.commit(&[("flake.lock", "L1"), ("flake.nix", "b")], Some(a));
    let head = s.puller.fetch().await.unwrap();
    assert_eq!(s.puller.plan(&head), Some(Some(lock_id(b"L1"))), "config-only commit applies");
    let c = s.remote.commit(&[("flake.lock", "L2"), ("flake.nix", "c")], Some(b));
    let head = s.puller.fetch().await.unwrap();
    assert_eq!(s.puller.plan(&head), None, "lock change is held");
    let status = s.puller.status(&s.puller.deployer.records());
    assert_eq!(status.pending_commit, Some(c.to_string()));
    assert_eq!(status.pending_lock, Some(lock_id(b"L2")));
    assert_eq!(status.fetched_commit, Some(c.to_string()));
    assert_eq!(status.applied_commit, Some(a.to_string()));
    // The operator deploys the new lock: no longer pending.
    confirmed(&s, "approved", &b.to_string(), &lock_id(b"L2"));
    let status = s.puller.status(&s.puller.deployer.records());
    assert_eq!((status.pending_commit, status.pending_lock), (None, None));
    assert_eq!(s.puller.plan(&head), Some(Some(lock_id(b"L2"))));
}

#[tokio::test]
async fn follow_applies_lock_changes() {
    let s = setup("follow");
    let a = s.remote.commit(&[("flake.lock", "L1")], None);
    confirmed(&s, "first", &a.to_string(), &lock_id(b"L1"));
    s.remote.commit(&[("flake.lock", "L2")], Some(a));
    let head = s.puller.fetch().await.unwrap();
    assert_eq!(s.puller.plan(&head), Some(Some(lock_id(b"L2"))));
    assert_eq!(s.puller.status(&[]).pending_commit, None);
}

#[tokio::test]
async fn a_newer_commit_supersedes_a_running_build() {
    let s = setup("pinned");
    let a = s.remote.commit(&[("flake.lock", "L1"), ("flake.nix", "a")], None);
    let head = s.puller.fetch().await.unwrap();
    *s.builder.slow_commit.lock().unwrap() = head.clone();
    let puller = Arc::clone(&s.puller);
    let building = tokio::spawn(async move { puller.build_newest(&head).await });
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    let b = s.remote.commit(&[("flake.lock", "L1"), ("flake.nix", "b")], Some(a));
    s.puller.trigger();
    let end = tokio::time::timeout(StdDuration::from_secs(10), building).await.unwrap().unwrap();
    assert_eq!(end, BuildEnd::Superseded(b.to_string()));
    assert!(s.dropped.load(Ordering::SeqCst), "the older build was dropped, not finished");
    // The newer one builds to completion and is what would be activated.
    assert_eq!(s.puller.build_newest(&b.to_string()).await, BuildEnd::Built(TOPLEVEL.parse().unwrap()));
    assert_eq!(s.puller.already_built(&a.to_string()), None);
}

#[tokio::test]
async fn a_wakeup_without_a_new_commit_keeps_the_build() {
    let s = setup("pinned");
    s.remote.commit(&[("flake.nix", "a")], None);
    let head = s.puller.fetch().await.unwrap();
    s.puller.trigger();
    assert_eq!(s.puller.build_newest(&head).await, BuildEnd::Built(TOPLEVEL.parse().unwrap()));
    assert!(!s.dropped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn force_push_is_reported_in_status() {
    let s = setup("pinned");
    let a = s.remote.commit(&[("flake.nix", "a")], None);
    s.puller.fetch().await;
    s.remote.commit(&[("flake.nix", "x")], None);
    assert_eq!(s.puller.fetch().await, Some(a.to_string()), "still the last good commit");
    let status = s.puller.status(&[]);
    assert!(status.last_error.unwrap_or_default().starts_with("force push refused: "));
    assert_eq!(status.fetched_commit, Some(a.to_string()));
    assert!(status.last_fetch.is_some());
}

/// Real Nix 2.8 on a private store, through the git2 mirror: a good flake evaluates and
/// reaches the build (which fails here: the sandbox has no `/bin/sh`, so the error must
/// name the build step), a broken one fails at evaluation. Full builds: e2e tests.
#[tokio::test]
async fn nix_builder_evaluates_at_the_fetched_commit() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Remote::new(&dir.path().join("remote.git"));
    let m = mirror(dir.path());
    let good = "{ outputs = { self }: { nixosConfigurations.web1.config.system.build.toplevel = derivation \
                { name = \"nixos-system-web1\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; args = [ ]; }; }; }";
    let a = remote.commit(&[("flake.nix", good)], None);
    let bad = "{ outputs = { self }: { nixosConfigurations.web1 = throw \"broken on purpose\"; }; }";
    let b = remote.commit(&[("flake.nix", bad)], Some(a));
    m.fetch(&remote.url(), false, None).unwrap();
    let config = parse_agent_config(
        &format!("hostname: web1\ntrusted_keys: [\"fleet-1:11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=\"]\npull:\n  url: {}\n", remote.url()),
        Path::new("agent.yaml"),
    )
    .unwrap();
    let store = format!("local?root={}", dir.path().join("root").display());
    let attr: AttrName = AttrName::from(&config.hostname);
    let builder = NixBuilder::new(Some(&store), config.pull.as_ref().unwrap(), m.path().to_owned(), attr);
    let err = builder.build(&b.to_string()).await.unwrap_err();
    assert_eq!(err.toplevel, None);
    let err = err.message;
    let first = err.lines().next().unwrap();
    assert!(
        first.starts_with("evaluating nixosConfigurations.web1 at ") && first.contains("broken on purpose"),
        "{err}"
    );
    assert!(err.contains("--no-update-lock-file"), "the whole Nix error follows: {err}");
    let err = builder.build(&a.to_string()).await.unwrap_err();
    assert!(err.toplevel.is_some_and(|t| t.as_str().ends_with("-nixos-system-web1")));
    let err = err.message;
    assert!(err.starts_with("building /nix/store/") && err.contains("nixos-system-web1.drv"), "{err}");
    assert!(err.lines().next().unwrap().contains("failed: error: "), "Nix's error line comes first: {err}");
    assert!(!m.path().join("flake.lock").exists(), "nothing written into the mirror");
}

/// An evaluation error is journaled as a failed deployment (the running system named as
/// its toplevel, nothing run); a new puller on the same journal (a restarted agent)
/// reports it and does not build it again; the next commit is built.
#[tokio::test]
async fn a_failed_build_is_journaled_and_not_retried_after_a_restart() {
    let s = setup("pinned");
    let a = s.remote.commit(&[("flake.lock", "L1"), ("flake.nix", "a")], None);
    confirmed(&s, "first", &a.to_string(), &lock_id(b"L1"));
    let b = s.remote.commit(&[("flake.lock", "L1"), ("flake.nix", "broken")], Some(a));
    *s.builder.failing_commit.lock().unwrap() = b.to_string();
    s.puller.round().await;
    let records = s.puller.deployer.records();
    let failed = records.iter().find(|r| r.deployment.rev.as_deref() == Some(&b.to_string())).unwrap();
    let d = &failed.deployment;
    assert_eq!((d.state, d.toplevel.as_str(), d.generation), (DeploymentState::Failed, TOPLEVEL, None));
    assert_eq!(d.error.as_deref(), Some(format!("evaluating at {b} failed: boom").as_str()));
    assert!(d.id.starts_with("pull-") && d.lock == Some(lock_id(b"L1")));
    assert!(s.puller.status(&records).last_error.unwrap().ends_with("failed: boom"));
    s.puller.round().await;
    assert_eq!(s.builder.builds.load(Ordering::SeqCst), 1, "not rebuilt by the next round");

    // A restarted agent: same journal and mirror, fresh memory.
    let mirror = Mirror::open(s.puller.mirror.path(), "main").unwrap();
    let deployer = Arc::clone(&s.puller.deployer);
    let restarted = Puller::new(s.pull.clone(), mirror, s.builder.clone(), deployer, None).unwrap();
    restarted.round().await;
    assert_eq!(s.builder.builds.load(Ordering::SeqCst), 1, "not rebuilt after a restart");
    let status = restarted.status(&restarted.deployer.records());
    assert_eq!(status.fetched_commit, Some(b.to_string()));
    assert!(status.last_error.unwrap().ends_with("failed: boom"), "the restarted agent reports the failure");
    let failures = restarted.deployer.records().iter().filter(|r| failed::is_build_failure(r)).count();
    assert_eq!(failures, 1);

    // The next commit is tried.
    let c = s.remote.commit(&[("flake.lock", "L1"), ("flake.nix", "fixed")], Some(b));
    restarted.fetch().await;
    assert_eq!(restarted.plan(&c.to_string()), Some(Some(lock_id(b"L1"))));
    assert_eq!(restarted.status(&[]).last_error, None);
}

/// Changes of the pull status are announced to the D-Bus service; a poll that finds
/// nothing new is not.
#[tokio::test]
async fn pull_status_changes_are_announced() {
    use crate::events::AgentEvent;
    let s = setup("pinned");
    let mut events = s.puller.deployer.events().subscribe();
    let a = s.remote.commit(&[("flake.lock", "L1")], None);
    s.puller.fetch().await;
    assert!(matches!(events.try_recv(), Ok(AgentEvent::Changed)), "a fetched commit is announced");
    s.puller.fetch().await;
    assert!(events.try_recv().is_err(), "a poll without news is not");
    confirmed(&s, "first", &a.to_string(), &lock_id(b"L1"));
    while events.try_recv().is_ok() {}
    let b = s.remote.commit(&[("flake.lock", "L2")], Some(a));
    s.puller.fetch().await;
    assert!(matches!(events.try_recv(), Ok(AgentEvent::Changed)));
    assert_eq!(s.puller.plan(&b.to_string()), None);
    assert!(matches!(events.try_recv(), Ok(AgentEvent::Changed)), "the pending lock change is announced");
    s.remote.commit(&[("flake.lock", "L2")], None);
    s.puller.fetch().await;
    assert!(matches!(events.try_recv(), Ok(AgentEvent::Changed)), "a refused force push (last_error) is announced");
}

/// A token in `pull.url` (`https://user:token@…`) stays on the host: status (and with it
/// D-Bus and /metrics) shows the URL with `***`, and a fetch error quoting it is redacted.
#[tokio::test]
async fn a_token_in_the_url_is_never_reported() {
    let dir = tempfile::tempdir().unwrap();
    // Port 9 (discard) on loopback: nothing listens, the fetch fails at once.
    let url = "http://oauth2:tok3n-SECRET@127.0.0.1:9/fleet.git";
    let yaml = format!(
        "hostname: web1\ntrusted_keys: [\"fleet-1:11qvTRDWRE4FY+wSqfVv05ieSwHGyyqjtCVE4B8/YKg=\"]\n\
         pull:\n  url: {url}\n  interval: 1h\n"
    );
    let config = parse_agent_config(&yaml, Path::new("agent.yaml")).unwrap();
    let host = TestHost::new();
    let builder = Arc::new(FakeBuilder {
        slow_commit: Mutex::new(String::new()),
        failing_commit: Mutex::new(String::new()),
        builds: AtomicUsize::new(0),
        dropped: Arc::new(AtomicBool::new(false)),
        toplevel: TOPLEVEL.parse().unwrap(),
    });
    let puller = Puller::new(config.pull.unwrap(), mirror(dir.path()), builder, host.deployer(), None).unwrap();
    assert_eq!(puller.fetch().await, None);
    let status = puller.status(&[]);
    assert_eq!(status.url, "http://oauth2:***@127.0.0.1:9/fleet.git");
    let error = status.last_error.unwrap();
    assert!(!error.is_empty() && !error.contains("tok3n-SECRET"), "{error}");
}

/// With `pull.commits` requiring signatures, an unsigned commit is refused before it is
/// built: journaled as a refused pull, shown in the status, not tried again next round.
#[tokio::test]
async fn an_unsigned_commit_is_refused_before_it_is_built() {
    use hostctl_schemas::api::deployments::EndReason;
    use hostctl_schemas::commits::{CommitPolicy, RefusalReason};
    let s = setup("follow");
    let a = s.remote.commit(&[("flake.lock", "L1")], None);
    confirmed(&s, "first", &a.to_string(), &lock_id(b"L1"));
    let signers = s._dir.path().join("allowed_signers");
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    std::fs::write(&signers, format!("alice@example.com {key}\n")).unwrap();
    let policy = CommitPolicy {
        require_signature: true,
        allowed_signers: Some(signers),
        since: Some(a.to_string()),
        ..CommitPolicy::default()
    };
    let deployer = Arc::clone(&s.puller.deployer);
    let puller = Puller::new(s.pull.clone(), mirror(s._dir.path()), s.builder.clone(), deployer, None)
        .unwrap()
        .with_trust(Some(Trust::load(&policy).unwrap()));
    let b = s.remote.commit(&[("flake.lock", "L1"), ("flake.nix", "b")], Some(a));
    puller.round().await;
    puller.round().await;
    assert_eq!(s.builder.builds.load(Ordering::SeqCst), 0, "nothing built");
    let refused = puller.status(&puller.deployer.records()).refused.unwrap();
    assert_eq!((refused.reason, refused.commit.clone()), (RefusalReason::Unsigned, b.to_string()));
    let records = puller.deployer.records();
    let journaled: Vec<_> =
        records.iter().filter(|r| r.deployment.end_reason == Some(EndReason::CommitRefused)).collect();
    assert_eq!(journaled.len(), 1, "journaled once");
    assert_eq!(journaled[0].deployment.commit_refusal.as_ref(), Some(&refused));
    assert_eq!(puller.outcomes().verify.map(|o| o.ok), Some(false));
}
