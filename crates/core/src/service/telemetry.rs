//! Reading what the gateway recorded: a server's request log and metrics, a project's usage and
//! quota, and its audit log. Who may read is decided here; the HTTP layer only parses.

use super::Core;
use super::access::{Need, check_environment};
use crate::audit::{AuditQuery, Change};
use crate::error::CoreError;
use crate::model::ServerRow;
use crate::principal::Principal;
use crate::telemetry::{
    RecordQuery, RequestRow, calendar, decode_cursor, encode_cursor, histogram,
};
use ezforge_proto::{
    AuditPage, Decision, Environment, MetricsPoint, MetricsSummary, ProjectUsage, Quota,
    QuotaStatus, ServerMetrics, ToolMetrics, UsagePeriod,
};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// Filters of a request-log page.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub tool: Option<String>,
    pub decision: Option<Decision>,
    pub status: Option<u16>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// The windows metrics can be read over, and the width of their points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsWindow {
    M15,
    H1,
    H6,
    H24,
    D7,
    D30,
}

impl MetricsWindow {
    pub const NAMES: [&'static str; 6] = ["15m", "1h", "6h", "24h", "7d", "30d"];

    /// (window, step) in minutes.
    fn minutes(self) -> (i64, i64) {
        match self {
            MetricsWindow::M15 => (15, 1),
            MetricsWindow::H1 => (60, 1),
            MetricsWindow::H6 => (360, 5),
            MetricsWindow::H24 => (1440, 15),
            MetricsWindow::D7 => (7 * 1440, 120),
            MetricsWindow::D30 => (30 * 1440, 720),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MetricsWindow::M15 => "15m",
            MetricsWindow::H1 => "1h",
            MetricsWindow::H6 => "6h",
            MetricsWindow::H24 => "24h",
            MetricsWindow::D7 => "7d",
            MetricsWindow::D30 => "30d",
        }
    }
}

impl std::str::FromStr for MetricsWindow {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "15m" => MetricsWindow::M15,
            "1h" => MetricsWindow::H1,
            "6h" => MetricsWindow::H6,
            "24h" | "1d" => MetricsWindow::H24,
            "7d" => MetricsWindow::D7,
            "30d" => MetricsWindow::D30,
            other => {
                return Err(format!(
                    "unknown window `{other}`; expected one of {}",
                    Self::NAMES.join(", ")
                ));
            }
        })
    }
}

/// Largest page of records or audit entries.
pub const MAX_PAGE: u32 = 1000;
/// Usage is read over at most this many days at once.
pub const MAX_USAGE_DAYS: i64 = 400;

fn datetime_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn cursor(value: Option<&str>) -> Result<Option<(i64, String)>, CoreError> {
    value
        .map(|c| {
            decode_cursor(c)
                .ok_or_else(|| CoreError::invalid("cursor", "not a cursor this endpoint returned"))
        })
        .transpose()
}

fn page_limit(limit: Option<u32>) -> Result<u32, CoreError> {
    match limit.unwrap_or(100) {
        0 => Err(CoreError::invalid("limit", "must be at least 1")),
        n if n > MAX_PAGE => Err(CoreError::invalid(
            "limit",
            format!("at most {MAX_PAGE} per page"),
        )),
        n => Ok(n),
    }
}

fn summary(stats: (i64, i64, i64), buckets: &[(i64, u64)]) -> MetricsSummary {
    MetricsSummary {
        requests: stats.0.max(0) as u64,
        errors: stats.1.max(0) as u64,
        denials: stats.2.max(0) as u64,
        p50_ms: histogram::quantile(buckets, 0.50),
        p95_ms: histogram::quantile(buckets, 0.95),
        p99_ms: histogram::quantile(buckets, 0.99),
    }
}

impl Core {
    /// A server the caller may read the telemetry of (same rules as reading the server).
    pub async fn telemetry_server(
        &self,
        principal: &Principal,
        reference: &str,
    ) -> Result<ServerRow, CoreError> {
        self.find_server(principal, reference).await
    }

    /// The principal as it is now, for long-lived reads (following the log): the key not
    /// revoked or expired, the session not ended or expired.
    pub async fn refresh_principal(&self, principal: &Principal) -> Result<Principal, CoreError> {
        let now = self.now();
        match principal {
            Principal::ApiKey(key) => {
                let current = self
                    .store
                    .api_key(&key.project_id, &key.id)
                    .await?
                    .ok_or(CoreError::ApiKeyUnknown)?;
                if current.revoked_at.is_some() {
                    return Err(CoreError::ApiKeyRevoked);
                }
                if current.expires_at.is_some_and(|e| e <= now) {
                    return Err(CoreError::ApiKeyExpired);
                }
                Ok(Principal::ApiKey(std::sync::Arc::new(current)))
            }
            Principal::User { session, .. } => {
                let current = self
                    .store
                    .session_by_hash(&session.token_hash)
                    .await?
                    .ok_or(CoreError::SessionInvalid)?;
                if current.expires_at <= now {
                    return Err(CoreError::SessionExpired);
                }
                let user = self
                    .store
                    .user_by_id(&current.user_id)
                    .await?
                    .ok_or(CoreError::SessionInvalid)?;
                Ok(Principal::User {
                    user,
                    session: current,
                })
            }
        }
    }

