//! API keys of a project. Managed by its owners while signed in; keys cannot manage keys.

use super::AppState;
use crate::auth::{Caller, need};
use crate::error::ApiResult;
use crate::extract::ApiJson;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ezforge_core::service::keys::NewApiKey;
use ezforge_proto::{ApiErrorBody, ApiKey, ApiKeyList, CreateApiKeyRequest, CreatedApiKey};

/// Create an API key. The secret is in this response only.
///
/// `scopes` takes any of the seven platform scopes; an unknown one is answered with 400
/// `invalid_scope` listing the valid ones. `environment` is `live` (default; `ezf_live_…`) or
/// `test` (`ezf_test_…`).
#[utoipa::path(post, path = "/v1/projects/{project}/keys", tag = "api-keys", request_body = CreateApiKeyRequest,
    params(("project" = String, Path, description = "Project id or name")),
    security(("session" = [])),
    responses((status = 201, body = CreatedApiKey), (status = 400, body = ApiErrorBody), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller<need::Session>,
    Path(project): Path<String>,
    ApiJson(req): ApiJson<CreateApiKeyRequest>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    let new = NewApiKey {
        name: &req.name,
        scopes: &req.scopes,
        environment: req.environment,
        expires_at: req.expires_at.map(|t| t.unix_timestamp()),
    };
    let (row, secret) = state
        .core
        .create_api_key(&caller.principal, &project, new)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            key: row.to_api(),
            secret,
        }),
    ))
}

/// List a project's API keys (never their secrets).
#[utoipa::path(get, path = "/v1/projects/{project}/keys", tag = "api-keys",
    params(("project" = String, Path, description = "Project id or name")),
    security(("session" = [])),
    responses((status = 200, body = ApiKeyList), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller<need::Session>,
    Path(project): Path<String>,
) -> ApiResult<Json<ApiKeyList>> {
    let keys = state
        .core
        .list_api_keys(&caller.principal, &project)
        .await?;
    Ok(Json(ApiKeyList {
        keys: keys.iter().map(|k| k.to_api()).collect(),
    }))
}

/// Revoke an API key. It is refused from the next request on.
#[utoipa::path(delete, path = "/v1/projects/{project}/keys/{key_id}", tag = "api-keys",
    params(("project" = String, Path, description = "Project id or name"), ("key_id" = String, Path)),
    security(("session" = [])),
    responses((status = 200, body = ApiKey), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller<need::Session>,
    Path((project, key_id)): Path<(String, String)>,
) -> ApiResult<Json<ApiKey>> {
    let key = state
        .core
        .revoke_api_key(&caller.principal, &project, &key_id)
        .await?;
    Ok(Json(key.to_api()))
}
