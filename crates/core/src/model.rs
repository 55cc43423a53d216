//! The stored records. Times are unix seconds; ids are prefixed random strings (see `ids`).

use crate::clock::to_datetime;
use ezforge_proto as proto;
use ezforge_proto::{Environment, Role, Scope};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    /// Lowercased and trimmed.
    pub email: String,
    pub password_hash: String,
    pub is_admin: bool,
    /// Created with an invite bound to this address.
    pub email_verified: bool,
    pub created_at: i64,
}

impl UserRow {
    pub fn to_api(&self) -> proto::User {
        proto::User {
            id: self.id.clone(),
            email: self.email.clone(),
            is_admin: self.is_admin,
            email_verified: self.email_verified,
            created_at: to_datetime(self.created_at),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// SHA-256 of the cookie value.
    pub token_hash: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteRow {
    pub id: String,
    pub code_hash: String,
    pub email: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRow {
    pub id: String,
    pub name: String,
    pub created_by: String,
    pub created_at: i64,
}

impl ProjectRow {
    pub fn to_api(&self, role: Option<Role>) -> proto::Project {
        proto::Project {
            id: self.id.clone(),
            name: self.name.clone(),
            created_at: to_datetime(self.created_at),
            role,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub project_id: String,
    pub user_id: String,
    pub role: Role,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub environment: Environment,
    pub scopes: Vec<Scope>,
    /// SHA-256 of the whole key.
    pub secret_hash: String,
    /// `ezf_live_AbCd`: the prefix and four characters, to recognise the key in listings.
    pub display_prefix: String,
    pub created_by: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl ApiKeyRow {
    pub fn to_api(&self) -> proto::ApiKey {
        proto::ApiKey {
            id: self.id.clone(),
            project_id: self.project_id.clone(),
            name: self.name.clone(),
            environment: self.environment,
            scopes: self.scopes.clone(),
            prefix: self.display_prefix.clone(),
            created_by: self.created_by.clone(),
            created_at: to_datetime(self.created_at),
            last_used_at: self.last_used_at.map(to_datetime),
            expires_at: self.expires_at.map(to_datetime),
            revoked_at: self.revoked_at.map(to_datetime),
        }
    }
}

/// Who may authorize an MCP client for a server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessPolicy {
    /// Members of the server's project (the default).
    #[default]
    Members,
    /// Any user of this instance.
    Instance,
    /// The listed email addresses and `@domain`s.
    Allowlist(Vec<String>),
}

impl AccessPolicy {
    pub fn kind(&self) -> &'static str {
        match self {
            AccessPolicy::Members => "members",
            AccessPolicy::Instance => "instance",
            AccessPolicy::Allowlist(_) => "allowlist",
        }
    }

    pub fn allowlist(&self) -> &[String] {
        match self {
            AccessPolicy::Allowlist(list) => list,
            _ => &[],
        }
    }

    /// From the stored (or requested) kind and list.
    pub fn from_parts(kind: &str, list: &[String]) -> Result<Self, String> {
        match kind {
            "members" => Ok(AccessPolicy::Members),
            "instance" => Ok(AccessPolicy::Instance),
            "allowlist" => Ok(AccessPolicy::Allowlist(list.to_vec())),
            other => Err(format!(
                "unknown access policy `{other}`; expected members, instance or allowlist"
            )),
        }
    }

    /// Whether `email` is on the allow-list (exact address or `@domain`).
    pub fn lists(&self, email: &str) -> bool {
        let email = email.to_lowercase();
        self.allowlist().iter().any(|entry| {
            let entry = entry.to_lowercase();
            if entry.starts_with('@') {
                email.ends_with(&entry)
            } else {
                entry == email
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRow {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub slug: String,
    pub environment: Environment,
    /// A user id (`usr_…`) or an API key id (`key_…`).
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub access_policy: AccessPolicy,
    /// `None`: ezForge-managed auth; `Some`: the customer's authorization server (BYOA).
    pub byoa: Option<proto::ByoaSettings>,
    pub tool_policy: proto::ToolPolicy,
    /// Where traffic goes now; `None` until the first deploy.
    pub active_deployment_id: Option<String>,
}

impl ServerRow {
    pub fn auth_mode(&self) -> &'static str {
        if self.byoa.is_some() {
            "byoa"
        } else {
            "ezforge_managed"
        }
    }

    /// The API view; `mcp_url` is where MCP clients connect (`OAuth::resource_uri`).
    pub fn to_api(&self, mcp_url: String) -> proto::Server {
        proto::Server {
            id: self.id.clone(),
            mcp_url,
            project_id: self.project_id.clone(),
            name: self.name.clone(),
            slug: self.slug.clone(),
            environment: self.environment,
            created_by: self.created_by.clone(),
            created_at: to_datetime(self.created_at),
            updated_at: to_datetime(self.updated_at),
            access_policy: self.access_policy.kind().to_string(),
            access_allowlist: self.access_policy.allowlist().to_vec(),
            auth_mode: self.auth_mode().to_string(),
            byoa: self.byoa.clone(),
            tool_policy: self.tool_policy.clone(),
            active_deployment_id: self.active_deployment_id.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRow {
    pub id: String,
    pub server_id: String,
    pub upstream_url: String,
    /// Upstream headers, sealed with the master key.
    pub credentials: Option<String>,
    pub timeout_ms: i64,
    pub health: String,
    pub created_by: String,
    pub created_at: i64,
}

impl DeploymentRow {
    /// The API view; credentials are never returned, only whether there are any.
    pub fn to_api(&self, active: bool) -> proto::Deployment {
        proto::Deployment {
            id: self.id.clone(),
            server_id: self.server_id.clone(),
            upstream_url: self.upstream_url.clone(),
            has_credentials: self.credentials.is_some(),
            timeout_ms: self.timeout_ms,
            health: self.health.clone(),
            active,
            created_by: self.created_by.clone(),
            created_at: to_datetime(self.created_at),
        }
    }
}
