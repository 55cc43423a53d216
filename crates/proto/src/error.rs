//! The `/v1` error body: `{"error": {"code": "...", "message": "...", ...}}`.
//!
//! `code` is stable and meant for programs; `message` is for people and may change.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every stable error code `/v1` can answer with. Documented in `docs/api-errors.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // 401: who are you?
    /// No session cookie and no `Authorization: Bearer` credential.
    Unauthenticated,
    /// The `Authorization` header is not `Bearer <token>`.
    InvalidAuthorizationHeader,
    /// The bearer token is not shaped like an ezForge API key.
    ApiKeyMalformed,
    /// The token has a prefix other than `ezf_live_` or `ezf_test_`.
    ApiKeyInvalidPrefix,
    /// The key's checksum does not match: a typo or a look-alike.
    ApiKeyChecksumMismatch,
    /// A well-formed key that this instance never issued (or was deleted).
    ApiKeyUnknown,
    ApiKeyRevoked,
    ApiKeyExpired,
    /// The session cookie does not name a live session.
    SessionInvalid,
    SessionExpired,
    /// Wrong email or password.
    InvalidCredentials,
    // 403: you may not.
    InsufficientScope,
    /// An API key used outside its own project.
    ProjectMismatch,
    /// A test key on live resources or a live key on test ones.
    EnvironmentMismatch,
    /// The route needs a signed-in user; API keys cannot use it.
    SessionRequired,
    /// The signed-in user's project role does not allow this.
    Forbidden,
    CsrfTokenMissing,
    CsrfTokenInvalid,
    /// A cookie-authenticated request from another origin.
    CrossOriginRequest,
    SignupClosed,
    InviteRequired,
    InviteInvalid,
    // 400, 404, 409, 413, 415, 429
    InvalidScope,
    InvalidJson,
    InvalidRequest,
    UnsupportedMediaType,
    PayloadTooLarge,
    NotFound,
    MethodNotAllowed,
    /// A deploy whose upstream did not answer an MCP `initialize` (deploy again with `force`).
    UpstreamUnhealthy,
    Conflict,
    RateLimited,
    // 500
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::InvalidAuthorizationHeader => "invalid_authorization_header",
            ErrorCode::ApiKeyMalformed => "api_key_malformed",
            ErrorCode::ApiKeyInvalidPrefix => "api_key_invalid_prefix",
            ErrorCode::ApiKeyChecksumMismatch => "api_key_checksum_mismatch",
            ErrorCode::ApiKeyUnknown => "api_key_unknown",
            ErrorCode::ApiKeyRevoked => "api_key_revoked",
            ErrorCode::ApiKeyExpired => "api_key_expired",
            ErrorCode::SessionInvalid => "session_invalid",
            ErrorCode::SessionExpired => "session_expired",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::ProjectMismatch => "project_mismatch",
            ErrorCode::EnvironmentMismatch => "environment_mismatch",
            ErrorCode::SessionRequired => "session_required",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::CsrfTokenMissing => "csrf_token_missing",
            ErrorCode::CsrfTokenInvalid => "csrf_token_invalid",
            ErrorCode::CrossOriginRequest => "cross_origin_request",
            ErrorCode::SignupClosed => "signup_closed",
            ErrorCode::InviteRequired => "invite_required",
            ErrorCode::InviteInvalid => "invite_invalid",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::UpstreamUnhealthy => "upstream_unhealthy",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation; wording may change.
    pub message: String,
    /// With `insufficient_scope`: the scope the route needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_scope: Option<String>,
    /// With `invalid_scope`: every valid scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_scopes: Option<Vec<String>>,
    /// With `rate_limited`: seconds to wait, as in the `Retry-After` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_matches_the_serialized_code() {
        for code in [
            ErrorCode::Unauthenticated,
            ErrorCode::ApiKeyChecksumMismatch,
            ErrorCode::CsrfTokenMissing,
            ErrorCode::PayloadTooLarge,
            ErrorCode::Internal,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
