//! What the gateway saw: one record per request, written off the request path in batches
//! through a bounded queue, and rolled up as it is written into per-minute metrics and per-day
//! usage, so that reading metrics or usage never scans the request log.

pub mod calendar;
pub mod histogram;
pub mod quota;
mod rollup;
pub mod writer;

pub use quota::{QuotaCheck, Quotas};
pub use rollup::{ActorRow, LatencyDelta, StatDelta, TelemetryBatch, UsageDelta};
pub use writer::{RequestLog, RequestLogSettings};

use ezforge_proto::{Decision, Environment};

/// One gateway request, as stored. Never holds a token: `token_id` is the token's `jti` or a
/// fingerprint.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRow {
    pub id: String,
    pub project_id: String,
    pub server_id: String,
    /// The server's environment: usage is counted per environment.
    pub environment: Environment,
    pub deployment_id: Option<String>,
    /// When the answer was complete, in unix milliseconds.
    pub at_ms: i64,
    pub http_method: String,
    pub method: Option<String>,
    pub tool: Option<String>,
    pub decision: Decision,
    pub reason: Option<String>,
    pub status: u16,
    /// From the request's arrival to the response headers.
    pub latency_us: i64,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub token_id: Option<String>,
    pub bytes_in: i64,
    pub bytes_out: i64,
    /// Forwarded `tools/call` messages in it (a batch may hold several). Not stored: it feeds
    /// usage.
    pub tool_calls: u32,
    /// Counted against the project's monthly quota on this node; the count is handed over to
    /// the database when the record is written. Not stored.
    pub quota_counted: bool,
}

impl RequestRow {
    pub fn to_api(&self) -> ezforge_proto::RequestRecord {
        ezforge_proto::RequestRecord {
            id: self.id.clone(),
            time: time::OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(self.at_ms) * 1_000_000,
            )
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            server_id: self.server_id.clone(),
            deployment_id: self.deployment_id.clone(),
            http_method: self.http_method.clone(),
            method: self.method.clone(),
            tool: self.tool.clone(),
            decision: self.decision,
            reason: self.reason.clone(),
            status: self.status,
            latency_ms: self.latency_us as f64 / 1000.0,
            subject: self.subject.clone(),
            client_id: self.client_id.clone(),
            token_id: self.token_id.clone(),
            bytes_in: self.bytes_in.max(0) as u64,
            bytes_out: self.bytes_out.max(0) as u64,
        }
    }
}

/// Which records to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct RecordQuery {
    pub server_id: String,
    /// Only records at or after this unix millisecond.
    pub since_ms: Option<i64>,
    /// Only records before this unix millisecond.
    pub until_ms: Option<i64>,
    pub tool: Option<String>,
    pub decision: Option<Decision>,
    pub status: Option<u16>,
    /// Older than this (at, id) position: the cursor of the previous page.
    pub before: Option<(i64, String)>,
    pub limit: u32,
}

impl RecordQuery {
    /// Whether a record passes every filter of the query (the cursor included).
    pub fn matches(&self, r: &RequestRow) -> bool {
        r.server_id == self.server_id
            && self.since_ms.is_none_or(|s| r.at_ms >= s)
            && self.until_ms.is_none_or(|u| r.at_ms < u)
            && self
                .tool
                .as_ref()
                .is_none_or(|t| r.tool.as_ref() == Some(t))
            && self.decision.is_none_or(|d| r.decision == d)
            && self.status.is_none_or(|s| r.status == s)
            && self
                .before
                .as_ref()
                .is_none_or(|(at, id)| (r.at_ms, r.id.as_str()) < (*at, id.as_str()))
    }
}

/// A page position: `{at_ms}.{id}`, opaque to clients.
pub fn encode_cursor(at_ms: i64, id: &str) -> String {
    format!("{at_ms}.{id}")
}

pub fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    let (at, id) = cursor.split_once('.')?;
    let at = at.parse().ok()?;
    (!id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then(|| (at, id.to_string()))
}

/// Per-step sums of the per-minute metrics of one server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatSum {
    /// Step index: minute / step_minutes.
    pub step: i64,
    pub tool: String,
    pub requests: i64,
    pub errors: i64,
    pub denials: i64,
}

/// Summed latency buckets of one server per step and tool.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySum {
    pub step: i64,
    pub tool: String,
    pub bucket: i64,
    pub count: i64,
}

/// One day of a project's usage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageDay {
    pub day: String,
    pub requests: i64,
    pub tool_calls: i64,
    pub clients: i64,
    pub users: i64,
}

/// A point in time given as an RFC 3339 timestamp (`2026-11-26T09:00:00Z`) or as a duration
/// before `now_ms` (`90s`, `15m`, `2h`, `7d`); unix milliseconds.
pub fn parse_time(now_ms: i64, value: &str) -> Option<i64> {
    let v = value.trim();
    if let Ok(t) = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339) {
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok();
    }
    let (digits, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = digits.parse().ok()?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(now_ms - n.checked_mul(ms)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_cursors() {
        let now = 1_795_683_513_000;
        assert_eq!(parse_time(now, "15m"), Some(now - 900_000));
        assert_eq!(parse_time(now, "2d"), Some(now - 172_800_000));
        assert_eq!(
            parse_time(now, "2026-11-26T08:58:33Z"),
            Some(1_795_683_513_000)
        );
        assert_eq!(parse_time(now, "m"), None);
        assert_eq!(parse_time(now, "5w"), None);
        assert_eq!(parse_time(now, "yesterday"), None);
        let c = encode_cursor(now, "req_abc");
        assert_eq!(decode_cursor(&c), Some((now, "req_abc".to_string())));
        assert_eq!(decode_cursor("x.req"), None);
        assert_eq!(decode_cursor("1.a'b"), None);
    }
}
