//! The agent's HTTP API v1: [`router`] (every route with its authentication and body
//! limit), one module per endpoint, and what they share: [`state::AppState`], the
//! [`auth::signed`] middleware, [`body`] limits and [`error::ApiFailure`]. Handlers parse
//! and validate the request, call into the domain modules (`crate::deploy`,
//! `crate::import`, `crate::bundle`, ...) and map their results and errors to HTTP; those
//! modules know nothing of HTTP, and nothing outside this folder but `crate::serve` uses it.
//!
//! Invariant: every route is registered here with [`auth::signed`] in front of it,
//! except the forge webhook (`POST /v1/hooks/git`), which checks its own HMAC and can
//! only wake the pull task, and `POST /v1/bundles`, whose body is signed as a whole
//! (checked before anything is imported); the only other unauthenticated answers are the
//! JSON 404s for paths and methods that do not exist, which change nothing. [`router`]
//! is served over TLS only; the plain listeners serve [`metrics_router`] (`GET /metrics`,
//! which only reads) and [`webhook_router`] (the webhook alone).

pub mod auth;
pub mod body;
mod bundles;
pub mod connections;
mod deployments;
pub mod error;
mod gc;
mod generations;
mod hooks;
mod linger;
mod logs;
mod metrics;
pub mod nonce;
mod paths_import;
mod paths_missing;
pub mod peer;
mod rollback;
pub mod server;
pub mod state;
mod status;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use hostctl_schemas::api::{
    bundles as bundle_api, deployments as deployment_api, gc as gc_api, generations as generation_api,
};
use hostctl_schemas::api::{hooks as hook_api, logs as log_api, paths, rollback as rollback_api, status as status_api};

use self::auth::{signed, BodyPolicy, SignedRoute};
use self::error::ApiFailure;
use self::state::AppState;

/// `GET /metrics` (DESIGN.md: Prometheus text format, unauthenticated).
pub const METRICS_PATH: &str = "/metrics";

/// Bodies of GET requests and of `confirm`: nothing meaningful, so a small limit.
const SMALL_BODY_LIMIT: u64 = 4 * 1024;

/// The API v1 router.
pub fn router(state: AppState) -> Router {
    let auth = Arc::clone(&state.auth);
    let signed_route = |route: MethodRouter<AppState>, body: BodyPolicy| {
        route.route_layer(from_fn_with_state(SignedRoute { auth: Arc::clone(&auth), body }, signed))
    };
    let buffered = |limit: usize| BodyPolicy::Buffered(limit as u64);
    let small = BodyPolicy::Buffered(SMALL_BODY_LIMIT);
    Router::new()
        .route(status_api::PATH, signed_route(get(status::status), small))
        .route(paths::MISSING_PATH, signed_route(post(paths_missing::missing), buffered(paths::MISSING_BODY_LIMIT)))
        .route(paths::IMPORT_PATH, signed_route(post(paths_import::import), BodyPolicy::Streamed))
        .route(deployment_api::PATH, signed_route(post(deployments::create), buffered(deployment_api::BODY_LIMIT)))
        .route(&deployment_api::path_of("{id}"), signed_route(get(deployments::get), small))
        .route(&deployment_api::confirm_path_of("{id}"), signed_route(post(deployments::confirm), small))
        .route(log_api::ROUTE, signed_route(get(logs::log), small))
        .route(rollback_api::PATH, signed_route(post(rollback::rollback), buffered(rollback_api::BODY_LIMIT)))
        .route(generation_api::PATH, signed_route(get(generations::generations), small))
        .route(gc_api::PATH, signed_route(post(gc::gc), buffered(gc_api::BODY_LIMIT)))
        // The forge webhook has its own authentication (HMAC of the body with the webhook
        // secret) and reads its body within `hooks::BODY_LIMIT` itself.
        .route(hook_api::PATH, post(hooks::hook))
        // A bundle is signed by a trusted key itself (its header covers the export's
        // hash); `crate::bundle` checks that before anything else happens.
        .route(bundle_api::PATH, post(bundles::bundle))
        .fallback(no_route)
        .method_not_allowed_fallback(no_route)
        // The `signed` middleware enforces each route's own limit; axum's default (2 MiB,
        // answered as plain text) would undercut `/v1/paths/missing`'s 4 MiB.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// The plain `metrics_listen` listener's router: `GET /metrics` only. Prometheus
/// scrapers do not sign requests; the page changes nothing and shows only what
/// monitoring should see (`crate::metrics`).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(METRICS_PATH, get(metrics::metrics))
        .fallback(no_route)
        .method_not_allowed_fallback(no_route)
        .with_state(state)
}

/// The plain `webhook_listen` listener's router (behind a TLS-terminating proxy): the
/// forge webhook only, with its HMAC check.
pub fn webhook_router(state: AppState) -> Router {
    Router::new()
        .route(hook_api::PATH, post(hooks::hook))
        .fallback(no_route)
        .method_not_allowed_fallback(no_route)
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// JSON 404 for a path or method the API does not have.
async fn no_route(request: Request) -> ApiFailure {
    ApiFailure::not_found(format!("no route {} {}", request.method(), request.uri().path()))
}
