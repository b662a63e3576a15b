//! A deployment that arrived as a file (`hostctl bundle`, carried to a host without
//! network, handed over by `hostctl-agent import FILE`; served as `POST /v1/bundles` by
//! `crate::http::bundles`). The bundle is its own authentication (`hostctl_schemas::api::bundles`): a trusted key signed its header,
//! which names this host and the export's hash. It then goes the usual way: the same
//! all-or-nothing import as `POST /v1/paths/import`, the same journaled deployment and
//! rollback as `POST /v1/deployments`, without a confirmation window (no controller will
//! confirm; the agent's own health checks still gate it).
//!
//! Invariant: nothing is imported before the signature, the host name, the age and the
//! export's hash and length have all been checked.

use std::sync::Arc;

use hostctl_schemas::agent_config::{AgentConfig, PublicKey};
use hostctl_schemas::api::bundles::{verify_header, BundleError, Manifest, MAGIC, MAX_MANIFEST, MAX_SIGNATURE};
use hostctl_schemas::api::deployments::{Deployment, DeploymentRequest, DeploymentState, Requester};
use hostctl_schemas::duration::Duration;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::deploy::Deployer;
use crate::deploy_error::DeployError;
use crate::import::{ImportError, Importer};

/// How often a started bundle deployment is checked until it ends.
const POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The longest a bundle's header (magic, manifest, signature lines) can be.
const MAX_HEAD: usize = MAGIC.len() + MAX_MANIFEST + MAX_SIGNATURE + 3;

/// Why a bundle was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleFailure {
    /// Not signed by a trusted key, or the signature is wrong.
    #[error("{0}")]
    Untrusted(String),
    /// Malformed, for another host, or its export does not match the manifest.
    #[error("{0}")]
    Invalid(String),
    /// Older than a deployment this host has journaled.
    #[error("{0}")]
    Outdated(String),
    /// The agent failed to write the export.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
}

/// A bundle's start, collected until its three header lines are in.
#[derive(Debug, Default)]
pub struct Head {
    bytes: Vec<u8>,
    /// Verifying needs all three lines: counted as they arrive instead of re-parsing.
    newlines: usize,
}

impl Head {
    /// Whether the three header lines are all in.
    pub fn complete(&self) -> bool {
        self.newlines >= 3
    }

    /// Bytes collected so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Refuses a header already longer than any valid one (before reading more).
    pub fn check_length(&self) -> Result<(), BundleFailure> {
        if self.bytes.len() > MAX_HEAD {
            return Err(BundleFailure::Invalid(BundleError::Truncated("manifest").to_string()));
        }
        Ok(())
    }

    /// Adds the body's next bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.newlines += chunk.iter().filter(|b| **b == b'\n').count();
        self.bytes.extend_from_slice(chunk);
    }

    /// Verifies the header: the manifest, the name of the trusted key that signed it, and
    /// the bytes read past it (the export's start).
    pub fn verify(mut self, trusted: &[PublicKey]) -> Result<(Manifest, String, Vec<u8>), BundleFailure> {
        let (manifest, start) = verify_header(&self.bytes, trusted).map_err(|e| match e {
            BundleError::UnknownKey(_) | BundleError::BadSignature => BundleFailure::Untrusted(e.to_string()),
            _ => BundleFailure::Invalid(e.to_string()),
        })?;
        let export = self.bytes.split_off(start);
        // The verified signature line, `<key name>:<base64>`, is the last line of the header.
        let header = self.bytes.strip_suffix(b"\n").unwrap_or(&self.bytes);
        let signature_line = header.rsplit(|b| *b == b'\n').next().unwrap_or_default();
        let signer = signature_line.split(|b| *b == b':').next().unwrap_or_default();
        Ok((manifest, String::from_utf8_lossy(signer).into_owned(), export))
    }
}

/// The bundle must name this host and be newer than every deployment it has journaled
/// (the same bundle again is the same deployment).
pub fn check_manifest(config: &AgentConfig, deployer: &Deployer, manifest: &Manifest) -> Result<(), BundleFailure> {
    if manifest.host != config.hostname {
        return Err(BundleFailure::Invalid(format!(
            "the bundle is for host `{}`, this is `{}`",
            manifest.host, config.hostname
        )));
    }
    let id = manifest.deployment_id();
    let newest = deployer.records().iter().filter(|r| r.deployment.id != id).map(|r| r.deployment.created).max();
    if let Some(newest) = newest.filter(|n| *n > manifest.created) {
        return Err(BundleFailure::Outdated(format!(
            "the bundle was written at {} but this host has a deployment from {newest}: an older bundle would roll it \
             back (use hostctl rollback for that)",
            manifest.created
        )));
    }
    Ok(())
}

