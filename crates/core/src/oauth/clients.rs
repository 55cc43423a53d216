//! Client identity: dynamic registration (RFC 7591), clients registered by project owners, and
//! client authentication at the token endpoint.

use super::model::{ClientKind, ClientRow};
use super::{OAuth, OAuthError, redirect, scope};
use crate::invalidation::{self, Invalidation};
use crate::{ids, secret};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The metadata a client may register (RFC 7591 §2). Unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClientMetadata {
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    pub client_name: Option<String>,
    pub token_endpoint_auth_method: Option<String>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    pub application_type: Option<String>,
    pub scope: Option<String>,
    pub client_uri: Option<String>,
    pub logo_uri: Option<String>,
    pub contacts: Option<Vec<String>>,
    pub software_id: Option<String>,
    pub software_version: Option<String>,
}

const AUTH_METHODS: [&str; 3] = ["none", "client_secret_basic", "client_secret_post"];
const GRANT_TYPES: [&str; 2] = ["authorization_code", "refresh_token"];

/// A registration's outcome: the client and, for a confidential one, its secret (shown once).
pub struct Registered {
    pub client: ClientRow,
    pub secret: Option<String>,
}

impl Registered {
    /// The RFC 7591 §3.2.1 response body.
    pub fn response(&self) -> Value {
        let mut body = self.client.metadata.clone();
        body["client_id"] = json!(self.client.client_id);
        body["client_id_issued_at"] = json!(self.client.created_at);
        if let Some(secret) = &self.secret {
            body["client_secret"] = json!(secret);
            body["client_secret_expires_at"] = json!(0);
        }
        body
    }
}

/// Validated, normalized metadata with defaults applied, as stored and echoed.
pub(super) fn normalize(m: &ClientMetadata) -> Result<Value, OAuthError> {
    let bad = |msg: String| OAuthError::InvalidClientMetadata(msg);
    if m.redirect_uris.is_empty() {
        return Err(OAuthError::InvalidRedirectUri(
            "redirect_uris must list at least one URI".into(),
        ));
    }
    for uri in &m.redirect_uris {
        redirect::validate(uri).map_err(OAuthError::InvalidRedirectUri)?;
    }
    let method = m
        .token_endpoint_auth_method
        .clone()
        .unwrap_or_else(|| "client_secret_basic".into());
    if !AUTH_METHODS.contains(&method.as_str()) {
        return Err(bad(format!(
            "token_endpoint_auth_method must be one of {}",
            AUTH_METHODS.join(", ")
        )));
    }
    let grant_types = m
        .grant_types
        .clone()
        .unwrap_or_else(|| vec!["authorization_code".into()]);
    if grant_types.is_empty()
        || grant_types
            .iter()
            .any(|g| !GRANT_TYPES.contains(&g.as_str()))
    {
        return Err(bad(format!(
            "grant_types must be drawn from {}",
            GRANT_TYPES.join(", ")
        )));
    }
    if !grant_types.iter().any(|g| g == "authorization_code") {
        return Err(bad("grant_types must include authorization_code".into()));
    }
    let response_types = m
        .response_types
        .clone()
        .unwrap_or_else(|| vec!["code".into()]);
    if response_types != ["code"] {
        return Err(bad("response_types must be [\"code\"]".into()));
    }
    let application_type = m.application_type.clone().unwrap_or_else(|| "web".into());
    if application_type != "web" && application_type != "native" {
        return Err(bad("application_type must be web or native".into()));
    }
    if let Some(s) = &m.scope {
        scope::parse(s).map_err(|unknown| {
            bad(format!(
                "unknown scope {}; valid: {}",
                unknown.join(", "),
                scope::ALL.join(" ")
            ))
        })?;
    }
    if let Some(name) = &m.client_name
        && (name.chars().count() > 200 || name.chars().any(char::is_control))
    {
        return Err(bad(
            "client_name must be at most 200 printable characters".into()
        ));
    }
    let mut out = json!({
        "redirect_uris": m.redirect_uris,
        "token_endpoint_auth_method": method,
        "grant_types": grant_types,
        "response_types": response_types,
        "application_type": application_type,
    });
    for (k, v) in [
        ("client_name", m.client_name.clone().map(Value::from)),
        ("scope", m.scope.clone().map(Value::from)),
        ("client_uri", m.client_uri.clone().map(Value::from)),
        ("logo_uri", m.logo_uri.clone().map(Value::from)),
        ("contacts", m.contacts.clone().map(Value::from)),
        ("software_id", m.software_id.clone().map(Value::from)),
        (
            "software_version",
            m.software_version.clone().map(Value::from),
        ),
    ] {
        if let Some(v) = v {
            out[k] = v;
        }
    }
    Ok(out)
}

