//! Pulled commits that could not be built (evaluation or build failed, or the deployer
//! refused the system) are journaled as failed deployments: `hostctl history` and
//! `GET /v1/generations` show the commit with its error, and a restarted agent finds
//! them there and does not build the same commit again.
//!
//! Such a record ran nothing: state `failed`, phase `done`, no activation, generation or
//! exit code. Its `toplevel` is the system the commit evaluated to when evaluation
//! worked; when evaluation itself failed there is none, so it is the system that kept
//! running (`previous_toplevel`), which says "nothing changed". No new journal fields:
//! older agents load these records as ordinary failed deployments.

use hostctl_schemas::api::deployments::{Deployment, DeploymentState};
use hostctl_schemas::duration::Duration;
use hostctl_schemas::ids::{LockId, StorePath};

use super::apply::{request, BuildFailure};
use crate::journal::{Phase, Record};

/// Prefix of every deployment id pull mode makes.
pub const ID_PREFIX: &str = "pull-";

/// The journal record of a commit that failed before anything ran; `None` when there is
/// no store path to name (nothing evaluated and nothing running).
pub fn record(
    commit: &str,
    lock: Option<LockId>,
    failure: &BuildFailure,
    (running, profile): (Option<StorePath>, Option<StorePath>),
    now: u64,
) -> Option<Record> {
    let toplevel = failure.toplevel.clone().or_else(|| running.clone())?;
    let mut deployment = Deployment::queued(&request(commit, lock, toplevel, now), running, now);
    deployment.state = DeploymentState::Failed;
    deployment.finished = Some(now);
    deployment.error = Some(failure.message.clone());
    let mut record = Record::new(deployment, Duration::from_secs(0));
    record.phase = Phase::Done;
    record.previous_profile = profile;
    Some(record)
}

/// Whether `record` is a pull deployment that failed before anything ran (see the
/// module documentation).
pub fn is_build_failure(record: &Record) -> bool {
    let d = &record.deployment;
    d.id.starts_with(ID_PREFIX)
        && d.state == DeploymentState::Failed
        && record.activation.is_none()
        && record.rollback.is_none()
        && d.generation.is_none()
        && d.exit_code.is_none()
}

/// The newest commit that failed that way, with its error: what a restarted agent
/// reports as `last_error` while its branch still points there.
pub fn last_failure(records: &[Record]) -> Option<(String, String)> {
    let record = records.iter().filter(|r| is_build_failure(r)).max_by_key(|r| r.seq)?;
    let d = &record.deployment;
    Some((d.rev.clone()?, d.error.clone().unwrap_or_default()))
}

/// Whether pull mode deployed `commit` before (activated, failed or refused): such a
/// commit is not tried again until the branch moves, or a failing commit would be
/// rebuilt (or re-activated and rolled back) every round.
pub fn tried(records: &[Record], commit: &str) -> bool {
    records.iter().any(|r| r.deployment.rev.as_deref() == Some(commit) && r.deployment.id.starts_with(ID_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-web1";
    const BUILT: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-web1";

    #[test]
    fn failure_records() {
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let eval = BuildFailure { message: "evaluating failed: boom".into(), toplevel: None };
        let systems = (Some(RUNNING.parse().unwrap()), Some(RUNNING.parse().unwrap()));
        let r = record(commit, None, &eval, systems.clone(), 7).unwrap();
        let d = &r.deployment;
        assert_eq!(
            (d.id.as_str(), d.state, d.toplevel.as_str()),
            ("pull-0123456789ab-7", DeploymentState::Failed, RUNNING)
        );
        assert_eq!(
            (d.previous_toplevel.as_ref().map(|p| p.as_str()), d.error.as_deref()),
            (Some(RUNNING), Some("evaluating failed: boom"))
        );
        assert_eq!((r.phase, d.finished), (Phase::Done, Some(7)));
        assert!(is_build_failure(&r) && tried(std::slice::from_ref(&r), commit));
        assert_eq!(
            last_failure(std::slice::from_ref(&r)),
            Some((commit.to_owned(), "evaluating failed: boom".to_owned()))
        );

        let build = BuildFailure { message: "building failed".into(), toplevel: Some(BUILT.parse().unwrap()) };
        assert_eq!(record(commit, None, &build, systems, 8).unwrap().deployment.toplevel.as_str(), BUILT);
        assert!(record(commit, None, &eval, (None, None), 9).is_none(), "nothing to name");

        let mut activated = r.clone();
        activated.deployment.exit_code = Some(2);
        assert!(!is_build_failure(&activated));
        assert_eq!(last_failure(&[activated]), None);
    }
}
