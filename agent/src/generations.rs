//! The system profile's generations joined with the journal: what `GET /v1/generations`
//! and D-Bus `Generations` answer, and which deployment made the running system (for the
//! status snapshot). Read-only.

use hostctl_nix::profile::GenerationLine;
use hostctl_nix::{Nix, NixError};
use hostctl_schemas::api::generations::{Generation, GenerationsResponse};
use hostctl_schemas::ids::StorePath;

use crate::deploy::Deployer;
use crate::journal::Record;
use crate::rollback_target::system_origin;

/// Why the generations could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum GenerationsError {
    #[error(transparent)]
    Nix(#[from] NixError),
    #[error("cannot read generation {number}: {source}")]
    Read {
        number: u64,
        #[source]
        source: std::io::Error,
    },
}

/// The profile's generations, newest first, each with the deployment that made it, and
/// the journaled deployments, newest first.
pub async fn list(nix: &Nix, deployer: &Deployer) -> Result<GenerationsResponse, GenerationsError> {
    let profile = deployer.profile();
    let lines = nix.list_generations(profile).await?;
    let records = deployer.records();
    let mut generations = Vec::with_capacity(lines.len());
    for line in lines.iter().rev() {
        let read_err = |source| GenerationsError::Read { number: line.number, source };
        let Some(toplevel) = profile.generation_target(line.number).map_err(read_err)? else {
            // Gone since `nix-env` listed it, or not pointing into the store.
            continue;
        };
        let time = generation_time(profile.generation_link(line.number).as_path());
        generations.push(join_generation(line, toplevel, time, &records));
    }
    let deployments = records.into_iter().rev().map(|r| r.deployment).collect();
    Ok(GenerationsResponse { generations, deployments })
}

/// Nix dates a generation by its link's mtime (and prints it in local time, which the
/// agent cannot convert reliably), so read the mtime itself.
pub(crate) fn generation_time(link: &std::path::Path) -> u64 {
    std::fs::symlink_metadata(link)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// A generation with the deployment that created it, if the journal has one: the
/// deployment that set the profile to it, or the one whose rollback did (then `rev` and
/// `lock` are those of the system it returned to, from the deployment that made it).
pub fn join_generation(line: &GenerationLine, toplevel: StorePath, time: u64, records: &[Record]) -> Generation {
    let made_by = made_generation(records, line.number, &toplevel);
    let rolled_back = made_by.is_none().then(|| rollback_generation(records, line.number, &toplevel)).flatten();
    let identity = made_by.or_else(|| rolled_back.and_then(|_| system_origin(records, &toplevel)));
    let creator = made_by.or(rolled_back);
    Generation {
        number: line.number,
        current: line.current,
        deployment: creator.map(|r| r.deployment.id.clone()),
        rev: identity.and_then(|r| r.deployment.rev.clone()),
        lock: identity.and_then(|r| r.deployment.lock.clone()),
        result: creator.map(|r| r.deployment.state),
        mode: creator.map(|r| r.deployment.mode),
        toplevel,
        time,
    }
}

/// The deployment whose own `nix-env --set` made generation `n` (pointing at `toplevel`).
fn made_generation<'a>(records: &'a [Record], n: u64, toplevel: &StorePath) -> Option<&'a Record> {
    records.iter().rev().find(|r| r.deployment.generation == Some(n) && &r.deployment.toplevel == toplevel)
}

/// The deployment whose rollback made generation `n` (pointing at its previous system).
fn rollback_generation<'a>(records: &'a [Record], n: u64, toplevel: &StorePath) -> Option<&'a Record> {
    records.iter().rev().find(|r| {
        r.rollback.as_ref().is_some_and(|run| run.generation == Some(n))
            && r.deployment.previous_toplevel.as_ref() == Some(toplevel)
    })
}

/// The deployment that the system of generation `n` (`toplevel`) comes from: the one that
/// made the generation, or, for a generation a rollback made, the newest confirmed
/// deployment of that system.
pub(crate) fn system_of_generation<'a>(records: &'a [Record], n: u64, toplevel: &StorePath) -> Option<&'a Record> {
    made_generation(records, n, toplevel)
        .or_else(|| rollback_generation(records, n, toplevel).and_then(|_| system_origin(records, toplevel)))
}
