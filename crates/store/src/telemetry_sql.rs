//! SQL for the request log, its roll-ups, quotas and the audit log. Queries with optional
//! filters are assembled from fixed fragments (never from input: every value is bound).

use crate::request_chunks;
use crate::rows::{backend, bad};
use crate::sql::SqlStore;
use async_trait::async_trait;
use ezforge_core::audit::{AuditQuery, AuditRow};
use ezforge_core::store::{StoreError, StoreResult, TelemetryStore};
use ezforge_core::telemetry::{
    LatencySum, RecordQuery, RequestRow, StatSum, TelemetryBatch, UsageDay,
};
use ezforge_proto::{ActorKind, Environment};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{AssertSqlSafe, Row};

/// Chunks read per query while walking the log.
const CHUNKS_PER_READ: i64 = 16;

/// A value to bind in an assembled query.
enum Arg {
    Int(i64),
    Text(String),
}

/// A query assembled from fixed fragments with `$N` placeholders numbered as values are added.
struct Assembled {
    sql: String,
    args: Vec<Arg>,
}

impl Assembled {
    fn new(sql: &str) -> Self {
        Assembled {
            sql: sql.to_string(),
            args: Vec::new(),
        }
    }
    /// Appends `fragment`, replacing each `?` with the next placeholder for `args`, in order.
    fn push(&mut self, fragment: &str, args: Vec<Arg>) {
        let mut args = args.into_iter();
        for ch in fragment.chars() {
            if ch == '?' {
                if let Some(a) = args.next() {
                    self.args.push(a);
                }
                self.sql.push_str(&format!("${}", self.args.len()));
            } else {
                self.sql.push(ch);
            }
        }
    }
    fn query(self) -> sqlx::query::Query<'static, sqlx::Any, AnyArguments> {
        let mut q = sqlx::query(AssertSqlSafe(self.sql));
        for a in self.args {
            q = match a {
                Arg::Int(i) => q.bind(i),
                Arg::Text(s) => q.bind(s),
            };
        }
        q
    }
}

/// Rows per multi-row upsert: 3,000 bound values at most, well inside both SQLite's
/// (32,766) and PostgreSQL's (65,535) limits.
const ROWS_PER_INSERT: usize = 500;

/// `head VALUES ($1, …, $columns), (…), … tail` for `rows` rows: placeholders only, so
/// the text never holds a value. Such statements are not kept prepared (`persistent(false)`):
/// each row count is a different text, and preparing one costs less than a cache churning.
fn upsert(head: &str, columns: usize, rows: usize, tail: &str) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * columns * 6 + 16);
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "${}", row * columns + column + 1);
        }
        sql.push(')');
    }
    sql.push(' ');
    sql.push_str(tail);
    sql
}

/// A query on the `Any` driver, its values bound.
type AnyQuery = sqlx::query::Query<'static, sqlx::Any, AnyArguments>;

/// Writes `rows` as multi-row upserts of at most `ROWS_PER_INSERT` rows each; `bind` binds
/// one row's `columns` values, in the order of `head`'s columns.
async fn upsert_all<T: Sync>(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    rows: &[T],
    head: &str,
    columns: usize,
    tail: &str,
    bind: impl Fn(AnyQuery, &T) -> AnyQuery + Send + Sync,
) -> StoreResult<()> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let sql = upsert(head, columns, chunk.len(), tail);
        let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for row in chunk {
            q = bind(q, row);
        }
        q.execute(&mut **tx).await.map_err(backend)?;
    }
    Ok(())
}

/// The rows with equal keys folded into one (first-seen order kept): PostgreSQL refuses an
/// `ON CONFLICT DO UPDATE` that would touch one row twice in a statement.
fn merged<'a, T: Clone, K: Ord>(
    rows: &'a [T],
    key: impl Fn(&'a T) -> K,
    fold: impl Fn(&mut T, &T),
) -> Vec<T> {
    let mut at: std::collections::BTreeMap<K, usize> = std::collections::BTreeMap::new();
    let mut out: Vec<T> = Vec::with_capacity(rows.len());
    for row in rows {
        match at.get(&key(row)) {
            Some(&i) => fold(&mut out[i], row),
            None => {
                at.insert(key(row), out.len());
                out.push(row.clone());
            }
        }
    }
    out
}

