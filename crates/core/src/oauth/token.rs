//! The token endpoint: authorization codes and refresh tokens in, ES256 access tokens out.

use super::batch::{Exchange, Exchanged, Renewal};
use super::clients::ClientCredentials;
use super::family::{FamilyToken, Presented as PresentedRefresh};
use super::model::{
    ClientRow, CodeAttempt, CodeRow, CodeUse, GrantRow, RefreshOffer, RefreshPresented, RefreshRow,
    Rotation, RotationAttempt, RotationTerms,
};
use super::{OAuth, OAuthError, scope};
use crate::{crypto, ids, secret};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The form body of `POST /token`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenParams {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
}

/// The claims of an ezForge access token (RFC 9068), plus `gid`, the grant it came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    pub gid: String,
}

/// A bearer token as presented, with its SHA-256 (hex): computed once per request, it keys
/// every cache the token is looked up in; the token itself is never kept.
/// The fields are private so that a token can never be paired with another token's hash.
pub struct Presented<'a> {
    token: &'a str,
    hash: String,
}

impl<'a> Presented<'a> {
    pub fn new(token: &'a str) -> Self {
        Presented {
            token,
            hash: secret::hash(token),
        }
    }

    /// The token's SHA-256, hex.
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

/// Derives the family a token of the old kind moves to at its rotation.
const LEGACY_SUCCESSOR_FAMILY: &str = "ezforge-refresh-legacy-family-v1";

/// The S256 PKCE challenge of `verifier` (RFC 7636 §4.2).
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

impl OAuth {
    pub async fn token(
        &self,
        p: &TokenParams,
        creds: &ClientCredentials,
        client_addr: &str,
    ) -> Result<TokenResponse, OAuthError> {
        self.token_limiter
            .hit(&format!("token:{client_addr}"), self.now())
            .map_err(|retry_after| OAuthError::RateLimited { retry_after })?;
        let client = self.authenticate_client(creds).await?;
        match p.grant_type.as_deref() {
            Some("authorization_code") => self.exchange_code(p, &client).await,
            Some("refresh_token") => {
                if !client.grant_types.iter().any(|g| g == "refresh_token") {
                    return Err(OAuthError::UnauthorizedClient(
                        "this client did not register the refresh_token grant".into(),
                    ));
                }
                self.refresh(p, &client).await
            }
            Some(other) => Err(OAuthError::UnsupportedGrantType(format!(
                "grant_type `{other}` is not supported; use authorization_code or refresh_token"
            ))),
            None => Err(OAuthError::InvalidRequest("grant_type is required".into())),
        }
    }

