//! `logs:read`, `metrics:read` and `billing:read`: a server's request log (paged, or followed as
//! server-sent events) and metrics, a project's usage and quota, and its audit log.

use super::AppState;
use crate::auth::{Caller, need};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use axum::Json;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use ezforge_core::invalidation::Invalidation;
use ezforge_core::service::{LogFilter, MetricsWindow};
use ezforge_core::telemetry::writer::FollowerSlot;
use ezforge_core::telemetry::{RequestRow, encode_cursor, parse_time};
use ezforge_core::{CoreError, Principal};
use ezforge_proto::{
    ApiErrorBody, AuditPage, Decision, Environment, ProjectUsage, Quota, RequestLogPage,
    ServerMetrics, SetQuotaRequest,
};
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LogQuery {
    /// Records at or after this time: RFC 3339, or a duration before now (`15m`, `2h`, `7d`).
    pub since: Option<String>,
    /// Records before this time (same forms as `since`).
    pub until: Option<String>,
    /// Only `tools/call` requests for this tool.
    pub tool: Option<String>,
    /// `allowed` or `denied`.
    pub decision: Option<String>,
    /// Only this HTTP status.
    pub status: Option<u16>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Records per page, 1–1000 (default 100).
    pub limit: Option<u32>,
    /// Stream new records as server-sent events (`event: record`) instead of a page.
    pub follow: Option<bool>,
}

fn time_arg(
    state: &AppState,
    field: &'static str,
    v: Option<&str>,
) -> Result<Option<i64>, ApiError> {
    v.map(|s| {
        parse_time(state.core.now_ms(), s).ok_or_else(|| {
            ApiError::from(CoreError::invalid(
                field,
                format!("`{s}` is neither an RFC 3339 time nor a duration like 15m, 2h or 7d"),
            ))
        })
    })
    .transpose()
}

