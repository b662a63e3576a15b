//! `hostctl rollback HOST... [--to-lock LOCK|REV] [--generation N]`: returns hosts to an
//! earlier system, each independently and in parallel.
//!
//! First every host's history (`GET /v1/generations`) is read and every target
//! resolved ([`crate::rollback_target`]); one that names nothing stops the command with
//! exit 2 before any host is changed. Then per host: `POST /v1/rollback`, followed like
//! a deployment ([`crate::deploy::follow`]: health gate, confirmation over a new
//! connection). When the agent answers 404 (the system is gone from its store) and the
//! target is a lock, the host is rebuilt from git at that lock ([`crate::rebuild`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use hostctl_nix::flake::{FlakeRepo, FlakeSource};
use hostctl_nix::Nix;
use hostctl_schemas::api::generations::GenerationsResponse;
use hostctl_schemas::api::rollback::{RollbackRequest, RollbackTarget};
use hostctl_schemas::ids::{HostName, StorePath};
use hostctl_schemas::inventory::HealthCheck;
use schemars::JsonSchema;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::client::{deployment_id, HttpHost};
use crate::context::FleetContext;
use crate::deploy::{follow, DeploySettings, Outcome, Step};
use crate::deploy_report::{self, OutcomeFields};
use crate::error::Error;
use crate::host::{Host, HostError};
use crate::rebuild::{FlakeRebuild, Rebuild};
use crate::report::{short_rev, Fields, HostReport, HostResult, Report};
use crate::rollback_target::{resolve, GitHistory, Resolved, Wanted};
use crate::{health, progress, Output};

/// `rollback`'s options: hosts known to the inventory (sorted, each once) and what to
/// return them to.
#[derive(Debug, Clone)]
pub struct RollbackOptions {
    pub hosts: Vec<HostName>,
    pub wanted: Wanted,
    /// Rebuild a commit the signature policy refuses (recorded on the host).
    pub allow_unsigned: bool,
}

/// A `rollback` entry's own fields: `apply`'s (without `batch`) plus where the host went.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RollbackFields {
    #[serde(flatten)]
    pub outcome: OutcomeFields,
    /// The agent no longer had the system: it was rebuilt from git.
    pub rebuilt: bool,
    /// The system the host returned to, when it did.
    pub rolled_back_to: Option<Landed>,
    /// What the agent was asked to return to; null when it was never asked.
    pub target: Option<RollbackTarget>,
}

impl Fields for RollbackFields {
    fn log_tail(&self) -> Option<&str> {
        self.outcome.log_tail.as_deref()
    }
}

/// Where a host ended up: `rolled_back_to` in the JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Landed {
    pub toplevel: String,
    pub lock: Option<String>,
    pub rev: Option<String>,
}

/// One host's rollback.
#[derive(Debug, Clone)]
pub struct HostRollback {
    pub outcome: Outcome,
    /// The system it returned to, when it did (`activated` or `unchanged`).
    pub landed: Option<Landed>,
    /// The system the rollback activated or tried to (for `toplevel`).
    pub toplevel: Option<StorePath>,
    /// The agent no longer had the system: it was rebuilt from git.
    pub rebuilt: bool,
}

/// Runs `rollback`; the hosts are in the inventory and the signing key has been read.
pub async fn rollback(
    opts: RollbackOptions,
    ctx: &FleetContext,
    nix: Arc<Nix>,
    out: &mut Output,
) -> Result<Report<RollbackFields>, Error> {
    let mut report = Report { tally: true, ..Report::default() };
    // Checked before any host is asked: a policy that cannot be used is bad input.
    let commits = crate::commit_policy::RebuildCheck::new(ctx, &opts.hosts, opts.allow_unsigned)?;
    let mut hosts = BTreeMap::new();
    for name in &opts.hosts {
        match ctx.agent(name)? {
            Ok(h) => {
                hosts.insert(name.clone(), Arc::new(h));
            }
            Err(e) => {
                report.hosts.insert(name.to_string(), failed_entry(Step::Connect, e.to_string()));
            }
        }
    }
    let mut known = BTreeMap::new();
    for (name, history) in histories(&hosts).await {
        match history {
            Ok(h) => {
                known.insert(name, h);
            }
            Err(e) => {
                report.hosts.insert(name.to_string(), failed_entry(Step::Connect, e.to_string()));
            }
        }
    }
    let plans = resolve_all(ctx.source.clone(), opts.wanted, known).await?;
    let settings = Arc::new(DeploySettings::new(ctx.fleet.defaults.mode, ctx.fleet.defaults.confirm_timeout));
    let checks: BTreeMap<HostName, Vec<HealthCheck>> =
        plans.keys().map(|n| (n.clone(), ctx.health_checks(n))).collect();
    for warning in
        health::warnings(checks.iter().map(|(n, c)| (n, c.as_slice())), settings.mode, settings.confirm_timeout)
    {
        out.warn(&warning);
    }
    let rebuild = Arc::new(FlakeRebuild {
        nix: nix.clone(),
        source: ctx.source.clone(),
        hosts: plans.keys().filter_map(|n| Some((n.clone(), attr_and_system(ctx, n)?))).collect(),
        commits,
    });
    let mut results = run_all(&plans, &hosts, &checks, settings, rebuild).await;
    for (name, plan) in &plans {
        let entry = match results.remove(name) {
            Some(r) => {
                keep_landed(ctx, &nix, name, r.landed.as_ref(), out).await;
                entry(plan, &r)
            }
            None => failed_entry(Step::Rollback, format!("{name}: internal error: no result")),
        };
        report.hosts.insert(name.to_string(), entry);
    }
    Ok(report)
}