/// A client row from normalized metadata; the caller sets kind-specific fields.
pub(super) fn client_row(
    client_id: String,
    kind: ClientKind,
    client_name: Option<String>,
    normalized: Value,
    now: i64,
) -> ClientRow {
    ClientRow {
        client_id,
        kind,
        project_id: None,
        client_name,
        redirect_uris: list(&normalized, "redirect_uris"),
        grant_types: list(&normalized, "grant_types"),
        token_endpoint_auth_method: normalized["token_endpoint_auth_method"]
            .as_str()
            .unwrap_or("none")
            .to_string(),
        application_type: normalized["application_type"]
            .as_str()
            .unwrap_or("web")
            .to_string(),
        metadata_hash: secret::hash(&normalized.to_string()),
        metadata: normalized,
        secret_hash: None,
        created_by: None,
        created_at: now,
        last_used_at: None,
        expires_at: None,
    }
}

fn list(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

impl OAuth {
    /// Forgets this node's copy of a registered client (changed on another node).
    pub fn forget_client(&self, client_id: &str) {
        self.client_cache.invalidate(client_id);
    }

    /// Forgets every registered client this node remembers (invalidations were missed).
    pub fn forget_clients(&self) {
        self.client_cache.invalidate_all();
    }

    /// After a client's row changed: forgets this node's copy, then tells the others.
    pub(super) async fn forget_client_everywhere(&self, client_id: &str) {
        self.client_cache.invalidate(client_id);
        invalidation::publish(&*self.store, Invalidation::Client(client_id.to_string())).await;
    }

    /// Dynamic client registration. Identical public registrations from anyone return the same
    /// client; registrations never used expire.
    pub async fn register(
        &self,
        metadata: &ClientMetadata,
        client_addr: &str,
    ) -> Result<Registered, OAuthError> {
        let now = self.now();
        if let Some(retry_after) = self
            .register_limiter
            .attempt(
                &*self.store,
                &crate::ratelimit::address_key(client_addr),
                now,
            )
            .await?
        {
            return Err(OAuthError::RateLimited { retry_after });
        }
        let normalized = normalize(metadata)?;
        let hash = secret::hash(&normalized.to_string());
        let method = normalized["token_endpoint_auth_method"]
            .as_str()
            .unwrap_or("none")
            .to_string();
        let expires_at = now + self.settings.unused_client_ttl_secs;
        if method == "none"
            && let Some(existing) = self.store.dynamic_client_by_metadata(&hash, now).await?
        {
            // Registering again is a sign of life: an unused registration gets the full time
            // again, so that a client does not get one that expires in the middle of its flow.
            let client = match existing.expires_at {
                None => Some(existing),
                Some(_)
                    if self
                        .store
                        .extend_unused_client(&existing.client_id, expires_at, now)
                        .await? =>
                {
                    Some(ClientRow {
                        expires_at: Some(expires_at),
                        ..existing
                    })
                }
                // Used since it was read (it no longer expires), or gone: read it again.
                Some(_) => self
                    .store
                    .client(&existing.client_id)
                    .await?
                    .filter(|c| c.expires_at.is_none()),
            };
            // (Gone or expired between the read and the update: registered anew below.)
            if let Some(client) = client {
                self.forget_client_everywhere(&client.client_id).await;
                return Ok(Registered {
                    client,
                    secret: None,
                });
            }
        }
        let (secret, secret_hash) = new_secret(&method);
        let client = ClientRow {
            secret_hash,
            expires_at: Some(expires_at),
            ..client_row(
                ids::new_id("mcp"),
                ClientKind::Dynamic,
                metadata.client_name.clone(),
                normalized,
                now,
            )
        };
        self.store.insert_client(&client).await?;
        tracing::info!(client_id = %client.client_id, "client registered");
        Ok(Registered { client, secret })
    }

    /// A client registered by a project owner (the caller checks ownership). It never expires.
    pub async fn create_registered_client(
        &self,
        project_id: &str,
        created_by: &str,
        metadata: &ClientMetadata,
    ) -> Result<Registered, OAuthError> {
        let normalized = normalize(metadata)?;
        let method = normalized["token_endpoint_auth_method"]
            .as_str()
            .unwrap_or("none")
            .to_string();
        let (secret, secret_hash) = new_secret(&method);
        let client = ClientRow {
            project_id: Some(project_id.to_string()),
            secret_hash,
            created_by: Some(created_by.to_string()),
            ..client_row(
                ids::new_id("mcp"),
                ClientKind::Registered,
                metadata.client_name.clone(),
                normalized,
                self.now(),
            )
        };
        self.store.insert_client(&client).await?;
        Ok(Registered { client, secret })
    }

    /// A client usable now: known, and not an expired unused registration.
    pub async fn client(&self, client_id: &str) -> Result<Option<Arc<ClientRow>>, OAuthError> {
        if super::cimd::is_document_url(client_id) {
            return self.document_client(client_id).await.map(Some);
        }
        let now = self.now();
        // Read before the database: a change heard meanwhile makes the row not be kept.
        let generation = self.client_cache.generation();
        let client = match self.client_cache.get(client_id) {
            Some(c) => c,
            None => match self.store.client(client_id).await? {
                Some(c) => {
                    let c = Arc::new(c);
                    self.client_cache
                        .insert_loaded(generation, client_id.to_string(), c.clone());
                    c
                }
                None => return Ok(None),
            },
        };
        Ok(Some(client).filter(|c| c.expires_at.is_none_or(|e| e > now)))
    }

    /// A client's name for a listing of grants, fetching nothing: a Client ID Metadata
    /// Document's name if this node holds the document, a stored client's name, else none. A
    /// listing must neither wait on other people's servers nor fail with them.
    pub async fn known_client_name(&self, client_id: &str) -> Result<Option<String>, OAuthError> {
        if super::cimd::is_document_url(client_id) {
            return Ok(self.cached_document_name(client_id));
        }
        Ok(self
            .client(client_id)
            .await?
            .and_then(|c| c.client_name.clone()))
    }

    /// Authenticates the caller of the token, revocation or introspection endpoint.
    pub async fn authenticate_client(
        &self,
        creds: &ClientCredentials,
    ) -> Result<Arc<ClientRow>, OAuthError> {
        let id = match (&creds.basic, &creds.form_id) {
            (Some((basic_id, _)), Some(form_id)) if basic_id != form_id => {
                return Err(OAuthError::InvalidClient(
                    "client_id in the body differs from the Authorization header".into(),
                ));
            }
            (Some((basic_id, _)), _) => basic_id.clone(),
            (None, Some(form_id)) => form_id.clone(),
            (None, None) => return Err(OAuthError::InvalidClient("no client_id".into())),
        };
        let client = self
            .client(&id)
            .await?
            .ok_or_else(|| OAuthError::InvalidClient("unknown client".into()))?;
        let presented = creds
            .basic
            .as_ref()
            .map(|(_, s)| s.clone())
            .or_else(|| creds.form_secret.clone())
            .filter(|s| !s.is_empty());
        match (&client.secret_hash, presented) {
            (None, None) => Ok(client),
            (None, Some(_)) => Err(OAuthError::InvalidClient(
                "this is a public client; it has no secret to send".into(),
            )),
            (Some(_), None) => Err(OAuthError::InvalidClient(
                "client authentication required".into(),
            )),
            (Some(hash), Some(s)) if secret::ct_eq(hash, &secret::hash(&s)) => Ok(client),
            (Some(_), Some(_)) => Err(OAuthError::InvalidClient(
                "client authentication failed".into(),
            )),
        }
    }

    pub async fn clients_of_project(&self, project_id: &str) -> Result<Vec<ClientRow>, OAuthError> {
        Ok(self.store.clients_of_project(project_id).await?)
    }

    pub async fn delete_client(
        &self,
        project_id: &str,
        client_id: &str,
    ) -> Result<bool, OAuthError> {
        match self.store.client(client_id).await? {
            Some(c) if c.project_id.as_deref() == Some(project_id) => {
                let deleted = self.store.delete_client(client_id).await?;
                self.forget_client_everywhere(client_id).await;
                Ok(deleted)
            }
            _ => Ok(false),
        }
    }
}

fn new_secret(method: &str) -> (Option<String>, Option<String>) {
    if method == "none" {
        return (None, None);
    }
    let s = format!("ezf_cs_{}", ids::random_base62(40));
    let h = secret::hash(&s);
    (Some(s), Some(h))
}

/// What the caller presented to authenticate as a client.
#[derive(Debug, Default, Clone)]
pub struct ClientCredentials {
    /// From `Authorization: Basic` (already form-decoded).
    pub basic: Option<(String, String)>,
    pub form_id: Option<String>,
    pub form_secret: Option<String>,
}
