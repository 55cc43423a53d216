//! The OAuth 2.1 authorization server's HTTP endpoints (outside `/v1`): metadata, JWKS,
//! registration, authorize with its sign-in and consent pages, token, revocation and
//! introspection. OAuth endpoints answer with RFC 6749 error bodies.

mod authorize;
mod endpoints;
pub mod fetch;
mod metadata;

use crate::routes::AppState;
use axum::Json;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ezforge_core::oauth::OAuthError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(metadata::authorization_server),
        )
        .route(
            "/.well-known/openid-configuration",
            get(metadata::authorization_server),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp/{slug}",
            get(metadata::protected_resource),
        )
        .route("/jwks.json", get(metadata::jwks))
        .route("/register", post(endpoints::register))
        .route("/token", post(endpoints::token))
        .route("/revoke", post(endpoints::revoke))
        .route("/introspect", post(endpoints::introspect))
        .route("/authorize", get(authorize::start).post(authorize::decide))
        .route("/login", get(authorize::login_page).post(authorize::login))
        .route("/mcp/{slug}", axum::routing::any(crate::gateway::endpoint))
}

/// An OAuth error as an HTTP response: `{"error", "error_description"}`.
pub struct OAuthResponse {
    pub error: OAuthError,
    /// The client authenticated with HTTP Basic: a 401 then names the scheme (RFC 6749 §5.2).
    pub basic: bool,
}

impl From<OAuthError> for OAuthResponse {
    fn from(error: OAuthError) -> Self {
        OAuthResponse {
            error,
            basic: false,
        }
    }
}

impl IntoResponse for OAuthResponse {
    fn into_response(self) -> Response {
        let status = match &self.error {
            OAuthError::InvalidClient(_) => StatusCode::UNAUTHORIZED,
            OAuthError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            OAuthError::Server(detail) => {
                tracing::error!(%detail, "OAuth endpoint failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::BAD_REQUEST,
        };
        let body = serde_json::json!({"error": self.error.code(), "error_description": self.error.description()});
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED && self.basic {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"ezforge\""),
            );
        }
        if let OAuthError::RateLimited { retry_after } = self.error
            && let Ok(v) = HeaderValue::from_str(&retry_after.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
