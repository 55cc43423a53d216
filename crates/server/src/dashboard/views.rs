//! The dashboard's templates and what they show. Values are prepared (formatted times, joined
//! lists) by the handlers; askama escapes every one of them.

use askama::Template;

/// What every page's frame needs.
pub struct Layout {
    pub title: String,
    /// `None` on signed-out pages: no navigation.
    pub user_email: Option<String>,
    pub csrf: String,
    pub notice: Option<String>,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "dashboard/error.html")]
pub struct ErrorPage {
    pub l: Layout,
    pub heading: String,
}

#[derive(Template)]
#[template(path = "dashboard/signup.html")]
pub struct Signup {
    pub l: Layout,
    pub email: String,
    pub invite_needed: bool,
}

pub struct ProjectItem {
    pub name: String,
    pub role: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "dashboard/projects.html")]
pub struct Projects {
    pub l: Layout,
    pub projects: Vec<ProjectItem>,
}

pub struct ServerItem {
    pub slug: String,
    pub name: String,
    pub environment: String,
    pub auth: String,
    pub mcp_url: String,
}

#[derive(Template)]
#[template(path = "dashboard/project.html")]
pub struct Project {
    pub l: Layout,
    pub project: String,
    pub tab: &'static str,
    pub servers: Vec<ServerItem>,
}

pub struct KeyItem {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub environment: String,
    pub scopes: String,
    pub created_by: String,
    pub last_used: String,
    pub expires: String,
    pub status: &'static str,
}

#[derive(Template)]
#[template(path = "dashboard/keys.html")]
pub struct Keys {
    pub l: Layout,
    pub project: String,
    pub tab: &'static str,
    pub keys: Vec<KeyItem>,
    /// The secret of the key just created: shown on this response only.
    pub new_secret: Option<String>,
    /// (scope, description) for the checkboxes.
    pub scopes: Vec<(&'static str, &'static str)>,
    /// One-time value of the creation form.
    pub nonce: String,
}

#[derive(Template)]
#[template(path = "dashboard/confirm.html")]
pub struct Confirm {
    pub l: Layout,
    pub heading: String,
    pub message: String,
    pub action: String,
    pub button: String,
    pub back: String,
}

pub struct MemberItem {
    pub user_id: String,
    pub email: String,
    pub role: String,
    pub since: String,
}

#[derive(Template)]
#[template(path = "dashboard/members.html")]
pub struct Members {
    pub l: Layout,
    pub project: String,
    pub tab: &'static str,
    pub members: Vec<MemberItem>,
    /// Owners see the forms that change membership.
    pub is_owner: bool,
}

#[derive(Template)]
#[template(path = "dashboard/usage.html")]
pub struct Usage {
    pub l: Layout,
    pub project: String,
    pub tab: &'static str,
    pub days: Vec<ezforge_proto::UsagePeriod>,
    pub months: Vec<ezforge_proto::UsagePeriod>,
    /// A sentence about the quota.
    pub quota: String,
    /// The quota for the form's field; empty without one.
    pub quota_value: String,
    pub is_owner: bool,
}

pub struct AuditItem {
    pub time: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: String,
}

#[derive(Template)]
#[template(path = "dashboard/audit.html")]
pub struct Audit {
    pub l: Layout,
    pub project: String,
    pub tab: &'static str,
    pub entries: Vec<AuditItem>,
    pub next_cursor: Option<String>,
}

pub struct DeploymentItem {
    pub id: String,
    pub upstream: String,
    pub health: String,
    pub created: String,
    pub active: bool,
}

pub struct GrantItem {
    pub id: String,
    pub client: String,
    pub user: String,
    pub scope: String,
    pub created: String,
    pub last_used: String,
    pub status: &'static str,
}

pub struct RequestItem {
    pub time: String,
    pub what: String,
    pub decision: String,
    pub status: u16,
    pub latency: String,
    pub subject: String,
}

/// One bar of the requests-per-minute chart (SVG units).
pub struct Bar {
    pub x: u32,
    pub y: u32,
    pub h: u32,
    pub label: String,
}

#[derive(Template)]
#[template(path = "dashboard/server.html")]
pub struct Server {
    pub l: Layout,
    pub project: String,
    pub name: String,
    pub slug: String,
    pub environment: String,
    pub mcp_url: String,
    pub byoa: bool,
    pub byoa_issuer: String,
    pub byoa_jwks_uri: String,
    pub byoa_authorization_endpoint: String,
    pub byoa_token_endpoint: String,
    pub access: &'static str,
    pub allowlist: String,
    pub tool_allow: String,
    pub tool_deny: String,
    pub tool_execute: String,
    pub deployments: Vec<DeploymentItem>,
    pub grants: Vec<GrantItem>,
    pub requests: Vec<RequestItem>,
    pub m_requests: u64,
    pub m_errors: u64,
    pub m_denials: u64,
    pub m_p50: String,
    pub m_p95: String,
    pub m_p99: String,
    pub m_max: u64,
    pub bars: Vec<Bar>,
}
