//! The authorization endpoint: validating the request, who may authorize, consent, and the
//! authorization code.
//!
//! Order matters: the client and the exact redirect URI are established first; until then an
//! error is shown to the person and never sent anywhere. After that, errors go back to the
//! client's redirect URI with `state` and `iss` (RFC 9207).

use super::model::{ClientKind, CodeRow, ConsentRow, GrantRow};
use super::{OAuth, OAuthError, redirect, scope};
use crate::model::UserRow;
use crate::{ids, secret};
use serde::{Deserialize, Serialize};

/// The query of `GET /authorize`, as sent.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub resource: Option<String>,
    pub prompt: Option<String>,
}

#[derive(Debug)]
pub enum AuthorizeError {
    /// Shown on an error page; never redirects.
    Page(String),
    /// Sent to the client's redirect URI.
    Redirect { url: String },
}

/// A validated authorization request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizeRequest {
    pub client_id: String,
    pub client_name: String,
    /// Where the answer goes: the request's `redirect_uri`, or the client's only registered one.
    pub redirect_uri: String,
    /// Whether the request named `redirect_uri` (the exchange must then repeat it).
    #[serde(default)]
    pub redirect_uri_given: bool,
    pub state: Option<String>,
    /// Space-separated, canonical order.
    pub scope: String,
    pub code_challenge: String,
    pub resource: String,
    pub server_id: String,
    pub server_name: String,
    pub prompt: Option<String>,
    /// A public client: its `client_id` is no secret, so anyone can start a request for it.
    #[serde(default)]
    pub public_client: bool,
}

impl AuthorizeRequest {
    /// The host the browser will be sent to, for the consent page.
    pub fn redirect_host(&self) -> String {
        url::Url::parse(&self.redirect_uri)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                })
            })
            .unwrap_or_default()
    }

    pub fn scopes(&self) -> Vec<&str> {
        self.scope.split(' ').filter(|s| !s.is_empty()).collect()
    }
}

/// What the consent form carries: the request, sealed and bound to the session that saw it.
#[derive(Serialize, Deserialize)]
struct Pending {
    req: AuthorizeRequest,
    user_id: String,
    session: String,
    exp: i64,
}

const PENDING_CONTEXT: &str = "ezforge-authorize-pending-v1";
const PENDING_TTL: i64 = 15 * 60;