/// A server's request log, newest first; or, with `follow=true`, new records as they come.
#[utoipa::path(get, path = "/v1/servers/{server}/logs", tag = "telemetry",
    params(("server" = String, Path, description = "Server slug or id"), LogQuery),
    security(("api_key" = ["logs:read"]), ("session" = [])),
    responses((status = 200, body = RequestLogPage, description = "A page; with follow=true, a text/event-stream of RequestRecord events"),
        (status = 400, body = ApiErrorBody), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn server_logs(
    State(state): State<AppState>,
    caller: Caller<need::LogsRead>,
    Path(server): Path<String>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<Response> {
    let server = state
        .core
        .telemetry_server(&caller.principal, &server)
        .await?;
    let decision = q
        .decision
        .as_deref()
        .map(|d| {
            d.parse::<Decision>()
                .map_err(|m| ApiError::from(CoreError::invalid("decision", m)))
        })
        .transpose()?;
    let filter = LogFilter {
        since_ms: time_arg(&state, "since", q.since.as_deref())?,
        until_ms: time_arg(&state, "until", q.until.as_deref())?,
        tool: q.tool,
        decision,
        status: q.status,
        cursor: q.cursor,
        limit: q.limit,
    };
    if q.follow.unwrap_or(false) {
        if filter.cursor.is_some() || filter.until_ms.is_some() {
            return Err(CoreError::invalid(
                "follow",
                "cannot be combined with `cursor` or `until`",
            )
            .into());
        }
        let since = filter.since_ms.unwrap_or_else(|| state.core.now_ms());
        let stream = follow(&state, caller.principal, server.id, since, filter)?;
        return Ok(stream.into_response());
    }
    let (records, next_cursor) = state.core.server_logs(&server, &filter).await?;
    Ok(Json(RequestLogPage {
        records: records.iter().map(RequestRow::to_api).collect(),
        next_cursor,
    })
    .into_response())
}

/// Chunks from other nodes may be written up to this long after later ones from this node,
/// so each poll looks this far back and skips the chunks it already read.
const FOLLOW_OVERLAP_MS: i64 = 3_000;
/// A follower checks again this often that its key or session still may read the log.
const FOLLOW_RECHECK: Duration = Duration::from_secs(30);
/// Following starts at most this far back.
const FOLLOW_MAX_BACK_MS: i64 = 3_600_000;
/// Chunks read per poll.
const FOLLOW_CHUNKS: u32 = 20;

struct Follower {
    state: AppState,
    principal: Principal,
    server_id: String,
    filter: LogFilter,
    /// Nothing before this is sent: when following started, or `since`.
    start_ms: i64,
    /// The newest chunk time read so far.
    from_ms: i64,
    /// Chunks already read, with their newest record's time (chunks never change).
    seen: HashMap<String, i64>,
    ready: VecDeque<RequestRow>,
    checked: std::time::Instant,
    _slot: FollowerSlot,
}

impl Follower {
    fn matches(&self, r: &RequestRow) -> bool {
        r.at_ms >= self.start_ms
            && self
                .filter
                .tool
                .as_ref()
                .is_none_or(|t| r.tool.as_ref() == Some(t))
            && self.filter.decision.is_none_or(|d| r.decision == d)
            && self.filter.status.is_none_or(|s| r.status == s)
    }

    /// The next record to send, waiting for one as long as needed; `None` when the server is
    /// shutting down.
    async fn next(&mut self) -> Result<Option<RequestRow>, CoreError> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Ok(Some(r));
            }
            if self.state.requests.is_closing() {
                return Ok(None);
            }
            if self.checked.elapsed() >= FOLLOW_RECHECK {
                // A revoked key, an ended session or a lost membership ends the stream.
                self.principal = self.state.core.refresh_principal(&self.principal).await?;
                self.state
                    .core
                    .telemetry_server(&self.principal, &self.server_id)
                    .await?;
                self.checked = std::time::Instant::now();
            }
            let since = (self.from_ms - FOLLOW_OVERLAP_MS).max(self.start_ms);
            let except: Vec<String> = self
                .seen
                .iter()
                .filter(|(_, at)| **at >= since)
                .map(|(id, _)| id.clone())
                .collect();
            let chunks = self
                .state
                .core
                .store()
                .request_chunks_since(&self.server_id, since, &except, FOLLOW_CHUNKS)
                .await?;
            let full = chunks.len() == FOLLOW_CHUNKS as usize;
            for (id, last_at, records) in chunks {
                self.seen.insert(id, last_at);
                self.from_ms = self.from_ms.max(last_at);
                let fresh: Vec<RequestRow> =
                    records.into_iter().filter(|r| self.matches(r)).collect();
                self.ready.extend(fresh);
            }
            let horizon = self.from_ms - 2 * FOLLOW_OVERLAP_MS;
            self.seen.retain(|_, at| *at >= horizon);
            if self.ready.is_empty() && !full {
                // Woken by this node's next write; other nodes' writes are seen within a second.
                self.state
                    .requests
                    .wait_for_write(Duration::from_secs(1))
                    .await;
            }
        }
    }
}

fn follow(
    state: &AppState,
    principal: Principal,
    server_id: String,
    since_ms: i64,
    filter: LogFilter,
) -> Result<
    Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>> + use<>>,
    ApiError,