fn audit_row(r: &AnyRow) -> Result<AuditRow, sqlx::Error> {
    let kind: String = r.try_get("actor_kind")?;
    let environment: Option<String> = r.try_get("environment")?;
    let details: String = r.try_get("details")?;
    Ok(AuditRow {
        id: r.try_get("id")?,
        project_id: r.try_get("project_id")?,
        at_ms: r.try_get("at")?,
        actor_kind: match kind.as_str() {
            "user" => ActorKind::User,
            "api_key" => ActorKind::ApiKey,
            other => return Err(bad("actor kind", other)),
        },
        actor_id: r.try_get("actor_id")?,
        actor_email: r.try_get("email")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        environment: environment
            .map(|e| e.parse::<Environment>().map_err(|_| bad("environment", &e)))
            .transpose()?,
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
    })
}

#[async_trait]
impl TelemetryStore for SqlStore {
    async fn write_telemetry(&self, batch: &TelemetryBatch) -> StoreResult<()> {
        let mut tx = self.pool().begin().await.map_err(backend)?;
        for chunk in request_chunks::chunks(&batch.records) {
            sqlx::query(
                "INSERT INTO request_log (id, server_id, first_at, last_at, count, records)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(ezforge_core::ids::ordered_id("rlc"))
            .bind(chunk.server_id)
            .bind(chunk.first_at)
            .bind(chunk.last_at)
            .bind(chunk.count)
            .bind(chunk.json)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        // The roll-ups as multi-row upserts: one statement per table and batch, not one per
        // row. A batch under load carries dozens of latency buckets, and every statement is a
        // round trip (to SQLite's worker thread, or over the network to PostgreSQL) that the
        // serving threads' cores paid for.
        let stats = merged(
            &batch.stats,
            |s| (&s.server_id, s.minute, &s.tool),
            |a, b| {
                a.requests += b.requests;
                a.errors += b.errors;
                a.denials += b.denials;
            },
        );
        upsert_all(
            &mut tx,
            &stats,
            "INSERT INTO request_stats (server_id, minute, tool, requests, errors, denials)",
            6,
            "ON CONFLICT (server_id, minute, tool) DO UPDATE SET
               requests = request_stats.requests + excluded.requests,
               errors = request_stats.errors + excluded.errors,
               denials = request_stats.denials + excluded.denials",
            |q, s| {
                q.bind(s.server_id.as_str())
                    .bind(s.minute)
                    .bind(s.tool.as_str())
                    .bind(s.requests)
                    .bind(s.errors)
                    .bind(s.denials)
            },
        )
        .await?;
        let latency = merged(
            &batch.latency,
            |l| (&l.server_id, l.minute, &l.tool, l.bucket),
            |a, b| a.count += b.count,
        );
        upsert_all(
            &mut tx,
            &latency,
            "INSERT INTO request_latency (server_id, minute, tool, bucket, count)",
            5,
            "ON CONFLICT (server_id, minute, tool, bucket) DO UPDATE SET
               count = request_latency.count + excluded.count",
            |q, l| {
                q.bind(l.server_id.as_str())
                    .bind(l.minute)
                    .bind(l.tool.as_str())
                    .bind(l.bucket)
                    .bind(l.count)
            },
        )
        .await?;
        // Usage can name a day twice: the writer adds the deltas of records it had to drop
        // (see `RequestLog`) beside the batch's own.
        let usage = merged(
            &batch.usage,
            |u| (&u.project_id, u.environment, &u.day),
            |a, b| {
                a.requests += b.requests;
                a.tool_calls += b.tool_calls;
            },
        );
        upsert_all(
            &mut tx,
            &usage,
            "INSERT INTO usage_daily (project_id, environment, day, requests, tool_calls)",
            5,
            "ON CONFLICT (project_id, environment, day) DO UPDATE SET
               requests = usage_daily.requests + excluded.requests,
               tool_calls = usage_daily.tool_calls + excluded.tool_calls",
            |q, u| {
                q.bind(u.project_id.as_str())
                    .bind(u.environment.as_str())
                    .bind(u.day.as_str())
                    .bind(u.requests)
                    .bind(u.tool_calls)
            },
        )
        .await?;
        let actors = merged(
            &batch.actors,
            |a| (&a.project_id, a.environment, &a.day, a.kind, &a.actor),
            |_, _| {},
        );
        upsert_all(
            &mut tx,
            &actors,
            "INSERT INTO usage_actors (project_id, environment, day, kind, actor)",
            5,
            "ON CONFLICT DO NOTHING",
            |q, a| {
                q.bind(a.project_id.as_str())
                    .bind(a.environment.as_str())
                    .bind(a.day.as_str())
                    .bind(a.kind)
                    .bind(a.actor.as_str())
            },
        )
        .await?;
        tx.commit().await.map_err(backend)
    }

    async fn request_records(&self, query: &RecordQuery) -> StoreResult<Vec<RequestRow>> {
        let limit = query.limit as usize;
        let mut found: Vec<RequestRow> = Vec::new();
        let mut after: Option<(i64, String)> = None;
        'walk: loop {
            let mut q =
                Assembled::new("SELECT id, server_id, last_at, records FROM request_log WHERE ");
            q.push("server_id = ?", vec![Arg::Text(query.server_id.clone())]);
            if let Some(since) = query.since_ms {
                q.push(" AND last_at >= ?", vec![Arg::Int(since)]);
            }
            if let Some(until) = query.until_ms {
                q.push(" AND first_at < ?", vec![Arg::Int(until)]);
            }
            if let Some((at, _)) = &query.before {
                q.push(" AND first_at <= ?", vec![Arg::Int(*at)]);
            }
            if let Some((last_at, id)) = &after {
                q.push(
                    " AND (last_at < ? OR (last_at = ? AND id < ?))",
                    vec![
                        Arg::Int(*last_at),
                        Arg::Int(*last_at),
                        Arg::Text(id.clone()),
                    ],
                );
            }
            q.push(
                " ORDER BY last_at DESC, id DESC LIMIT ?",
                vec![Arg::Int(CHUNKS_PER_READ)],
            );
            let rows = q.query().fetch_all(self.pool()).await.map_err(backend)?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let id: String = row.try_get("id").map_err(backend)?;
                let last_at: i64 = row.try_get("last_at").map_err(backend)?;
                // Chunks come newest last record first: once the page is full and this chunk
                // ends before its oldest record, no later chunk can change it.
                if found.len() >= limit && found.get(limit - 1).is_some_and(|r| last_at < r.at_ms) {
                    break 'walk;
                }
                let json: String = row.try_get("records").map_err(backend)?;
                let records =
                    request_chunks::decode(&query.server_id, &json).map_err(StoreError::Backend)?;
                found.extend(records.into_iter().filter(|r| query.matches(r)));
                found.sort_by(|a, b| (b.at_ms, &b.id).cmp(&(a.at_ms, &a.id)));
                found.truncate(limit);
                after = Some((last_at, id));
            }
            if (rows.len() as i64) < CHUNKS_PER_READ {
                break;
            }
        }
        Ok(found)
    }

