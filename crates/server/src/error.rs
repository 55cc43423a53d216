//! The one place where errors become responses: HTTP status, stable code, human message.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ezforge_core::CoreError;
use ezforge_proto::{ApiErrorBody, ErrorCode, ErrorDetail, Scope};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("the `Authorization` header must be `Bearer <API key>`")]
    InvalidAuthorizationHeader,
    #[error(
        "send the session's CSRF token in the `X-CSRF-Token` header with every state-changing request"
    )]
    CsrfMissing,
    #[error("the CSRF token does not match this session")]
    CsrfInvalid,
    #[error("cookie-authenticated requests must come from {0}")]
    CrossOrigin(String),
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the request body does not match the expected shape: {0}")]
    InvalidBody(String),
    #[error("send the body as JSON with `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("the request body is larger than the {0}-byte limit")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    InvalidQuery(String),
    #[error("no such route: {0}")]
    NoRoute(String),
    #[error("this route does not accept {0}")]
    MethodNotAllowed(String),
    #[error("{}", .0.description())]
    OAuth(ezforge_core::oauth::OAuthError),
    #[error("the upstream did not answer an MCP initialize: {0}; fix it, or deploy with force")]
    UpstreamUnhealthy(String),
}

impl From<ezforge_core::oauth::OAuthError> for ApiError {
    fn from(e: ezforge_core::oauth::OAuthError) -> Self {
        ApiError::OAuth(e)
    }
}

impl ApiError {
    fn parts(&self) -> (StatusCode, ErrorCode) {
        use CoreError as C;
        match self {
            ApiError::Core(e) => match e {
                C::Unauthenticated => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated),
                C::ApiKeyMalformed(_) => (StatusCode::UNAUTHORIZED, ErrorCode::ApiKeyMalformed),
                C::ApiKeyInvalidPrefix => {
                    (StatusCode::UNAUTHORIZED, ErrorCode::ApiKeyInvalidPrefix)
                }
                C::ApiKeyChecksumMismatch => {
                    (StatusCode::UNAUTHORIZED, ErrorCode::ApiKeyChecksumMismatch)
                }
                C::ApiKeyUnknown => (StatusCode::UNAUTHORIZED, ErrorCode::ApiKeyUnknown),
                C::ApiKeyRevoked => (StatusCode::UNAUTHORIZED, ErrorCode::ApiKeyRevoked),
                C::ApiKeyExpired => (StatusCode::UNAUTHORIZED, ErrorCode::ApiKeyExpired),
                C::SessionInvalid => (StatusCode::UNAUTHORIZED, ErrorCode::SessionInvalid),
                C::SessionExpired => (StatusCode::UNAUTHORIZED, ErrorCode::SessionExpired),
                C::InvalidCredentials => (StatusCode::UNAUTHORIZED, ErrorCode::InvalidCredentials),
                C::InsufficientScope(_) => (StatusCode::FORBIDDEN, ErrorCode::InsufficientScope),
                C::ProjectMismatch => (StatusCode::FORBIDDEN, ErrorCode::ProjectMismatch),
                C::EnvironmentMismatch { .. } => {
                    (StatusCode::FORBIDDEN, ErrorCode::EnvironmentMismatch)
                }
                C::SessionRequired => (StatusCode::FORBIDDEN, ErrorCode::SessionRequired),
                C::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
                C::SignupClosed => (StatusCode::FORBIDDEN, ErrorCode::SignupClosed),
                C::InviteRequired => (StatusCode::FORBIDDEN, ErrorCode::InviteRequired),
                C::InviteInvalid => (StatusCode::FORBIDDEN, ErrorCode::InviteInvalid),
                C::InvalidScope(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidScope),
                C::Invalid { .. } => (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest),
                C::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
                C::Conflict(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
                C::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
                C::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
            },
            ApiError::InvalidAuthorizationHeader => (
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidAuthorizationHeader,
            ),
            ApiError::CsrfMissing => (StatusCode::FORBIDDEN, ErrorCode::CsrfTokenMissing),
            ApiError::CsrfInvalid => (StatusCode::FORBIDDEN, ErrorCode::CsrfTokenInvalid),
            ApiError::CrossOrigin(_) => (StatusCode::FORBIDDEN, ErrorCode::CrossOriginRequest),
            ApiError::InvalidJson(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidJson),
            ApiError::InvalidBody(_) | ApiError::InvalidQuery(_) => {
                (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest)
            }
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
            ),
            ApiError::PayloadTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge)
            }
            ApiError::NoRoute(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::MethodNotAllowed(_) => {
                (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed)
            }
            ApiError::OAuth(ezforge_core::oauth::OAuthError::Server(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal)
            }
            ApiError::OAuth(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest),
            ApiError::UpstreamUnhealthy(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::UpstreamUnhealthy,
            ),
        }
    }

    pub fn body(&self) -> ApiErrorBody {
        let (_, code) = self.parts();
        let message = match self {
            // Internal details go to the log, never to the caller.
            ApiError::Core(CoreError::Internal(_)) => {
                "internal error; the server log has details".to_string()
            }
            other => other.to_string(),
        };
        let mut detail = ErrorDetail {
            code,
            message,
            required_scope: None,
            valid_scopes: None,
            retry_after: None,
        };
        match self {
            ApiError::Core(CoreError::InsufficientScope(scope)) => {
                detail.required_scope = Some(scope.to_string())
            }
            ApiError::Core(CoreError::InvalidScope(_)) => {
                detail.valid_scopes =
                    Some(Scope::valid_names().into_iter().map(String::from).collect())
            }
            ApiError::Core(CoreError::RateLimited { retry_after }) => {
                detail.retry_after = Some(*retry_after)
            }
            _ => {}
        }
        ApiErrorBody { error: detail }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _) = self.parts();
        match &self {
            ApiError::Core(CoreError::Internal(detail))
            | ApiError::OAuth(ezforge_core::oauth::OAuthError::Server(detail)) => {
                tracing::error!(%detail, "internal error")
            }
            _ => {}
        }
        let mut response = (status, Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: a 401 names the scheme; `invalid_token` when a key was presented.
            let challenge = match &self {
                ApiError::Core(
                    CoreError::ApiKeyMalformed(_)
                    | CoreError::ApiKeyInvalidPrefix
                    | CoreError::ApiKeyChecksumMismatch
                    | CoreError::ApiKeyUnknown
                    | CoreError::ApiKeyRevoked
                    | CoreError::ApiKeyExpired,
                ) => "Bearer realm=\"ezforge\", error=\"invalid_token\"",
                ApiError::InvalidAuthorizationHeader => {
                    "Bearer realm=\"ezforge\", error=\"invalid_request\""
                }
                _ => "Bearer realm=\"ezforge\"",
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let ApiError::Core(CoreError::RateLimited { retry_after }) = &self
            && let Ok(v) = HeaderValue::from_str(&retry_after.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
