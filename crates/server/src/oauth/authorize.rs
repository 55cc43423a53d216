//! `/authorize` and the sign-in page it sends people to.

use crate::auth::{SESSION_COOKIE, cookie, session_cookie};
use crate::extract::ClientAddr;
use crate::pages::{self, ConsentView};
use crate::routes::AppState;
use axum::extract::{Form, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ezforge_core::oauth::authorize::{AuthorizeError, AuthorizeParams, AuthorizeRequest};
use ezforge_core::oauth::scope;
use ezforge_core::{CoreError, Principal, secret};
use serde::Deserialize;

const LOGIN_CSRF_COOKIE: &str = "ezf_login_csrf";

fn redirect(status: StatusCode, url: &str) -> Response {
    (status, [(header::LOCATION, url.to_string())]).into_response()
}

fn server_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "authorization flow failed");
    pages::error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "The server could not complete the request. Try again later.",
    )
}

/// The signed-in user behind the session cookie, with the cookie's value.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Option<(Principal, String)> {
    let token = cookie(headers, SESSION_COOKIE)?;
    let principal = state.core.authenticate_session(&token).await.ok()?;
    Some((principal, token))
}

/// `GET /authorize`.
pub async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let params: AuthorizeParams = match serde_urlencoded::from_str(&query) {
        Ok(p) => p,
        Err(e) => {
            return pages::error_page(
                StatusCode::BAD_REQUEST,
                &format!("The authorization request is malformed: {e}."),
            );
        }
    };
    let req = match state.oauth.validate_authorize(&params).await {
        Ok(req) => req,
        Err(AuthorizeError::Page(message)) => {
            return pages::error_page(StatusCode::BAD_REQUEST, &message);
        }
        Err(AuthorizeError::Redirect { url }) => return redirect(StatusCode::FOUND, &url),
    };
    let Some((principal, token)) = signed_in(&state, &headers).await else {
        let next = format!("/authorize?{query}");
        let login = format!(
            "/login?{}",
            serde_urlencoded::to_string([("next", next)]).unwrap_or_default()
        );
        return redirect(StatusCode::FOUND, &login);
    };
    let Principal::User { user, session } = &principal else {
        return server_error("session principal expected");
    };
    match state.oauth.may_authorize(user, &req).await {
        Ok(true) => {}
        Ok(false) => {
            let url = state.oauth.error_redirect(
                &req.redirect_uri,
                req.state.as_deref(),
                &ezforge_core::oauth::OAuthError::AccessDenied(
                    "the signed-in user may not authorize applications for this server".into(),
                ),
            );
            return redirect(StatusCode::FOUND, &url);
        }
        Err(e) => return server_error(e),
    }
    match state.oauth.needs_consent(user, &req).await {
        Ok(true) => consent_page(&state, &req, user, &session.token_hash, &token),
        Ok(false) => match state.oauth.approve(user, &req).await {
            Ok(url) => redirect(StatusCode::FOUND, &url),
            Err(e) => server_error(e),
        },
        Err(e) => server_error(e),
    }
}

fn consent_page(
    state: &AppState,
    req: &AuthorizeRequest,
    user: &ezforge_core::model::UserRow,
    session_hash: &str,
    token: &str,
) -> Response {
    let sealed = match state.oauth.seal_pending(req, &user.id, session_hash) {
        Ok(s) => s,
        Err(e) => return server_error(e),
    };
    let host = req.redirect_host();
    let view = ConsentView {
        client_name: &req.client_name,
        client_id: &req.client_id,
        redirect_host: &host,
        server_name: &req.server_name,
        resource: &req.resource,
        user_email: &user.email,
        scopes: req
            .scopes()
            .into_iter()
            .map(|s| (s, scope::describe(s)))
            .collect(),
        sealed: &sealed,
        csrf: &secret::csrf_token(token),
    };
    pages::page(StatusCode::OK, "Authorize", &pages::consent(&view))
}

#[derive(Debug, Deserialize)]
pub struct Decision {
    request: String,
    csrf: String,
    decision: String,
}

