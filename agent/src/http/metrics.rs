//! `GET /metrics` — NOT signed (DESIGN.md: scrapers do not sign requests); read-only,
//! and shows only what monitoring should see. The Prometheus text that
//! [`crate::metrics::render`] writes from the status snapshot, the journal and the pull
//! task's outcomes, and the newest garbage collection's figures.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::error::ApiFailure;
use super::state::AppState;
use crate::metrics::{render, CONTENT_TYPE_TEXT};

pub async fn metrics(State(app): State<AppState>) -> Result<Response, ApiFailure> {
    let agent = &app.agent;
    let status = crate::status::snapshot(agent).map_err(ApiFailure::internal)?;
    let records = agent.deployer.records();
    let outcomes = agent.pull.as_ref().map(|p| p.outcomes());
    let mut body = render(&status, &records, outcomes.as_ref());
    body.push_str(&crate::metrics::render_gc(&agent.gc.log().reports()));
    Ok(([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], body).into_response())
}
