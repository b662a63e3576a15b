//! Push mode's commit-signature policy (fleet.yaml `commits`, a host's own `commits`
//! replacing it; DESIGN.md "Commit signatures"): before `apply` evaluates anything, and
//! before `rollback` rebuilds a commit, each selected host's policy is checked against
//! the commit with `hostctl-commits`. A refusal for any host stops the command with exit
//! 2 before any host is contacted, unless `--allow-unsigned`, which deploys anyway and
//! says so in each such host's request (the agent journals it with the requesting key).
//! A required signature also refuses a dirty tree: what Nix would evaluate is no commit.

use std::collections::BTreeMap;

use git2::{Oid, Repository};
use hostctl_commits::Trust;
use hostctl_schemas::api::deployments::CommitSignature;
use hostctl_schemas::commits::{CommitPolicy, CommitRefusal, RefusalReason};
use hostctl_schemas::ids::HostName;

use crate::context::FleetContext;
use crate::error::Error;

/// The commit checked: HEAD of the flake's work tree (`apply`) or one found in its
/// history (`rollback` rebuilding a lock).
#[derive(Debug, Clone, Copy)]
pub enum Checked<'a> {
    Head,
    Commit(&'a str),
}

/// What each host's request says of the commit's signature (hosts without a policy
/// are left out). A refusal is an error unless `allow_unsigned`; then `warn` is told.
pub fn check(
    ctx: &FleetContext,
    hosts: &[HostName],
    commit: Checked<'_>,
    allow_unsigned: bool,
    warn: &mut dyn FnMut(&str),
) -> Result<BTreeMap<HostName, CommitSignature>, Error> {
    let mut verdicts: Vec<(CommitPolicy, Result<Option<CommitSignature>, CommitRefusal>)> = Vec::new();
    let mut signatures = BTreeMap::new();
    let mut refused: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in hosts {
        let Some(policy) = policy_of(ctx, name)? else { continue };
        let verdict = match verdicts.iter().find(|(p, _)| *p == policy) {
            Some((_, verdict)) => verdict.clone(),
            None => {
                let verdict = verdict(ctx, &policy, commit)?;
                verdicts.push((policy, verdict.clone()));
                verdict
            }
        };
        match verdict {
            Ok(Some(signature)) => {
                signatures.insert(name.clone(), signature);
            }
            Ok(None) => {}
            Err(refusal) => {
                refused.entry(refusal.message.clone()).or_default().push(name.to_string());
                signatures.insert(name.clone(), CommitSignature::AllowedUnsigned(refusal.message));
            }
        }
    }
    for (why, names) in &refused {
        let message = format!("refused by the commit-signature policy of {}: {why}", names.join(", "));
        if !allow_unsigned {
            return Err(Error::CommitRefused(format!(
                "{message}; nothing was changed (--allow-unsigned deploys it anyway)"
            )));
        }
        warn(&format!("{message}; deploying anyway (--allow-unsigned), recorded in each host's journal"));
    }
    Ok(signatures)
}

/// `rollback`'s check of a commit it rebuilds (found only once a host said 404, so per
/// host, while others may be rolling back already): a refusal fails that host.
#[derive(Debug, Clone)]
pub struct RebuildCheck {
    ctx_policies: BTreeMap<HostName, CommitPolicy>,
    source: Option<hostctl_nix::flake::FlakeSource>,
    fleet: std::path::PathBuf,
    allow_unsigned: bool,
}

impl RebuildCheck {
    /// The hosts' policies; an unusable one (see [`check`]) is bad input.
    pub fn new(ctx: &FleetContext, hosts: &[HostName], allow_unsigned: bool) -> Result<Self, Error> {
        let mut ctx_policies = BTreeMap::new();
        for name in hosts {
            if let Some(policy) = policy_of(ctx, name)? {
                ctx_policies.insert(name.clone(), policy);
            }
        }
        Ok(Self { ctx_policies, source: ctx.source.clone(), fleet: ctx.fleet_file.clone(), allow_unsigned })
    }

    /// What `host`'s request says of `commit`; the refusal (or an unusable policy) as text.
    pub fn commit(&self, host: &HostName, commit: &str) -> Result<Option<CommitSignature>, String> {
        let Some(policy) = self.ctx_policies.get(host) else { return Ok(None) };
        let git = self.source.as_ref().and_then(|s| s.git.as_ref());
        match verdict_at(&self.fleet, git, policy, Checked::Commit(commit)).map_err(|e| e.to_string())? {
            Ok(signature) => Ok(signature),
            Err(refusal) if self.allow_unsigned => Ok(Some(CommitSignature::AllowedUnsigned(refusal.message))),
            Err(refusal) => Err(format!(
                "refused by the commit-signature policy: {}; nothing was deployed (--allow-unsigned deploys it anyway)",
                refusal.message
            )),
        }
    }
}

/// A host's policy, key files relative to the fleet file; `None` if it checks nothing.
/// Tags naming different policies, or a required signature without keys, is bad input.
fn policy_of(ctx: &FleetContext, name: &HostName) -> Result<Option<CommitPolicy>, Error> {
    let Some((policy, key)) = hostctl_schemas::commits::host_policy(&ctx.fleet, name, &ctx.fleet_file)? else {
        return Ok(None);
    };
    policy.check(&ctx.fleet_file, &key)?;
    Ok(policy.is_active().then(|| policy.relative_to(ctx.fleet_dir())))
}

/// The policy's verdict on the commit; a key file it cannot use is bad input.
fn verdict(
    ctx: &FleetContext,
    policy: &CommitPolicy,
    commit: Checked<'_>,
) -> Result<Result<Option<CommitSignature>, CommitRefusal>, Error> {
    verdict_at(&ctx.fleet_file, ctx.source.as_ref().and_then(|s| s.git.as_ref()), policy, commit)
}

fn verdict_at(
    fleet: &std::path::Path,
    git: Option<&hostctl_nix::flake::GitState>,
    policy: &CommitPolicy,
    commit: Checked<'_>,
) -> Result<Result<Option<CommitSignature>, CommitRefusal>, Error> {
    let fleet = fleet.display();
    let trust = Trust::load(policy).map_err(|e| Error::CommitPolicy(format!("{fleet}: commits: {e}")))?;
    let Some(git) = git else {
        return Err(Error::CommitPolicy(format!(
            "{fleet}: commits: the flake is not a local git repository, so its commits cannot be checked"
        )));
    };
    let rev = match commit {
        Checked::Commit(rev) => rev.to_owned(),
        Checked::Head => git
            .rev
            .clone()
            .ok_or_else(|| Error::CommitPolicy(format!("{fleet}: commits: the repository has no commit to check")))?,
    };
    if matches!(commit, Checked::Head) && policy.require_signature && !git.is_clean() {
        let files: Vec<String> = git.dirty.iter().map(|p| p.display().to_string()).collect();
        return Ok(Err(CommitRefusal {
            reason: RefusalReason::DirtyTree,
            commit: rev.clone(),
            message: format!(
                "commit {rev}: the working tree has uncommitted changes ({}), which no signature covers",
                files.join(", ")
            ),
        }));
    }
    let unreadable =
        |e: git2::Error| Error::CommitPolicy(format!("{}: cannot read commit {rev}: {e}", git.workdir.display()));
    let repo = Repository::open(&git.workdir).map_err(unreadable)?;
    let oid = Oid::from_str(&rev).map_err(unreadable)?;
    Ok(trust.check(&repo, oid, hostctl_commits::unix_now()).map(|signer| signer.map(CommitSignature::Signed)))
}
