//! `/v1` routes, collected with their OpenAPI descriptions.

pub mod auth;
pub mod deployments;
pub mod keys;
pub mod oauth_admin;
pub mod projects;
pub mod servers;
pub mod telemetry;

use crate::config::HttpSettings;
use crate::error::ApiError;
use crate::openapi::ApiDoc;
use axum::Json;
use axum::Router;
use axum::http::{Method, Uri};
use axum::routing::get;
use ezforge_core::Core;
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every handler shares. One reference count per request (axum clones the state for each
/// handler): the fields live behind a single `Arc`, reached through `Deref`.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub core: Arc<Core>,
    pub oauth: Arc<ezforge_core::oauth::OAuth>,
    /// Seals upstream credentials.
    pub master: Arc<ezforge_core::crypto::MasterKey>,
    /// Identity JWTs for upstreams, by token hash and deployment, for 30 s of their 60.
    pub identities: ezforge_core::cache::TtlCache<String, std::sync::Arc<crate::gateway::Identity>>,
    /// Servers and their active deployments, as the gateway routes them.
    pub routes: crate::gateway::RouteCache,
    /// Verifies tokens of BYOA servers against their issuers' JWKS.
    pub byoa: Arc<ezforge_core::byoa::ByoaVerifier>,
    pub http: Arc<HttpSettings>,
    /// The request log's queue (and the gateway's counters).
    pub requests: Arc<ezforge_core::telemetry::RequestLog>,
    /// Monthly request quotas, counted per node.
    pub quotas: Arc<ezforge_core::telemetry::Quotas>,
}

/// The `/v1` router and its OpenAPI document, built from the same route list.
pub fn v1(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::signup))
        .routes(routes!(auth::login))
        .routes(routes!(auth::session))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::logout_everywhere))
        .routes(routes!(auth::create_invite))
        .routes(routes!(projects::list_projects, projects::create_project))
        .routes(routes!(projects::get_project))
        .routes(routes!(projects::list_members, projects::add_member))
        .routes(routes!(projects::remove_member))
        .routes(routes!(keys::list_keys, keys::create_key))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(servers::list_servers, servers::create_server))
        .routes(routes!(
            servers::get_server,
            servers::update_server,
            servers::delete_server
        ))
        .routes(routes!(servers::list_all_servers))
        .routes(routes!(deployments::list, deployments::deploy))
        .routes(routes!(deployments::rollback))
        .routes(routes!(
            servers::get_server_by_slug,
            servers::update_server_by_slug,
            servers::delete_server_by_slug
        ))
        .routes(routes!(
            oauth_admin::list_clients,
            oauth_admin::create_client
        ))
        .routes(routes!(oauth_admin::delete_client))
        .routes(routes!(oauth_admin::list_grants))
        .routes(routes!(oauth_admin::revoke_grant))
        .routes(routes!(oauth_admin::list_signing_keys))
        .routes(routes!(oauth_admin::rotate_signing_key))
        .routes(routes!(telemetry::server_logs))
        .routes(routes!(telemetry::server_metrics))
        .routes(routes!(telemetry::project_usage))
        .routes(routes!(telemetry::set_quota))
        .routes(routes!(telemetry::project_audit))
        .split_for_parts();
    let doc = Arc::new(api.clone());
    let router = router
        .route(
            "/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError::MethodNotAllowed(format!("{method} on {}", uri.path()))
        })
        .with_state(state);
    (router, api)
}

/// Unknown paths get a JSON 404 too.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_string())
}
