//! Request and response bodies of `/v1`.

use crate::scope::{Environment, Scope};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

// ---- users and sessions ----

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignupRequest {
    pub email: String,
    pub password: String,
    /// Required when the instance's sign-up mode is `invite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite_code: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: String,
    pub email: String,
    /// The first user of an instance is its admin.
    pub is_admin: bool,
    /// Whether the address is known to be the user's (signed up with an invite bound to it).
    /// Access allow-lists match verified addresses only.
    #[serde(default)]
    pub email_verified: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The signed-in user's session. The session secret itself travels only in the HTTP-only
/// `ezf_session` cookie.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    pub user: User,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Send this value in the `X-CSRF-Token` header with every state-changing request that
    /// authenticates with the session cookie.
    pub csrf_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignOutEverywhereResponse {
    /// How many sessions were ended, this one included.
    pub sessions_ended: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateInviteRequest {
    /// When given, only this email address can use the invite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedInvite {
    pub id: String,
    /// Shown once; only its hash is stored.
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

// ---- projects ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "owner" => Ok(Role::Owner),
            "member" => Ok(Role::Member),
            other => Err(format!(
                "unknown role `{other}`; expected `owner` or `member`"
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateProjectRequest {
    /// Lowercase letters, digits and hyphens, 1–63 characters; unique on the instance.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Project {
    pub id: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The caller's role when the caller is a signed-in user; absent for API keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectList {
    pub projects: Vec<Project>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub user_id: String,
    pub email: String,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    pub added_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberList {
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AddMemberRequest {
    /// An existing user's email address.
    pub email: String,
    #[serde(default = "default_role")]
    pub role: Role,
}

fn default_role() -> Role {
    Role::Member
}

// ---- API keys ----

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateApiKeyRequest {
    pub name: String,
    /// Scope names, e.g. `["deployments:write", "servers:read"]`.
    pub scopes: Vec<String>,
    /// `live` (default, `ezf_live_` keys) or `test` (`ezf_test_` keys).
    #[serde(default)]
    pub environment: Environment,
    /// Optional expiry (RFC 3339); must be in the future.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<OffsetDateTime>,
}

/// An API key's metadata. Never carries the secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub environment: Environment,
    pub scopes: Vec<Scope>,
    /// The key's first characters, enough to recognise it: `ezf_live_AbCd`.
    pub prefix: String,
    /// The user who created it.
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    pub key: ApiKey,
    /// The secret. Shown once: only its hash is stored.
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyList {
    pub keys: Vec<ApiKey>,
}

// ---- servers ----

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CreateServerRequest {
    pub name: String,
    /// DNS label: lowercase letters, digits and hyphens, 1–63 characters; unique on the instance.
    pub slug: String,
    /// Defaults to the API key's environment, or `live` for a signed-in user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    /// Anything not given takes its default: `ezforge_managed`, the `members` policy, no tool
    /// policy.
    #[serde(flatten)]
    pub settings: ServerSettings,
}

/// Bring Your Own Auth: the customer's OAuth 2.1 authorization server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ByoaSettings {
    pub issuer: String,
    pub jwks_uri: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
}

/// Which tools a server's MCP clients may call. Empty `allow` means every tool not denied;
/// `execute` tools need the `mcp:execute` scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ToolPolicy {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub execute: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct UpdateServerRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub settings: ServerSettings,
}

/// A server's settings, as a create or an update gives them; what is not given stays as it is
/// (on a create: its default).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ServerSettings {
    /// Who may authorize MCP clients: `members` (of the project), `instance` (any user) or
    /// `allowlist` (the emails and `@domains` in `access_allowlist`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_allowlist: Option<Vec<String>>,
    /// `ezforge_managed` or `byoa`. Switching to `byoa` needs the four `byoa_*` URLs (here or
    /// already set); switching back forgets them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byoa_issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byoa_jwks_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byoa_authorization_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byoa_token_endpoint: Option<String>,
    /// Replaces the whole tool policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_policy: Option<ToolPolicy>,
}

impl From<ServerSettings> for UpdateServerRequest {
    fn from(settings: ServerSettings) -> Self {
        UpdateServerRequest {
            name: None,
            settings,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Server {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub slug: String,
    /// Where MCP clients connect: the server's resource URI, the audience of its tokens
    /// (`{public URL}/mcp/{slug}`, or `https://{slug}.{mcp domain}` with host-based routing).
    /// Empty from a server older than this field.
    #[serde(default)]
    pub mcp_url: String,
    pub environment: Environment,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// `members`, `instance` or `allowlist`.
    pub access_policy: String,
    #[serde(default)]
    pub access_allowlist: Vec<String>,
    /// `ezforge_managed` (default) or `byoa`.
    pub auth_mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byoa: Option<ByoaSettings>,
    #[serde(default)]
    pub tool_policy: ToolPolicy,
    /// The deployment receiving traffic; absent before the first deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deployment_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServerList {
    pub servers: Vec<Server>,
}

// ---- OAuth management ----

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateOAuthClientRequest {
    pub client_name: String,
    /// https, or http on a loopback address.
    pub redirect_uris: Vec<String>,
    /// `client_secret_basic` (default: a confidential client with a secret), `client_secret_post`,
    /// or `none` (a public client, PKCE only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_method: Option<String>,
    /// Defaults to `["authorization_code", "refresh_token"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_types: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OAuthClient {
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// `registered` (by a project owner) or `dynamic` (RFC 7591).
    pub kind: String,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub token_endpoint_auth_method: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedOAuthClient {
    pub client: OAuthClient,
    /// Shown once; only its hash is stored. Absent for public clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OAuthClientList {
    pub clients: Vec<OAuthClient>,
}

/// A user's authorization of a client for a server; its tokens live and die with it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Grant {
    pub id: String,
    pub user_id: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    pub resource: String,
    pub scope: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GrantList {
    pub grants: Vec<Grant>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SigningKeyInfo {
    pub kid: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Published from `created_at`; signs from here on.
    #[serde(with = "time::serde::rfc3339")]
    pub signs_from: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub retired_at: Option<OffsetDateTime>,
    /// The key signing new tokens now.
    pub signing: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SigningKeyList {
    pub keys: Vec<SigningKeyInfo>,
}

// ---- deployments ----

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateDeploymentRequest {
    /// The upstream MCP server's Streamable HTTP URL.
    pub upstream_url: String,
    /// Headers sent to the upstream with every request (its own credentials). Stored encrypted,
    /// never returned.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Upstream timeout in milliseconds [default: 30000].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i64>,
    /// Deploy even if the upstream does not answer an MCP `initialize`.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RollbackRequest {
    /// The deployment to return to [default: the one before the active one].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Deployment {
    pub id: String,
    pub server_id: String,
    pub upstream_url: String,
    /// Whether upstream headers are stored (their values are never returned).
    pub has_credentials: bool,
    pub timeout_ms: i64,
    /// What the health check found at deploy time.
    pub health: String,
    /// Receiving traffic now.
    pub active: bool,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeploymentList {
    /// Newest first.
    pub deployments: Vec<Deployment>,
}
