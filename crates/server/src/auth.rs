//! Authentication of `/v1` requests and the route-level declaration of what each needs.
//!
//! A handler takes `Caller<need::X>`; `X` is the route's [`Requirement`], checked before the
//! handler runs. The same requirement is written in the route's OpenAPI `security`, and a test
//! walks the OpenAPI document to prove the two agree.

use crate::error::ApiError;
use crate::routes::AppState;
use axum::extract::FromRequestParts;
use axum::http::{HeaderMap, Method, header, request::Parts};
use ezforge_core::{Principal, Requirement, secret};
use std::marker::PhantomData;

pub const SESSION_COOKIE: &str = "ezf_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A route's declared requirement, as a type.
pub trait Declared: Send + Sync + 'static {
    const REQUIREMENT: Requirement;
}

/// The requirements routes can declare.
pub mod need {
    use super::Declared;
    use ezforge_core::Requirement;
    use ezforge_proto::Scope;

    macro_rules! scope_need {
        ($($name:ident => $scope:ident),* $(,)?) => {$(
            #[doc = concat!("A signed-in member, or an API key with `", stringify!($scope), "`.")]
            pub struct $name;
            impl Declared for $name {
                const REQUIREMENT: Requirement = Requirement::Scope(Scope::$scope);
            }
        )*};
    }
    scope_need! {
        ServersRead => ServersRead,
        ServersWrite => ServersWrite,
        DeploymentsRead => DeploymentsRead,
        DeploymentsWrite => DeploymentsWrite,
        LogsRead => LogsRead,
        MetricsRead => MetricsRead,
        BillingRead => BillingRead,
    }

    /// Any signed-in user or valid API key.
    pub struct Authenticated;
    impl Declared for Authenticated {
        const REQUIREMENT: Requirement = Requirement::Authenticated;
    }

    /// A signed-in user only.
    pub struct Session;
    impl Declared for Session {
        const REQUIREMENT: Requirement = Requirement::Session;
    }
}

/// The authenticated caller of a route that declared `R`.
pub struct Caller<R: Declared> {
    pub principal: Principal,
    /// The session cookie's value, when the caller used one (to derive the CSRF token).
    pub session_token: Option<String>,
    _need: PhantomData<R>,
}

impl<R: Declared> FromRequestParts<AppState> for Caller<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (principal, session_token) = authenticate(parts, state).await?;
        principal.require(R::REQUIREMENT)?;
        Ok(Caller {
            principal,
            session_token,
            _need: PhantomData,
        })
    }
}

/// An `Authorization: Bearer` API key wins over a session cookie; a cookie-authenticated request
/// that changes state must carry the CSRF token and, if it names an origin, ours.
async fn authenticate(
    parts: &Parts,
    state: &AppState,
) -> Result<(Principal, Option<String>), ApiError> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::InvalidAuthorizationHeader)?;
        let token = bearer_token(value).ok_or(ApiError::InvalidAuthorizationHeader)?;
        return Ok((state.core.authenticate_api_key(token).await?, None));
    }
    let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
        return Err(ezforge_core::CoreError::Unauthenticated.into());
    };
    let principal = state.core.authenticate_session(&token).await?;
    if !is_safe(&parts.method) {
        check_origin(&parts.headers, &state.http.public_origin)?;
        let presented = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::CsrfMissing)?;
        if !secret::ct_eq(presented, &secret::csrf_token(&token)) {
            return Err(ApiError::CsrfInvalid);
        }
    }
    Ok((principal, Some(token)))
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Browsers send `Origin` on cross-site POSTs; when present it must be ours.
fn check_origin(headers: &HeaderMap, public_origin: &str) -> Result<(), ApiError> {
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) if origin.trim_end_matches('/') != public_origin => {
            Err(ApiError::CrossOrigin(public_origin.to_string()))
        }
        _ => Ok(()),
    }
}

/// `Bearer <token>`, scheme case-insensitive (RFC 6750 §2.1).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

/// The value of cookie `name` from every `Cookie` header.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value for a new session: HTTP-only, `SameSite=Lax`, `Secure` on https,
/// living as long as the session.
pub fn session_cookie(token: &str, max_age_secs: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_session_cookie(secure: bool) -> String {
    session_cookie("", 0, secure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer a b"), None);
    }

    #[test]
    fn cookie_parsing() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; ezf_session=tok"),
        );
        assert_eq!(cookie(&h, "ezf_session").as_deref(), Some("tok"));
        assert_eq!(cookie(&h, "b"), None);
    }

    #[test]
    fn session_cookie_attributes() {
        let c = session_cookie("t", 3600, true);
        assert!(
            c.contains("HttpOnly")
                && c.contains("SameSite=Lax")
                && c.contains("Max-Age=3600")
                && c.contains("Secure")
        );
        assert!(!session_cookie("t", 3600, false).contains("Secure"));
    }
}
