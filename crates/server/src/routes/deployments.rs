//! Deploys, deployment history and rollbacks of a server.

use super::AppState;
use crate::auth::{Caller, need};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::upstream;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ezforge_core::CoreError;
use ezforge_core::invalidation::Invalidation;
use ezforge_core::service::deployments::{NewDeployment, validate_timeout, validate_upstream};
use ezforge_proto::{
    ApiErrorBody, CreateDeploymentRequest, Deployment, DeploymentList, RollbackRequest,
};

/// Deploy: check that the upstream answers an MCP `initialize` (unless `force`), then make the
/// new deployment active at once.
#[utoipa::path(post, path = "/v1/servers/{server}/deployments", tag = "deployments", request_body = CreateDeploymentRequest,
    params(("server" = String, Path, description = "Server slug or id")),
    security(("api_key" = ["deployments:write"]), ("session" = [])),
    responses((status = 201, body = Deployment), (status = 400, body = ApiErrorBody), (status = 403, body = ApiErrorBody), (status = 422, description = "The upstream is not healthy", body = ApiErrorBody)))]
pub async fn deploy(
    State(state): State<AppState>,
    caller: Caller<need::DeploymentsWrite>,
    Path(server): Path<String>,
    ApiJson(req): ApiJson<CreateDeploymentRequest>,
) -> ApiResult<(StatusCode, Json<Deployment>)> {
    let deployment = deploy_checked(&state, &caller.principal, &server, &req).await?;
    Ok((StatusCode::CREATED, Json(deployment.to_api(true))))
}

/// A deploy as the API and the dashboard make it: access, validation, the health check
/// (unless forced), sealed credentials, then the switch.
pub(crate) async fn deploy_checked(
    state: &AppState,
    principal: &ezforge_core::Principal,
    server: &str,
    req: &CreateDeploymentRequest,
) -> Result<ezforge_core::model::DeploymentRow, ApiError> {
    // Access first, so that nobody can make the gateway probe URLs for a server they cannot touch.
    state.core.find_server(principal, server).await?;
    let url = validate_upstream(&req.upstream_url)?;
    let timeout_ms = validate_timeout(req.timeout_ms)?;
    let sealed = upstream::seal_headers(&state.master, &req.headers)
        .map_err(|m| CoreError::invalid("headers", m))?;
    let health =
        match upstream::health_check(&upstream::client(), &url, &req.headers, timeout_ms).await {
            Ok(ok) => ok,
            Err(reason) if req.force => format!("forced: {reason}"),
            Err(reason) => return Err(ApiError::UpstreamUnhealthy(reason)),
        };
    let new = NewDeployment {
        upstream_url: url,
        sealed_credentials: sealed,
        timeout_ms,
        health,
    };
    let (_, deployment) = state.core.deploy(principal, server, new).await?;
    // The gateway routes to the new deployment from the next request on.
    state.invalidate(Invalidation::Routes).await;
    Ok(deployment)
}

/// A server's deployment history, newest first.
#[utoipa::path(get, path = "/v1/servers/{server}/deployments", tag = "deployments",
    params(("server" = String, Path, description = "Server slug or id")),
    security(("api_key" = ["deployments:read"]), ("session" = [])),
    responses((status = 200, body = DeploymentList), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller<need::DeploymentsRead>,
    Path(server): Path<String>,
) -> ApiResult<Json<DeploymentList>> {
    let (server, list) = state.core.deployments(&caller.principal, &server).await?;
    let active = server.active_deployment_id.as_deref();
    Ok(Json(DeploymentList {
        deployments: list
            .iter()
            .map(|d| d.to_api(Some(d.id.as_str()) == active))
            .collect(),
    }))
}

/// Roll back to the previous deployment, or to a named one.
#[utoipa::path(post, path = "/v1/servers/{server}/rollback", tag = "deployments", request_body = RollbackRequest,
    params(("server" = String, Path, description = "Server slug or id")),
    security(("api_key" = ["deployments:write"]), ("session" = [])),
    responses((status = 200, body = Deployment), (status = 404, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller<need::DeploymentsWrite>,
    Path(server): Path<String>,
    ApiJson(req): ApiJson<RollbackRequest>,
) -> ApiResult<Json<Deployment>> {
    let (_, deployment) = state
        .core
        .rollback(&caller.principal, &server, req.to.as_deref())
        .await?;
    // The gateway routes to the new deployment from the next request on.
    state.invalidate(Invalidation::Routes).await;
    Ok(Json(deployment.to_api(true)))
}
