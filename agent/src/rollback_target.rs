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

use hostctl_schemas::api::deployments::DeploymentState;
use hostctl_schemas::api::rollback::RollbackTarget;
use hostctl_schemas::ids::{LockId, StorePath};
use hostctl_schemas::inventory::Mode;

use crate::activator::Activator;
use crate::deploy_error::DeployError;
use crate::journal::Record;

/// A resolved target: the system and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub toplevel: StorePath,
    pub rev: Option<String>,
    pub lock: Option<LockId>,
    /// For `rollback_of`, e.g. `lock 1f29ab12cd34/deployment web1-…`.
    pub description: String,
}

/// Resolves `POST /v1/rollback` targets from the journal's records and what the
/// activator reads (the profile's generations, the store).
#[derive(Debug, Clone, Copy)]
pub struct RollbackTargets<'a> {
    activator: &'a Activator,
}

impl<'a> RollbackTargets<'a> {
    pub fn new(activator: &'a Activator) -> Self {
        Self { activator }
    }

    /// The target's system, from the journal or the profile; 404 if there is none.
    pub fn resolve(&self, records: &[Record], to: &RollbackTarget) -> Result<Target, DeployError> {
        match to {
            RollbackTarget::Lock { lock } => {
                let found = confirmed(records).rev().find(|r| r.deployment.lock.as_ref() == Some(lock));
                let r = found.ok_or_else(|| {
                    DeployError::not_found(format!("no confirmed deployment with lock {lock} in this host's journal"))
                })?;
                Ok(from_record(r))
            }
            RollbackTarget::Generation { generation } => self.resolve_generation(records, *generation),
            RollbackTarget::Previous(_) => resolve_previous(records),
        }
    }

    fn resolve_generation(&self, records: &[Record], n: u64) -> Result<Target, DeployError> {
        let read_err = |e: std::io::Error| DeployError::internal(format!("cannot read generation {n}: {e}"));
        let toplevel = self.activator.profile().generation_target(n).map_err(read_err)?.ok_or_else(|| {
            DeployError::not_found(format!("generation {n} of the profile {} does not exist", self.activator.profile()))
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
    pub async fn check_still_valid(&self, target: &Target) -> Result<(), DeployError> {
        let invalid = self.activator.nix().invalid_paths(std::slice::from_ref(&target.toplevel)).await?;
        if !invalid.is_empty() || !self.activator.switch_program(&target.toplevel).is_file() {
            return Err(DeployError::not_found(format!(
                "the system of {} ({}) is no longer in this host's store (garbage-collected); \
                 rebuild it and deploy it instead",
                target.description, target.toplevel
            )));
        }
        Ok(())
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
fn resolve_previous(records: &[Record]) -> Result<Target, DeployError> {
    let current = confirmed(records)
        .next_back()
        .ok_or_else(|| DeployError::not_found("no confirmed deployment on this host, so no previous one"))?;
    let earlier =
        confirmed(records).rev().filter(|r| r.seq < current.seq).find(|r| r.deployment.lock != current.deployment.lock);
    if let Some(r) = earlier {
        return Ok(from_record(r));
    }
    let toplevel = current.deployment.previous_toplevel.clone().ok_or_else(|| {
        DeployError::not_found(format!(
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
