//! `POST /v1/bundles`: a deployment that arrived as a file (`hostctl bundle`, carried to
//! a host without network, handed over by `hostctl-agent import FILE`). The bundle is its
//! own authentication (`hostctl_schemas::api::bundles`): a trusted key signed its header,
//! which names this host and the export's hash. It then goes the usual way: the same
//! all-or-nothing import as `POST /v1/paths/import`, the same journaled deployment and
//! rollback as `POST /v1/deployments`, without a confirmation window (no controller will
//! confirm; the agent's own health checks still gate it).
//!
//! Invariant: nothing is imported before the signature, the host name, the age and the
//! export's hash and length have all been checked.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use hostctl_schemas::api::bundles::{verify_header, BundleError, Manifest, MAGIC, MAX_MANIFEST, MAX_SIGNATURE};
use hostctl_schemas::api::deployments::{Deployment, DeploymentRequest, DeploymentState};
use hostctl_schemas::duration::Duration;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::body::{check_declared_length, next_chunk};
use crate::error::ApiFailure;
use crate::import::IMPORT_BODY_LIMIT;
use crate::server::AppState;

/// How many bundle headers (up to 16 MiB each, unauthenticated until verified) are read
/// at once; further requests wait, unread, so strangers cannot make the agent hold more.
static UNVERIFIED_HEADERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// How often a started bundle deployment is checked until it ends.
const POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// `POST /v1/bundles`: checks, imports, deploys, and answers with the deployment once it
/// ended (`confirmed`, `failed` or `rolled-back`).
pub async fn bundle(
    State(app): State<AppState>,
    headers: HeaderMap,
    mut body: Body,
) -> Result<Json<Deployment>, ApiFailure> {
    check_declared_length(&headers, IMPORT_BODY_LIMIT)?;
    // The header first, from the stream's start: nothing is written to disk for a body
    // whose signature, host or age is wrong.
    let (manifest, rest) = {
        let _reading = UNVERIFIED_HEADERS
            .acquire()
            .await
            .map_err(|_| ApiFailure::internal("the bundle header semaphore is closed"))?;
        read_header(&app, &mut body).await?
    };
    check_manifest(&app, &manifest)?;
    let export = receive_export(&app, &manifest, rest, body).await?;
    tracing::info!(id = manifest.deployment_id(), toplevel = %manifest.toplevel, paths = manifest.paths.len(), "bundle accepted");
    app.importer.import(export, manifest.paths.clone()).await?;
    let request = DeploymentRequest {
        id: manifest.deployment_id(),
        toplevel: manifest.toplevel.clone(),
        rev: manifest.rev.clone(),
        lock: manifest.lock.clone(),
        mode: manifest.mode,
        confirm_timeout: Duration::from_secs(0),
        health: Vec::new(),
        cache: None,
    };
    let started = app.deployer.create(request).await?;
    Ok(Json(wait_until_final(&app, started).await))
}

/// Reads until the three header lines are in, verifies them; the manifest and the bytes
/// read past the header (the export's start).
async fn read_header(app: &AppState, body: &mut Body) -> Result<(Manifest, Vec<u8>), ApiFailure> {
    let max_head = MAGIC.len() + MAX_MANIFEST + MAX_SIGNATURE + 3;
    let mut head = Vec::new();
    // Verifying needs all three lines: count them as they arrive instead of re-parsing.
    let mut newlines = 0;
    while newlines < 3 {
        if head.len() > max_head {
            return Err(ApiFailure::bad_request(BundleError::Truncated("manifest").to_string()));
        }
        let Some(chunk) = next_chunk(body).await else { break };
        let chunk = chunk?;
        newlines += chunk.iter().filter(|b| **b == b'\n').count();
        head.extend_from_slice(&chunk);
    }
    let (manifest, start) = verify_header(&head, &app.config.trusted_keys).map_err(|e| match e {
        BundleError::UnknownKey(_) | BundleError::BadSignature => ApiFailure::unauthorized(e.to_string()),
        _ => ApiFailure::bad_request(e.to_string()),
    })?;
    Ok((manifest, head.split_off(start)))
}

/// The bundle must name this host and be newer than every deployment it has journaled
/// (the same bundle again is the same deployment).
fn check_manifest(app: &AppState, manifest: &Manifest) -> Result<(), ApiFailure> {
    if manifest.host != app.config.hostname {
        return Err(ApiFailure::bad_request(format!(
            "the bundle is for host `{}`, this is `{}`",
            manifest.host, app.config.hostname
        )));
    }
    let id = manifest.deployment_id();
    let newest = app.deployer.records().iter().filter(|r| r.deployment.id != id).map(|r| r.deployment.created).max();
    if let Some(newest) = newest.filter(|n| *n > manifest.created) {
        return Err(ApiFailure::conflict(format!(
            "the bundle was written at {} but this host has a deployment from {newest}: an older bundle would roll it \
             back (use hostctl rollback for that)",
            manifest.created
        )));
    }
    Ok(())
}

/// Writes the export (`first`, then the rest of the body) to a temporary file while
/// hashing it, never past the signed length; it must then match the signed hash.
async fn receive_export(
    app: &AppState,
    manifest: &Manifest,
    first: Vec<u8>,
    mut body: Body,
) -> Result<tempfile::NamedTempFile, ApiFailure> {
    let tmp_dir = &app.importer.tmp_dir;
    let io =
        |e: std::io::Error| ApiFailure::internal(format!("writing the bundle's export in {}: {e}", tmp_dir.display()));
    let export = tempfile::Builder::new().prefix("bundle-").suffix(".zst").tempfile_in(tmp_dir).map_err(io)?;
    let mut out = tokio::fs::File::from_std(export.reopen().map_err(io)?);
    let (mut hasher, mut len) = (Sha256::new(), 0u64);
    let mut chunk = axum::body::Bytes::from(first);
    loop {
        len += chunk.len() as u64;
        if len > manifest.export_len {
            return Err(ApiFailure::bad_request(format!(
                "the bundle's export is longer than its signed manifest says ({} bytes): the file was changed",
                manifest.export_len
            )));
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(io)?;
        match next_chunk(&mut body).await {
            Some(next) => chunk = next?,
            None => break,
        }
    }
    out.flush().await.map_err(io)?;
    if len != manifest.export_len || hex::encode(hasher.finalize()) != manifest.export_sha256 {
        return Err(ApiFailure::bad_request(format!(
            "the bundle's export does not match its signed manifest ({len} bytes, expected {}): the file is \
             truncated or was changed",
            manifest.export_len
        )));
    }
    Ok(export)
}

/// The deployment once it reached a final state (activation time is bounded by the
/// agent's `activation_timeout`).
async fn wait_until_final(app: &AppState, started: Deployment) -> Deployment {
    let mut last = started;
    while !matches!(last.state, DeploymentState::Confirmed | DeploymentState::Failed | DeploymentState::RolledBack) {
        tokio::time::sleep(POLL).await;
        match app.deployer.get(&last.id) {
            Some(d) => last = d,
            None => break,
        }
    }
    last
}