    async fn exchange_code(
        &self,
        p: &TokenParams,
        client: &Arc<ClientRow>,
    ) -> Result<TokenResponse, OAuthError> {
        let code = p
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| OAuthError::InvalidRequest("code is required".into()))?;
        let verifier = p.code_verifier.as_deref().unwrap_or_default();
        if verifier.is_empty() {
            return Err(OAuthError::InvalidRequest(
                "code_verifier is required (PKCE)".into(),
            ));
        }
        if !valid_verifier(verifier) {
            return Err(OAuthError::InvalidGrant(
                "code_verifier is not a valid PKCE verifier".into(),
            ));
        }
        // Made now, stored only if the exchange issues one: a new family's first token.
        let family = self.families.start();
        let refresh_token = self.families.token(&family);
        let refresh_hash = self.families.row_key(&family.family);
        let ttl = self.settings.refresh_token_ttl_secs;
        let attempt = CodeAttempt {
            code_hash: secret::hash(code),
            client_id: client.client_id.clone(),
            code_challenge: s256(verifier),
            refresh: client
                .grant_types
                .iter()
                .any(|g| g == "refresh_token")
                .then(|| RefreshOffer {
                    token_hash: refresh_hash.clone(),
                    ttl_secs: ttl,
                    generation: Some(0),
                }),
        };
        let check = {
            let client = client.clone();
            let (redirect_uri, resource) = (p.redirect_uri.clone(), p.resource.clone());
            move |code: &CodeRow, grant: Option<GrantRow>, now: i64| {
                if code.expires_at <= now {
                    return Err(OAuthError::InvalidGrant(
                        "the authorization code expired".into(),
                    ));
                }
                // RFC 6749 §4.1.3: the exchange repeats the redirect_uri the authorization
                // request named (kept on the code); after one that named none (its client has
                // one registered), it may name that one or none.
                let repeated = match (
                    redirect_uri.as_deref().filter(|r| !r.is_empty()),
                    code.redirect_uri.as_str(),
                ) {
                    (Some(r), "") => client.redirect_uris.iter().any(|u| u == r),
                    (Some(r), named) => r == named,
                    (None, named) => named.is_empty(),
                };
                if !repeated {
                    return Err(OAuthError::InvalidGrant(
                        "redirect_uri differs from the authorization request's, or is missing (repeat the one sent to /authorize)".into(),
                    ));
                }
                let grant = grant
                    .ok_or_else(|| OAuthError::InvalidGrant("the grant no longer exists".into()))?;
                let grant = check_grant(grant, &client)?;
                if resource.is_some_and(|r| r != grant.resource) {
                    return Err(OAuthError::InvalidTarget(
                        "resource differs from the authorization request".into(),
                    ));
                }
                let refresh = issues_refresh(&client, &grant.scope)
                    .then(|| refresh_row(refresh_hash, &grant.id, &grant.scope, now, ttl, 0));
                Ok(Exchange { grant, refresh })
            }
        };
        match self.batch.exchange(attempt, Box::new(check)).await? {
            Exchanged::Spent(verdict) => {
                let Exchange { grant, refresh } = verdict?;
                self.respond(&grant, &grant.scope, refresh.map(|_| refresh_token))
            }
            Exchanged::NotSpent(CodeUse::Replayed(code)) if code.client_id == client.client_id => {
                // A second presentation by its client means the code leaked: end everything
                // issued from it.
                if self
                    .end_grant(&code.grant_id, "authorization code replayed")
                    .await?
                {
                    tracing::warn!(grant_id = %code.grant_id, "authorization code replayed; grant revoked");
                }
                Err(OAuthError::InvalidGrant(
                    "the authorization code was already used".into(),
                ))
            }
            Exchanged::NotSpent(_) => Err(OAuthError::InvalidGrant(
                "the authorization code is unknown, used, issued to another client, or the code_verifier does not match".into(),
            )),
        }
    }

