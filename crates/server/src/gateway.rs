//! The front of the MCP gateway: `/mcp/{slug}` answers MCP clients without a valid token with
//! the RFC 6750 / RFC 9728 challenge that starts discovery. Forwarding to deployments is not
//! built yet; a request with a valid token is told the server has no active deployment.

use crate::auth::bearer_token;
use crate::error::ApiError;
use crate::routes::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ezforge_core::CoreError;

/// The scope asked for in the first challenge. It includes `offline_access` so that clients
/// which request exactly the challenged scope (the TypeScript SDK) also get a refresh token.
pub const CHALLENGE_SCOPE: &str = "mcp:read mcp:write offline_access";

fn challenge(state: &AppState, slug: &str, error: Option<&str>) -> Response {
    let metadata = format!(
        "{}/.well-known/oauth-protected-resource/mcp/{slug}",
        state.http.public_origin
    );
    let mut value = format!("Bearer resource_metadata=\"{metadata}\", scope=\"{CHALLENGE_SCOPE}\"");
    if let Some(e) = error {
        value.push_str(&format!(", error=\"{e}\""));
    }
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": -32001, "message": "authorization required: obtain a token from the authorization server named in the protected-resource metadata"}
    });
    let mut resp = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// Any method on `/mcp/{slug}`.
pub async fn endpoint(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Response {
    let server = match state.core.store().server_by_slug(&slug).await {
        Ok(Some(server)) => server,
        Ok(None) => return ApiError::NoRoute(format!("/mcp/{slug}")).into_response(),
        Err(e) => return ApiError::from(CoreError::from(e)).into_response(),
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return challenge(&state, &slug, None);
    };
    let Some(token) = value.to_str().ok().and_then(bearer_token) else {
        return challenge(&state, &slug, Some("invalid_request"));
    };
    if server.byoa.is_some() {
        // Tokens from the customer's issuer are checked against its JWKS: not built yet.
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {"code": -32603, "message": "tokens of a BYOA server cannot be verified yet"}
        });
        return (StatusCode::NOT_IMPLEMENTED, Json(body)).into_response();
    }
    let resource = state.oauth.resource_uri(&slug);
    if state
        .oauth
        .verify_access_token(token, Some(&resource))
        .await
        .is_err()
    {
        return challenge(&state, &slug, Some("invalid_token"));
    }
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": -32603, "message": format!("server `{slug}` has no active deployment")}
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}
