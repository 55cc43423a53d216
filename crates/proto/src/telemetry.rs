//! What `logs:read`, `metrics:read` and `billing:read` return, and the audit log.

use crate::scope::Environment;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

// ---- request log ----

/// What the gateway decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Forwarded to the upstream (whatever it then answered).
    Allowed,
    /// Refused by the gateway; `reason` says why.
    Denied,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
        }
    }
}

impl std::str::FromStr for Decision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allowed" => Ok(Decision::Allowed),
            "denied" => Ok(Decision::Denied),
            other => Err(format!(
                "unknown decision `{other}`; expected allowed or denied"
            )),
        }
    }
}

/// One request through the gateway. Tokens are never recorded: `token_id` is the access
/// token's `jti` (or, for BYOA tokens without one, a SHA-256 fingerprint prefix).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RequestRecord {
    pub id: String,
    /// When the answer was complete (or the client went away).
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub server_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// HTTP method of the request: POST, GET or DELETE.
    pub http_method: String,
    /// The JSON-RPC method (`batch` for a batch); absent for GET and DELETE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The tool of a `tools/call`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    pub decision: Decision,
    /// Why it was denied, as a stable code: `no_token`, `invalid_token`, `token_in_query`,
    /// `insufficient_scope`, `tool_policy`, `bad_request`, `header_mismatch`, `too_large`,
    /// `quota_exceeded`, `no_deployment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// HTTP status returned to the client.
    pub status: u16,
    /// Milliseconds from the request's arrival to the response headers.
    pub latency_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RequestLogPage {
    /// Newest first.
    pub records: Vec<RequestRecord>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

// ---- metrics ----

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct MetricsSummary {
    pub requests: u64,
    /// Answers with a 5xx status (upstream failures and timeouts included).
    pub errors: u64,
    /// Requests the gateway refused.
    pub denials: u64,
    /// Latency percentiles in milliseconds; absent without requests. Percentiles come from a
    /// log-scale histogram and are within about 10% of the exact value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MetricsPoint {
    /// Start of the step.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub requests: u64,
    pub errors: u64,
    pub denials: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ToolMetrics {
    pub tool: String,
    #[serde(flatten)]
    pub summary: MetricsSummary,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServerMetrics {
    pub server_id: String,
    /// The window asked for: `15m`, `1h`, `6h`, `24h`, `7d` or `30d`.
    pub window: String,
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    /// Width of each point of `series`, in seconds.
    pub step_secs: u64,
    pub totals: MetricsSummary,
    /// Oldest first, one point per step, steps without requests included.
    pub series: Vec<MetricsPoint>,
    /// `tools/call` requests, per tool, busiest first.
    pub tools: Vec<ToolMetrics>,
}

// ---- usage ----

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsagePeriod {
    /// `YYYY-MM-DD` for a day, `YYYY-MM` for a month (UTC).
    pub period: String,
    /// Requests forwarded to upstreams (refused ones are not billed).
    pub requests: u64,
    /// Forwarded `tools/call` messages.
    pub tool_calls: u64,
    /// Distinct OAuth clients that made forwarded requests.
    pub clients: u64,
    /// Distinct users (token subjects) that made forwarded requests.
    pub users: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QuotaStatus {
    /// Requests allowed per calendar month (UTC).
    pub monthly_requests: u64,
    /// Requests counted this month.
    pub used: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub resets_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectUsage {
    pub project_id: String,
    /// Oldest first.
    pub days: Vec<UsagePeriod>,
    /// Oldest first: every month the days touch.
    pub months: Vec<UsagePeriod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SetQuotaRequest {
    /// Requests per calendar month (UTC); `null` removes the quota.
    pub monthly_requests: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Quota {
    pub project_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_requests: Option<u64>,
}

// ---- audit ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    User,
    ApiKey,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub actor_kind: ActorKind,
    /// The user id or API key id.
    pub actor_id: String,
    /// The user's email, when the actor is a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_email: Option<String>,
    /// What happened, e.g. `api_key.create`, `server.update`, `deployment.rollback`.
    pub action: String,
    /// What it happened to (an id).
    pub target: String,
    /// The environment the change belongs to; absent for project-wide changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    /// What changed: the fields set, never secrets.
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub entries: Vec<AuditEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
