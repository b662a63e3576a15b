//! Commit-signature checking, the one place both sides use: the agent before it builds a
//! pulled commit, `hostctl apply`/`rollback` before they deploy one. Given a repository,
//! a commit and a [`CommitPolicy`], it returns the commit's [`Signer`] or a typed
//! [`CommitRefusal`] (DESIGN.md, "Commit signatures").
//!
//! git2 reads the commit's signature and the signed payload (`extract_signature`);
//! `ssh-key` checks SSH signatures and `pgp` OpenPGP ones; this crate parses only the
//! `allowed_signers` configuration file. Invariant: it never changes a repository, and
//! a commit passes only if a configured key verifies it.

pub mod allowed_signers;
pub mod openpgp;
mod ssh;

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};
use hostctl_schemas::commits::{CommitPolicy, CommitRefusal, RefusalReason, Signer};

pub use allowed_signers::{AllowedSigners, SignersError};
pub use openpgp::Keyring;

/// Why one commit fails, before it is placed in a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    reason: RefusalReason,
    why: String,
}

impl Failure {
    pub(crate) fn new(reason: RefusalReason, why: String) -> Self {
        Self { reason, why }
    }

    fn about(self, commit: Oid) -> CommitRefusal {
        CommitRefusal {
            reason: self.reason,
            commit: commit.to_string(),
            message: format!("commit {commit}: {}", self.why),
        }
    }
}

/// A policy's key file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{}: cannot read: {source}", file.display())]
    Read { file: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Signers(#[from] SignersError),
    #[error("{}: {message}", file.display())]
    Keyring { file: PathBuf, message: String },
}

/// The keys a policy trusts, read from its files, with the policy.
#[derive(Debug, Clone)]
pub struct Trust {
    policy: CommitPolicy,
    ssh: Option<AllowedSigners>,
    openpgp: Option<Keyring>,
}

fn read(file: &Path) -> Result<String, TrustError> {
    std::fs::read_to_string(file).map_err(|source| TrustError::Read { file: file.to_owned(), source })
}

impl Trust {
    /// Reads the policy's `allowed_signers` and `openpgp_keyring` (paths as given).
    pub fn load(policy: &CommitPolicy) -> Result<Self, TrustError> {
        let ssh = match &policy.allowed_signers {
            Some(file) => Some(AllowedSigners::parse(&read(file)?, file)?),
            None => None,
        };
        let openpgp = match &policy.openpgp_keyring {
            Some(file) => Some(
                Keyring::parse(&read(file)?, file)
                    .map_err(|message| TrustError::Keyring { file: file.to_owned(), message })?,
            ),
            None => None,
        };
        Ok(Self { policy: policy.clone(), ssh, openpgp })
    }

    pub fn policy(&self) -> &CommitPolicy {
        &self.policy
    }

    /// The signer of `commit` if one of the keys verifies it (the commit alone).
    pub fn verify_commit(&self, repo: &Repository, commit: Oid, now: i64) -> Result<Signer, CommitRefusal> {
        self.verify_one(repo, commit, now).map_err(|f| f.about(commit))
    }

    fn verify_one(&self, repo: &Repository, commit: Oid, now: i64) -> Result<Signer, Failure> {
        let unreadable = |e: git2::Error| Failure::new(RefusalReason::BadSignature, format!("cannot read it: {e}"));
        let (signature, payload) = match repo.extract_signature(&commit, None) {
            Ok(pair) => pair,
            Err(e) if e.code() == git2::ErrorCode::NotFound => {
                // Also what git2 says of a commit that is missing altogether.
                repo.find_commit(commit).map_err(unreadable)?;
                return Err(Failure::new(RefusalReason::Unsigned, "it is not signed".into()));
            }
            Err(e) => return Err(unreadable(e)),
        };
        let signature: &[u8] = &signature;
        if signature.starts_with(b"-----BEGIN SSH SIGNATURE-----") {
            let time = repo.find_commit(commit).map_err(unreadable)?.committer().when().seconds();
            ssh::verify(self.ssh.as_ref(), signature, &payload, time, now)
        } else if signature.starts_with(b"-----BEGIN PGP SIGNATURE-----") {
            openpgp::verify(self.openpgp.as_ref(), signature, &payload, now)
        } else {
            Err(Failure::new(RefusalReason::BadSignature, "its signature is neither SSH nor OpenPGP (x509?)".into()))
        }
    }

    /// What the policy says of deploying `head`: `Ok(Some(signer))` when it is signed by
    /// a trusted key (and, with `require_signature`, so is every first-parent ancestor
    /// after `since`); `Ok(None)` when nothing is required and it does not verify (or
    /// the policy names no keys); the refusal otherwise, about the newest failing commit.
    pub fn check(&self, repo: &Repository, head: Oid, now: i64) -> Result<Option<Signer>, CommitRefusal> {
        if !self.policy.is_active() {
            return Ok(None);
        }
        let signer = self.verify_commit(repo, head, now);
        if !self.policy.require_signature {
            return Ok(signer.ok());
        }
        let signer = signer?;
        self.check_chain(repo, head, now)?;
        Ok(Some(signer))
    }

    /// Every first-parent ancestor of `head` after `since` (all of them without it). The
    /// chain is read first, so a `since` off the chain is reported as such.
    fn check_chain(&self, repo: &Repository, head: Oid, now: i64) -> Result<(), CommitRefusal> {
        let since = match &self.policy.since {
            Some(since) => Some(Oid::from_str(since).map_err(|e| {
                Failure::new(RefusalReason::SinceNotFound, format!("`since` {since} is not a commit id: {e}"))
                    .about(head)
            })?),
            None => None,
        };
        for ancestor in first_parents(repo, head, since)?.into_iter().skip(1) {
            self.verify_one(repo, ancestor, now).map_err(|f| {
                let mut refusal = f.about(ancestor);
                refusal.message = format!("chain broken at {ancestor}: {}", refusal.message);
                refusal.reason = RefusalReason::ChainBroken;
                refusal
            })?;
        }
        Ok(())
    }
}

/// `head` and its first-parent ancestors, newest first, down to the commit after `since`
/// (to the root without it).
fn first_parents(repo: &Repository, head: Oid, since: Option<Oid>) -> Result<Vec<Oid>, CommitRefusal> {
    let mut chain = Vec::new();
    let mut current = head;
    loop {
        if Some(current) == since {
            return Ok(chain);
        }
        chain.push(current);
        let commit = repo.find_commit(current).map_err(|e| {
            Failure::new(RefusalReason::ChainBroken, format!("cannot read commit {current}: {e}")).about(head)
        })?;
        match (commit.parent_id(0), since) {
            (Ok(parent), _) => current = parent,
            (Err(_), None) => return Ok(chain),
            (Err(_), Some(since)) => {
                return Err(Failure::new(
                    RefusalReason::SinceNotFound,
                    format!("`since` {since} is not a first-parent ancestor of it"),
                )
                .about(head))
            }
        }
    }
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