    /// One page of a server's request log, newest first, and the cursor of the next page.
    pub async fn server_logs(
        &self,
        server: &ServerRow,
        filter: &LogFilter,
    ) -> Result<(Vec<RequestRow>, Option<String>), CoreError> {
        let limit = page_limit(filter.limit)?;
        let query = RecordQuery {
            server_id: server.id.clone(),
            since_ms: filter.since_ms,
            until_ms: filter.until_ms,
            tool: filter.tool.clone(),
            decision: filter.decision,
            status: filter.status,
            before: cursor(filter.cursor.as_deref())?,
            limit: limit + 1,
        };
        let mut records = self.store.request_records(&query).await?;
        let next = if records.len() > limit as usize {
            records.truncate(limit as usize);
            records.last().map(|r| encode_cursor(r.at_ms, &r.id))
        } else {
            None
        };
        Ok((records, next))
    }

    /// Requests, errors, denials and latency percentiles of a server over a window ending now.
    pub async fn server_metrics(
        &self,
        server: &ServerRow,
        window: MetricsWindow,
    ) -> Result<ServerMetrics, CoreError> {
        let (span, step) = window.minutes();
        let now_minute = self.now_ms().div_euclid(60_000);
        let last_step = now_minute.div_euclid(step);
        let first_step = last_step - span / step + 1;
        let (from, to) = (first_step * step, (last_step + 1) * step);
        let stats = self.store.stat_sums(&server.id, from, to, step).await?;
        let latency = self.store.latency_sums(&server.id, from, to, step).await?;

        let mut total = (0, 0, 0);
        let mut per_step: BTreeMap<i64, (i64, i64, i64)> = BTreeMap::new();
        let mut per_tool: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
        for s in &stats {
            let add = |t: &mut (i64, i64, i64)| {
                t.0 += s.requests;
                t.1 += s.errors;
                t.2 += s.denials;
            };
            add(&mut total);
            add(per_step.entry(s.step).or_default());
            if !s.tool.is_empty() {
                add(per_tool.entry(s.tool.clone()).or_default());
            }
        }
        let mut all_buckets: BTreeMap<i64, u64> = BTreeMap::new();
        let mut step_buckets: BTreeMap<i64, BTreeMap<i64, u64>> = BTreeMap::new();
        let mut tool_buckets: BTreeMap<String, BTreeMap<i64, u64>> = BTreeMap::new();
        for l in &latency {
            let n = l.count.max(0) as u64;
            *all_buckets.entry(l.bucket).or_default() += n;
            *step_buckets
                .entry(l.step)
                .or_default()
                .entry(l.bucket)
                .or_default() += n;
            if !l.tool.is_empty() {
                *tool_buckets
                    .entry(l.tool.clone())
                    .or_default()
                    .entry(l.bucket)
                    .or_default() += n;
            }
        }
        let pairs = |m: Option<&BTreeMap<i64, u64>>| -> Vec<(i64, u64)> {
            m.map(|m| m.iter().map(|(b, c)| (*b, *c)).collect())
                .unwrap_or_default()
        };
        let series = (first_step..=last_step)
            .map(|s| {
                let (requests, errors, denials) = per_step.get(&s).copied().unwrap_or_default();
                MetricsPoint {
                    time: datetime_ms(s * step * 60_000),
                    requests: requests.max(0) as u64,
                    errors: errors.max(0) as u64,
                    denials: denials.max(0) as u64,
                    p95_ms: histogram::quantile(&pairs(step_buckets.get(&s)), 0.95),
                }
            })
            .collect();
        let mut tools: Vec<ToolMetrics> = per_tool
            .into_iter()
            .map(|(tool, t)| {
                let summary = summary(t, &pairs(tool_buckets.get(&tool)));
                ToolMetrics { tool, summary }
            })
            .collect();
        tools.sort_by_key(|t| std::cmp::Reverse(t.summary.requests));
        Ok(ServerMetrics {
            server_id: server.id.clone(),
            window: window.as_str().to_string(),
            from: datetime_ms(from * 60_000),
            to: datetime_ms(to * 60_000),
            step_secs: (step * 60) as u64,
            totals: summary(total, &pairs(Some(&all_buckets))),
            series,
            tools,
        })
    }

