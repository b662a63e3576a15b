//! The pipeline every command that needs systems shares: evaluate the selected hosts
//! (from the evaluation cache, incrementally, or in a worker pool), check each result
//! against the inventory, then build them. Takes typed options and a [`Selection`];
//! it never sees the command line, and never imports a command module.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use hostctl_nix::{Nix, NixError, Toplevel};
use hostctl_schemas::ids::{AttrName, HostName, StorePath};

use crate::build::build_all;
use crate::context::FleetContext;
use crate::deploy::Step;
use crate::error::Error;
use crate::evalcache::EvalCache;
use crate::incremental::Incremental;
use crate::pool::{evaluate, evaluate_with, pool_size, EvalJob};
use crate::select::Selection;

/// How to evaluate: `--eval-jobs` and `--no-eval-cache`.
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    /// Evaluations at once; `None` sizes the pool from cores and free memory.
    pub jobs: Option<NonZeroUsize>,
    /// Whether cached and incrementally reused evaluations may be used.
    pub cache: bool,
}

pub type Evaluated = BTreeMap<HostName, Result<Toplevel, String>>;

/// Evaluates the selected hosts and checks each result against the inventory.
pub async fn eval_selected(
    opts: &EvalOptions,
    ctx: &FleetContext,
    nix: Arc<Nix>,
    selection: &Selection,
) -> Result<Evaluated, Error> {
    nix_runs(&nix).await?;
    let nix_for_errors = nix.clone();
    let hosts = selection.hosts();
    let jobs: Vec<EvalJob> = hosts
        .iter()
        .filter_map(|name| {
            let host = ctx.fleet.hosts.get(name)?;
            Some(EvalJob { host: name.clone(), attr: host.configuration_attr(name) })
        })
        .collect();
    let cache = eval_cache(opts, ctx, &nix).await;
    let incremental = Incremental::new(ctx, &cache).map(Arc::new);
    let (mut raw, jobs) = cached_results(&nix, &cache, incremental.as_deref(), jobs).await;
    if !jobs.is_empty() {
        let size = pool_size(opts.jobs, jobs.len());
        tracing::info!(hosts = jobs.len(), workers = size, cached = raw.len(), "evaluating");
        let attrs: BTreeMap<HostName, AttrName> = jobs.iter().map(|j| (j.host.clone(), j.attr.clone())).collect();
        let results = match incremental {
            // Traced, so the next commit can reuse what did not change.
            Some(inc) => {
                let flake = ctx.flake.clone();
                evaluate_with(jobs, size, move |job| {
                    let (inc, nix, flake) = (inc.clone(), nix.clone(), flake.clone());
                    async move { inc.evaluate(nix, flake, job).await }
                })
                .await
            }
            None => evaluate(nix, &ctx.flake, jobs, size).await,
        };
        for (name, result) in results {
            if let (Ok(toplevel), Some(attr)) = (&result, attrs.get(&name)) {
                cache.put(attr, toplevel);
            }
            raw.insert(name, result);
        }
    }
    refuse_stale_lock(ctx, &raw)?;
    let mut evaluated = BTreeMap::new();
    for name in hosts {
        let result = match raw.remove(name) {
            Some(Ok(toplevel)) => check_system(ctx, name, toplevel),
            Some(Err(e)) => Err(eval_error(ctx, &nix_for_errors, name, &e).await),
            None => Err(format!("host {name}: evaluation did not finish")),
        };
        evaluated.insert(name.clone(), result);
    }
    Ok(evaluated)
}

/// Refuses the whole run, once, when Nix cannot be started at all (every host would fail
/// with the same `cannot run nix`); any other version problem is left to the evaluations.
pub async fn nix_runs(nix: &Nix) -> Result<(), Error> {
    match nix.version().await {
        Err(NixError::Spawn { argv, source }) => Err(Error::NixMissing { argv, source }),
        _ => Ok(()),
    }
}

/// What Nix says when `flake.lock` lacks or has other inputs than `flake.nix` declares
/// (evaluation runs with `--no-update-lock-file`), in Nix 2.8 and 2.26 alike.
const STALE_LOCK: &str = "requires lock file changes";

/// A stale `flake.lock` fails every host alike: one whole-run error with Nix's message
/// instead of the same message once per host.
fn refuse_stale_lock(ctx: &FleetContext, raw: &BTreeMap<HostName, Result<Toplevel, NixError>>) -> Result<(), Error> {
    let stale = raw.values().find_map(|r| r.as_ref().err()?.nix_message().filter(|m| m.contains(STALE_LOCK)));
    match stale {
        Some(message) => {
            let dir = ctx.source.as_ref().map_or_else(|| ctx.flake.to_string(), |s| s.dir.display().to_string());
            let lock = format!("{dir}/flake.lock");
            Err(Error::StaleLock { lock, dir, message: message.trim_end().to_owned() })
        }
        None => Ok(()),
    }
}