fn is_pkce_value(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

impl OAuth {
    /// `redirect_uri?error=…&error_description=…&state=…&iss=…`.
    pub fn error_redirect(
        &self,
        redirect_uri: &str,
        state: Option<&str>,
        error: &OAuthError,
    ) -> String {
        self.redirect_with(
            redirect_uri,
            &[
                ("error", error.code()),
                ("error_description", &error.description()),
            ],
            state,
        )
    }

    fn redirect_with(
        &self,
        redirect_uri: &str,
        params: &[(&str, &str)],
        state: Option<&str>,
    ) -> String {
        match url::Url::parse(redirect_uri) {
            Ok(mut url) => {
                {
                    let mut q = url.query_pairs_mut();
                    for (k, v) in params {
                        q.append_pair(k, v);
                    }
                    if let Some(state) = state {
                        q.append_pair("state", state);
                    }
                    q.append_pair("iss", self.issuer());
                }
                url.to_string()
            }
            Err(_) => redirect_uri.to_string(),
        }
    }

    pub async fn validate_authorize(
        &self,
        p: &AuthorizeParams,
    ) -> Result<AuthorizeRequest, AuthorizeError> {
        let client_id = p
            .client_id
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                AuthorizeError::Page("The request names no client (client_id is missing).".into())
            })?;
        let client = match self.client(client_id).await {
            Ok(Some(client)) => client,
            Ok(None) => {
                return Err(AuthorizeError::Page(
                    "The application asking for access is not registered here (unknown client_id)."
                        .into(),
                ));
            }
            Err(OAuthError::InvalidClient(reason)) => {
                return Err(AuthorizeError::Page(format!(
                    "The application's client metadata document cannot be used: {reason}."
                )));
            }
            Err(_) => {
                return Err(AuthorizeError::Page(
                    "The server could not look up the application. Try again later.".into(),
                ));
            }
        };
        let redirect_uri = match p.redirect_uri.as_deref() {
            Some(uri) if redirect::matches(&client.redirect_uris, uri) => uri.to_string(),
            Some(_) => return Err(AuthorizeError::Page("The redirect address does not match any the application registered, so the request was stopped.".into())),
            None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
            None => return Err(AuthorizeError::Page("The request names no redirect address (redirect_uri is missing).".into())),
        };
        let state = p.state.clone();
        let fail = |e: OAuthError| AuthorizeError::Redirect {
            url: self.error_redirect(&redirect_uri, state.as_deref(), &e),
        };

        if p.response_type.as_deref() != Some("code") {
            return Err(fail(OAuthError::UnsupportedResponseType(
                "response_type must be code".into(),
            )));
        }
        let challenge = p.code_challenge.as_deref().unwrap_or_default();
        if challenge.is_empty() {
            return Err(fail(OAuthError::InvalidRequest(
                "PKCE is required: send code_challenge with code_challenge_method=S256".into(),
            )));
        }
        if p.code_challenge_method.as_deref() != Some("S256") {
            return Err(fail(OAuthError::InvalidRequest(
                "code_challenge_method must be S256".into(),
            )));
        }
        if !is_pkce_value(challenge) {
            return Err(fail(OAuthError::InvalidRequest(
                "code_challenge is not a valid S256 challenge".into(),
            )));
        }
        let resource = p
            .resource
            .as_deref()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                fail(OAuthError::InvalidTarget(
                    "resource is required: the URL of the MCP server (RFC 8707)".into(),
                ))
            })?;
        let server = match self.slug_of_resource(resource) {
            Some(slug) => self
                .store
                .server_by_slug(slug)
                .await
                .map_err(|e| fail(e.into()))?,
            None => None,
        };
        let server = server.ok_or_else(|| {
            fail(OAuthError::InvalidTarget(format!(
                "`{resource}` is not a server on this instance"
            )))
        })?;
        if server.byoa.is_some() {
            return Err(fail(OAuthError::InvalidTarget(format!(
                "`{resource}` uses its own authorization server; ezForge does not issue its tokens"
            ))));
        }
        // A client a project registered is that project's: it may not ask for another
        // project's servers (dynamic and document clients belong to no project).
        if client.kind == ClientKind::Registered
            && client.project_id.as_deref() != Some(server.project_id.as_str())
        {
            return Err(fail(OAuthError::InvalidTarget(format!(
                "`{resource}` belongs to another project than the one this client is registered in"
            ))));
        }
        let scopes = match p.scope.as_deref() {
            Some(s) => scope::parse(s).map_err(|unknown| {
                fail(OAuthError::InvalidScope(format!(
                    "unknown scope {}; valid: {}",
                    unknown.join(", "),
                    scope::ALL.join(" ")
                )))
            })?,
            None => Vec::new(),
        };
        // No scope asked: everything the server offers, shown on the consent page.
        let mut scopes = if scopes.is_empty() {
            scope::ALL.to_vec()
        } else {
            scopes
        };
        // `offline_access` asks for refresh tokens; a client that did not register the
        // refresh_token grant can never receive one, so it is neither shown nor granted.
        if !client.grant_types.iter().any(|g| g == "refresh_token") {
            scopes.retain(|s| *s != scope::OFFLINE_ACCESS);
            if scopes.is_empty() {
                return Err(fail(OAuthError::InvalidScope(
                    "offline_access needs the refresh_token grant, which this client did not register".into(),
                )));
            }
        }
        Ok(AuthorizeRequest {
            client_id: client.client_id.clone(),
            client_name: client.display_name().to_string(),
            redirect_uri,
            redirect_uri_given: p.redirect_uri.is_some(),
            state,
            scope: scope::join(&scopes),
            code_challenge: challenge.to_string(),
            resource: resource.to_string(),
            server_id: server.id,
            server_name: server.name,
            prompt: p.prompt.clone(),
            public_client: client.is_public(),
        })
    }

    /// The server's access policy: may `user` authorize clients for it?
    pub async fn may_authorize(
        &self,
        user: &UserRow,
        req: &AuthorizeRequest,
    ) -> Result<bool, OAuthError> {
        let server = self
            .store
            .server_by_id(&req.server_id)
            .await?
            .ok_or_else(|| OAuthError::InvalidTarget("the server no longer exists".into()))?;
        Ok(crate::policy::admits(self.store.as_ref(), &server, user).await?)
    }

    /// Whether the user must see the consent page: nothing remembered for this client and
    /// server, more scopes than remembered, or `prompt=consent`.
    pub async fn needs_consent(
        &self,
        user: &UserRow,
        req: &AuthorizeRequest,
    ) -> Result<bool, OAuthError> {
        if req
            .prompt
            .as_deref()
            .is_some_and(|p| p.split(' ').any(|p| p == "consent"))
        {
            return Ok(true);
        }
        // RFC 8252 §8.6: any local program can claim a public client's loopback redirect, so
        // remembered consent is not enough for one; the user decides every time.
        if req.public_client && super::redirect::is_loopback_uri(&req.redirect_uri) {
            return Ok(true);
        }
        let remembered = self
            .store
            .consent(&user.id, &req.client_id, &req.server_id)
            .await?;
        Ok(!remembered.is_some_and(|c| scope::is_subset(&req.scope, &c.scope)))
    }

    /// Records consent and issues a code; returns the redirect to the client.
    pub async fn approve(
        &self,
        user: &UserRow,
        req: &AuthorizeRequest,
    ) -> Result<String, OAuthError> {
        let now = self.now();
        let remembered = self
            .store
            .consent(&user.id, &req.client_id, &req.server_id)
            .await?;
        let union = match remembered {
            Some(c) => {
                let both = format!("{} {}", c.scope, req.scope);
                scope::join(&scope::parse(&both).unwrap_or_default())
            }
            None => req.scope.clone(),
        };
        self.store
            .upsert_consent(&ConsentRow {
                user_id: user.id.clone(),
                client_id: req.client_id.clone(),
                server_id: req.server_id.clone(),
                scope: union,
                created_at: now,
            })
            .await?;
        let code = format!("ezf_ac_{}", secret::random_token());
        let grant = GrantRow {
            id: ids::new_id("grt"),
            user_id: user.id.clone(),
            client_id: req.client_id.clone(),
            server_id: req.server_id.clone(),
            resource: req.resource.clone(),
            scope: req.scope.clone(),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
            revoked_reason: None,
        };
        let code_row = CodeRow {
            code_hash: secret::hash(&code),
            grant_id: grant.id.clone(),
            client_id: req.client_id.clone(),
            // The redirect_uri the request named, which the exchange must repeat (RFC 6749
            // §4.1.3); empty when it named none.
            redirect_uri: if req.redirect_uri_given {
                req.redirect_uri.clone()
            } else {
                String::new()
            },
            code_challenge: req.code_challenge.clone(),
            created_at: now,
            expires_at: now + self.settings.code_ttl_secs,
            used_at: None,
        };
        self.store.insert_grant_with_code(&grant, &code_row).await?;
        self.store.touch_client(&req.client_id, now).await?;
        // The stored row no longer expires; drop the cached copy that says it does.
        self.forget_client_everywhere(&req.client_id).await;
        tracing::info!(grant_id = %grant.id, client_id = %req.client_id, user_id = %user.id, "authorization granted");
        Ok(self.redirect_with(&req.redirect_uri, &[("code", &code)], req.state.as_deref()))
    }

    /// The redirect telling the client the user said no.
    pub fn deny(&self, req: &AuthorizeRequest) -> String {
        self.error_redirect(
            &req.redirect_uri,
            req.state.as_deref(),
            &OAuthError::AccessDenied("the user denied the request".into()),
        )
    }

    /// Seals a request for the consent form, bound to this user and session.
    pub fn seal_pending(
        &self,
        req: &AuthorizeRequest,
        user_id: &str,
        session_hash: &str,
    ) -> Result<String, OAuthError> {
        let pending = Pending {
            req: req.clone(),
            user_id: user_id.into(),
            session: session_hash.into(),
            exp: self.now() + PENDING_TTL,
        };
        let json = serde_json::to_vec(&pending).map_err(|e| OAuthError::Server(e.to_string()))?;
        self.master
            .seal(PENDING_CONTEXT, &json)
            .map_err(|e| OAuthError::Server(e.to_string()))
    }

    /// Opens a consent form's request; `None` if altered, expired, or from another session.
    pub fn open_pending(
        &self,
        sealed: &str,
        user_id: &str,
        session_hash: &str,
    ) -> Option<AuthorizeRequest> {
        let bytes = self.master.open(PENDING_CONTEXT, sealed).ok()?;
        let p: Pending = serde_json::from_slice(&bytes).ok()?;
        (p.user_id == user_id && secret::ct_eq(&p.session, session_hash) && p.exp > self.now())
            .then_some(p.req)
    }
}
