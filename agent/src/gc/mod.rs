//! Garbage collection under a retention policy (`POST /v1/gc`, and after every confirmed
//! deployment): deletes the system profile's generations the policy does not keep, then
//! the store paths nothing keeps any more, and journals what went (`log.rs`).
//!
//! What is deleted is computed before anything is touched, the same way for a dry run
//! and a real one, so `--dry-run` reports exactly what a run then deletes: the paths dead
//! now plus the closures of the doomed generations, minus the closure of every GC root
//! that stays. Nix still refuses to delete anything alive (a root that appeared since).
//!
//! Invariant: never runs while a deployment is open (409), never deletes the current,
//! running, booted or newest confirmed system's generations (`plan.rs`), and only through
//! `hostctl_nix` (`nix-env --delete-generations`, `nix-store --delete`).

mod log;
mod plan;

use std::collections::BTreeSet;
use std::sync::Arc;

use hostctl_nix::{Nix, NixError};
use hostctl_schemas::api::deployments::DeploymentState;
use hostctl_schemas::api::gc::{GcGeneration, GcReport, GcRequest};
use hostctl_schemas::ids::StorePath;
use hostctl_schemas::retention::Retention;

use crate::deploy::Deployer;
use crate::events::AgentEvent;
use crate::journal::Record;
use crate::unix_now;
pub use log::GcLog;
use plan::{plan, Protected};

/// Why a collection did not run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// A deployment is open: its systems are in flight.
    #[error("deployment `{0}` is in progress: garbage is collected once it has ended")]
    Busy(String),
    #[error(transparent)]
    Nix(#[from] NixError),
    /// The profile, the running system or the journal could not be read.
    #[error("{0}")]
    Read(String),
}

