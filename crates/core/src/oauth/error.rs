//! OAuth errors with their RFC 6749 / 7591 / 8707 codes.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidClient(String),
    #[error("{0}")]
    InvalidGrant(String),
    #[error("{0}")]
    UnauthorizedClient(String),
    #[error("{0}")]
    UnsupportedGrantType(String),
    #[error("{0}")]
    UnsupportedResponseType(String),
    #[error("{0}")]
    InvalidScope(String),
    #[error("{0}")]
    AccessDenied(String),
    /// RFC 8707: the resource is not one of ours.
    #[error("{0}")]
    InvalidTarget(String),
    /// RFC 7591.
    #[error("{0}")]
    InvalidRedirectUri(String),
    /// RFC 7591.
    #[error("{0}")]
    InvalidClientMetadata(String),
    #[error("too many requests; retry in {retry_after} seconds")]
    RateLimited { retry_after: u64 },
    #[error("server error")]
    Server(String),
}

impl OAuthError {
    /// The `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient(_) => "invalid_client",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::UnauthorizedClient(_) => "unauthorized_client",
            OAuthError::UnsupportedGrantType(_) => "unsupported_grant_type",
            OAuthError::UnsupportedResponseType(_) => "unsupported_response_type",
            OAuthError::InvalidScope(_) => "invalid_scope",
            OAuthError::AccessDenied(_) => "access_denied",
            OAuthError::InvalidTarget(_) => "invalid_target",
            OAuthError::InvalidRedirectUri(_) => "invalid_redirect_uri",
            OAuthError::InvalidClientMetadata(_) => "invalid_client_metadata",
            OAuthError::RateLimited { .. } => "temporarily_unavailable",
            OAuthError::Server(_) => "server_error",
        }
    }

    /// The `error_description`: never internal details.
    pub fn description(&self) -> String {
        match self {
            OAuthError::Server(_) => "the server could not complete the request".into(),
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unstorable(message) => OAuthError::InvalidRequest(message),
            other => OAuthError::Server(other.to_string()),
        }
    }
}