    async fn refresh(
        &self,
        p: &TokenParams,
        client: &Arc<ClientRow>,
    ) -> Result<TokenResponse, OAuthError> {
        let token = p
            .refresh_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| OAuthError::InvalidRequest("refresh_token is required".into()))?;
        // The row to look for, and the successor, made from the token alone so that a retry
        // can be given the same one: a family's token at the next generation, under the same
        // key; for a token of the old kind, the first token of a family derived from it (its
        // rotation moves it to a family).
        let unknown = || OAuthError::InvalidGrant("unknown refresh token".into());
        let (token_hash, generation, successor, successor_hash) = match self.families.parse(token) {
            PresentedRefresh::Forged => return Err(unknown()),
            PresentedRefresh::Family(t) => {
                let next = FamilyToken {
                    generation: t.generation.checked_add(1).ok_or_else(unknown)?,
                    family: t.family,
                };
                let key = self.families.row_key(&next.family);
                (
                    key.clone(),
                    Some(t.generation),
                    self.families.token(&next),
                    key,
                )
            }
            PresentedRefresh::Legacy => {
                let derived = crypto::mac(
                    &self.master.derive(LEGACY_SUCCESSOR_FAMILY),
                    token.as_bytes(),
                );
                let next = self.families.derived(&derived);
                let key = self.families.row_key(&next.family);
                (secret::hash(token), None, self.families.token(&next), key)
            }
        };
        let next_generation = generation.map_or(0, |g| g + 1);
        // The checks below, stated for the store (see `RotationTerms`). A scope that does not
        // parse states none, and neither does a resource with a NUL in it, which PostgreSQL
        // cannot take as text (the statement of the whole batch would fail): the checks refuse
        // both, and no store rotates on them.
        let bindable = p.resource.as_deref().is_none_or(|r| !r.contains('\0'));
        let requested = p
            .scope
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(scope::parse);
        let terms = match requested {
            Some(Err(_)) => None,
            _ if !bindable => None,
            requested => Some(RotationTerms {
                successor_hash: successor_hash.clone(),
                client_id: client.client_id.clone(),
                resource: p.resource.clone(),
                scope: requested.and_then(Result::ok).map(|s| scope::join(&s)),
                ttl_secs: self.settings.refresh_token_ttl_secs,
            }),
        };
        let check = {
            let (client, ttl) = (client.clone(), self.settings.refresh_token_ttl_secs);
            let (resource, requested) = (p.resource.clone(), p.scope.clone());
            let successor_hash = successor_hash.clone();
            move |stored: Option<(RefreshRow, GrantRow)>, now: i64| {
                let unknown = || OAuthError::InvalidGrant("unknown refresh token".into());
                let (row, grant) = stored.ok_or_else(unknown)?;
                // A row of the other kind is not this token's, nor is a family whose row is
                // behind the presented generation (a database restored from a backup).
                if row.is_family() != generation.is_some()
                    || generation.is_some_and(|p| row.generation.is_some_and(|c| p > c))
                {
                    return Err(unknown());
                }
                let grant = check_grant(grant, &client)?;
                if row.expires_at <= now {
                    return Err(OAuthError::InvalidGrant("the refresh token expired".into()));
                }
                if resource.is_some_and(|r| r != grant.resource) {
                    return Err(OAuthError::InvalidTarget(
                        "resource differs from the one this grant is for".into(),
                    ));
                }
                let scope = narrowed(requested.as_deref(), &row.scope)?;
                let rotation = RotationAttempt {
                    successor: refresh_row(
                        successor_hash,
                        &grant.id,
                        &row.scope,
                        now,
                        ttl,
                        next_generation,
                    ),
                    token_hash: row.token_hash,
                    generation,
                };
                Ok(Renewal {
                    grant,
                    scope,
                    rotation,
                })
            }
        };
        let presented = RefreshPresented {
            token_hash,
            generation,
            terms,
        };
        let (renewal, rotation) = self.batch.refresh(presented, Box::new(check)).await??;
        let Renewal { grant, scope, .. } = renewal;
        match rotation {
            Rotation::Rotated(_) => self.respond(&grant, &scope, Some(successor)),
            Rotation::AlreadyUsed(spent) => {
                let grace = self.settings.refresh_grace_secs;
                let retry = match generation {
                    // The family's previous token, spent when the current one was issued: read
                    // again now that the batch has committed, since the row the batch handed
                    // back may predate a rotation in the same batch or on another node (the
                    // successor must still be the current token).
                    Some(p) => self
                        .store
                        .refresh(&successor_hash)
                        .await?
                        .is_some_and(|row| {
                            row.generation == Some(p + 1)
                                && row.used_at.is_none()
                                && self.now() - row.created_at <= grace
                        }),
                    // A token of the old kind, spent for the family derived from it, which
                    // has not rotated since.
                    None => {
                        let within_grace = spent.used_at.is_some_and(|t| self.now() - t <= grace);
                        within_grace
                            && spent.successor_hash.as_ref() == Some(&successor_hash)
                            && self
                                .store
                                .refresh(&successor_hash)
                                .await?
                                .is_some_and(|s| s.generation == Some(0))
                    }
                };
                if retry {
                    // A retry after a lost response: the same successor, never a second chain.
                    return self.respond(&grant, &scope, Some(successor));
                }
                if self.end_grant(&grant.id, "refresh token reused").await? {
                    tracing::warn!(grant_id = %grant.id, "refresh token reused; token family revoked");
                }
                Err(OAuthError::InvalidGrant(
                    "the refresh token was already used".into(),
                ))
            }
            Rotation::Unknown => Err(OAuthError::InvalidGrant("unknown refresh token".into())),
        }
    }

    fn respond(
        &self,
        grant: &GrantRow,
        scope: &str,
        refresh_token: Option<String>,
    ) -> Result<TokenResponse, OAuthError> {
        let access_token = self.mint_access_token(grant, scope)?;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in: self.settings.access_token_ttl_secs,
            refresh_token,
            scope: scope.to_string(),
        })
    }

    /// An RFC 9068 access token for `grant` with `scope`.
    pub fn mint_access_token(&self, grant: &GrantRow, scope: &str) -> Result<String, OAuthError> {
        let now = self.now();
        let claims = AccessClaims {
            iss: self.issuer().to_string(),
            sub: grant.user_id.clone(),
            aud: grant.resource.clone(),
            client_id: grant.client_id.clone(),
            scope: scope.to_string(),
            jti: ids::new_id("at"),
            iat: now,
            exp: now + self.settings.access_token_ttl_secs,
            gid: grant.id.clone(),
        };
        self.current_key()?
            .sign("at+jwt", &claims)
            .map_err(|e| OAuthError::Server(e.to_string()))
    }

    /// Verifies one of our access tokens: signature, `typ`, issuer, expiry, and (when given) the
    /// audience; then that its grant is still live.
    pub async fn verify_access_token(
        &self,
        token: &str,
        resource: Option<&str>,
    ) -> Result<AccessClaims, OAuthError> {
        self.verify_presented(&Presented::new(token), resource)
            .await
            .map(|c| (*c).clone())
    }

    /// `verify_access_token` for a token whose hash the caller keeps for other uses (the
    /// gateway keys its identity cache and request records with it), sharing the claims.
    pub async fn verify_presented(
        &self,
        presented: &Presented<'_>,
        resource: Option<&str>,
    ) -> Result<std::sync::Arc<AccessClaims>, OAuthError> {
        let invalid = |m: &str| OAuthError::InvalidGrant(m.to_string());
        let (token, key) = (presented.token, &presented.hash);
        let claims = match self.verified.get(key) {
            Some(claims) => claims,
            None => {
                let verified = crate::jwt::verify(token, |kid| self.find_jwk(kid))
                    .map_err(|e| invalid(&e.to_string()))?;
                if verified.header.get("typ").and_then(|t| t.as_str()) != Some("at+jwt") {
                    return Err(invalid("not an access token"));
                }
                let claims: AccessClaims = serde_json::from_value(verified.claims)
                    .map_err(|_| invalid("malformed claims"))?;
                if claims.iss != self.issuer() {
                    return Err(invalid("wrong issuer"));
                }
                let claims = std::sync::Arc::new(claims);
                self.verified.insert(key.clone(), claims.clone());
                claims
            }
        };
        // Checked on every call, cached or not.
        if claims.exp <= self.now() {
            return Err(invalid("expired"));
        }
        if resource.is_some_and(|r| r != claims.aud) {
            return Err(invalid("the token is for another resource"));
        }
        if !self.grant_live(&claims.gid).await? {
            return Err(invalid("the grant was revoked"));
        }
        Ok(claims)
    }

    /// Forgets every remembered grant state: after revocations made outside this service
    /// (membership removed, access policy changed) they take effect at once on this node.
    pub fn forget_grant_states(&self) {
        self.grant_liveness.invalidate_all();
    }

    /// Forgets one grant's remembered state (revoked on another node).
    pub fn forget_grant(&self, grant_id: &str) {
        self.grant_liveness.invalidate(grant_id);
    }

    /// Whether a grant is live, from memory for a few seconds at most. Revocations clear the
    /// entry at once on this node and, when they are heard (`invalidation`), on the others;
    /// a node that missed one acts on it within the entry's lifetime.
    async fn grant_live(&self, grant_id: &str) -> Result<bool, OAuthError> {
        if let Some(live) = self.grant_liveness.get(grant_id) {
            return Ok(live);
        }
        // Read before the database: a revocation that commits after our read bumps it, and
        // the answer read before it is then not kept.
        let generation = self.grant_liveness.generation();
        let live = self
            .store
            .grant(grant_id)
            .await?
            .is_some_and(|g| g.revoked_at.is_none());
        self.grant_liveness
            .insert_loaded(generation, grant_id.to_string(), live);
        Ok(live)
    }
}

