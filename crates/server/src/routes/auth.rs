//! Sign-up, sign-in, the session, sign-out and invites.

use super::AppState;
use crate::auth::{Caller, clear_session_cookie, need, session_cookie};
use crate::error::ApiResult;
use crate::extract::{ApiJson, ClientAddr};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ezforge_core::clock::to_datetime;
use ezforge_core::secret;
use ezforge_core::service::NewSession;
use ezforge_proto::{
    ApiErrorBody, CreateInviteRequest, CreatedInvite, LoginRequest, SessionInfo,
    SignOutEverywhereResponse, SignupRequest,
};

fn session_response(state: &AppState, status: StatusCode, s: NewSession) -> Response {
    let info = SessionInfo {
        user: s.user.to_api(),
        expires_at: to_datetime(s.row.expires_at),
        csrf_token: secret::csrf_token(&s.token),
    };
    let max_age = s.row.expires_at - s.row.created_at;
    let cookie = session_cookie(&s.token, max_age, state.http.secure_cookies);
    (status, [(header::SET_COOKIE, cookie)], Json(info)).into_response()
}

fn cleared(
    state: &AppState,
    status: StatusCode,
    body: Option<Json<SignOutEverywhereResponse>>,
) -> Response {
    let cookie = clear_session_cookie(state.http.secure_cookies);
    match body {
        Some(b) => (status, [(header::SET_COOKIE, cookie)], b).into_response(),
        None => (status, [(header::SET_COOKIE, cookie)]).into_response(),
    }
}

/// Create an account and sign in.
///
/// The first account of an instance becomes its admin. After that the instance's sign-up mode
/// decides: `open`, `invite` (an `invite_code` is required) or `closed`.
#[utoipa::path(post, path = "/v1/auth/signup", tag = "auth", request_body = SignupRequest,
    responses(
        (status = 201, description = "Account created; session cookie set", body = SessionInfo),
        (status = 400, description = "Invalid email or password", body = ApiErrorBody),
        (status = 403, description = "Sign-up closed, invite required or invalid", body = ApiErrorBody),
        (status = 409, description = "Email already registered", body = ApiErrorBody),
    ))]
pub async fn signup(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<SignupRequest>,
) -> ApiResult<Response> {
    let s = state
        .core
        .signup(&req.email, &req.password, req.invite_code.as_deref())
        .await?;
    Ok(session_response(&state, StatusCode::CREATED, s))
}

/// Sign in with email and password.
///
/// Sets the HTTP-only `ezf_session` cookie (1 hour). Repeated failures for one account or from
/// one client address are answered with 429 and `Retry-After`.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; session cookie set", body = SessionInfo),
        (status = 401, description = "Wrong email or password", body = ApiErrorBody),
        (status = 429, description = "Too many failed attempts", body = ApiErrorBody),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    let s = state.core.login(&req.email, &req.password, &client).await?;
    Ok(session_response(&state, StatusCode::OK, s))
}

/// The current session: user, expiry and CSRF token.
#[utoipa::path(get, path = "/v1/auth/session", tag = "auth",
    security(("session" = [])),
    responses((status = 200, body = SessionInfo), (status = 401, body = ApiErrorBody), (status = 403, body = ApiErrorBody)))]
pub async fn session(caller: Caller<need::Session>) -> ApiResult<Json<SessionInfo>> {
    let ezforge_core::Principal::User { user, session } = &caller.principal else {
        return Err(ezforge_core::CoreError::SessionRequired.into());
    };
    let token = caller.session_token.as_deref().unwrap_or_default();
    Ok(Json(SessionInfo {
        user: user.to_api(),
        expires_at: to_datetime(session.expires_at),
        csrf_token: secret::csrf_token(token),
    }))
}

/// Sign out: ends this session and clears the cookie.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth",
    security(("session" = [])),
    responses((status = 204, description = "Signed out"), (status = 401, body = ApiErrorBody), (status = 403, body = ApiErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    caller: Caller<need::Session>,
) -> ApiResult<Response> {
    state.core.logout(&caller.principal).await?;
    Ok(cleared(&state, StatusCode::NO_CONTENT, None))
}

/// Sign out everywhere: ends every session of this account.
#[utoipa::path(post, path = "/v1/auth/logout-everywhere", tag = "auth",
    security(("session" = [])),
    responses((status = 200, body = SignOutEverywhereResponse), (status = 401, body = ApiErrorBody), (status = 403, body = ApiErrorBody)))]
pub async fn logout_everywhere(
    State(state): State<AppState>,
    caller: Caller<need::Session>,
) -> ApiResult<Response> {
    let n = state.core.logout_everywhere(&caller.principal).await?;
    Ok(cleared(
        &state,
        StatusCode::OK,
        Some(Json(SignOutEverywhereResponse { sessions_ended: n })),
    ))
}

/// Create an invite code (instance admin only). The code is shown once.
#[utoipa::path(post, path = "/v1/invites", tag = "auth", request_body = CreateInviteRequest,
    security(("session" = [])),
    responses((status = 201, body = CreatedInvite), (status = 403, body = ApiErrorBody)))]
pub async fn create_invite(
    State(state): State<AppState>,
    caller: Caller<need::Session>,
    ApiJson(req): ApiJson<CreateInviteRequest>,
) -> ApiResult<(StatusCode, Json<CreatedInvite>)> {
    let (invite, code) = state
        .core
        .create_invite(&caller.principal, req.email.as_deref())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedInvite {
            id: invite.id,
            code,
            email: invite.email,
            expires_at: to_datetime(invite.expires_at),
        }),
    ))
}