/// The evaluation cache for this run (disabled by `--no-eval-cache`, a dirty tree, or a
/// Nix whose version cannot be read).
async fn eval_cache(opts: &EvalOptions, ctx: &FleetContext, nix: &Nix) -> EvalCache {
    if !opts.cache {
        return EvalCache::disabled();
    }
    match nix.version().await {
        Ok(version) => EvalCache::for_fleet(ctx, &version.to_string(), nix.store()),
        Err(_) => EvalCache::disabled(),
    }
}

/// Splits `jobs` into results taken from `cache` or reused by incremental evaluation
/// (only those whose `.drv` is still in the store) and the jobs still to evaluate.
async fn cached_results(
    nix: &Nix,
    cache: &EvalCache,
    incremental: Option<&Incremental>,
    jobs: Vec<EvalJob>,
) -> (BTreeMap<HostName, Result<Toplevel, NixError>>, Vec<EvalJob>) {
    if !cache.is_enabled() {
        return (BTreeMap::new(), jobs);
    }
    let (hits, mut misses): (Vec<_>, Vec<_>) =
        jobs.into_iter().map(|job| (cache.get(&job.attr), job)).partition(|(hit, _)| hit.is_some());
    let mut hits: Vec<(EvalJob, Toplevel)> = hits.into_iter().filter_map(|(hit, job)| Some((job, hit?))).collect();
    let mut reused = BTreeMap::new();
    if let Some(inc) = incremental {
        let jobs: Vec<EvalJob> = misses.drain(..).map(|(_, job)| job).collect();
        reused = inc.reuse(&jobs).await;
        for job in jobs {
            match reused.get(&job.host) {
                Some(record) => hits.push((job, record.toplevel())),
                None => misses.push((None, job)),
            }
        }
    }
    let drvs: Vec<StorePath> = hits.iter().map(|(_, t)| t.drv_path.clone()).collect();
    // A collected .drv cannot be built: those hosts are evaluated again. If the store
    // cannot be asked, nothing cached is trusted.
    let invalid = match nix.invalid_paths(&drvs).await {
        Ok(invalid) => invalid,
        Err(_) => drvs.iter().map(ToString::to_string).collect(),
    };
    let mut found = BTreeMap::new();
    for (job, toplevel) in hits {
        if invalid.iter().any(|p| p == toplevel.drv_path.as_str()) {
            misses.push((None, job));
        } else {
            if let (Some(inc), Some(record)) = (incremental, reused.remove(&job.host)) {
                inc.adopt(&job.attr, record);
            }
            found.insert(job.host, Ok(toplevel));
        }
    }
    tracing::info!(hosts = found.len(), "evaluations taken from the cache");
    (found, misses.into_iter().map(|(_, job)| job).collect())
}

/// Nix's own message, prefixed with the host, plus a hint when the cause is an untracked file.
async fn eval_error(ctx: &FleetContext, nix: &Nix, name: &HostName, error: &hostctl_nix::NixError) -> String {
    let message = error.nix_message().map_or_else(|| error.to_string(), str::to_owned);
    let message = ctx.local_paths(nix, &message).await;
    let mut text = format!("host {name}: evaluation failed:\n{message}");
    if let Some(hint) = ctx.explain_nix_error(&message) {
        text.push('\n');
        text.push_str(&hint);
    }
    text
}

/// An inventory `system` must match what the configuration evaluates to.
fn check_system(ctx: &FleetContext, name: &HostName, toplevel: Toplevel) -> Result<Toplevel, String> {
    let expected = ctx.fleet.hosts.get(name).and_then(|h| h.system.as_ref());
    match (expected, toplevel.system.as_deref()) {
        (Some(want), Some(got)) if want.as_str() != got => Err(format!(
            "host {name}: {} says system {want}, but the configuration evaluates to {got}",
            ctx.fleet_file.display()
        )),
        _ => Ok(toplevel),
    }
}

/// A host that failed before anything was deployed: the step and the message.
#[derive(Debug, Clone)]
pub struct Failure {
    pub step: Step,
    pub message: String,
}

pub type Built = BTreeMap<HostName, Result<Toplevel, Failure>>;

/// Evaluates and builds the selected hosts; each host gets its own result.
pub async fn eval_and_build(
    opts: &EvalOptions,
    ctx: &FleetContext,
    nix: Arc<Nix>,
    selection: &Selection,
) -> Result<Built, Error> {
    let evaluated = eval_selected(opts, ctx, nix.clone(), selection).await?;
    let targets: BTreeMap<HostName, Toplevel> =
        evaluated.iter().filter_map(|(h, r)| Some((h.clone(), r.as_ref().ok()?.clone()))).collect();
    tracing::info!(hosts = targets.len(), "building");
    let mut built = build_all(&nix, &targets).await?;
    let fail = |step, message| Err(Failure { step, message });
    Ok(evaluated
        .into_iter()
        .map(|(name, result)| {
            let result = match (result, built.remove(&name)) {
                (Ok(t), Some(Ok(()))) => Ok(t),
                (Ok(_), Some(Err(log))) => fail(Step::Build, format!("host {name}: build failed:\n{log}")),
                (Ok(_), None) => fail(Step::Build, format!("host {name}: build did not run")),
                (Err(message), _) => fail(Step::Eval, message),
            };
            (name, result)
        })
        .collect())
}