    async fn request_chunks_since(
        &self,
        server_id: &str,
        since_ms: i64,
        except: &[String],
        limit: u32,
    ) -> StoreResult<Vec<(String, i64, Vec<RequestRow>)>> {
        let mut q = Assembled::new("SELECT id, last_at, records FROM request_log WHERE ");
        q.push(
            "server_id = ? AND last_at >= ?",
            vec![Arg::Text(server_id.to_string()), Arg::Int(since_ms)],
        );
        for id in except {
            q.push(" AND id <> ?", vec![Arg::Text(id.clone())]);
        }
        q.push(
            " ORDER BY last_at, id LIMIT ?",
            vec![Arg::Int(i64::from(limit))],
        );
        let rows = q.query().fetch_all(self.pool()).await.map_err(backend)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id").map_err(backend)?;
            let last_at: i64 = row.try_get("last_at").map_err(backend)?;
            let json: String = row.try_get("records").map_err(backend)?;
            let records = request_chunks::decode(server_id, &json).map_err(StoreError::Backend)?;
            out.push((id, last_at, records));
        }
        Ok(out)
    }

    async fn purge_telemetry(&self, before_ms: i64) -> StoreResult<u64> {
        let minute = before_ms.div_euclid(60_000);
        // Whole chunks go once their newest record is older than the horizon.
        let deleted: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(count), 0) AS BIGINT) FROM request_log WHERE last_at < $1",
        )
        .bind(before_ms)
        .fetch_one(self.pool())
        .await
        .map_err(backend)?;
        sqlx::query("DELETE FROM request_log WHERE last_at < $1")
            .bind(before_ms)
            .execute(self.pool())
            .await
            .map_err(backend)?;
        for sql in [
            "DELETE FROM request_stats WHERE minute < $1",
            "DELETE FROM request_latency WHERE minute < $1",
        ] {
            sqlx::query(sql)
                .bind(minute)
                .execute(self.pool())
                .await
                .map_err(backend)?;
        }
        Ok(deleted.max(0) as u64)
    }

    async fn stat_sums(
        &self,
        server_id: &str,
        from_minute: i64,
        to_minute: i64,
        step_minutes: i64,
    ) -> StoreResult<Vec<StatSum>> {
        let rows = sqlx::query(
            "SELECT minute / $2 AS step, tool,
                    CAST(SUM(requests) AS BIGINT) AS requests,
                    CAST(SUM(errors) AS BIGINT) AS errors,
                    CAST(SUM(denials) AS BIGINT) AS denials
             FROM request_stats WHERE server_id = $1 AND minute >= $3 AND minute < $4
             GROUP BY minute / $2, tool",
        )
        .bind(server_id)
        .bind(step_minutes.max(1))
        .bind(from_minute)
        .bind(to_minute)
        .fetch_all(self.pool())
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok(StatSum {
                    step: r.try_get("step")?,
                    tool: r.try_get("tool")?,
                    requests: r.try_get("requests")?,
                    errors: r.try_get("errors")?,
                    denials: r.try_get("denials")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(backend)
    }

    async fn latency_sums(
        &self,
        server_id: &str,
        from_minute: i64,
        to_minute: i64,
        step_minutes: i64,
    ) -> StoreResult<Vec<LatencySum>> {
        let rows = sqlx::query(
            "SELECT minute / $2 AS step, tool, bucket, CAST(SUM(count) AS BIGINT) AS count
             FROM request_latency WHERE server_id = $1 AND minute >= $3 AND minute < $4
             GROUP BY minute / $2, tool, bucket",
        )
        .bind(server_id)
        .bind(step_minutes.max(1))
        .bind(from_minute)
        .bind(to_minute)
        .fetch_all(self.pool())
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok(LatencySum {
                    step: r.try_get("step")?,
                    tool: r.try_get("tool")?,
                    bucket: r.try_get("bucket")?,
                    count: r.try_get("count")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(backend)
    }

    async fn usage_days(
        &self,
        project_id: &str,
        environment: Option<Environment>,
        from_day: &str,
        to_day: &str,
    ) -> StoreResult<Vec<UsageDay>> {
        let env = environment.map(|e| e.as_str()).unwrap_or("");
        let rows = sqlx::query(
            "SELECT d.day AS day,
                    CAST(SUM(d.requests) AS BIGINT) AS requests,
                    CAST(SUM(d.tool_calls) AS BIGINT) AS tool_calls,
                    (SELECT COUNT(DISTINCT a.actor) FROM usage_actors a
                      WHERE a.project_id = $1 AND a.day = d.day AND a.kind = 'client'
                        AND ($2 = '' OR a.environment = $2)) AS clients,
                    (SELECT COUNT(DISTINCT a.actor) FROM usage_actors a
                      WHERE a.project_id = $1 AND a.day = d.day AND a.kind = 'user'
                        AND ($2 = '' OR a.environment = $2)) AS users
             FROM usage_daily d
             WHERE d.project_id = $1 AND ($2 = '' OR d.environment = $2)
               AND d.day >= $3 AND d.day <= $4
             GROUP BY d.day ORDER BY d.day",
        )
        .bind(project_id)
        .bind(env)
        .bind(from_day)
        .bind(to_day)
        .fetch_all(self.pool())
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok(UsageDay {
                    day: r.try_get("day")?,
                    requests: r.try_get("requests")?,
                    tool_calls: r.try_get("tool_calls")?,
                    clients: r.try_get("clients")?,
                    users: r.try_get("users")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(backend)
    }

    async fn distinct_actors(
        &self,
        project_id: &str,
        environment: Option<Environment>,
        from_day: &str,
        to_day: &str,
    ) -> StoreResult<(i64, i64)> {
        let env = environment.map(|e| e.as_str()).unwrap_or("");
        let row = sqlx::query(
            "SELECT
               (SELECT COUNT(DISTINCT actor) FROM usage_actors
                 WHERE project_id = $1 AND ($2 = '' OR environment = $2)
                   AND day >= $3 AND day <= $4 AND kind = 'client') AS clients,
               (SELECT COUNT(DISTINCT actor) FROM usage_actors
                 WHERE project_id = $1 AND ($2 = '' OR environment = $2)
                   AND day >= $3 AND day <= $4 AND kind = 'user') AS users",
        )
        .bind(project_id)
        .bind(env)
        .bind(from_day)
        .bind(to_day)
        .fetch_one(self.pool())
        .await
        .map_err(backend)?;
        Ok((
            row.try_get("clients").map_err(backend)?,
            row.try_get("users").map_err(backend)?,
        ))
    }

    async fn month_requests(&self, project_id: &str, month: &str) -> StoreResult<i64> {
        // Days of the month sort between `YYYY-MM-00` and `YYYY-MM-99`.
        let (first, last) = (format!("{month}-00"), format!("{month}-99"));
        sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM usage_daily
             WHERE project_id = $1 AND day >= $2 AND day <= $3",
        )
        .bind(project_id)
        .bind(first)
        .bind(last)
        .fetch_one(self.pool())
        .await
        .map_err(backend)
    }

    async fn project_quota(&self, project_id: &str) -> StoreResult<Option<i64>> {
        sqlx::query_scalar("SELECT monthly_requests FROM project_quotas WHERE project_id = $1")
            .bind(project_id)
            .fetch_optional(self.pool())
            .await
            .map_err(backend)
    }

    async fn set_project_quota(&self, project_id: &str, monthly: Option<i64>) -> StoreResult<()> {
        match monthly {
            Some(m) => sqlx::query(
                "INSERT INTO project_quotas (project_id, monthly_requests) VALUES ($1, $2)
                 ON CONFLICT (project_id) DO UPDATE SET monthly_requests = excluded.monthly_requests",
            )
            .bind(project_id)
            .bind(m),
            None => sqlx::query("DELETE FROM project_quotas WHERE project_id = $1").bind(project_id),
        }
        .execute(self.pool())
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn insert_audit(&self, e: &AuditRow) -> StoreResult<()> {
        let kind = match e.actor_kind {
            ActorKind::User => "user",
            ActorKind::ApiKey => "api_key",
        };
        sqlx::query(
            "INSERT INTO audit_log (id, project_id, at, actor_kind, actor_id, action, target, environment, details)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(e.id.as_str())
        .bind(e.project_id.as_str())
        .bind(e.at_ms)
        .bind(kind)
        .bind(e.actor_id.as_str())
        .bind(e.action.as_str())
        .bind(e.target.as_str())
        .bind(e.environment.map(|v| v.as_str()))
        .bind(e.details.to_string())
        .execute(self.pool())
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn audit_entries(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRow>> {
        let mut q = Assembled::new(
            "SELECT a.id, a.project_id, a.at, a.actor_kind, a.actor_id, a.action, a.target, a.environment, a.details, u.email
             FROM audit_log a LEFT JOIN users u ON a.actor_kind = 'user' AND u.id = a.actor_id
             WHERE ",
        );
        q.push(
            "a.project_id = ?",
            vec![Arg::Text(query.project_id.clone())],
        );
        if let Some(env) = query.environment {
            q.push(
                " AND (a.environment IS NULL OR a.environment = ?)",
                vec![Arg::Text(env.as_str().into())],
            );
        }
        if let Some(action) = &query.action {
            // A prefix match; `_`, `%` and `\\` in the input mean themselves.
            let escaped = action
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            q.push(
                " AND a.action LIKE ? ESCAPE '\\'",
                vec![Arg::Text(format!("{escaped}%"))],
            );
        }
        if let Some((at, id)) = &query.before {
            q.push(
                " AND (a.at < ? OR (a.at = ? AND a.id < ?))",
                vec![Arg::Int(*at), Arg::Int(*at), Arg::Text(id.clone())],
            );
        }
        q.push(
            " ORDER BY a.at DESC, a.id DESC LIMIT ?",
            vec![Arg::Int(i64::from(query.limit))],
        );
        let rows = q.query().fetch_all(self.pool()).await.map_err(backend)?;
        rows.iter().map(|r| audit_row(r).map_err(backend)).collect()
    }
}