/// Refresh tokens go to clients that registered the grant and were granted `offline_access`.
fn issues_refresh(client: &ClientRow, granted: &str) -> bool {
    client.grant_types.iter().any(|g| g == "refresh_token")
        && granted.split(' ').any(|s| s == scope::OFFLINE_ACCESS)
}

/// A family's row at `generation`, issued `now`, for `ttl` seconds.
fn refresh_row(
    token_hash: String,
    grant_id: &str,
    scope: &str,
    now: i64,
    ttl: i64,
    generation: i64,
) -> RefreshRow {
    RefreshRow {
        token_hash,
        grant_id: grant_id.to_string(),
        scope: scope.to_string(),
        created_at: now,
        expires_at: now + ttl,
        used_at: None,
        successor_hash: None,
        generation: Some(generation),
    }
}

/// The scope a refresh's access token gets: the family's, or a narrower one the client asks
/// for. The family itself keeps its scope.
fn narrowed(requested: Option<&str>, granted: &str) -> Result<String, OAuthError> {
    let Some(requested) = requested.filter(|s| !s.is_empty()) else {
        return Ok(granted.to_string());
    };
    let parsed = scope::parse(requested)
        .map_err(|u| OAuthError::InvalidScope(format!("unknown scope {}", u.join(", "))))?;
    let joined = scope::join(&parsed);
    if !scope::is_subset(&joined, granted) {
        return Err(OAuthError::InvalidScope(
            "a refresh cannot add scopes that were not granted".into(),
        ));
    }
    Ok(joined)
}

