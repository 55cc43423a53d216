//! Servers of a project, each in one environment.

use super::AppState;
use crate::auth::{Caller, need};
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ezforge_core::invalidation::Invalidation;
use ezforge_proto::{
    ApiErrorBody, CreateServerRequest, Environment, Server, ServerList, UpdateServerRequest,
};
use serde::Deserialize;

/// A server's API view, with the URL its MCP clients connect to.
fn api(state: &AppState, s: &ezforge_core::model::ServerRow) -> Server {
    s.to_api(state.oauth.resource_uri(&s.slug))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ServerFilter {
    /// `live` or `test`. An API key sees only its own environment.
    pub environment: Option<Environment>,
}

/// List servers.
#[utoipa::path(get, path = "/v1/projects/{project}/servers", tag = "servers",
    params(("project" = String, Path, description = "Project id or name"), ServerFilter),
    security(("api_key" = ["servers:read"]), ("session" = [])),
    responses((status = 200, body = ServerList), (status = 403, body = ApiErrorBody)))]
pub async fn list_servers(
    State(state): State<AppState>,
    caller: Caller<need::ServersRead>,
    Path(project): Path<String>,
    ApiQuery(filter): ApiQuery<ServerFilter>,
) -> ApiResult<Json<ServerList>> {
    let servers = state
        .core
        .list_servers(&caller.principal, &project, filter.environment)
        .await?;
    Ok(Json(ServerList {
        servers: servers.iter().map(|s| api(&state, s)).collect(),
    }))
}