/// Runs collections, one at a time.
#[derive(Debug)]
pub struct Collector {
    nix: Arc<Nix>,
    deployer: Arc<Deployer>,
    /// agent.yaml's `retention`.
    default_policy: Option<Retention>,
    log: GcLog,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Collector {
    pub fn new(nix: Arc<Nix>, deployer: Arc<Deployer>, default_policy: Option<Retention>, log: GcLog) -> Self {
        Self { nix, deployer, default_policy, log, one_at_a_time: tokio::sync::Mutex::new(()) }
    }

    pub fn log(&self) -> &GcLog {
        &self.log
    }

    /// Applies `request` now (or reports what it would delete, with `dry_run`).
    pub async fn run(&self, request: &GcRequest, after: Option<&str>) -> Result<GcReport, GcError> {
        let _one = self.one_at_a_time.lock().await;
        let records = self.deployer.records();
        if let Some(open) = records.iter().find(|r| r.is_open()) {
            return Err(GcError::Busy(open.deployment.id.clone()));
        }
        let (retention, policy_source) = self.policy(request.retention, &records, after);
        let protected = self.protected(&records)?;
        let generations = self.generations().await?;
        let (deleted, kept) = plan(generations, retention.as_ref(), &protected, unix_now());
        let doomed: Vec<StorePath> = self.doomed_paths(&deleted).await?.into_iter().collect();
        let bytes_freed = self.nix.total_nar_size(&doomed).await?;
        if !request.dry_run {
            let numbers: Vec<u64> = deleted.iter().map(|g| g.number).collect();
            self.nix.delete_generations(self.deployer.profile(), &numbers).await?;
            self.nix.delete_paths(&doomed).await?;
        }
        let report = GcReport {
            dry_run: request.dry_run,
            retention,
            policy_source,
            deleted_generations: deleted,
            kept_generations: kept,
            store_paths: doomed,
            bytes_freed,
            finished: unix_now(),
            after_deployment: after.map(str::to_owned),
        };
        if !request.dry_run {
            self.log.append(&report);
        }
        Ok(report)
    }

    /// The policy to apply and where it came from: the request's, the deployment's that
    /// started the run (else the newest confirmed one's), else agent.yaml's.
    fn policy(&self, asked: Option<Retention>, records: &[Record], after: Option<&str>) -> (Option<Retention>, String) {
        if let Some(policy) = asked {
            return (Some(policy), "request".to_owned());
        }
        let deployment = match after {
            Some(id) => records.iter().find(|r| r.deployment.id == id),
            None => newest_confirmed(records),
        };
        if let Some((policy, id)) = deployment.and_then(|r| Some((r.retention?, &r.deployment.id))) {
            return (Some(policy), format!("deployment {id}"));
        }
        match self.default_policy {
            Some(policy) => (Some(policy), "agent.yaml".to_owned()),
            None => (None, "none".to_owned()),
        }
    }

    fn protected(&self, records: &[Record]) -> Result<Protected, GcError> {
        let (running, _) = self.deployer.previous_systems().map_err(|e| GcError::Read(e.to_string()))?;
        // The deployer's booted-system link (`/run/booted-system`), which `reboot.rs` reads too.
        let booted_link = self.deployer.options.booted_system.as_deref();
        let booted = booted_link.and_then(|l| std::fs::read_link(l).ok()?.to_str()?.parse().ok());
        let mut deployments = BTreeSet::new();
        for r in records.iter().filter(|r| r.is_open()) {
            deployments.insert(r.deployment.toplevel.clone());
            deployments.extend(r.deployment.previous_toplevel.iter().chain(&r.previous_profile).cloned());
        }
        deployments.extend(newest_confirmed(records).map(|r| r.deployment.toplevel.clone()));
        let current = self.deployer.profile().current_generation().map_err(|e| GcError::Read(e.to_string()))?;
        Ok(Protected { running, booted, deployments, current })
    }

    /// The profile's generations with their systems and times.
    async fn generations(&self) -> Result<Vec<GcGeneration>, GcError> {
        let profile = self.deployer.profile();
        let mut generations = Vec::new();
        for line in self.nix.list_generations(profile).await? {
            let target = profile.generation_target(line.number);
            let target = target.map_err(|e| GcError::Read(format!("cannot read generation {}: {e}", line.number)))?;
            let Some(toplevel) = target else { continue };
            let time = crate::generations::generation_time(&profile.generation_link(line.number));
            generations.push(GcGeneration { number: line.number, toplevel, time, kept_because: Vec::new() });
        }
        Ok(generations)
    }

    /// What a collection deletes once `deleted` are gone: the paths dead now and the
    /// closures of `deleted`, minus the closure of every root that stays.
    async fn doomed_paths(&self, deleted: &[GcGeneration]) -> Result<BTreeSet<StorePath>, GcError> {
        let profile = self.deployer.profile();
        let gone: BTreeSet<(std::ffi::OsString, &StorePath)> = deleted
            .iter()
            .filter_map(|g| Some((profile.generation_link(g.number).file_name()?.to_owned(), &g.toplevel)))
            .collect();
        let staying: BTreeSet<StorePath> = self
            .nix
            .gc_roots()
            .await?
            .into_iter()
            .filter(|root| {
                let name = std::path::Path::new(&root.link).file_name().map(ToOwned::to_owned);
                !name.is_some_and(|name| gone.contains(&(name, &root.target)))
            })
            .map(|root| root.target)
            .collect();
        // Runtime roots (`/proc`) name what any process maps, also paths this store lacks.
        let mut staying: Vec<StorePath> = staying.into_iter().collect();
        let invalid: BTreeSet<String> = self.nix.invalid_paths(&staying).await?.into_iter().collect();
        staying.retain(|p| !invalid.contains(p.as_str()));
        let live: BTreeSet<StorePath> = self.nix.requisites(&staying).await?.into_iter().collect();
        let mut doomed = self.nix.dead_paths().await?;
        let tops: Vec<StorePath> = deleted.iter().map(|g| g.toplevel.clone()).collect();
        doomed.extend(self.nix.requisites(&tops).await?);
        doomed.retain(|p| !live.contains(p));
        Ok(doomed)
    }

    /// Collects after every confirmed deployment when a policy applies (the request's
    /// or agent.yaml's); a failure is logged and journaled nowhere else.
    pub fn run_after_confirmations(self: &Arc<Self>) {
        let mut receiver = self.deployer.events().subscribe();
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match receiver.recv().await {
                    Ok(AgentEvent::Deployment { previous, deployment })
                        if deployment.state == DeploymentState::Confirmed
                            && previous != Some(DeploymentState::Confirmed) =>
                    {
                        this.after_confirmation(&deployment.id).await;
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    async fn after_confirmation(&self, id: &str) {
        let own = self.deployer.records().into_iter().find(|r| r.deployment.id == id).and_then(|r| r.retention);
        if own.is_none() && self.default_policy.is_none() {
            return;
        }
        match self.run(&GcRequest::default(), Some(id)).await {
            Ok(report) => tracing::info!(
                deployment = id,
                generations = report.deleted_generations.len(),
                paths = report.store_paths.len(),
                bytes = report.bytes_freed,
                "collected garbage after a confirmed deployment"
            ),
            Err(e) => {
                tracing::warn!(deployment = id, error = %e, "garbage collection after a confirmed deployment failed")
            }
        }
    }
}

/// The newest confirmed deployment's record.
fn newest_confirmed(records: &[Record]) -> Option<&Record> {
    records.iter().filter(|r| r.deployment.state == DeploymentState::Confirmed).max_by_key(|r| r.seq)
}
