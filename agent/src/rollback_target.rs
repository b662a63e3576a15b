//! `POST /v1/rollback` (`hostctl_schemas::api::rollback` documents it): find the system
//! to return to in the journal or the profile, and deploy it like any other system, with
//! the confirmation window and health checks of a deployment.
//!
//! Targets:
//! - `{"lock": L}`: the newest confirmed deployment with lock L;
//! - `{"generation": N}`: what generation N of the profile points at;
//! - `"previous"`: the newest confirmed deployment before the current one (the newest
//!   confirmed one that changed the system) whose lock differs from the current one's;
//!   if none does, the system the current one replaced (its `previous_toplevel`).
//!
//! A target whose system is no longer valid in the store is a 404 that says so: the
//! controller then rebuilds it from the flake's history and deploys it. While a
//! deployment awaits confirmation, `"previous"` rolls *that* deployment back at once
//! (it ends `rolled-back`, "rolled back on request") and returns it; other targets are a
//! 409 until it is confirmed or rolled back, as is any request while one is activating.

use std::sync::Arc;

use hostctl_schemas::api::deployments::{Deployment, DeploymentRequest, DeploymentState, EndReason};
use hostctl_schemas::api::rollback::{RollbackRequest, RollbackTarget};
use hostctl_schemas::ids::{LockId, StorePath};
use hostctl_schemas::inventory::Mode;

use crate::deploy::{check_id, state_name, Deployer};
use crate::error::ApiFailure;
use crate::journal::Record;
use crate::transition::Failure;
use crate::unix_now;

/// A resolved target: the system and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub toplevel: StorePath,
    pub rev: Option<String>,
    pub lock: Option<LockId>,
    /// For `rollback_of`, e.g. `lock 1f29ab12cd34/deployment web1-…`.
    pub description: String,
}

impl Deployer {
    /// Handles `POST /v1/rollback`: 202 with the rollback's deployment (or with the
    /// pending deployment that is now being rolled back).
    pub async fn rollback(self: &Arc<Self>, request: RollbackRequest) -> Result<Deployment, ApiFailure> {
        if let Some(id) = &request.id {
            check_id(id)?;
            if let Some(existing) = self.journal().get(id) {
                return match &existing.rollback_target {
                    Some(target) if *target == request.to => Ok(existing.deployment.clone()),
                    _ => Err(ApiFailure::conflict(format!("deployment `{id}` exists with other content"))),
                };
            }
        }
        let records = self.records();
        if let Some(open) = records.iter().find(|r| r.is_open()) {
            return self.rollback_open(open, &request.to);
        }
        let target = self.resolve(&records, &request.to)?;
        self.check_still_valid(&target).await?;
        let record = self.rollback_record(&records, &request, target)?;
        self.accept(record)
    }

    /// A rollback request while a deployment is open.
    fn rollback_open(self: &Arc<Self>, open: &Record, to: &RollbackTarget) -> Result<Deployment, ApiFailure> {
        let id = &open.deployment.id;
        let state = open.deployment.state;
        if state == DeploymentState::AwaitingConfirmation && matches!(to, RollbackTarget::Previous(_)) {
            let reason = Failure::new(EndReason::RollbackRequested, "rolled back on request");
            if self.roll_back_pending(id, reason) {
                return self.get(id).ok_or_else(|| ApiFailure::internal(format!("deployment `{id}` vanished")));
            }
            return Err(ApiFailure::conflict(format!("deployment `{id}` just left awaiting-confirmation; ask again")));
        }
        let hint = if state == DeploymentState::AwaitingConfirmation {
            "; roll it back with \"previous\" or confirm it first"
        } else {
            "; wait for it to finish"
        };
        Err(ApiFailure::conflict(format!("deployment `{id}` is {}{hint}", state_name(state))))
    }

    /// The target's system, from the journal or the profile; 404 if there is none.
    pub fn resolve(&self, records: &[Record], to: &RollbackTarget) -> Result<Target, ApiFailure> {
        match to {
            RollbackTarget::Lock { lock } => {
                let found = confirmed(records).rev().find(|r| r.deployment.lock.as_ref() == Some(lock));
                let r = found.ok_or_else(|| {
                    ApiFailure::not_found(format!("no confirmed deployment with lock {lock} in this host's journal"))
                })?;
                Ok(from_record(r))
            }
            RollbackTarget::Generation { generation } => self.resolve_generation(records, *generation),
            RollbackTarget::Previous(_) => resolve_previous(records),
        }
    }