> {
    let slot = state
        .requests
        .follower_slot()
        .ok_or(CoreError::RateLimited { retry_after: 10 })?;
    let now = state.core.now_ms();
    let start = since_ms.max(now - FOLLOW_MAX_BACK_MS);
    let follower = Follower {
        state: state.clone(),
        principal,
        server_id,
        filter,
        start_ms: start,
        from_ms: start,
        seen: HashMap::new(),
        ready: VecDeque::new(),
        checked: std::time::Instant::now(),
        _slot: slot,
    };
    let stream = futures_util::stream::unfold(Some(follower), |f| async move {
        let mut f = f?;
        match f.next().await {
            Ok(Some(r)) => {
                let event = Event::default()
                    .event("record")
                    .id(encode_cursor(r.at_ms, &r.id))
                    .json_data(r.to_api())
                    .unwrap_or_else(|_| Event::default().comment("unencodable record"));
                Some((Ok(event), Some(f)))
            }
            Ok(None) => {
                let event = Event::default()
                    .event("end")
                    .data("the server is shutting down; reconnect to resume");
                Some((Ok(event), None))
            }
            Err(e) => {
                tracing::info!(error = %e, "following the request log stopped");
                let event = Event::default().event("error").data(match e {
                    CoreError::Internal(_) => {
                        "the request log cannot be read; reconnect to resume".to_string()
                    }
                    other => format!("following stopped: {other}"),
                });
                Some((Ok(event), None))
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct MetricsQuery {
    /// `15m`, `1h` (default), `6h`, `24h`, `7d` or `30d`.
    pub window: Option<String>,
}

/// A server's requests, errors, denials and latency percentiles over a window, in total, per
/// step and per tool.
#[utoipa::path(get, path = "/v1/servers/{server}/metrics", tag = "telemetry",
    params(("server" = String, Path, description = "Server slug or id"), MetricsQuery),
    security(("api_key" = ["metrics:read"]), ("session" = [])),
    responses((status = 200, body = ServerMetrics), (status = 400, body = ApiErrorBody), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn server_metrics(
    State(state): State<AppState>,
    caller: Caller<need::MetricsRead>,
    Path(server): Path<String>,
    ApiQuery(q): ApiQuery<MetricsQuery>,
) -> ApiResult<Json<ServerMetrics>> {
    let window: MetricsWindow = q
        .window
        .as_deref()
        .unwrap_or("1h")
        .parse()
        .map_err(|m| CoreError::invalid("window", m))?;
    let server = state
        .core
        .telemetry_server(&caller.principal, &server)
        .await?;
    Ok(Json(state.core.server_metrics(&server, window).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct UsageQuery {
    /// First day, `YYYY-MM-DD` (UTC); default 29 days before `to`.
    pub from: Option<String>,
    /// Last day, `YYYY-MM-DD`; default today.
    pub to: Option<String>,
    /// `live` or `test`; default both (an API key sees only its own).
    pub environment: Option<Environment>,
}

/// A project's usage per day and month, and its quota.
#[utoipa::path(get, path = "/v1/projects/{project}/usage", tag = "telemetry",
    params(("project" = String, Path, description = "Project id or name"), UsageQuery),
    security(("api_key" = ["billing:read"]), ("session" = [])),
    responses((status = 200, body = ProjectUsage), (status = 400, body = ApiErrorBody), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn project_usage(
    State(state): State<AppState>,
    caller: Caller<need::BillingRead>,
    Path(project): Path<String>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Json<ProjectUsage>> {
    Ok(Json(
        state
            .core
            .project_usage(
                &caller.principal,
                &project,
                q.environment,
                q.from.as_deref(),
                q.to.as_deref(),
            )
            .await?,
    ))
}

/// Set or remove a project's monthly request quota (owners).
#[utoipa::path(put, path = "/v1/projects/{project}/quota", tag = "telemetry", request_body = SetQuotaRequest,
    params(("project" = String, Path, description = "Project id or name")),
    security(("session" = [])),
    responses((status = 200, body = Quota), (status = 400, body = ApiErrorBody), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn set_quota(
    State(state): State<AppState>,
    caller: Caller<need::Session>,
    Path(project): Path<String>,
    ApiJson(req): ApiJson<SetQuotaRequest>,
) -> ApiResult<Json<Quota>> {
    let quota = state
        .core
        .set_quota(&caller.principal, &project, req.monthly_requests)
        .await?;
    state
        .invalidate(Invalidation::Quota(quota.project_id.clone()))
        .await;
    Ok(Json(quota))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AuditQueryParams {
    /// Only actions starting with this, e.g. `api_key.` or `server.update`.
    pub action: Option<String>,
    pub cursor: Option<String>,
    /// Entries per page, 1–1000 (default 100).
    pub limit: Option<u32>,
}

/// A project's audit log, newest first. An API key sees its environment's entries and
/// project-wide ones.
#[utoipa::path(get, path = "/v1/projects/{project}/audit", tag = "telemetry",
    params(("project" = String, Path, description = "Project id or name"), AuditQueryParams),
    security(("api_key" = ["logs:read"]), ("session" = [])),
    responses((status = 200, body = AuditPage), (status = 400, body = ApiErrorBody), (status = 403, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn project_audit(
    State(state): State<AppState>,
    caller: Caller<need::LogsRead>,
    Path(project): Path<String>,
    ApiQuery(q): ApiQuery<AuditQueryParams>,
) -> ApiResult<Json<AuditPage>> {
    Ok(Json(
        state
            .core
            .audit_log(
                &caller.principal,
                &project,
                q.action,
                q.cursor.as_deref(),
                q.limit,
            )
            .await?,
    ))
}
