//! Revocation (RFC 7009), introspection (RFC 7662) and grant management.

use super::family::Presented;
use super::model::{ClientRow, GrantRow};
use super::{OAuth, OAuthError};
use crate::invalidation::{self, Invalidation};
use crate::secret;
use serde_json::{Value, json};

impl OAuth {
    /// Revokes a grant and forgets the consent behind it, so that the client has to ask the
    /// user again. False if it was already revoked.
    pub(super) async fn end_grant(&self, grant_id: &str, reason: &str) -> Result<bool, OAuthError> {
        let Some(grant) = self.store.grant(grant_id).await? else {
            return Ok(false);
        };
        let revoked = self
            .store
            .revoke_grant(grant_id, self.now(), reason)
            .await?;
        self.grant_liveness.invalidate(grant_id);
        invalidation::publish(&*self.store, Invalidation::Grant(grant_id.to_string())).await;
        self.store
            .delete_consent(&grant.user_id, &grant.client_id, &grant.server_id)
            .await?;
        Ok(revoked)
    }

    /// The grant behind a token of ours: a refresh token (by hash) or an access token (by `gid`).
    async fn grant_of_token(
        &self,
        token: &str,
    ) -> Result<Option<(GrantRow, Option<i64>, &'static str)>, OAuthError> {
        if token.starts_with("ezf_rt_") {
            let (key, generation) = match self.families.parse(token) {
                Presented::Family(t) => (self.families.row_key(&t.family), Some(t.generation)),
                Presented::Legacy => (secret::hash(token), None),
                Presented::Forged => return Ok(None),
            };
            let Some(row) = self.store.refresh(&key).await? else {
                return Ok(None);
            };
            // Any token of a family names its grant (revoking a spent one ends the family too);
            // only the current one is live.
            if row.is_family() != generation.is_some()
                || generation.is_some_and(|p| row.generation.is_some_and(|c| p > c))
            {
                return Ok(None);
            }
            let live = !row.spent_for(generation) && row.expires_at > self.now();
            let grant = self.store.grant(&row.grant_id).await?;
            return Ok(grant.map(|g| (g, live.then_some(row.expires_at), "refresh_token")));
        }
        let Ok(verified) = crate::jwt::verify(token, |kid| self.find_jwk(kid)) else {
            return Ok(None);
        };
        let Some(gid) = verified.claims.get("gid").and_then(Value::as_str) else {
            return Ok(None);
        };
        let exp = verified
            .claims
            .get("exp")
            .and_then(Value::as_i64)
            .filter(|e| *e > self.now());
        Ok(self
            .store
            .grant(gid)
            .await?
            .map(|g| (g, exp, "access_token")))
    }

    /// RFC 7009: revokes the grant behind `token` if it belongs to `client`. Unknown tokens are
    /// not an error.
    pub async fn revoke_token(&self, token: &str, client: &ClientRow) -> Result<(), OAuthError> {
        if let Some((grant, _, _)) = self.grant_of_token(token).await?
            && grant.client_id == client.client_id
        {
            self.end_grant(&grant.id, "revoked by the client").await?;
        }
        Ok(())
    }

    /// RFC 7662. `client`: the authenticated caller, who may introspect its own tokens; `None`
    /// when the caller was authorized otherwise (a project's API key), which `may_see` decides.
    pub async fn introspect(
        &self,
        token: &str,
        may_see: impl Fn(&GrantRow) -> bool,
    ) -> Result<Value, OAuthError> {
        let Some((grant, exp, kind)) = self.grant_of_token(token).await? else {
            return Ok(json!({"active": false}));
        };
        let Some(exp) = exp else {
            return Ok(json!({"active": false}));
        };
        if grant.revoked_at.is_some() || !may_see(&grant) {
            return Ok(json!({"active": false}));
        }
        let mut out = json!({
            "active": true,
            "scope": grant.scope,
            "client_id": grant.client_id,
            "sub": grant.user_id,
            "aud": grant.resource,
            "iss": self.issuer(),
            "exp": exp,
            "iat": grant.created_at,
            "token_type": if kind == "access_token" { "Bearer" } else { "refresh_token" },
        });
        if kind == "access_token"
            && let Ok(v) = crate::jwt::verify(token, |kid| self.find_jwk(kid))
        {
            out["scope"] = v.claims["scope"].clone();
            out["iat"] = v.claims["iat"].clone();
            out["jti"] = v.claims["jti"].clone();
        }
        Ok(out)
    }

    pub async fn grants_of_server(&self, server_id: &str) -> Result<Vec<GrantRow>, OAuthError> {
        Ok(self.store.grants_of_server(server_id).await?)
    }

    /// Revokes a grant of `server_id`: its refresh family dies and its access tokens stop
    /// verifying.
    pub async fn revoke_grant(
        &self,
        server_id: &str,
        grant_id: &str,
    ) -> Result<Option<GrantRow>, OAuthError> {
        match self.store.grant(grant_id).await? {
            Some(g) if g.server_id == server_id => {
                self.end_grant(grant_id, "revoked by a project member")
                    .await?;
                Ok(self.store.grant(grant_id).await?)
            }
            _ => Ok(None),
        }
    }
}