/// Keeps what the host returned to (and what it ran before) in this store
/// (`deployed_roots.rs`), when it is here.
async fn keep_landed(ctx: &FleetContext, nix: &Nix, name: &HostName, landed: Option<&Landed>, out: &mut Output) {
    let Some(toplevel) = landed.and_then(|l| l.toplevel.parse::<StorePath>().ok()) else { return };
    if let Err(e) = crate::deployed_roots::keep_if_present(nix, &ctx.fleet_file, name, &toplevel).await {
        out.warn(&format!("{name}: {e}"));
    }
}

/// Every planned host's rollback, in parallel.
async fn run_all(
    plans: &BTreeMap<HostName, Resolved>,
    hosts: &BTreeMap<HostName, Arc<HttpHost>>,
    checks: &BTreeMap<HostName, Vec<HealthCheck>>,
    settings: Arc<DeploySettings>,
    rebuild: Arc<FlakeRebuild>,
) -> BTreeMap<HostName, HostRollback> {
    let mut set = JoinSet::new();
    for (name, plan) in plans {
        let (Some(host), Some(checks)) = (hosts.get(name).cloned(), checks.get(name).cloned()) else { continue };
        let (plan, settings, rebuild) = (plan.clone(), settings.clone(), rebuild.clone());
        set.spawn(async move {
            let started = std::time::Instant::now();
            let mut r = run_host(host.as_ref(), &plan, &checks, &settings, rebuild.as_ref()).await;
            r.outcome.seconds = started.elapsed().as_secs_f64();
            let o = &r.outcome;
            let failed = matches!(o.result, HostResult::Failed | HostResult::RolledBack);
            progress::finished(host.name(), crate::rollout::finished_line(o), failed, o.log_tail.as_deref());
            (host.name().clone(), r)
        });
    }
    crate::tasks::collect_keyed(set, "rollback").await
}

fn attr_and_system(
    ctx: &FleetContext,
    name: &HostName,
) -> Option<(hostctl_schemas::ids::AttrName, Option<hostctl_schemas::ids::System>)> {
    let host = ctx.fleet.hosts.get(name)?;
    Some((host.configuration_attr(name), host.system.clone()))
}

/// Every host's history, asked in parallel.
async fn histories(
    hosts: &BTreeMap<HostName, Arc<HttpHost>>,
) -> BTreeMap<HostName, Result<GenerationsResponse, HostError>> {
    let mut set = JoinSet::new();
    for (name, host) in hosts {
        let (name, host) = (name.clone(), host.clone());
        set.spawn(async move { (name, host.generations().await) });
    }
    crate::tasks::collect_keyed(set, "history").await
}

/// Resolves every host's target; any that names nothing fails the whole command (exit
/// 2) before a host is changed, with every host's message.
async fn resolve_all(
    source: Option<FlakeSource>,
    wanted: Wanted,
    histories: BTreeMap<HostName, GenerationsResponse>,
) -> Result<BTreeMap<HostName, Resolved>, Error> {
    // git2 is blocking, and a lock search may read thousands of commits.
    let resolved = tokio::task::spawn_blocking(move || {
        let repo = match &source {
            Some(source) if source.git.is_some() => FlakeRepo::open(source).map_err(|e| e.to_string()),
            Some(source) => Err(format!("{} is not in a git work tree", source.dir.display())),
            None => Err("the flake is not a local directory".to_owned()),
        };
        let git = repo.as_ref().map(|r| r as &dyn GitHistory).map_err(Clone::clone);
        histories.iter().map(|(name, h)| (name.clone(), resolve(name, &wanted, h, git.clone()))).collect::<Vec<_>>()
    })
    .await
    .map_err(|e| Error::Target(format!("resolving the rollback targets failed: {e}")))?;
    let mut plans = BTreeMap::new();
    let mut unknown = Vec::new();
    for (name, result) in resolved {
        match result {
            Ok(plan) => {
                plans.insert(name, plan);
            }
            Err(Error::Target(message)) => unknown.push(message),
            Err(e) => return Err(e),
        }
    }
    if unknown.is_empty() {
        Ok(plans)
    } else {
        Err(Error::Target(unknown.join("\n")))
    }
}

