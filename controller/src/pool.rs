//! The evaluation pool: one `nix eval` process per host, at most N at once, where N
//! follows from cores and free memory (a real NixOS host costs ~0.6 GB in the evaluator).
//!
//! Processes rather than one evaluator for all hosts: an evaluation error or an
//! out-of-memory kill then costs one host, not the fleet, and memory is returned to the
//! system after each host.

use std::collections::BTreeMap;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;

use hostctl_nix::{FlakeRef, Nix, NixError, Toplevel};
use hostctl_schemas::ids::{AttrName, HostName};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Memory budgeted per evaluator process: the 0.58 GB peak measured for a real
/// nixpkgs 20.09 NixOS host, plus headroom.
pub const EVAL_WORKER_BYTES: u64 = 700 * 1024 * 1024;

/// One host to evaluate.
#[derive(Debug, Clone)]
pub struct EvalJob {
    pub host: HostName,
    pub attr: AttrName,
}

/// How many evaluations run at once: `requested` if given, else
/// min(cores, available memory / [`EVAL_WORKER_BYTES`]), at least 1, at most `jobs`.
pub fn pool_size(requested: Option<NonZeroUsize>, jobs: usize) -> usize {
    let auto = || {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let by_memory = mem_available().map_or(cores, |bytes| (bytes / EVAL_WORKER_BYTES) as usize);
        cores.min(by_memory)
    };
    let size = requested.map_or_else(auto, NonZeroUsize::get);
    size.min(jobs).max(1)
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Evaluates every job, `size` at a time. Each host gets its own result: one failing
/// evaluation never stops the others.
pub async fn evaluate(
    nix: Arc<Nix>,
    flake: &FlakeRef,
    jobs: Vec<EvalJob>,
    size: usize,
) -> BTreeMap<HostName, Result<Toplevel, NixError>> {
    let flake = flake.clone();
    evaluate_with(jobs, size, move |job| {
        let (nix, flake) = (nix.clone(), flake.clone());
        async move { nix.eval_toplevel(&flake, &job.attr).await }
    })
    .await
}

/// Runs `eval` for every job, `size` at a time (incremental evaluation passes a traced
/// evaluation); the futures start only when a worker is free.
pub async fn evaluate_with<F, Fut>(
    jobs: Vec<EvalJob>,
    size: usize,
    eval: F,
) -> BTreeMap<HostName, Result<Toplevel, NixError>>
where
    F: Fn(EvalJob) -> Fut,
    Fut: Future<Output = Result<Toplevel, NixError>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(size.max(1)));
    let mut set = JoinSet::new();
    for job in jobs {
        let (host, permits) = (job.host.clone(), permits.clone());
        let evaluation = eval(job);
        set.spawn(async move {
            // The semaphore is never closed, so acquiring can only fail if it were;
            // running unthrottled then is still correct.
            let _permit = permits.acquire_owned().await.ok();
            tracing::info!(host = %host, "evaluating");
            crate::progress::step(&host, "evaluating");
            let result = evaluation.await;
            crate::progress::step(&host, if result.is_ok() { "evaluated" } else { "evaluation failed" });
            (host, result)
        });
    }
    crate::tasks::collect_keyed(set, "evaluation").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_size_is_bounded() {
        assert_eq!(pool_size(NonZeroUsize::new(8), 3), 3);
        assert_eq!(pool_size(NonZeroUsize::new(2), 10), 2);
        assert_eq!(pool_size(None, 0), 1);
        let auto = pool_size(None, 1000);
        let cores = std::thread::available_parallelism().unwrap().get();
        assert!(auto >= 1 && auto <= cores, "{auto}");
    }

    #[test]
    fn reads_meminfo() {
        assert!(mem_available().unwrap() > 0);
    }
}
