//! Rolling a fleet forward: hosts in batches (in order), the hosts of one batch in
//! parallel, and no further batch once failures exceed `max_failures`. Also the
//! dry run, which asks every host what it would need and changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use hostctl_schemas::ids::{HostName, StorePath};
use hostctl_schemas::inventory::{HealthCheck, Mode};
use hostctl_schemas::text::plural;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::deploy::{deploy_host, is_unchanged, DeploySettings, Outcome, Step};
use crate::host::Host;
use crate::progress;
use crate::push::{missing_paths, nar_total, LocalStore, PushError};
use crate::report::HostResult;

/// One host to deploy and the toplevel built for it.
#[derive(Debug)]
pub struct Target<H> {
    pub host: Arc<H>,
    pub toplevel: StorePath,
    /// The host's `health` checks from fleet.yaml.
    pub checks: Vec<HealthCheck>,
}

/// Batch size and failure tolerance of one rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Hosts per batch, at least 1.
    pub batch_size: usize,
    pub max_failures: u32,
    /// Hosts of a batch deployed at once, at least 1: bounds the controller's open
    /// connections, temp files and Nix processes however large the batch.
    pub parallel: usize,
}

/// Hosts worked on at once unless `--parallel` says otherwise.
pub const DEFAULT_PARALLEL: usize = 100;

/// Each host's outcome and the batch (1-based) it was in.
pub type RolloutResult = BTreeMap<HostName, (usize, Outcome)>;

/// Splits `targets` (in order) into batches of `batch_size`.
pub fn plan_batches<T>(targets: Vec<T>, batch_size: usize) -> Vec<Vec<T>> {
    let size = batch_size.max(1);
    let mut batches = Vec::new();
    let mut current = Vec::with_capacity(size);
    for t in targets {
        current.push(t);
        if current.len() == size {
            batches.push(std::mem::replace(&mut current, Vec::with_capacity(size)));
        }
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// The outcome of a host the rollout never reached.
fn skipped(failures: usize) -> Outcome {
    let mut o = Outcome::failed(
        Step::Deploy,
        format!("not attempted: rollout stopped after {}", plural(failures, "failure", "failures")),
    );
    o.result = HostResult::Skipped;
    o.step = None;
    o
}

/// Deploys batch after batch. `failed_before` counts hosts that already failed (eval,
/// build): they count against `max_failures` like failures during the rollout, so a
/// fleet with a broken configuration is not half deployed by default.
pub async fn roll_out<H, S>(
    targets: Vec<Target<H>>,
    store: Arc<S>,
    settings: Arc<DeploySettings>,
    policy: Policy,
    failed_before: usize,
) -> RolloutResult
where
    H: Host + 'static,
    S: LocalStore + 'static,
{
    let mut results = RolloutResult::new();
    let mut failures = failed_before;
    for (index, batch) in plan_batches(targets, policy.batch_size).into_iter().enumerate() {
        let number = index + 1;
        if failures > policy.max_failures as usize {
            for t in batch {
                results.insert(t.host.name().clone(), (number, skipped(failures)));
            }
            continue;
        }
        tracing::info!(batch = number, hosts = batch.len(), "deploying batch");
        let mut set = JoinSet::new();
        let permits = Arc::new(Semaphore::new(policy.parallel.max(1)));
        for t in batch {
            let (store, settings, permits) = (store.clone(), settings.clone(), permits.clone());
            set.spawn(async move {
                // Never closed, so acquiring only waits for a free slot.
                let _permit = permits.acquire_owned().await.ok();
                let started = std::time::Instant::now();
                let mut outcome = deploy_host(t.host.as_ref(), store.as_ref(), &t.toplevel, &t.checks, &settings).await;
                outcome.seconds = started.elapsed().as_secs_f64();
                (t.host.name().clone(), outcome)
            });
        }
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((name, outcome)) => {
                    if matches!(outcome.result, HostResult::Failed | HostResult::RolledBack) {
                        failures += 1;
                    }
                    let failed = matches!(outcome.result, HostResult::Failed | HostResult::RolledBack);
                    progress::finished(&name, finished_line(&outcome), failed, outcome.log_tail.as_deref());
                    results.insert(name, (number, outcome));
                }
                // A panicking task is a bug; its host is then missing from the results,
                // which the caller reports as a failure rather than hiding it.
                Err(e) => {
                    failures += 1;
                    tracing::error!("deployment task failed: {e}");
                }
            }
        }
    }
    results
}

/// `activated (generation 4)`, `failed at activate`, ...
pub fn finished_line(o: &Outcome) -> String {
    let result = serde_json::to_value(o.result).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    match (o.step, o.generation) {
        (Some(step), _) => format!("{result} at {}", step.as_str()),
        (None, Some(g)) => format!("{result} (generation {g})"),
        (None, None) => result,
    }
}

/// What a dry run found for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Unchanged { current: Option<String> },
    Activate { current: Option<String>, paths: usize, nar_bytes: u64 },
    Failed { step: Step, error: String },
}