    /// Usage of a project per day in [from, to] (default: the last 30 days) and per month, and
    /// its quota. An API key sees its own environment's usage; a member sees both, or one.
    pub async fn project_usage(
        &self,
        principal: &Principal,
        project: &str,
        environment: Option<Environment>,
        from_day: Option<&str>,
        to_day: Option<&str>,
    ) -> Result<ProjectUsage, CoreError> {
        let (project, _) = self.project_for(principal, project, Need::Member).await?;
        if let Some(env) = environment {
            check_environment(principal, env)?;
        }
        let environment = match principal {
            Principal::ApiKey(key) => Some(key.environment),
            Principal::User { .. } => environment,
        };
        let now = self.now();
        let day_arg = |name: &'static str, v: Option<&str>, default: i64| match v {
            Some(d) => calendar::parse_day(d)
                .ok_or_else(|| CoreError::invalid(name, format!("`{d}` is not a YYYY-MM-DD day"))),
            None => Ok(default),
        };
        let to = day_arg("to", to_day, now)?;
        let from = day_arg("from", from_day, to - 29 * 86_400)?;
        if from > to {
            return Err(CoreError::invalid("from", "must not be after `to`"));
        }
        if (to - from) / 86_400 >= MAX_USAGE_DAYS {
            return Err(CoreError::invalid(
                "from",
                format!("at most {MAX_USAGE_DAYS} days at once"),
            ));
        }
        let (from_s, to_s) = (calendar::day(from), calendar::day(to));
        let days: Vec<UsagePeriod> = self
            .store
            .usage_days(&project.id, environment, &from_s, &to_s)
            .await?
            .into_iter()
            .map(|d| UsagePeriod {
                period: d.day,
                requests: d.requests.max(0) as u64,
                tool_calls: d.tool_calls.max(0) as u64,
                clients: d.clients.max(0) as u64,
                users: d.users.max(0) as u64,
            })
            .collect();
        // Whole months, so that a month's figures do not depend on the days asked for.
        let mut months = Vec::new();
        let mut month_start =
            calendar::parse_day(&format!("{}-01", calendar::month(from))).unwrap_or(from);
        while month_start <= to {
            let next = calendar::next_month_start(month_start);
            let first = calendar::day(month_start);
            let last = calendar::day(next - 86_400);
            let month_days = self
                .store
                .usage_days(&project.id, environment, &first, &last)
                .await?;
            let (clients, users) = self
                .store
                .distinct_actors(&project.id, environment, &first, &last)
                .await?;
            months.push(UsagePeriod {
                period: calendar::month(month_start),
                requests: month_days.iter().map(|d| d.requests.max(0) as u64).sum(),
                tool_calls: month_days.iter().map(|d| d.tool_calls.max(0) as u64).sum(),
                clients: clients.max(0) as u64,
                users: users.max(0) as u64,
            });
            month_start = next;
        }
        // The quota counts the whole project, both environments: an API key, confined to one,
        // does not see it.
        let quota = match principal {
            Principal::ApiKey(_) => None,
            Principal::User { .. } => self.store.project_quota(&project.id).await?,
        };
        let quota = match quota {
            Some(limit) => Some(QuotaStatus {
                monthly_requests: limit.max(0) as u64,
                used: self
                    .store
                    .month_requests(&project.id, &calendar::month(now))
                    .await?
                    .max(0) as u64,
                resets_at: datetime_ms(calendar::next_month_start(now) * 1000),
            }),
            None => None,
        };
        Ok(ProjectUsage {
            project_id: project.id,
            days,
            months,
            quota,
        })
    }

    /// Sets or removes a project's monthly request quota (owners, signed in).
    pub async fn set_quota(
        &self,
        principal: &Principal,
        project: &str,
        monthly: Option<u64>,
    ) -> Result<Quota, CoreError> {
        principal.user()?;
        let (project, _) = self.project_for(principal, project, Need::Owner).await?;
        let monthly = monthly
            .map(|m| {
                i64::try_from(m).map_err(|_| CoreError::invalid("monthly_requests", "too large"))
            })
            .transpose()?;
        self.store.set_project_quota(&project.id, monthly).await?;
        self.audit(
            principal,
            Change {
                project_id: &project.id,
                action: "project.quota",
                target: &project.id,
                environment: None,
                details: serde_json::json!({ "monthly_requests": monthly }),
            },
        )
        .await;
        Ok(Quota {
            project_id: project.id,
            monthly_requests: monthly.map(|m| m.max(0) as u64),
        })
    }

    /// A page of the project's audit log, newest first.
    pub async fn audit_log(
        &self,
        principal: &Principal,
        project: &str,
        action: Option<String>,
        cursor_value: Option<&str>,
        limit: Option<u32>,
    ) -> Result<AuditPage, CoreError> {
        let (project, _) = self.project_for(principal, project, Need::Member).await?;
        let limit = page_limit(limit)?;
        let query = AuditQuery {
            project_id: project.id,
            environment: match principal {
                Principal::ApiKey(key) => Some(key.environment),
                Principal::User { .. } => None,
            },
            // Actions are lowercase; matching the same way on both databases.
            action: action.map(|a| a.to_lowercase()),
            before: cursor(cursor_value)?,
            limit: limit + 1,
        };
        let mut entries = self.store.audit_entries(&query).await?;
        let next_cursor = if entries.len() > limit as usize {
            entries.truncate(limit as usize);
            entries.last().map(|e| encode_cursor(e.at_ms, &e.id))
        } else {
            None
        };
        Ok(AuditPage {
            entries: entries.iter().map(|e| e.to_api()).collect(),
            next_cursor,
        })
    }
}
