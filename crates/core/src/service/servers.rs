//! Servers: the MCP endpoints a project exposes. Each lives in one environment; API keys reach
//! only the servers of their own environment.

use super::Core;
use super::access::{Need, check_environment};
use crate::error::CoreError;
use crate::model::{AccessPolicy, ServerRow};
use crate::principal::Principal;
use crate::store::StoreError;
use crate::{ids, validate};
use ezforge_proto::Environment;

/// Slugs that would collide with ezForge's own host names.
const RESERVED_SLUGS: &[&str] = &[
    "api",
    "auth",
    "www",
    "admin",
    "dashboard",
    "mcp",
    "static",
    "status",
];

impl Core {
    pub async fn create_server(
        &self,
        principal: &Principal,
        project: &str,
        name: &str,
        slug: &str,
        environment: Option<Environment>,
    ) -> Result<ServerRow, CoreError> {
        let (project, _) = self.project_for(principal, project, Need::Member).await?;
        let environment = environment.unwrap_or(match principal {
            Principal::ApiKey(key) => key.environment,
            Principal::User { .. } => Environment::Live,
        });
        check_environment(principal, environment)?;
        let name = validate::display_name("name", name)?;
        let slug = validate::dns_label("slug", slug)?;
        if RESERVED_SLUGS.contains(&slug.as_str()) {
            return Err(CoreError::invalid("slug", format!("`{slug}` is reserved")));
        }
        let now = self.clock.now();
        let server = ServerRow {
            id: ids::server_id(),
            project_id: project.id,
            name,
            slug,
            environment,
            created_by: principal.actor_id().to_string(),
            created_at: now,
            updated_at: now,
            access_policy: AccessPolicy::Members,
        };
        self.store
            .insert_server(&server)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => {
                    CoreError::Conflict(format!("the slug `{}` is taken", server.slug))
                }
                other => other.into(),
            })?;
        Ok(server)
    }

    /// Lists a project's servers. A key sees only its environment's; asking a key for the other
    /// environment is an error rather than an empty list, so a misconfigured script finds out.
    pub async fn list_servers(
        &self,
        principal: &Principal,
        project: &str,
        environment: Option<Environment>,
    ) -> Result<Vec<ServerRow>, CoreError> {
        let (project, _) = self.project_for(principal, project, Need::Member).await?;
        let filter = match (principal, environment) {
            (_, Some(env)) => {
                check_environment(principal, env)?;
                Some(env)
            }
            (Principal::ApiKey(key), None) => Some(key.environment),
            (Principal::User { .. }, None) => None,
        };
        Ok(self.store.servers(&project.id, filter).await?)
    }

    pub async fn get_server(
        &self,
        principal: &Principal,
        project: &str,
        server: &str,
    ) -> Result<ServerRow, CoreError> {
        let (project, _) = self.project_for(principal, project, Need::Member).await?;
        let server = self
            .store
            .server(&project.id, server)
            .await?
            .ok_or(CoreError::NotFound("server"))?;
        check_environment(principal, server.environment)?;
        Ok(server)
    }

    pub async fn update_server(
        &self,
        principal: &Principal,
        project: &str,
        server: &str,
        update: &ezforge_proto::UpdateServerRequest,
    ) -> Result<ServerRow, CoreError> {
        let mut server = self.get_server(principal, project, server).await?;
        if let Some(name) = &update.name {
            server.name = validate::display_name("name", name)?;
        }
        let before = server.access_policy.clone();
        if update.access_policy.is_some() || update.access_allowlist.is_some() {
            let kind = update
                .access_policy
                .clone()
                .unwrap_or_else(|| server.access_policy.kind().to_string());
            let list = match &update.access_allowlist {
                Some(list) => list
                    .iter()
                    .map(|e| allowlist_entry(e))
                    .collect::<Result<Vec<_>, _>>()?,
                None => server.access_policy.allowlist().to_vec(),
            };
            server.access_policy = AccessPolicy::from_parts(&kind, &list)
                .map_err(|m| CoreError::invalid("access_policy", m))?;
            if matches!(&server.access_policy, AccessPolicy::Allowlist(l) if l.is_empty()) {
                return Err(CoreError::invalid(
                    "access_allowlist",
                    "an allowlist policy needs at least one email or @domain",
                ));
            }
        }
        let policy_changed = server.access_policy != before;
        server.updated_at = self.clock.now();
        self.store.update_server(&server).await?;
        if policy_changed {
            self.revoke_grants_outside_policy(&server).await?;
        }
        Ok(server)
    }

    /// After a policy change, grants of users the policy no longer admits are revoked.
    async fn revoke_grants_outside_policy(&self, server: &ServerRow) -> Result<(), CoreError> {
        let now = self.clock.now();
        for grant in self.store.grants_of_server(&server.id).await? {
            if grant.revoked_at.is_some() {
                continue;
            }
            let admitted = match self.store.user_by_id(&grant.user_id).await? {
                Some(user) => crate::policy::admits(self.store.as_ref(), server, &user).await?,
                None => false,
            };
            if !admitted {
                self.store
                    .revoke_grant(
                        &grant.id,
                        now,
                        "the server's access policy no longer admits the user",
                    )
                    .await?;
                self.store
                    .delete_consent(&grant.user_id, &grant.client_id, &grant.server_id)
                    .await?;
            }
        }
        Ok(())
    }

    pub async fn delete_server(
        &self,
        principal: &Principal,
        project: &str,
        server: &str,
    ) -> Result<ServerRow, CoreError> {
        let server = self.get_server(principal, project, server).await?;
        self.store.delete_server(&server.id).await?;
        Ok(server)
    }
}

/// An allow-list entry: an email address or `@domain`.
fn allowlist_entry(entry: &str) -> Result<String, CoreError> {
    let e = entry.trim().to_lowercase();
    if let Some(domain) = e.strip_prefix('@') {
        if !domain.is_empty()
            && domain.contains('.')
            && !domain.contains('@')
            && !domain.contains(',')
        {
            return Ok(e);
        }
        return Err(CoreError::invalid(
            "access_allowlist",
            format!("`{entry}` is not an @domain"),
        ));
    }
    validate::email(&e).map_err(|_| {
        CoreError::invalid(
            "access_allowlist",
            format!("`{entry}` is neither an email nor an @domain"),
        )
    })
}