/// `POST /authorize`: the consent form's answer.
pub async fn decide(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(d): Form<Decision>,
) -> Response {
    let Some((Principal::User { user, session }, token)) = signed_in(&state, &headers).await else {
        return pages::error_page(
            StatusCode::UNAUTHORIZED,
            "Your session ended. Return to the application and start again.",
        );
    };
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
        && origin.trim_end_matches('/') != state.http.public_origin
    {
        return pages::error_page(
            StatusCode::FORBIDDEN,
            "This form was submitted from another site.",
        );
    }
    if !secret::ct_eq(&d.csrf, &secret::csrf_token(&token)) {
        return pages::error_page(
            StatusCode::FORBIDDEN,
            "This form is not from your session. Return to the application and start again.",
        );
    }
    let Some(req) = state
        .oauth
        .open_pending(&d.request, &user.id, &session.token_hash)
    else {
        return pages::error_page(
            StatusCode::BAD_REQUEST,
            "This authorization request expired or was altered. Return to the application and start again.",
        );
    };
    if d.decision != "allow" {
        return redirect(StatusCode::SEE_OTHER, &state.oauth.deny(&req));
    }
    match state.oauth.may_authorize(&user, &req).await {
        Ok(true) => {}
        Ok(false) => return redirect(StatusCode::SEE_OTHER, &state.oauth.deny(&req)),
        Err(e) => return server_error(e),
    }
    match state.oauth.approve(&user, &req).await {
        Ok(url) => redirect(StatusCode::SEE_OTHER, &url),
        Err(e) => server_error(e),
    }
}

/// Where to go after signing in: only back to `/authorize?…` on this site, with no
/// characters a browser would strip or reinterpret (tabs, newlines, backslashes, spaces), so
/// `/\t/evil.example` cannot become `//evil.example`.
/// No dot segments (plain or encoded) and no empty segments in the path, which a browser could
/// resolve to another path (and one more redirect later, to another host).
fn clean_path(next: &str) -> bool {
    let path = next.split('?').next().unwrap_or_default();
    !path.contains("..") && !path.to_ascii_lowercase().contains("%2e") && !path.contains("//")
}

fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if (n.starts_with("/authorize?")
                || n == "/dashboard"
                || n.starts_with("/dashboard/"))
                && !n
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
                && clean_path(n) =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_cannot_leave_the_site() {
        assert_eq!(
            safe_next(Some("/authorize?client_id=x&state=y")),
            "/authorize?client_id=x&state=y"
        );
        for evil in [
            "//evil.example",
            "/\t/evil.example/x",
            "/%09/evil.example",
            "https://evil.example",
            "/\\evil.example",
            "/authorize?\n",
            "/login",
            "/dashboard/..//evil.example",
            "/dashboard/%2E%2E/%2e%2e//evil.example",
            "/dashboard//evil.example",
        ] {
            assert_eq!(safe_next(Some(evil)), "/", "{evil:?}");
        }
        assert_eq!(safe_next(None), "/");
        assert_eq!(safe_next(Some("/dashboard")), "/dashboard");
        assert_eq!(
            safe_next(Some("/dashboard/projects/p1")),
            "/dashboard/projects/p1"
        );
    }
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

fn login_csrf_cookie(value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{LOGIN_CSRF_COOKIE}={value}; Path=/login; HttpOnly; SameSite=Lax; Max-Age=900{secure}")
}

/// `GET /login`: the sign-in form.
pub async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<NextQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    let csrf = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_else(secret::random_token);
    let mut resp = pages::page(
        StatusCode::OK,
        "Sign in",
        &pages::sign_in(&next, &csrf, "", None),
    );
    if let Ok(v) = login_csrf_cookie(&csrf, state.http.secure_cookies).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
    next: Option<String>,
    csrf: String,
}

/// `POST /login`.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientAddr(addr): ClientAddr,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = safe_next(f.next.as_deref());
    let Some(expected) = cookie(&headers, LOGIN_CSRF_COOKIE) else {
        return pages::error_page(
            StatusCode::FORBIDDEN,
            "Your browser did not send the sign-in form's cookie. Enable cookies and try again.",
        );
    };
    if !secret::ct_eq(&expected, &f.csrf) {
        return pages::error_page(
            StatusCode::FORBIDDEN,
            "This sign-in form is not from this site.",
        );
    }
    match state.core.login(&f.email, &f.password, &addr).await {
        Ok(s) => {
            let max_age = s.row.expires_at - s.row.created_at;
            let mut resp = redirect(StatusCode::SEE_OTHER, &next);
            if let Ok(v) = session_cookie(&s.token, max_age, state.http.secure_cookies).parse() {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
            resp
        }
        Err(CoreError::InvalidCredentials) => pages::page(
            StatusCode::UNAUTHORIZED,
            "Sign in",
            &pages::sign_in(&next, &f.csrf, &f.email, Some("Wrong email or password.")),
        ),
        Err(CoreError::RateLimited { retry_after }) => {
            let mut resp = pages::page(
                StatusCode::TOO_MANY_REQUESTS,
                "Sign in",
                &pages::sign_in(
                    &next,
                    &f.csrf,
                    &f.email,
                    Some(&format!(
                        "Too many attempts. Try again in {} minutes.",
                        retry_after.div_ceil(60)
                    )),
                ),
            );
            if let Ok(v) = retry_after.to_string().parse() {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        Err(e) => server_error(e),
    }
}