/// Asks every host (in parallel) for its status and the paths it lacks: only reads.
pub async fn dry_run<H, S>(targets: Vec<Target<H>>, store: Arc<S>, mode: Mode) -> BTreeMap<HostName, Plan>
where
    H: Host + 'static,
    S: LocalStore + 'static,
{
    let mut set = JoinSet::new();
    for t in targets {
        let store = store.clone();
        set.spawn(async move {
            (t.host.name().clone(), plan_host(t.host.as_ref(), store.as_ref(), &t.toplevel, mode).await)
        });
    }
    crate::tasks::collect_keyed(set, "dry-run").await
}

async fn plan_host<H: Host, S: LocalStore>(host: &H, store: &S, toplevel: &StorePath, mode: Mode) -> Plan {
    let status = match host.status().await {
        Ok(s) => s,
        Err(e) => return Plan::Failed { step: Step::Connect, error: e.to_string() },
    };
    let current = status.toplevel;
    if is_unchanged(mode, current.as_deref(), toplevel) {
        return Plan::Unchanged { current };
    }
    let missing = match missing_paths(host, store, toplevel).await {
        Ok(m) => m,
        Err(e) => return Plan::Failed { step: Step::Push, error: push_error(host, e) },
    };
    match nar_total(store, &missing).await {
        Ok(nar_bytes) => Plan::Activate { current, paths: missing.len(), nar_bytes },
        Err(e) => Plan::Failed { step: Step::Push, error: push_error(host, e) },
    }
}

