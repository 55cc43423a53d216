//! Managing the authorization server through `/v1`: clients registered by project owners, the
//! grants of a server, and the instance's signing keys.

use super::AppState;
use crate::auth::{Caller, need};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ezforge_core::CoreError;
use ezforge_core::clock::to_datetime;
use ezforge_core::oauth::clients::ClientMetadata;
use ezforge_core::oauth::model::{ClientRow, GrantRow};
use ezforge_proto::{
    ApiErrorBody, CreateOAuthClientRequest, CreatedOAuthClient, Grant, GrantList, OAuthClient,
    OAuthClientList, SigningKeyInfo, SigningKeyList,
};

fn client_api(c: &ClientRow) -> OAuthClient {
    OAuthClient {
        client_id: c.client_id.clone(),
        client_name: c.client_name.clone(),
        kind: c.kind.as_str().into(),
        redirect_uris: c.redirect_uris.clone(),
        grant_types: c.grant_types.clone(),
        token_endpoint_auth_method: c.token_endpoint_auth_method.clone(),
        created_at: to_datetime(c.created_at),
        last_used_at: c.last_used_at.map(to_datetime),
    }
}

fn grant_api(g: GrantRow, client_name: Option<String>) -> Grant {
    Grant {
        id: g.id,
        user_id: g.user_id,
        client_id: g.client_id,
        client_name,
        resource: g.resource,
        scope: g.scope,
        created_at: to_datetime(g.created_at),
        revoked_at: g.revoked_at.map(to_datetime),
        revoked_reason: g.revoked_reason,
    }
}

/// Register an OAuth client for the project (owners only). A confidential client's secret is
/// in this response only.
#[utoipa::path(post, path = "/v1/projects/{project}/oauth-clients", tag = "oauth", request_body = CreateOAuthClientRequest,
    params(("project" = String, Path, description = "Project id or name")),
    security(("session" = [])),
    responses((status = 201, body = CreatedOAuthClient), (status = 400, body = ApiErrorBody), (status = 403, body = ApiErrorBody)))]
pub async fn create_client(
    State(state): State<AppState>,
    caller: Caller<need::Session>,
    Path(project): Path<String>,
    ApiJson(req): ApiJson<CreateOAuthClientRequest>,
) -> ApiResult<(StatusCode, Json<CreatedOAuthClient>)> {
    let project = state
        .core
        .project_as_owner(&caller.principal, &project)
        .await?;
    let metadata = ClientMetadata {
        redirect_uris: req.redirect_uris,
        client_name: Some(req.client_name),
        token_endpoint_auth_method: Some(
            req.token_endpoint_auth_method
                .unwrap_or_else(|| "client_secret_basic".into()),
        ),
        grant_types: Some(
            req.grant_types
                .unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]),
        ),
        ..Default::default()
    };
    let registered = state
        .oauth
        .create_registered_client(&project.id, caller.principal.actor_id(), &metadata)
        .await?;
    let c = &registered.client;
    audit(
        &state,
        &caller.principal,
        &project.id,
        "oauth_client.create",
        &c.client_id,
        None,
        serde_json::json!({ "client_name": c.client_name, "redirect_uris": c.redirect_uris }),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedOAuthClient {
            client: client_api(&registered.client),
            client_secret: registered.secret,
        }),
    ))
}

/// List the OAuth clients registered for the project.
#[utoipa::path(get, path = "/v1/projects/{project}/oauth-clients", tag = "oauth",
    params(("project" = String, Path, description = "Project id or name")),
    security(("session" = [])),
    responses((status = 200, body = OAuthClientList), (status = 404, body = ApiErrorBody)))]
pub async fn list_clients(
    State(state): State<AppState>,
    caller: Caller<need::Session>,
    Path(project): Path<String>,
) -> ApiResult<Json<OAuthClientList>> {
    let project = state
        .core
        .project_as_member(&caller.principal, &project)
        .await?;
    let clients = state.oauth.clients_of_project(&project.id).await?;
    Ok(Json(OAuthClientList {
        clients: clients.iter().map(client_api).collect(),
    }))
}

