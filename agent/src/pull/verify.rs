//! The signature policy in pull mode (`pull.commits`, DESIGN.md "Commit signatures"):
//! a fetched commit is checked before anything of it is evaluated. A refused commit is
//! journaled like a build failure (state `failed`, nothing run) with end reason
//! `commit-refused` and its typed `commit_refusal`, so `history` shows it, `status` shows
//! it as `pull.refused`, and neither this agent nor a restarted one tries it again; the
//! host keeps what it runs until a later commit passes.

use std::sync::Arc;

use git2::{Oid, Repository};
use hostctl_commits::Trust;
use hostctl_schemas::agent_config::PullConfig;
use hostctl_schemas::api::deployments::EndReason;
use hostctl_schemas::commits::{CommitRefusal, RefusalReason, Signer};
use hostctl_schemas::ids::StorePath;

use super::apply::BuildFailure;
use super::{ended, failed, Puller};
use crate::journal::Record;
use crate::unix_now;

/// The policy's keys, read from their files; `None` when no policy checks anything.
pub fn load_trust(pull: &PullConfig) -> Result<Option<Trust>, String> {
    match &pull.commits {
        Some(policy) if policy.is_active() => Trust::load(policy).map(Some).map_err(|e| format!("pull.commits: {e}")),
        _ => Ok(None),
    }
}

/// The journal record of a refused commit: a failed pull deployment that ran nothing,
/// naming the running system (nothing changed); `None` when nothing runs yet.
pub fn record(
    commit: &str,
    refusal: &CommitRefusal,
    systems: (Option<StorePath>, Option<StorePath>),
    now: u64,
) -> Option<Record> {
    let failure = BuildFailure { message: refusal.message.clone(), toplevel: None };
    let mut record = failed::record(commit, None, &failure, systems, now)?;
    record.deployment.end_reason = Some(EndReason::CommitRefused);
    record.deployment.commit_refusal = Some(refusal.clone());
    Some(record)
}

/// Checks `commit` of `repo` against `trust` (git2 and the signature checks block).
fn check(repo: &std::path::Path, trust: &Trust, commit: &str) -> Result<Option<Signer>, CommitRefusal> {
    let unreadable = |e: git2::Error| CommitRefusal {
        reason: RefusalReason::BadSignature,
        commit: commit.to_owned(),
        message: format!("commit {commit}: cannot read it from the pull repository: {e}"),
    };
    let repo = Repository::open(repo).map_err(unreadable)?;
    let oid = Oid::from_str(commit).map_err(unreadable)?;
    trust.check(&repo, oid, hostctl_commits::unix_now())
}

impl Puller {
    /// Whether `commit` may be built, with its signer: `Err` when the policy refused it
    /// (journaled and shown; see the module documentation).
    pub(super) async fn admit(&self, commit: &str) -> Result<Option<Signer>, ()> {
        let Some(trust) = self.trust.clone() else { return Ok(None) };
        let (repo, id) = (self.mirror.path().to_owned(), commit.to_owned());
        let checked = tokio::task::spawn_blocking(move || check(&repo, &Arc::clone(&trust), &id)).await;
        let result = checked.unwrap_or_else(|e| {
            Err(CommitRefusal {
                reason: RefusalReason::Other,
                commit: commit.to_owned(),
                message: format!("commit {commit}: the signature check failed: {e}"),
            })
        });
        match result {
            Ok(signer) => {
                self.update(|s| {
                    s.outcomes.verify = ended(true);
                    s.refused = None;
                });
                Ok(signer)
            }
            Err(refusal) => {
                self.refuse(commit, refusal);
                Err(())
            }
        }
    }

    /// Remembers and journals a refused commit; the running system stays.
    fn refuse(&self, commit: &str, refusal: CommitRefusal) {
        tracing::error!(commit, reason = refusal.reason.as_str(), error = %refusal.message, "pull: commit refused by the signature policy; the running system is unchanged");
        self.update(|s| {
            s.outcomes.verify = ended(false);
            s.last_error = Some(refusal.message.clone());
            s.failed = Some((commit.to_owned(), refusal.message.clone()));
            s.refused = Some(refusal.clone());
        });
        self.journal_failure(commit, |systems| record(commit, &refusal, systems, unix_now()));
    }
}
