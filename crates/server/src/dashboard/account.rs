//! Signing up, in and out. Signing in is the authorization server's sign-in page, which
//! returns here; signing up has its own page.

use super::views::{Layout, Signup};
use super::{FormData, Viewer, error_page, render, see_other};
use crate::auth::{clear_session_cookie, cookie, session_cookie};
use crate::routes::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use ezforge_core::{CoreError, SignupMode, secret};

/// The sign-up form's CSRF token before there is a session: a random value in a cookie that
/// the form must repeat (a cross-site page can make the browser post, but cannot read it).
const FORM_CSRF_COOKIE: &str = "ezf_form_csrf";

fn signup_view(state: &AppState, csrf: &str, email: &str, error: Option<String>) -> Signup {
    Signup {
        l: Layout {
            title: "Create your account".into(),
            user_email: None,
            csrf: csrf.to_string(),
            notice: None,
            error,
        },
        email: email.to_string(),
        invite_needed: state.core.settings().signup == SignupMode::Invite,
    }
}

fn with_form_cookie(mut resp: Response, state: &AppState, csrf: &str) -> Response {
    let secure = if state.http.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let value = format!(
        "{FORM_CSRF_COOKIE}={csrf}; Path=/dashboard; HttpOnly; SameSite=Lax; Max-Age=3600{secure}"
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// `GET /dashboard/signup`.
pub async fn signup_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let csrf = cookie(&headers, FORM_CSRF_COOKIE).unwrap_or_else(secret::random_token);
    let resp = render(StatusCode::OK, &signup_view(&state, &csrf, "", None));
    with_form_cookie(resp, &state, &csrf)
}

/// `POST /dashboard/signup`: creates the account, signs in, goes to the projects.
pub async fn signup(State(state): State<AppState>, headers: HeaderMap, form: FormData) -> Response {
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
        && origin.trim_end_matches('/') != state.http.public_origin
    {
        return error_page(
            StatusCode::FORBIDDEN,
            "This form was sent from another site.",
        );
    }
    let presented = form.get("csrf").unwrap_or_default();
    let expected = cookie(&headers, FORM_CSRF_COOKIE);
    if !expected.is_some_and(|e| secret::ct_eq(&e, presented)) {
        return error_page(
            StatusCode::FORBIDDEN,
            "This sign-up form is not from this site, or your browser did not send its cookie.",
        );
    }
    let email = form.text("email").unwrap_or_default();
    let password = form.get("password").unwrap_or_default();
    match state
        .core
        .signup(&email, password, form.text("invite_code").as_deref())
        .await
    {
        Ok(s) => {
            let max_age = s.row.expires_at - s.row.created_at;
            let mut resp = see_other("/dashboard");
            if let Ok(v) = session_cookie(&s.token, max_age, state.http.secure_cookies).parse() {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
            resp
        }
        Err(e) => {
            let status = match e {
                CoreError::Conflict(_) => StatusCode::CONFLICT,
                CoreError::SignupClosed | CoreError::InviteRequired | CoreError::InviteInvalid => {
                    StatusCode::FORBIDDEN
                }
                CoreError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            let message = match e {
                CoreError::Internal(_) => "Something went wrong on our side. Try again.".into(),
                other => other.to_string(),
            };
            render(
                status,
                &signup_view(&state, presented, &email, Some(message)),
            )
        }
    }
}

/// `GET /dashboard/login`: the sign-in page, which comes back to the dashboard.
pub async fn login_page() -> Response {
    see_other("/login?next=/dashboard")
}

fn signed_out(state: &AppState) -> Response {
    let mut resp = see_other("/dashboard/login");
    if let Ok(v) = clear_session_cookie(state.http.secure_cookies).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /dashboard/logout`.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap, form: FormData) -> Response {
    let viewer = match Viewer::posting(&state, &headers, &form).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    if let Err(e) = state.core.logout(&viewer.principal).await {
        return super::core_error(e);
    }
    signed_out(&state)
}

/// `POST /dashboard/logout-everywhere`: ends every session of the account.
pub async fn logout_everywhere(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: FormData,
) -> Response {
    let viewer = match Viewer::posting(&state, &headers, &form).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    if let Err(e) = state.core.logout_everywhere(&viewer.principal).await {
        return super::core_error(e);
    }
    signed_out(&state)
}