/// Delete an OAuth client registered for the project (owners only).
#[utoipa::path(delete, path = "/v1/projects/{project}/oauth-clients/{client_id}", tag = "oauth",
    params(("project" = String, Path, description = "Project id or name"), ("client_id" = String, Path)),
    security(("session" = [])),
    responses((status = 204), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn delete_client(
    State(state): State<AppState>,
    caller: Caller<need::Session>,
    Path((project, client_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let project = state
        .core
        .project_as_owner(&caller.principal, &project)
        .await?;
    if state.oauth.delete_client(&project.id, &client_id).await? {
        audit(
            &state,
            &caller.principal,
            &project.id,
            "oauth_client.delete",
            &client_id,
            None,
            serde_json::json!({}),
        )
        .await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(CoreError::NotFound("OAuth client").into())
    }
}

/// The grants of a server: which users let which clients act on it, with what scopes.
#[utoipa::path(get, path = "/v1/projects/{project}/servers/{server}/grants", tag = "oauth",
    params(("project" = String, Path, description = "Project id or name"), ("server" = String, Path, description = "Server id or slug")),
    security(("api_key" = ["servers:read"]), ("session" = [])),
    responses((status = 200, body = GrantList), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn list_grants(
    State(state): State<AppState>,
    caller: Caller<need::ServersRead>,
    Path((project, server)): Path<(String, String)>,
) -> ApiResult<Json<GrantList>> {
    let server = state
        .core
        .get_server(&caller.principal, &project, &server)
        .await?;
    let mut out = Vec::new();
    let mut names = std::collections::HashMap::new();
    for g in state.oauth.grants_of_server(&server.id).await? {
        let name = match names.get(&g.client_id) {
            Some(name) => Option::clone(name),
            None => {
                let name = state.oauth.known_client_name(&g.client_id).await?;
                names.insert(g.client_id.clone(), name.clone());
                name
            }
        };
        out.push(grant_api(g, name));
    }
    Ok(Json(GrantList { grants: out }))
}

/// Revoke a grant: its refresh tokens die and its access tokens stop verifying.
#[utoipa::path(delete, path = "/v1/projects/{project}/servers/{server}/grants/{grant_id}", tag = "oauth",
    params(("project" = String, Path, description = "Project id or name"), ("server" = String, Path, description = "Server id or slug"), ("grant_id" = String, Path)),
    security(("api_key" = ["servers:write"]), ("session" = [])),
    responses((status = 200, body = Grant), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn revoke_grant(
    State(state): State<AppState>,
    caller: Caller<need::ServersWrite>,
    Path((project, server, grant_id)): Path<(String, String, String)>,
) -> ApiResult<Json<Grant>> {
    let server = state
        .core
        .get_server(&caller.principal, &project, &server)
        .await?;
    let grant = revoke_grant_audited(&state, &caller.principal, &server, &grant_id).await?;
    Ok(Json(grant_api(grant, None)))
}

/// Revokes one of the server's grants and records who did.
pub(crate) async fn revoke_grant_audited(
    state: &AppState,
    principal: &ezforge_core::Principal,
    server: &ezforge_core::model::ServerRow,
    grant_id: &str,
) -> Result<ezforge_core::oauth::model::GrantRow, ApiError> {
    let grant = state
        .oauth
        .revoke_grant(&server.id, grant_id)
        .await?
        .ok_or(CoreError::NotFound("grant"))?;
    audit(
        state,
        principal,
        &server.project_id,
        "grant.revoke",
        &grant.id,
        Some(server.environment),
        serde_json::json!({ "server_id": server.id, "user_id": grant.user_id, "client_id": grant.client_id }),
    )
    .await;
    Ok(grant)
}

async fn audit(
    state: &AppState,
    principal: &ezforge_core::Principal,
    project_id: &str,
    action: &str,
    target: &str,
    environment: Option<ezforge_proto::Environment>,
    details: serde_json::Value,
) {
    let change = ezforge_core::audit::Change {
        project_id,
        action,
        target,
        environment,
        details,
    };
    state.core.audit(principal, change).await;
}

fn require_admin(caller: &Caller<need::Session>) -> Result<(), ApiError> {
    let user = caller.principal.user()?;
    if !user.is_admin {
        return Err(CoreError::Forbidden(
            "only the instance's admin can manage signing keys".into(),
        )
        .into());
    }
    Ok(())
}

fn key_list(state: &AppState) -> ApiResult<SigningKeyList> {
    let keys = state.oauth.key_infos()?;
    Ok(SigningKeyList {
        keys: keys
            .into_iter()
            .map(|k| SigningKeyInfo {
                kid: k.kid,
                created_at: to_datetime(k.created_at),
                signs_from: to_datetime(k.signs_from),
                retired_at: k.retired_at.map(to_datetime),
                signing: k.signing,
            })
            .collect(),
    })
}

/// The access-token signing keys (instance admin only).
#[utoipa::path(get, path = "/v1/admin/signing-keys", tag = "oauth",
    security(("session" = [])),
    responses((status = 200, body = SigningKeyList), (status = 403, body = ApiErrorBody)))]
pub async fn list_signing_keys(
    State(state): State<AppState>,
    caller: Caller<need::Session>,
) -> ApiResult<Json<SigningKeyList>> {
    require_admin(&caller)?;
    state.oauth.reload_keys().await?;
    Ok(Json(key_list(&state)?))
}

/// Rotate the signing key (instance admin only): a new key is published now and signs after
/// the publication delay; the current key retires then and stays published until its tokens
/// have expired.
#[utoipa::path(post, path = "/v1/admin/signing-keys/rotate", tag = "oauth",
    security(("session" = [])),
    responses((status = 200, body = SigningKeyList), (status = 403, body = ApiErrorBody)))]
pub async fn rotate_signing_key(
    State(state): State<AppState>,
    caller: Caller<need::Session>,
) -> ApiResult<Json<SigningKeyList>> {
    require_admin(&caller)?;
    let key = state.oauth.rotate_signing_key().await?;
    tracing::info!(kid = %key.kid, "signing key rotation started");
    Ok(Json(key_list(&state)?))
}
