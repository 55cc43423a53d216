//! `/register`, `/token`, `/revoke`, `/introspect`.

use super::OAuthResponse;
use crate::extract::ClientAddr;
use crate::routes::AppState;
use axum::Json;
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ezforge_core::oauth::OAuthError;
use ezforge_core::oauth::clients::{ClientCredentials, ClientMetadata};
use ezforge_core::oauth::token::TokenParams;
use ezforge_core::{Principal, Requirement};
use ezforge_proto::Scope;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// A form body; rejections become `invalid_request`.
pub struct OAuthForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OAuthForm<T> {
    type Rejection = OAuthResponse;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Form::<T>::from_request(req, state)
            .await
            .map(|f| OAuthForm(f.0))
            .map_err(|e: FormRejection| {
                OAuthError::InvalidRequest(format!(
                    "the body must be application/x-www-form-urlencoded: {}",
                    e.body_text()
                ))
                .into()
            })
    }
}

/// Decodes one form-encoded component (RFC 6749 §2.3.1 encodes Basic credentials that way).
fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("v={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// `Authorization: Basic` client credentials, if sent. `Err` when the header is malformed.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthResponse> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    let Some((scheme, rest)) = value.trim().split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let bad = || OAuthResponse {
        error: OAuthError::InvalidClient("malformed Basic credentials".into()),
        basic: true,
    };
    let decoded = STANDARD.decode(rest.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    Ok(Some((form_decode(id), form_decode(secret))))
}

fn credentials(
    headers: &HeaderMap,
    form_id: Option<String>,
    form_secret: Option<String>,
) -> Result<ClientCredentials, OAuthResponse> {
    Ok(ClientCredentials {
        basic: basic_credentials(headers)?,
        form_id,
        form_secret,
    })
}

/// `POST /register` (RFC 7591): JSON in, 201 with the registered metadata out.
pub async fn register(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    body: axum::body::Bytes,
) -> Response {
    let metadata: ClientMetadata = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            return OAuthResponse::from(OAuthError::InvalidClientMetadata(format!(
                "the body must be a JSON object of client metadata: {e}"
            )))
            .into_response();
        }
    };
    match state.oauth.register(&metadata, &addr).await {
        Ok(registered) => (StatusCode::CREATED, Json(registered.response())).into_response(),
        Err(e) => OAuthResponse::from(e).into_response(),
    }
}

/// `POST /token`.
pub async fn token(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    OAuthForm(p): OAuthForm<TokenParams>,
) -> Response {
    let creds = match credentials(&headers, p.client_id.clone(), p.client_secret.clone()) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let basic = creds.basic.is_some();
    match state.oauth.token(&p, &creds, &addr).await {
        Ok(resp) => (
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            Json(resp),
        )
            .into_response(),
        Err(error) => OAuthResponse { error, basic }.into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    token: Option<String>,
    #[allow(dead_code)]
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// The calling client, authenticated by Basic or by the form; the flag says whether Basic was
/// used (a 401 then names the scheme).
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    f: &TokenForm,
) -> Result<(std::sync::Arc<ezforge_core::oauth::model::ClientRow>, bool), OAuthResponse> {
    let creds = credentials(headers, f.client_id.clone(), f.client_secret.clone())?;
    let basic = creds.basic.is_some();
    let client = state
        .oauth
        .authenticate_client(&creds)
        .await
        .map_err(|error| OAuthResponse { error, basic })?;
    Ok((client, basic))
}

/// `POST /revoke` (RFC 7009): 200 whether or not the token was known.
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    OAuthForm(f): OAuthForm<TokenForm>,
) -> Response {
    let result = async {
        let (client, _) = authenticate(&state, &headers, &f).await?;
        let token = f
            .token
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| OAuthError::InvalidRequest("token is required".into()))?;
        state.oauth.revoke_token(token, &client).await?;
        Ok::<_, OAuthResponse>(StatusCode::OK.into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /introspect` (RFC 7662). The caller authenticates as a confidential client (and sees
/// its own tokens) or with a project API key holding `servers:read` (and sees tokens for its
/// project's servers in its environment).
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    OAuthForm(f): OAuthForm<TokenForm>,
) -> Response {
    let result = async {
        let token = f
            .token
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| OAuthError::InvalidRequest("token is required".into()))?;
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth::bearer_token)
            .map(String::from);
        let body = if let Some(key) = bearer {
            let principal = state
                .core
                .authenticate_api_key(&key)
                .await
                .map_err(|e| OAuthError::InvalidClient(e.to_string()))?;
            principal
                .require(Requirement::Scope(Scope::ServersRead))
                .map_err(|e| OAuthError::InvalidClient(e.to_string()))?;
            let Principal::ApiKey(k) = &principal else {
                return Err(OAuthError::InvalidClient("an API key is required".into()).into());
            };
            let servers: Vec<String> = state
                .core
                .store()
                .servers(&k.project_id, Some(k.environment))
                .await
                .map_err(|e| OAuthError::Server(e.to_string()))?
                .into_iter()
                .map(|s| s.id)
                .collect();
            state
                .oauth
                .introspect(&token, |g| servers.contains(&g.server_id))
                .await?
        } else {
            let (client, basic) = authenticate(&state, &headers, &f).await?;
            if client.is_public() {
                return Err(OAuthResponse {
                    error: OAuthError::InvalidClient("public clients cannot introspect".into()),
                    basic,
                });
            }
            state
                .oauth
                .introspect(&token, |g| g.client_id == client.client_id)
                .await?
        };
        Ok::<_, OAuthResponse>(Json(body).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}