fn push_error<H: Host>(host: &H, e: PushError) -> String {
    match e {
        PushError::Host(e) => e.to_string(),
        PushError::Local(e) => format!("{}: {e}", host.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::{FakeHost, Script};
    use crate::push::tests_support::FakeStore;
    use hostctl_schemas::duration::Duration;
    use hostctl_schemas::inventory::Batch;

    // Orchestration over a fake transport (`host::fake::FakeHost`) and a fake store: it
    // checks batching and stopping, not HTTP. Real agents are covered end to end.

    fn fleet(scripts: &[(&str, Script)]) -> Vec<Arc<FakeHost>> {
        scripts.iter().map(|(n, s)| Arc::new(FakeHost::new(n, s.clone()))).collect()
    }

    fn targets(hosts: &[Arc<FakeHost>]) -> Vec<Target<FakeHost>> {
        hosts.iter().map(|h| Target { host: h.clone(), toplevel: FakeStore::toplevel(), checks: Vec::new() }).collect()
    }

    fn settings() -> Arc<DeploySettings> {
        let mut s = DeploySettings::new(Mode::Switch, Duration::from_secs(30));
        s.poll_interval = std::time::Duration::from_millis(1);
        Arc::new(s)
    }

    fn fresh() -> Script {
        Script { lacks: FakeStore.closure_paths(), ..Script::default() }
    }

    fn failing() -> Script {
        Script { unreachable: true, ..Script::default() }
    }

    /// [`FakeStore`] that records how many closure queries (one per pushing host) ran
    /// at once.
    #[derive(Default)]
    struct CountingStore {
        now: std::sync::atomic::AtomicUsize,
        max: std::sync::atomic::AtomicUsize,
    }

    impl LocalStore for CountingStore {
        async fn closure(&self, toplevel: &StorePath) -> Result<Vec<StorePath>, String> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.now.fetch_add(1, SeqCst) + 1;
            self.max.fetch_max(now, SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            self.now.fetch_sub(1, SeqCst);
            FakeStore.closure(toplevel).await
        }
        async fn nar_sizes(&self, paths: &[StorePath]) -> Result<BTreeMap<String, u64>, String> {
            FakeStore.nar_sizes(paths).await
        }
        async fn export(&self, paths: &[StorePath]) -> Result<crate::host::ExportBody, String> {
            FakeStore.export(paths).await
        }
    }

    #[tokio::test]
    async fn a_batch_deploys_at_most_parallel_hosts_at_once() {
        let hosts = fleet(&[("a", fresh()), ("b", fresh()), ("c", fresh()), ("d", fresh()), ("e", fresh())]);
        let store = Arc::new(CountingStore::default());
        let policy = Policy { batch_size: 5, max_failures: 0, parallel: 2 };
        let results = roll_out(targets(&hosts), store.clone(), settings(), policy, 0).await;
        assert!(results.values().all(|(_, o)| o.result == HostResult::Activated), "{results:?}");
        assert_eq!(store.max.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn four_hosts_at_fifty_percent_make_two_batches() {
        let size = Batch::Percent(50).size(4);
        assert_eq!(plan_batches(vec!["a", "b", "c", "d"], size), [vec!["a", "b"], vec!["c", "d"]]);
        assert_eq!(plan_batches(vec![1, 2, 3, 4, 5], Batch::Count(2).size(5)), [vec![1, 2], vec![3, 4], vec![5]]);
        assert_eq!(plan_batches(vec![1, 2, 3], Batch::Percent(100).size(3)), [vec![1, 2, 3]]);
        assert!(plan_batches(Vec::<u8>::new(), 1).is_empty());
    }

    #[tokio::test]
    async fn rollout_stops_when_failures_exceed_max() {
        let hosts = fleet(&[("a1", failing()), ("a2", fresh()), ("b1", fresh()), ("b2", fresh())]);
        let policy = Policy { batch_size: 2, max_failures: 0, parallel: DEFAULT_PARALLEL };
        let results = roll_out(targets(&hosts), Arc::new(FakeStore), settings(), policy, 0).await;
        let result = |n: &str| results[&n.parse::<HostName>().unwrap()].clone();
        assert_eq!(result("a1").1.result, HostResult::Failed);
        assert_eq!(result("a1").1.step, Some(Step::Connect));
        assert_eq!(result("a2").1.result, HostResult::Activated, "the batch finishes");
        for n in ["b1", "b2"] {
            let (batch, outcome) = result(n);
            assert_eq!((batch, outcome.result), (2, HostResult::Skipped));
            assert_eq!(outcome.error.as_deref(), Some("not attempted: rollout stopped after 1 failure"));
        }
        assert!(hosts[2].calls().is_empty() && hosts[3].calls().is_empty(), "skipped hosts are not contacted");
    }

    #[tokio::test]
    async fn unhealthy_host_is_rolled_back_and_stops_the_rollout() {
        let unhealthy =
            Script { needs_confirmation: true, probes: [Ok(503)].into_iter().collect(), ..Script::default() };
        let healthy = Script { needs_confirmation: true, ..Script::default() };
        let hosts = fleet(&[("a1", unhealthy), ("a2", healthy.clone()), ("b1", healthy)]);
        let mut check = HealthCheck::new(hostctl_schemas::inventory::HealthKind::Http("http://x/healthz".into()));
        check.retries = 0;
        let mut targets = targets(&hosts);
        for t in &mut targets {
            t.checks = vec![check.clone()];
        }
        let policy = Policy { batch_size: 2, max_failures: 0, parallel: DEFAULT_PARALLEL };
        let results = roll_out(targets, Arc::new(FakeStore), settings(), policy, 0).await;
        let result = |n: &str| results[&n.parse::<HostName>().unwrap()].1.clone();
        assert_eq!((result("a1").result, result("a1").step), (HostResult::RolledBack, Some(Step::Health)));
        assert_eq!(result("a2").result, HostResult::Activated, "its batch finishes");
        assert_eq!(result("b1").result, HostResult::Skipped, "the next batch is not started");
        assert!(hosts[0].calls().contains(&"rollback".to_owned()) && !hosts[0].calls().contains(&"confirm".to_owned()));
        assert!(hosts[2].calls().is_empty(), "skipped hosts are not contacted");
    }

    #[tokio::test]
    async fn rollout_goes_on_while_failures_are_tolerated() {
        let hosts = fleet(&[("a1", failing()), ("a2", fresh()), ("b1", failing()), ("b2", fresh()), ("c1", fresh())]);
        let policy = Policy { batch_size: 2, max_failures: 1, parallel: DEFAULT_PARALLEL };
        let results = roll_out(targets(&hosts), Arc::new(FakeStore), settings(), policy, 0).await;
        let kinds: Vec<(usize, HostResult)> = results.values().map(|(b, o)| (*b, o.result)).collect();
        use HostResult::*;
        assert_eq!(kinds, [(1, Failed), (1, Activated), (2, Failed), (2, Activated), (3, Skipped)]);
    }

    #[tokio::test]
    async fn earlier_failures_count_against_the_limit() {
        let hosts = fleet(&[("a1", fresh())]);
        let policy = Policy { batch_size: 1, max_failures: 0, parallel: DEFAULT_PARALLEL };
        let results = roll_out(targets(&hosts), Arc::new(FakeStore), settings(), policy, 1).await;
        assert_eq!(results.values().next().unwrap().1.result, HostResult::Skipped);
        assert!(hosts[0].calls().is_empty());
    }

    #[tokio::test]
    async fn dry_run_makes_no_mutating_calls() {
        let current = Script { current: Some(FakeStore::toplevel()), ..Script::default() };
        let hosts = fleet(&[("a1", fresh()), ("a2", current), ("a3", failing())]);
        let plans = dry_run(targets(&hosts), Arc::new(FakeStore), Mode::Switch).await;
        let plan = |n: &str| plans[&n.parse::<HostName>().unwrap()].clone();
        assert_eq!(plan("a1"), Plan::Activate { current: None, paths: 2, nar_bytes: 300 });
        assert_eq!(plan("a2"), Plan::Unchanged { current: Some(FakeStore::toplevel().to_string()) });
        assert!(matches!(plan("a3"), Plan::Failed { step: Step::Connect, .. }));
        for host in &hosts {
            for call in host.calls() {
                assert!(["status", "missing"].contains(&call.as_str()), "{}: mutating call {call}", host.name);
            }
        }
        assert_eq!(hosts[0].calls(), ["status", "missing"]);
    }
}
