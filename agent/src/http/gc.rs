//! `POST /v1/gc` — signed (any trusted key); changes the host unless `dry_run`; body
//! buffered up to `gc::BODY_LIMIT`. 200 with the run's report ([`crate::gc`]); types in
//! `hostctl_schemas::api::gc`.

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use hostctl_schemas::api::gc::{GcReport, GcRequest};

use super::body::parse_json;
use super::error::ApiFailure;
use super::state::AppState;

pub async fn gc(State(app): State<AppState>, body: Bytes) -> Result<Json<GcReport>, ApiFailure> {
    let request: GcRequest = parse_json(&body)?;
    Ok(Json(app.agent.gc.run(&request, None).await?))
}
