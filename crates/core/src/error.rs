//! The domain's one error type. The server maps each variant to an HTTP status and a stable
//! `/v1` error code in one place.

use crate::store::StoreError;
use ezforge_proto::Scope;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("no credentials: send a session cookie or `Authorization: Bearer ezf_…`")]
    Unauthenticated,
    #[error("the API key is malformed: {0}")]
    ApiKeyMalformed(&'static str),
    #[error("the token does not start with `ezf_live_` or `ezf_test_`")]
    ApiKeyInvalidPrefix,
    #[error("the API key's checksum does not match; it was mistyped or is not an ezForge key")]
    ApiKeyChecksumMismatch,
    #[error("this API key does not exist")]
    ApiKeyUnknown,
    #[error("this API key was revoked")]
    ApiKeyRevoked,
    #[error("this API key expired")]
    ApiKeyExpired,
    #[error("the session is not valid; sign in again")]
    SessionInvalid,
    #[error("the session expired; sign in again")]
    SessionExpired,
    #[error("wrong email or password")]
    InvalidCredentials,
    #[error("this request needs the `{0}` scope, which the API key does not have")]
    InsufficientScope(Scope),
    #[error("this API key belongs to another project")]
    ProjectMismatch,
    #[error("a {key} API key cannot act on {resource} resources")]
    EnvironmentMismatch {
        key: &'static str,
        resource: &'static str,
    },
    #[error("this action needs a signed-in user; API keys cannot perform it")]
    SessionRequired,
    #[error("{0}")]
    Forbidden(String),
    #[error("sign-up is closed on this instance")]
    SignupClosed,
    #[error("sign-up on this instance needs an invite code")]
    InviteRequired,
    #[error("the invite code is not valid, already used, expired or meant for another email")]
    InviteInvalid,
    #[error("{0}")]
    InvalidScope(ezforge_proto::UnknownScope),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("too many attempts; try again in {retry_after} seconds")]
    RateLimited { retry_after: u64 },
    #[error("internal error")]
    Internal(String),
}

impl CoreError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        CoreError::Invalid {
            field,
            message: message.into(),
        }
    }
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => CoreError::Conflict(what),
            StoreError::Unstorable(message) => CoreError::Invalid {
                field: "request",
                message,
            },
            StoreError::Backend(message) => CoreError::Internal(message),
        }
    }
}
