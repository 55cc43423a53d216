//! Discovery: authorization server metadata (RFC 8414, also served as OpenID discovery),
//! protected-resource metadata (RFC 9728) and the JWKS.

use super::OAuthResponse;
use crate::error::ApiError;
use crate::routes::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use ezforge_core::oauth::scope;
use serde_json::{Value, json};

pub async fn authorization_server(State(state): State<AppState>) -> Json<Value> {
    let iss = state.oauth.issuer();
    Json(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "registration_endpoint": format!("{iss}/register"),
        "revocation_endpoint": format!("{iss}/revoke"),
        "introspection_endpoint": format!("{iss}/introspect"),
        "jwks_uri": format!("{iss}/jwks.json"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": scope::ALL,
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "client_id_metadata_document_supported": state.oauth.supports_client_documents(),
        "authorization_response_iss_parameter_supported": true,
        "resource_indicators_supported": true,
        "access_token_signing_alg_values_supported": ["ES256"],
    }))
}

/// RFC 9728 metadata with exactly the documentation's fields, in the documentation's order (a
/// struct, where a JSON map would sort its keys).
#[derive(serde::Serialize)]
struct ProtectedResource {
    resource: String,
    authorization_servers: [String; 1],
    scopes_supported: [&'static str; 4],
    bearer_methods_supported: [&'static str; 1],
}

/// The protected-resource metadata of a server.
pub async fn protected_resource(
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> Result<Response, ApiError> {
    let server = state
        .core
        .store()
        .server_by_slug(&slug)
        .await
        .map_err(ezforge_core::CoreError::from)?;
    let Some(server) = server else {
        return Err(ApiError::NoRoute(format!("/mcp/{slug}")));
    };
    // A BYOA server's tokens come from the customer's issuer, not from ezForge.
    let issuer = match &server.byoa {
        Some(byoa) => byoa.issuer.clone(),
        None => state.oauth.issuer().to_string(),
    };
    Ok(Json(ProtectedResource {
        resource: state.oauth.resource_uri(&slug),
        authorization_servers: [issuer],
        scopes_supported: scope::ALL,
        bearer_methods_supported: ["header"],
    })
    .into_response())
}

pub async fn jwks(State(state): State<AppState>) -> Response {
    match state.oauth.jwks() {
        Ok(keys) => Json(json!({"keys": keys})).into_response(),
        Err(e) => OAuthResponse::from(e).into_response(),
    }
}