/// A grant may issue tokens only while not revoked, and only to its own client.
fn check_grant(grant: GrantRow, client: &ClientRow) -> Result<GrantRow, OAuthError> {
    if grant.revoked_at.is_some() {
        return Err(OAuthError::InvalidGrant("the grant was revoked".into()));
    }
    if grant.client_id != client.client_id {
        return Err(OAuthError::InvalidGrant(
            "the grant belongs to another client".into(),
        ));
    }
    Ok(grant)
}

impl OAuth {
    /// A 60-second JWT telling an upstream who is calling through the gateway. `aud` names the
    /// upstream URL it is sent to and the server's resource URI; `typ` keeps it from passing as
    /// an access token anywhere.
    pub fn mint_identity_token(
        &self,
        upstream: &str,
        claims: &AccessClaims,
    ) -> Result<String, OAuthError> {
        let now = self.now();
        // The upstream URL alone does not say which server vouched (two projects can deploy the
        // same upstream), so an upstream should look for its server's resource URI.
        let body = serde_json::json!({
            "iss": self.issuer(),
            "aud": [claims.aud.as_str(), upstream],
            "sub": claims.sub,
            "client_id": claims.client_id,
            "scope": claims.scope,
            "jti": ids::new_id("id"),
            "iat": now,
            "exp": now + 60,
        });
        self.current_key()?
            .sign("ezforge-identity+jwt", &body)
            .map_err(|e| OAuthError::Server(e.to_string()))
    }

    /// Checks an identity JWT minted by this instance for `resource` (used by the built-in demo
    /// server; upstreams do the same with the JWKS).
    pub fn verify_identity_token(
        &self,
        token: &str,
        resource: &str,
    ) -> Result<serde_json::Value, OAuthError> {
        let invalid = |m: &str| OAuthError::InvalidGrant(m.to_string());
        let v = crate::jwt::verify(token, |kid| self.find_jwk(kid))
            .map_err(|e| invalid(&e.to_string()))?;
        if v.header.get("typ").and_then(|t| t.as_str()) != Some("ezforge-identity+jwt") {
            return Err(invalid("not an identity token"));
        }
        let for_resource = v.claims["aud"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == resource));
        if v.claims["iss"] != self.issuer() || !for_resource {
            return Err(invalid("wrong issuer or audience"));
        }
        if v.claims["exp"].as_i64().is_none_or(|e| e <= self.now()) {
            return Err(invalid("expired"));
        }
        Ok(v.claims)
    }
}
