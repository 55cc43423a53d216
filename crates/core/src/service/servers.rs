//! Servers: the MCP endpoints a project exposes. Each lives in one environment; API keys reach
//! only the servers of their own environment.

use super::Core;
use super::access::{Need, check_environment};
use crate::audit::Change;
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
        settings: &ezforge_proto::ServerSettings,
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
        let mut server = ServerRow {
            id: ids::server_id(),
            project_id: project.id,
            name,
            slug,
            environment,
            created_by: principal.actor_id().to_string(),
            created_at: now,
            updated_at: now,
            access_policy: AccessPolicy::Members,
            byoa: None,
            tool_policy: Default::default(),
            active_deployment_id: None,
        };
        apply_settings(&mut server, settings)?;
        self.store
            .insert_server(&server)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => {
                    CoreError::Conflict(format!("the slug `{}` is taken", server.slug))
                }
                other => other.into(),
            })?;
        self.audit(
            principal,
            Change {
                project_id: &server.project_id,
                action: "server.create",
                target: &server.id,
                environment: Some(server.environment),
                details: serde_json::json!({ "name": server.name, "slug": server.slug, "settings": settings }),
            },
        )
        .await;
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
        apply_settings(&mut server, &update.settings)?;
        let policy_changed = server.access_policy != before;
        server.updated_at = self.clock.now();
        self.store.update_server(&server).await?;
        if policy_changed {
            self.revoke_grants_outside_policy(&server).await?;
        }
        self.audit(
            principal,
            Change {
                project_id: &server.project_id,
                action: "server.update",
                target: &server.id,
                environment: Some(server.environment),
                details: serde_json::to_value(update).unwrap_or_default(),
            },
        )
        .await;
        Ok(server)
    }

    /// A server by slug or id anywhere on the instance, if the caller may see it (its project's
    /// member, or an API key of its project and environment).
    pub async fn find_server(
        &self,
        principal: &Principal,
        reference: &str,
    ) -> Result<ServerRow, CoreError> {
        let server = match self.store.server_by_slug(reference).await? {
            Some(s) => Some(s),
            None => self.store.server_by_id(reference).await?,
        };
        let server = server.ok_or(CoreError::NotFound("server"))?;
        self.get_server(principal, &server.project_id, &server.id)
            .await
    }

    /// Every server the caller can see: across a user's projects, or a key's project and
    /// environment.
    pub async fn all_servers(&self, principal: &Principal) -> Result<Vec<ServerRow>, CoreError> {
        match principal {
            Principal::ApiKey(key) => Ok(self
                .store
                .servers(&key.project_id, Some(key.environment))
                .await?),
            Principal::User { user, .. } => {
                let mut out = Vec::new();
                for (project, _) in self.store.projects_of_user(&user.id).await? {
                    out.extend(self.store.servers(&project.id, None).await?);
                }
                Ok(out)
            }
        }
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
        self.audit(
            principal,
            Change {
                project_id: &server.project_id,
                action: "server.delete",
                target: &server.id,
                environment: Some(server.environment),
                details: serde_json::json!({ "slug": server.slug }),
            },
        )
        .await;
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

/// Applies `auth_mode` and the `byoa_*` URLs of an update.
/// Applies what `update` gives of a server's settings (access policy, auth mode, tool policy),
/// with their checks: for an update, and for a create on top of the defaults.
fn apply_settings(
    server: &mut ServerRow,
    update: &ezforge_proto::ServerSettings,
) -> Result<(), CoreError> {
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
    apply_auth_mode(server, update)?;
    if let Some(policy) = &update.tool_policy {
        server.tool_policy = tool_policy(policy)?;
    }
    Ok(())
}

fn apply_auth_mode(
    server: &mut ServerRow,
    update: &ezforge_proto::ServerSettings,
) -> Result<(), CoreError> {
    let any_byoa = update.byoa_issuer.is_some()
        || update.byoa_jwks_uri.is_some()
        || update.byoa_authorization_endpoint.is_some()
        || update.byoa_token_endpoint.is_some();
    let mode = match update.auth_mode.as_deref() {
        Some("byoa") => "byoa",
        Some("ezforge_managed" | "managed") => "ezforge_managed",
        Some(other) => {
            return Err(CoreError::invalid(
                "auth_mode",
                format!("unknown auth mode `{other}`; expected ezforge_managed or byoa"),
            ));
        }
        None if any_byoa => server.auth_mode(),
        None => return Ok(()),
    };
    if mode == "ezforge_managed" {
        if any_byoa {
            return Err(CoreError::invalid(
                "auth_mode",
                "byoa_* settings need --auth-mode byoa",
            ));
        }
        server.byoa = None;
        return Ok(());
    }
    let current = server.byoa.clone();
    let pick = |field: &'static str,
                given: &Option<String>,
                existing: Option<String>|
     -> Result<String, CoreError> {
        let value = given
            .clone()
            .or(existing)
            .ok_or_else(|| CoreError::invalid(field, "is required for auth mode byoa"))?;
        byoa_url(field, &value)
    };
    let issuer = pick(
        "byoa_issuer",
        &update.byoa_issuer,
        current.as_ref().map(|b| b.issuer.clone()),
    )?;
    if issuer.contains('?') || issuer.contains('#') {
        return Err(CoreError::invalid(
            "byoa_issuer",
            "an issuer has no query or fragment",
        ));
    }
    server.byoa = Some(ezforge_proto::ByoaSettings {
        issuer,
        jwks_uri: pick(
            "byoa_jwks_uri",
            &update.byoa_jwks_uri,
            current.as_ref().map(|b| b.jwks_uri.clone()),
        )?,
        authorization_endpoint: pick(
            "byoa_authorization_endpoint",
            &update.byoa_authorization_endpoint,
            current.as_ref().map(|b| b.authorization_endpoint.clone()),
        )?,
        token_endpoint: pick(
            "byoa_token_endpoint",
            &update.byoa_token_endpoint,
            current.as_ref().map(|b| b.token_endpoint.clone()),
        )?,
    });
    Ok(())
}

/// A BYOA URL: https, or http on a loopback host (an identity provider under development).
fn byoa_url(field: &'static str, value: &str) -> Result<String, CoreError> {
    let url = url::Url::parse(value)
        .map_err(|e| CoreError::invalid(field, format!("`{value}` is not an absolute URL: {e}")))?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    let ok = match url.scheme() {
        "https" => url.host().is_some(),
        "http" => loopback,
        _ => false,
    };
    if !ok || !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(CoreError::invalid(
            field,
            format!(
                "`{value}` must be an https URL (http only on loopback), without user information or fragment"
            ),
        ));
    }
    Ok(value.to_string())
}

/// Tool names: non-empty, printable, unique per list.
fn tool_policy(p: &ezforge_proto::ToolPolicy) -> Result<ezforge_proto::ToolPolicy, CoreError> {
    let clean = |field: &'static str, names: &[String]| -> Result<Vec<String>, CoreError> {
        let mut out: Vec<String> = Vec::new();
        for n in names {
            let n = n.trim();
            if n.is_empty() || n.len() > 128 || n.chars().any(char::is_control) {
                return Err(CoreError::invalid(
                    field,
                    format!("`{n}` is not a tool name"),
                ));
            }
            if !out.iter().any(|o| o == n) {
                out.push(n.to_string());
            }
        }
        Ok(out)
    };
    Ok(ezforge_proto::ToolPolicy {
        allow: clean("tool_policy.allow", &p.allow)?,
        deny: clean("tool_policy.deny", &p.deny)?,
        execute: clean("tool_policy.execute", &p.execute)?,
    })
}
