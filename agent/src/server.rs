//! The HTTP server's shape: [`AppState`] (what handlers share) and [`router`] (every
//! route with its authentication and body limit).
//!
//! Invariant: every route is registered here with [`crate::auth::signed`] in front of it,
//! except the forge webhook (`POST /v1/hooks/git`), which checks its own HMAC and can
//! only wake the pull task, `GET /metrics`, which only reads, and `POST /v1/bundles`,
//! whose body is signed as a whole (checked before anything is imported); the only other
//! unauthenticated answers are the JSON 404s for paths and methods that do not exist,
//! which change nothing.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use hostctl_nix::Nix;
use hostctl_schemas::agent_config::AgentConfig;
use hostctl_schemas::api::{deployments, generations, hooks, paths, rollback, status};

use crate::auth::{signed, Authenticator, BodyPolicy, SignedRoute};
use crate::deploy::Deployer;
use crate::error::ApiFailure;
use crate::import::Importer;
use crate::pull::Puller;
use crate::{import, routes};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<AgentConfig>,
    pub nix: Arc<Nix>,
    pub deployer: Arc<Deployer>,
    pub importer: Arc<Importer>,
    /// The pull-mode task's handle; `None` in push mode.
    pub pull: Option<Arc<Puller>>,
}

/// `GET /metrics` (DESIGN.md: Prometheus text format, unauthenticated).
pub const METRICS_PATH: &str = "/metrics";

/// Bodies of GET requests and of `confirm`: nothing meaningful, so a small limit.
const SMALL_BODY_LIMIT: u64 = 4 * 1024;

/// The API v1 router.
pub fn router(state: AppState, auth: Arc<Authenticator>) -> Router {
    let signed_route = |route: MethodRouter<AppState>, body: BodyPolicy| {
        route.route_layer(from_fn_with_state(SignedRoute { auth: Arc::clone(&auth), body }, signed))
    };
    let buffered = |limit: usize| BodyPolicy::Buffered(limit as u64);
    Router::new()
        .route(status::PATH, signed_route(get(routes::status), BodyPolicy::Buffered(SMALL_BODY_LIMIT)))
        .route(paths::MISSING_PATH, signed_route(post(routes::missing), buffered(paths::MISSING_BODY_LIMIT)))
        .route(paths::IMPORT_PATH, signed_route(post(import::import), BodyPolicy::Streamed))
        .route(deployments::PATH, signed_route(post(routes::create_deployment), buffered(deployments::BODY_LIMIT)))
        .route(
            &deployments::path_of("{id}"),
            signed_route(get(routes::get_deployment), BodyPolicy::Buffered(SMALL_BODY_LIMIT)),
        )
        .route(
            &deployments::confirm_path_of("{id}"),
            signed_route(post(routes::confirm), BodyPolicy::Buffered(SMALL_BODY_LIMIT)),
        )
        .route(rollback::PATH, signed_route(post(routes::rollback), buffered(rollback::BODY_LIMIT)))
        .route(generations::PATH, signed_route(get(routes::generations), BodyPolicy::Buffered(SMALL_BODY_LIMIT)))
        // The forge webhook has its own authentication (HMAC of the body with the webhook
        // secret) and reads its body within `hooks::BODY_LIMIT` itself.
        .route(hooks::PATH, post(crate::pull::webhook::hook))
        // Prometheus scrapers do not sign requests; the page changes nothing and shows
        // only what monitoring should see (`crate::metrics`).
        .route(METRICS_PATH, get(crate::metrics::metrics))
        // A bundle is signed by a trusted key itself (its header covers the export's
        // hash); `crate::bundle` checks that before anything else happens.
        .route(hostctl_schemas::api::bundles::PATH, post(crate::bundle::bundle))
        .fallback(no_route)
        .method_not_allowed_fallback(no_route)
        // The `signed` middleware enforces each route's own limit; axum's default (2 MiB,
        // answered as plain text) would undercut `/v1/paths/missing`'s 4 MiB.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// JSON 404 for a path or method the API does not have.
async fn no_route(request: Request) -> ApiFailure {
    ApiFailure::not_found(format!("no route {} {}", request.method(), request.uri().path()))
}
