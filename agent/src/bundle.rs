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

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use hostctl_schemas::api::bundles::{verify_header, Manifest, MAGIC, MAX_MANIFEST, MAX_SIGNATURE};
use hostctl_schemas::api::deployments::{Deployment, DeploymentRequest, DeploymentState};
use hostctl_schemas::duration::Duration;
use sha2::{Digest as _, Sha256};

use crate::body::{check_declared_length, stream_to_file};
use crate::error::ApiFailure;
use crate::import::IMPORT_BODY_LIMIT;
use crate::server::AppState;

/// How often a started bundle deployment is checked until it ends.
const POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// `POST /v1/bundles`: checks, imports, deploys, and answers with the deployment once it
/// ended (`confirmed`, `failed` or `rolled-back`).
pub async fn bundle(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Deployment>, ApiFailure> {
    check_declared_length(&headers, IMPORT_BODY_LIMIT)?;
    let tmp_err = |e: std::io::Error| {
        ApiFailure::internal(format!("cannot create a temporary file in {}: {e}", app.importer.tmp_dir.display()))
    };
    let received = tempfile::Builder::new().prefix("bundle-").tempfile_in(&app.importer.tmp_dir).map_err(tmp_err)?;
    let name = received.path().display().to_string();
    let mut file = tokio::fs::File::from_std(received.reopen().map_err(tmp_err)?);
    stream_to_file(body, &mut file, &name, IMPORT_BODY_LIMIT).await?;
    drop(file);
    let (manifest, export) = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || checked(&app, received))
            .await
            .map_err(|e| ApiFailure::internal(format!("the bundle check failed: {e}")))??
    };
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

/// Verifies the received file and returns its manifest and the export, copied out of it
/// while hashed.
fn checked(
    app: &AppState,
    received: tempfile::NamedTempFile,
) -> Result<(Manifest, tempfile::NamedTempFile), ApiFailure> {
    let io = |e: std::io::Error| ApiFailure::internal(format!("reading the bundle: {e}"));
    let mut file = received.reopen().map_err(io)?;
    let mut head = Vec::new();
    let max_head = (MAGIC.len() + MAX_MANIFEST + MAX_SIGNATURE + 3) as u64;
    (&mut file).take(max_head).read_to_end(&mut head).map_err(io)?;
    let (manifest, start) = verify_header(&head, &app.config.trusted_keys).map_err(|e| match e {
        hostctl_schemas::api::bundles::BundleError::UnknownKey(_)
        | hostctl_schemas::api::bundles::BundleError::BadSignature => ApiFailure::unauthorized(e.to_string()),
        _ => ApiFailure::bad_request(e.to_string()),
    })?;
    if manifest.host != app.config.hostname {
        return Err(ApiFailure::bad_request(format!(
            "the bundle is for host `{}`, this is `{}`",
            manifest.host, app.config.hostname
        )));
    }
    let newest = app
        .deployer
        .records()
        .iter()
        .filter(|r| r.deployment.id != manifest.deployment_id())
        .map(|r| r.deployment.created)
        .max();
    if let Some(newest) = newest.filter(|n| *n > manifest.created) {
        return Err(ApiFailure::conflict(format!(
            "the bundle was written at {} but this host has a deployment from {newest}: an older bundle would roll it \
             back (use hostctl rollback for that)",
            manifest.created
        )));
    }
    file.seek(SeekFrom::Start(start as u64)).map_err(io)?;
    let export =
        tempfile::Builder::new().prefix("bundle-").suffix(".zst").tempfile_in(&app.importer.tmp_dir).map_err(io)?;
    let mut out = export.reopen().map_err(io)?;
    let (mut hasher, mut len, mut buf) = (Sha256::new(), 0u64, vec![0u8; 256 * 1024]);
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io)?;
        len += n as u64;
    }
    if len != manifest.export_len || hex::encode(hasher.finalize()) != manifest.export_sha256 {
        return Err(ApiFailure::bad_request(format!(
            "the bundle's export does not match its signed manifest ({len} bytes, expected {}): the file is \
             truncated or was changed",
            manifest.export_len
        )));
    }
    Ok((manifest, export))
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