/// One host: ask the agent; rebuild from git if it no longer has a lock's system.
pub async fn run_host<H: Host, R: Rebuild>(
    host: &H,
    plan: &Resolved,
    checks: &[HealthCheck],
    settings: &DeploySettings,
    rebuild: &R,
) -> HostRollback {
    let name = host.name();
    progress::step(name, format!("rolling back to {}", plan.describe));
    let request = RollbackRequest {
        to: plan.to.clone(),
        id: Some(deployment_id(name)),
        confirm_timeout: Some(settings.confirm_timeout),
        health_failure: None,
    };
    let failed = |message: String| HostRollback {
        outcome: Outcome::failed(Step::Rollback, message),
        landed: None,
        toplevel: None,
        rebuilt: false,
    };
    match host.rollback(&request).await {
        Ok(started) => {
            let mut outcome = Outcome::new(HostResult::Activated);
            outcome.previous_toplevel = started.previous_toplevel.as_ref().map(ToString::to_string);
            let (outcome, last) = follow(host, outcome, &started.id, checks, settings).await;
            let d = last.unwrap_or(started);
            let landed = (outcome.result == HostResult::Activated).then(|| Landed {
                toplevel: d.toplevel.to_string(),
                lock: d.lock.as_ref().map(ToString::to_string),
                rev: d.rev.clone(),
            });
            HostRollback { outcome, landed, toplevel: Some(d.toplevel), rebuilt: false }
        }
        Err(e) if e.status() == Some(404) => {
            let Some(lock) = &plan.lock else { return failed(e.to_string()) };
            let r = rebuild.rebuild(host, lock, plan.rev_hint.as_deref(), checks, settings).await;
            let ok = matches!(r.outcome.result, HostResult::Activated | HostResult::Unchanged);
            let landed = r.toplevel.as_ref().filter(|_| ok).map(|t| Landed {
                toplevel: t.to_string(),
                lock: Some(lock.to_string()),
                rev: r.commit.clone(),
            });
            HostRollback { outcome: r.outcome, landed, toplevel: r.toplevel, rebuilt: true }
        }
        Err(e) => failed(e.to_string()),
    }
}

/// A host's entry: `apply`'s fields (without `batch`) plus `target`, `rolled_back_to`
/// and `rebuilt`; `rev`/`lock`/`toplevel` are those of the system returned to.
fn entry(plan: &Resolved, r: &HostRollback) -> HostReport<RollbackFields> {
    let toplevel =
        r.landed.as_ref().map(|l| l.toplevel.clone()).or_else(|| r.toplevel.as_ref().map(ToString::to_string));
    let (rev, lock) = match &r.landed {
        Some(l) => (l.rev.clone(), l.lock.clone()),
        None => (None, plan.lock.as_ref().map(ToString::to_string)),
    };
    let mut e = HostReport::new(r.outcome.result, rev, lock).with(RollbackFields {
        outcome: OutcomeFields::new(&r.outcome),
        rebuilt: r.rebuilt,
        rolled_back_to: r.landed.clone(),
        target: Some(plan.to.clone()),
    });
    e.summary = Some(deploy_report::summary(&r.outcome, toplevel.as_deref()));
    e.toplevel = toplevel;
    e.error = r.outcome.error.clone();
    if let Some(l) = &r.landed {
        let short = |v: &Option<String>| v.as_deref().map_or("-".to_owned(), |v| v.chars().take(12).collect());
        let how = if r.rebuilt { ", rebuilt from git" } else { "" };
        let rev = l.rev.as_deref().map_or_else(|| "-".to_owned(), short_rev);
        e.summary = Some(format!("{} (lock {}, rev {rev}{how})", l.toplevel, short(&l.lock)));
    }
    e
}

fn failed_entry(step: Step, message: String) -> HostReport<RollbackFields> {
    let outcome = Outcome::failed(step, message);
    let mut e = HostReport::new(HostResult::Failed, None, None).with(RollbackFields {
        outcome: OutcomeFields::new(&outcome),
        rebuilt: false,
        rolled_back_to: None,
        target: None,
    });
    e.summary = Some(deploy_report::summary(&outcome, None));
    e.error = outcome.error;
    e
}

#[cfg(test)]
#[path = "rollback_tests.rs"]
mod tests;