/// The export being written to a temporary file while hashed, never past the signed
/// length; [`ExportFile::finish`] checks it against the signed hash.
#[derive(Debug)]
pub struct ExportFile {
    file: tempfile::NamedTempFile,
    out: tokio::fs::File,
    hasher: Sha256,
    len: u64,
    tmp_dir: std::path::PathBuf,
    signed_len: u64,
    signed_sha256: String,
}

impl ExportFile {
    /// A new temporary file in the import directory for `manifest`'s export.
    pub fn create(importer: &Importer, manifest: &Manifest) -> Result<Self, BundleFailure> {
        let tmp_dir = importer.tmp_dir.clone();
        let file = tempfile::Builder::new()
            .prefix("bundle-")
            .suffix(".zst")
            .tempfile_in(&tmp_dir)
            .map_err(|e| io(&tmp_dir, e))?;
        let out = tokio::fs::File::from_std(file.reopen().map_err(|e| io(&tmp_dir, e))?);
        let (signed_len, signed_sha256) = (manifest.export_len, manifest.export_sha256.clone());
        Ok(Self { file, out, hasher: Sha256::new(), len: 0, tmp_dir, signed_len, signed_sha256 })
    }

    /// Appends the export's next bytes.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), BundleFailure> {
        self.len += chunk.len() as u64;
        if self.len > self.signed_len {
            return Err(BundleFailure::Invalid(format!(
                "the bundle's export is longer than its signed manifest says ({} bytes): the file was changed",
                self.signed_len
            )));
        }
        self.hasher.update(chunk);
        self.out.write_all(chunk).await.map_err(|e| io(&self.tmp_dir, e))
    }

    /// The whole export, once it matches the signed length and hash.
    pub async fn finish(mut self) -> Result<tempfile::NamedTempFile, BundleFailure> {
        self.out.flush().await.map_err(|e| io(&self.tmp_dir, e))?;
        if self.len != self.signed_len || hex::encode(self.hasher.finalize()) != self.signed_sha256 {
            return Err(BundleFailure::Invalid(format!(
                "the bundle's export does not match its signed manifest ({} bytes, expected {}): the file is \
                 truncated or was changed",
                self.len, self.signed_len
            )));
        }
        Ok(self.file)
    }
}

fn io(tmp_dir: &std::path::Path, e: std::io::Error) -> BundleFailure {
    BundleFailure::Internal(format!("writing the bundle's export in {}: {e}", tmp_dir.display()))
}

/// Imports the checked export and deploys the manifest's system, journaling who asked
/// (`by`: the key that signed the bundle and the uploader's address); the deployment once
/// it ended (`confirmed`, `failed` or `rolled-back`).
pub async fn deploy(
    importer: &Importer,
    deployer: &Arc<Deployer>,
    manifest: &Manifest,
    export: tempfile::NamedTempFile,
    by: Requester,
) -> Result<Deployment, BundleFailure> {
    tracing::info!(id = manifest.deployment_id(), toplevel = %manifest.toplevel, paths = manifest.paths.len(), "bundle accepted");
    importer.import(export, manifest.paths.clone()).await?;
    let request = DeploymentRequest {
        id: manifest.deployment_id(),
        toplevel: manifest.toplevel.clone(),
        rev: manifest.rev.clone(),
        lock: manifest.lock.clone(),
        mode: manifest.mode,
        confirm_timeout: Duration::from_secs(0),
        health: Vec::new(),
        cache: None,
        commit_signature: None,
        retention: None,
        reboot: false,
    };
    let started = deployer.create_by(request, Some(by)).await?;
    Ok(wait_until_final(deployer, started).await)
}

/// The deployment once it reached a final state (activation time is bounded by the
/// agent's `activation_timeout`).
async fn wait_until_final(deployer: &Deployer, started: Deployment) -> Deployment {
    let mut last = started;
    while !matches!(last.state, DeploymentState::Confirmed | DeploymentState::Failed | DeploymentState::RolledBack) {
        tokio::time::sleep(POLL).await;
        match deployer.get(&last.id) {
            Some(d) => last = d,
            None => break,
        }
    }
    last
}