    fn resolve_generation(&self, records: &[Record], n: u64) -> Result<Target, ApiFailure> {
        let read_err = |e: std::io::Error| ApiFailure::internal(format!("cannot read generation {n}: {e}"));
        let toplevel = self.profile.generation_target(n).map_err(read_err)?.ok_or_else(|| {
            ApiFailure::not_found(format!("generation {n} of the profile {} does not exist", self.profile))
        })?;
        let origin = system_origin(records, &toplevel);
        let description = match origin {
            Some(r) => format!("generation {n}/deployment {}", r.deployment.id),
            None => format!("generation {n}"),
        };
        Ok(Target {
            rev: origin.and_then(|r| r.deployment.rev.clone()),
            lock: origin.and_then(|r| r.deployment.lock.clone()),
            toplevel,
            description,
        })
    }

    /// 404 unless the target's system is still valid in the store.
    async fn check_still_valid(&self, target: &Target) -> Result<(), ApiFailure> {
        let invalid = self.nix.invalid_paths(std::slice::from_ref(&target.toplevel)).await?;
        if !invalid.is_empty() || !self.switch_program(&target.toplevel).is_file() {
            return Err(ApiFailure::not_found(format!(
                "the system of {} ({}) is no longer in this host's store (garbage-collected); \
                 rebuild it and deploy it instead",
                target.description, target.toplevel
            )));
        }
        Ok(())
    }

    /// The journal record of the rollback deployment: mode switch, the target's identity,
    /// the request's (or the agent's) window, the newest deployment's health checks.
    fn rollback_record(
        &self,
        records: &[Record],
        request: &RollbackRequest,
        target: Target,
    ) -> Result<Record, ApiFailure> {
        let id = match &request.id {
            Some(id) => id.clone(),
            None => format!("rollback-{}-{}", unix_now(), self.journal().next_seq()),
        };
        let confirm_timeout = request.confirm_timeout.unwrap_or(self.options.confirm_timeout);
        let deployment_request = DeploymentRequest {
            id,
            toplevel: target.toplevel,
            rev: target.rev,
            lock: target.lock,
            mode: Mode::Switch,
            confirm_timeout,
            health: Vec::new(),
            cache: None,
        };
        let (running, profile) = self.previous_systems()?;
        let mut deployment = Deployment::queued(&deployment_request, running, unix_now());
        deployment.rollback_of = Some(target.description);
        let mut record = Record::new(deployment, confirm_timeout);
        record.previous_profile = profile;
        // The inventory's command checks for this host came with its latest deployment.
        record.health = records.last().map(|r| r.health.clone()).unwrap_or_default();
        record.rollback_target = Some(request.to.clone());
        Ok(record)
    }
}

/// Confirmed deployments that changed the system (`dry-activate` changes nothing), oldest
/// first.
fn confirmed(records: &[Record]) -> impl DoubleEndedIterator<Item = &Record> {
    records
        .iter()
        .filter(|r| r.deployment.state == DeploymentState::Confirmed && r.deployment.mode != Mode::DryActivate)
}

fn from_record(r: &Record) -> Target {
    let d = &r.deployment;
    let description = match &d.lock {
        Some(lock) => format!("lock {}/deployment {}", short(lock), d.id),
        None => format!("deployment {}", d.id),
    };
    Target { toplevel: d.toplevel.clone(), rev: d.rev.clone(), lock: d.lock.clone(), description }
}

/// `"previous"`: see the module documentation.
fn resolve_previous(records: &[Record]) -> Result<Target, ApiFailure> {
    let current = confirmed(records)
        .next_back()
        .ok_or_else(|| ApiFailure::not_found("no confirmed deployment on this host, so no previous one"))?;
    let earlier =
        confirmed(records).rev().filter(|r| r.seq < current.seq).find(|r| r.deployment.lock != current.deployment.lock);
    if let Some(r) = earlier {
        return Ok(from_record(r));
    }
    let toplevel = current.deployment.previous_toplevel.clone().ok_or_else(|| {
        ApiFailure::not_found(format!(
            "nothing before deployment `{}`: no earlier confirmed deployment has another lock, and it was the host's first system",
            current.deployment.id
        ))
    })?;
    let origin = system_origin(records, &toplevel);
    Ok(Target {
        rev: origin.and_then(|r| r.deployment.rev.clone()),
        lock: origin.and_then(|r| r.deployment.lock.clone()),
        toplevel,
        description: format!("the system before deployment {}", current.deployment.id),
    })
}

/// The newest confirmed deployment of `toplevel`: where that system's rev and lock come
/// from.
pub fn system_origin<'a>(records: &'a [Record], toplevel: &StorePath) -> Option<&'a Record> {
    confirmed(records).rev().find(|r| &r.deployment.toplevel == toplevel)
}

/// The short form of a lock id (its first 12 characters, as printed everywhere).
fn short(lock: &LockId) -> String {
    lock.to_string().chars().take(12).collect()
}

#[cfg(test)]
#[path = "rollback_target_tests.rs"]
mod tests;
