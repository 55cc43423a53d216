//! API keys: created and managed by project owners, signed-in.

use super::Core;
use super::access::Need;
use crate::audit::Change;
use crate::error::CoreError;
use crate::invalidation::{self, Invalidation};
use crate::model::ApiKeyRow;
use crate::principal::Principal;
use crate::{api_key, ids, secret, validate};
use ezforge_proto::{Environment, Scope};

pub struct NewApiKey<'a> {
    pub name: &'a str,
    pub scopes: &'a [String],
    pub environment: Environment,
    pub expires_at: Option<i64>,
}

impl Core {
    /// Creates a key. Returns the stored row and the secret, which is never available again.
    pub async fn create_api_key(
        &self,
        principal: &Principal,
        project: &str,
        new: NewApiKey<'_>,
    ) -> Result<(ApiKeyRow, String), CoreError> {
        let user = principal.user()?;
        let (project, _) = self.project_for(principal, project, Need::Owner).await?;
        let name = validate::display_name("name", new.name)?;
        let scopes = Scope::parse_many(new.scopes.iter().map(|s| s.trim()))
            .map_err(CoreError::InvalidScope)?;
        if scopes.is_empty() {
            return Err(CoreError::invalid(
                "scopes",
                format!("name at least one of {}", Scope::valid_names().join(", ")),
            ));
        }
        let now = self.clock.now();
        if let Some(at) = new.expires_at
            && at <= now
        {
            return Err(CoreError::invalid("expires_at", "must be in the future"));
        }
        let secret = api_key::generate(new.environment);
        let row = ApiKeyRow {
            id: ids::api_key_id(),
            project_id: project.id,
            name,
            environment: new.environment,
            scopes,
            secret_hash: secret::hash(&secret),
            display_prefix: secret[..api_key::DISPLAY_LEN].to_string(),
            created_by: user.id.clone(),
            created_at: now,
            last_used_at: None,
            expires_at: new.expires_at,
            revoked_at: None,
        };
        self.store.insert_api_key(&row).await?;
        tracing::info!(key_id = %row.id, project_id = %row.project_id, "API key created");
        self.audit(
            principal,
            Change {
                project_id: &row.project_id,
                action: "api_key.create",
                target: &row.id,
                environment: Some(row.environment),
                details: serde_json::json!({
                    "name": row.name,
                    "scopes": row.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                    "expires_at": row.expires_at,
                }),
            },
        )
        .await;
        Ok((row, secret))
    }

    pub async fn list_api_keys(
        &self,
        principal: &Principal,
        project: &str,
    ) -> Result<Vec<ApiKeyRow>, CoreError> {
        principal.user()?;
        let (project, _) = self.project_for(principal, project, Need::Owner).await?;
        Ok(self.store.api_keys(&project.id).await?)
    }

    /// Revokes a key; it is refused from the next request on: on this node at once, on the
    /// others once they hear of it (`invalidation`), and within the key cache's TTL on a node
    /// that missed the message.
    pub async fn revoke_api_key(
        &self,
        principal: &Principal,
        project: &str,
        key_id: &str,
    ) -> Result<ApiKeyRow, CoreError> {
        principal.user()?;
        let (project, _) = self.project_for(principal, project, Need::Owner).await?;
        let key = self
            .store
            .revoke_api_key(&project.id, key_id, self.clock.now())
            .await?
            .ok_or(CoreError::NotFound("API key"))?;
        self.forget_key(&key.secret_hash);
        invalidation::publish(&*self.store, Invalidation::ApiKey(key.secret_hash.clone())).await;
        tracing::info!(key_id = %key.id, project_id = %project.id, "API key revoked");
        self.audit(
            principal,
            Change {
                project_id: &project.id,
                action: "api_key.revoke",
                target: &key.id,
                environment: Some(key.environment),
                details: serde_json::json!({ "name": key.name }),
            },
        )
        .await;
        Ok(key)
    }
}