/// Create a server.
#[utoipa::path(post, path = "/v1/projects/{project}/servers", tag = "servers", request_body = CreateServerRequest,
    params(("project" = String, Path, description = "Project id or name")),
    security(("api_key" = ["servers:write"]), ("session" = [])),
    responses((status = 201, body = Server), (status = 400, body = ApiErrorBody), (status = 403, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
pub async fn create_server(
    State(state): State<AppState>,
    caller: Caller<need::ServersWrite>,
    Path(project): Path<String>,
    ApiJson(req): ApiJson<CreateServerRequest>,
) -> ApiResult<(StatusCode, Json<Server>)> {
    let CreateServerRequest {
        name,
        slug,
        environment,
        settings,
    } = req;
    let s = state
        .core
        .create_server(
            &caller.principal,
            &project,
            &name,
            &slug,
            environment,
            &settings,
        )
        .await?;
    // Nodes that were asked for this slug remember that it did not exist.
    state.invalidate(Invalidation::Routes).await;
    Ok((StatusCode::CREATED, Json(api(&state, &s))))
}

/// Get a server by id or slug.
#[utoipa::path(get, path = "/v1/projects/{project}/servers/{server}", tag = "servers",
    params(("project" = String, Path, description = "Project id or name"), ("server" = String, Path, description = "Server id or slug")),
    security(("api_key" = ["servers:read"]), ("session" = [])),
    responses((status = 200, body = Server), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn get_server(
    State(state): State<AppState>,
    caller: Caller<need::ServersRead>,
    Path((project, server)): Path<(String, String)>,
) -> ApiResult<Json<Server>> {
    let server = state
        .core
        .get_server(&caller.principal, &project, &server)
        .await?;
    Ok(Json(api(&state, &server)))
}

/// Update a server.
#[utoipa::path(patch, path = "/v1/projects/{project}/servers/{server}", tag = "servers", request_body = UpdateServerRequest,
    params(("project" = String, Path, description = "Project id or name"), ("server" = String, Path, description = "Server id or slug")),
    security(("api_key" = ["servers:write"]), ("session" = [])),
    responses((status = 200, body = Server), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn update_server(
    State(state): State<AppState>,
    caller: Caller<need::ServersWrite>,
    Path((project, server)): Path<(String, String)>,
    ApiJson(req): ApiJson<UpdateServerRequest>,
) -> ApiResult<Json<Server>> {
    Ok(Json({
        let updated = state
            .core
            .update_server(&caller.principal, &project, &server, &req)
            .await;
        // Even when it failed: a failure part-way may follow grants already revoked.
        state.server_updated().await;
        let updated = updated?;
        api(&state, &updated)
    }))
}

/// Delete a server.
#[utoipa::path(delete, path = "/v1/projects/{project}/servers/{server}", tag = "servers",
    params(("project" = String, Path, description = "Project id or name"), ("server" = String, Path, description = "Server id or slug")),
    security(("api_key" = ["servers:write"]), ("session" = [])),
    responses((status = 204), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn delete_server(
    State(state): State<AppState>,
    caller: Caller<need::ServersWrite>,
    Path((project, server)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    state
        .core
        .delete_server(&caller.principal, &project, &server)
        .await?;
    state.invalidate(Invalidation::Routes).await;
    Ok(StatusCode::NO_CONTENT)
}

/// List every server you can see (a key: its project and environment).
#[utoipa::path(get, path = "/v1/servers", tag = "servers",
    security(("api_key" = ["servers:read"]), ("session" = [])),
    responses((status = 200, body = ServerList), (status = 401, body = ApiErrorBody)))]
pub async fn list_all_servers(
    State(state): State<AppState>,
    caller: Caller<need::ServersRead>,
) -> ApiResult<Json<ServerList>> {
    let servers = state.core.all_servers(&caller.principal).await?;
    Ok(Json(ServerList {
        servers: servers.iter().map(|s| api(&state, s)).collect(),
    }))
}

/// Get a server by slug (unique on the instance) or id.
#[utoipa::path(get, path = "/v1/servers/{server}", tag = "servers",
    params(("server" = String, Path, description = "Server slug or id")),
    security(("api_key" = ["servers:read"]), ("session" = [])),
    responses((status = 200, body = Server), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn get_server_by_slug(
    State(state): State<AppState>,
    caller: Caller<need::ServersRead>,
    Path(server): Path<String>,
) -> ApiResult<Json<Server>> {
    let server = state.core.find_server(&caller.principal, &server).await?;
    Ok(Json(api(&state, &server)))
}

/// Update a server by slug or id: name, access policy, auth mode and BYOA settings, tool policy.
#[utoipa::path(patch, path = "/v1/servers/{server}", tag = "servers", request_body = UpdateServerRequest,
    params(("server" = String, Path, description = "Server slug or id")),
    security(("api_key" = ["servers:write"]), ("session" = [])),
    responses((status = 200, body = Server), (status = 400, body = ApiErrorBody), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn update_server_by_slug(
    State(state): State<AppState>,
    caller: Caller<need::ServersWrite>,
    Path(server): Path<String>,
    ApiJson(req): ApiJson<UpdateServerRequest>,
) -> ApiResult<Json<Server>> {
    let found = state.core.find_server(&caller.principal, &server).await?;
    Ok(Json({
        let updated = state
            .core
            .update_server(&caller.principal, &found.project_id, &found.id, &req)
            .await;
        // Even when it failed: a failure part-way may follow grants already revoked.
        state.server_updated().await;
        let updated = updated?;
        api(&state, &updated)
    }))
}

/// Delete a server by slug or id.
#[utoipa::path(delete, path = "/v1/servers/{server}", tag = "servers",
    params(("server" = String, Path, description = "Server slug or id")),
    security(("api_key" = ["servers:write"]), ("session" = [])),
    responses((status = 204), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn delete_server_by_slug(
    State(state): State<AppState>,
    caller: Caller<need::ServersWrite>,
    Path(server): Path<String>,
) -> ApiResult<StatusCode> {
    let found = state.core.find_server(&caller.principal, &server).await?;
    state
        .core
        .delete_server(&caller.principal, &found.project_id, &found.id)
        .await?;
    state.invalidate(Invalidation::Routes).await;
    Ok(StatusCode::NO_CONTENT)
}
