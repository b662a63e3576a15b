//! The JSON endpoints of API v1 (all behind [`crate::auth::signed`]): status, missing
//! paths, deployments, rollback and generations. Handlers parse and answer; the work is
//! in [`crate::deploy`], [`crate::rollback_target`] and `hostctl-nix`.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hostctl_nix::profile::GenerationLine;
use hostctl_schemas::api::deployments::{valid_id, Deployment, DeploymentRequest};
use hostctl_schemas::api::generations::{Generation, GenerationsResponse};
use hostctl_schemas::api::paths::{MissingRequest, MissingResponse};
use hostctl_schemas::api::rollback::RollbackRequest;
use hostctl_schemas::api::status::StatusResponse;
use hostctl_schemas::ids::StorePath;
use serde::de::DeserializeOwned;

use crate::error::ApiFailure;
use crate::host::invalid_paths;
use crate::journal::Record;
use crate::rollback_target::system_origin;
use crate::server::AppState;

/// Parses a JSON body; errors name the field (`paths[2]: invalid store path ...`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiFailure> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // `?`: the error is not inside any field (e.g. the body ends early).
        if path.is_empty() || path == "." || path == "?" {
            ApiFailure::bad_request(format!("invalid request body: {inner}"))
        } else {
            ApiFailure::bad_request(format!("{path}: {inner}"))
        }
    })
}

/// A deployment id from the URL, checked like the one in a request body.
fn deployment_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiFailure> {
    let Path(id) = id.map_err(|e| ApiFailure::bad_request(e.body_text()))?;
    if valid_id(&id) {
        Ok(id)
    } else {
        Err(ApiFailure::bad_request(format!("`{id}` is not a deployment id ([A-Za-z0-9._-], 1 to 128 characters)")))
    }
}

/// `GET /v1/status`.
pub async fn status(State(app): State<AppState>) -> Result<Json<StatusResponse>, ApiFailure> {
    crate::status::snapshot(&app).map(Json).map_err(ApiFailure::internal)
}

/// `POST /v1/paths/missing`.
pub async fn missing(State(app): State<AppState>, body: Bytes) -> Result<Json<MissingResponse>, ApiFailure> {
    let request: MissingRequest = parse_json(&body)?;
    let invalid = invalid_paths(&app.nix, &request.paths).await?;
    let missing = request.paths.into_iter().filter(|p| invalid.contains(p)).collect();
    Ok(Json(MissingResponse { missing }))
}

/// `POST /v1/deployments`: 202 with the deployment as accepted.
pub async fn create_deployment(
    State(app): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Deployment>), ApiFailure> {
    let request: DeploymentRequest = parse_json(&body)?;
    let deployment = app.deployer.create(request).await?;
    Ok((StatusCode::ACCEPTED, Json(deployment)))
}

/// `GET /v1/deployments/{id}`.
pub async fn get_deployment(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Deployment>, ApiFailure> {
    let id = deployment_id(id)?;
    app.deployer.get(&id).map(Json).ok_or_else(|| ApiFailure::not_found(format!("no deployment `{id}`")))
}

/// `POST /v1/deployments/{id}/confirm`: the body, if any, is ignored.
pub async fn confirm(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Deployment>, ApiFailure> {
    let id = deployment_id(id)?;
    app.deployer.confirm(&id).map(Json)
}

/// `POST /v1/rollback`: 202 with the rollback's deployment.
pub async fn rollback(State(app): State<AppState>, body: Bytes) -> Result<(StatusCode, Json<Deployment>), ApiFailure> {
    let request: RollbackRequest = parse_json(&body)?;
    let deployment = app.deployer.rollback(request).await?;
    Ok((StatusCode::ACCEPTED, Json(deployment)))
}

/// `GET /v1/generations`: newest first, joined with the journal.
pub async fn generations(State(app): State<AppState>) -> Result<Json<GenerationsResponse>, ApiFailure> {
    let profile = app.deployer.profile();
    let lines = app.nix.list_generations(profile).await?;
    let records = app.deployer.records();
    let mut generations = Vec::with_capacity(lines.len());
    for line in lines.iter().rev() {
        let read_err = |e: std::io::Error| ApiFailure::internal(format!("cannot read generation {}: {e}", line.number));
        let Some(toplevel) = profile.generation_target(line.number).map_err(read_err)? else {
            // Gone since `nix-env` listed it, or not pointing into the store.
            continue;
        };
        let time = generation_time(profile.generation_link(line.number).as_path());
        generations.push(join_generation(line, toplevel, time, &records));
    }
    let deployments = records.into_iter().rev().map(|r| r.deployment).collect();
    Ok(Json(GenerationsResponse { generations, deployments }))
}

/// Nix dates a generation by its link's mtime (and prints it in local time, which the
/// agent cannot convert reliably), so read the mtime itself.
fn generation_time(link: &std::path::Path) -> u64 {
    std::fs::symlink_metadata(link)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// A generation with the deployment that created it, if the journal has one: the
/// deployment that set the profile to it, or the one whose rollback did (then `rev` and
/// `lock` are those of the system it returned to, from the deployment that made it).
pub fn join_generation(
    line: &GenerationLine,
    toplevel: hostctl_schemas::ids::StorePath,
    time: u64,
    records: &[Record],
) -> Generation {
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
