//! `POST /v1/bundles` — NOT signed per request: the bundle is signed as a whole by a
//! trusted key, and [`crate::bundle`] checks that header (and the host, the age, the
//! export's hash and length) before anything is imported; changes the host; body streamed
//! (up to [`IMPORT_BODY_LIMIT`]). Answers with the deployment once it ended. Types in
//! `hostctl_schemas::api::bundles`.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use hostctl_schemas::api::bundles::Manifest;
use hostctl_schemas::api::deployments::Deployment;
use tokio::sync::SemaphorePermit;

use super::body::{check_declared_length, next_chunk, IMPORT_BODY_LIMIT};
use super::error::ApiFailure;
use super::peer::{signed_by, Peer};
use super::state::AppState;
use crate::bundle::{self, ExportFile, Head};

/// How many large bundle headers (up to 16 MiB each, unauthenticated until verified) are
/// read at once; further ones wait, so strangers cannot make the agent hold more.
static UNVERIFIED_HEADERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Header bytes read before a slot of [`UNVERIFIED_HEADERS`] is needed: uploads that send
/// a few bytes and stop hold no slot, so a valid bundle does not wait behind them (a
/// system's manifest, thousands of store paths, is larger and takes a slot). Without a
/// slot a connection holds at most this plus one chunk, and connections are capped
/// (`max_connections`).
const FREE_HEADER_BYTES: usize = 64 * 1024;

/// The longest reading a bundle's header may take, waiting for a slot included: a slot
/// is held at most this long by an upload that stops sending.
const HEADER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn bundle(
    State(app): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    mut body: Body,
) -> Result<Json<Deployment>, ApiFailure> {
    check_declared_length(&headers, IMPORT_BODY_LIMIT)?;
    let agent = &app.agent;
    // The header first, from the stream's start: nothing is written to disk for a body
    // whose signature, host or age is wrong.
    let (manifest, signer, rest) = tokio::time::timeout(HEADER_DEADLINE, async {
        let (head, _slot) = read_header(&mut body).await?;
        Ok::<_, ApiFailure>(head.verify(&agent.config.trusted_keys)?)
    })
    .await
    .map_err(|_| {
        ApiFailure::bad_request(format!("the bundle's header did not arrive within {} s", HEADER_DEADLINE.as_secs()))
    })??;
    bundle::check_manifest(&agent.config, &agent.deployer, &manifest)?;
    let export = receive_export(&app, &manifest, rest, body).await?;
    let by = signed_by(signer, peer.map(|Extension(p)| p));
    Ok(Json(bundle::deploy(&agent.importer, &agent.deployer, &manifest, export, by).await?))
}

/// Reads until the three header lines are in (or the body ends); past
/// [`FREE_HEADER_BYTES`], within a slot of [`UNVERIFIED_HEADERS`], returned to be held
/// until the header is verified.
async fn read_header(body: &mut Body) -> Result<(Head, Option<SemaphorePermit<'static>>), ApiFailure> {
    let mut head = Head::default();
    let mut slot = None;
    while !head.complete() {
        head.check_length()?;
        if slot.is_none() && head.len() > FREE_HEADER_BYTES {
            let permit = UNVERIFIED_HEADERS
                .acquire()
                .await
                .map_err(|_| ApiFailure::internal("the bundle header semaphore is closed"))?;
            slot = Some(permit);
        }
        let Some(chunk) = next_chunk(body).await else { break };
        head.push(&chunk?);
    }
    Ok((head, slot))
}

/// Writes the export (`first`, then the rest of the body) to a temporary file.
async fn receive_export(
    app: &AppState,
    manifest: &Manifest,
    first: Vec<u8>,
    mut body: Body,
) -> Result<tempfile::NamedTempFile, ApiFailure> {
    let mut export = ExportFile::create(&app.agent.importer, manifest)?;
    export.write(&first).await?;
    while let Some(chunk) = next_chunk(&mut body).await {
        export.write(&chunk?).await?;
    }
    Ok(export.finish().await?)
}
