//! Turning a batch of request records into the additions to the per-minute metrics and the
//! per-day usage: the store applies them with `count = count + delta`, so batches from any node
//! in any order add up to the same totals.

use super::{RequestRow, calendar, histogram};
use ezforge_proto::{Decision, Environment};
use std::collections::{BTreeMap, BTreeSet};

/// What one batch adds to `request_stats` for a (server, minute, tool); tool is `""` for
/// requests that call no tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatDelta {
    pub server_id: String,
    pub minute: i64,
    pub tool: String,
    pub requests: i64,
    pub errors: i64,
    pub denials: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyDelta {
    pub server_id: String,
    pub minute: i64,
    pub tool: String,
    pub bucket: i64,
    pub count: i64,
}

/// What one batch adds to a project's day: forwarded requests only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDelta {
    pub project_id: String,
    pub environment: Environment,
    pub day: String,
    pub requests: i64,
    pub tool_calls: i64,
}

/// A client or user seen on a project's day (kind `client` or `user`), for distinct counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ActorRow {
    pub project_id: String,
    pub environment: Environment,
    pub day: String,
    pub kind: &'static str,
    pub actor: String,
}

/// Everything one write stores, in one transaction.
#[derive(Debug, Clone, Default)]
pub struct TelemetryBatch {
    pub records: Vec<RequestRow>,
    pub stats: Vec<StatDelta>,
    pub latency: Vec<LatencyDelta>,
    pub usage: Vec<UsageDelta>,
    pub actors: Vec<ActorRow>,
}

impl TelemetryBatch {
    pub fn from_records(records: Vec<RequestRow>) -> Self {
        // Keys borrow from the records while counting, and are owned once per distinct key:
        // a batch holds thousands of records and a handful of keys.
        let mut stats: BTreeMap<(&str, i64, &str), (i64, i64, i64)> = BTreeMap::new();
        let mut latency: BTreeMap<(&str, i64, &str, i64), i64> = BTreeMap::new();
        let mut usage: BTreeMap<(&str, Environment, i64), (i64, i64)> = BTreeMap::new();
        let mut actors: BTreeSet<(&str, Environment, i64, &'static str, &str)> = BTreeSet::new();
        for r in &records {
            let minute = r.at_ms.div_euclid(60_000);
            let tool = r.tool.as_deref().unwrap_or_default();
            let s = stats.entry((&r.server_id, minute, tool)).or_default();
            s.0 += 1;
            s.1 += i64::from(r.status >= 500);
            s.2 += i64::from(r.decision == Decision::Denied);
            *latency
                .entry((&r.server_id, minute, tool, histogram::bucket(r.latency_us)))
                .or_default() += 1;
            if r.decision == Decision::Allowed {
                // Days as day numbers while counting; as dates once per key.
                let day = r.at_ms.div_euclid(86_400_000);
                let u = usage
                    .entry((&r.project_id, r.environment, day))
                    .or_default();
                u.0 += 1;
                u.1 += i64::from(r.tool_calls);
                if let Some(client) = &r.client_id {
                    actors.insert((&r.project_id, r.environment, day, "client", client));
                }
                if let Some(subject) = &r.subject {
                    actors.insert((&r.project_id, r.environment, day, "user", subject));
                }
            }
        }
        let date = |day: i64| calendar::day(day * 86_400);
        let stats = stats
            .into_iter()
            .map(
                |((server_id, minute, tool), (requests, errors, denials))| StatDelta {
                    server_id: server_id.to_string(),
                    minute,
                    tool: tool.to_string(),
                    requests,
                    errors,
                    denials,
                },
            )
            .collect();
        let latency = latency
            .into_iter()
            .map(|((server_id, minute, tool, bucket), count)| LatencyDelta {
                server_id: server_id.to_string(),
                minute,
                tool: tool.to_string(),
                bucket,
                count,
            })
            .collect();
        let usage = usage
            .into_iter()
            .map(
                |((project_id, environment, day), (requests, tool_calls))| UsageDelta {
                    project_id: project_id.to_string(),
                    environment,
                    day: date(day),
                    requests,
                    tool_calls,
                },
            )
            .collect();
        let actors = actors
            .into_iter()
            .map(|(project_id, environment, day, kind, actor)| ActorRow {
                project_id: project_id.to_string(),
                environment,
                day: date(day),
                kind,
                actor: actor.to_string(),
            })
            .collect();
        TelemetryBatch {
            records,
            stats,
            latency,
            usage,
            actors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at_ms: i64, tool: Option<&str>, decision: Decision, status: u16) -> RequestRow {
        RequestRow {
            id: format!("req_{at_ms}"),
            project_id: "prj_1".into(),
            server_id: "srv_1".into(),
            environment: Environment::Live,
            deployment_id: None,
            at_ms,
            http_method: "POST".into(),
            method: Some(
                if tool.is_some() {
                    "tools/call"
                } else {
                    "tools/list"
                }
                .into(),
            ),
            tool: tool.map(String::from),
            decision,
            reason: None,
            status,
            latency_us: 1_500,
            subject: Some("usr_1".into()),
            client_id: Some("cli_1".into()),
            token_id: None,
            bytes_in: 10,
            bytes_out: 20,
            tool_calls: u32::from(tool.is_some() && decision == Decision::Allowed),
            quota_counted: false,
        }
    }

    #[test]
    fn a_batch_rolls_up_by_minute_tool_and_day() {
        let t = 1_795_683_513_000; // 2026-11-26T08:58:33Z
        let batch = TelemetryBatch::from_records(vec![
            record(t, Some("echo"), Decision::Allowed, 200),
            record(t + 1, Some("echo"), Decision::Allowed, 502),
            record(t + 2, None, Decision::Denied, 401),
            record(t + 60_000, None, Decision::Allowed, 200),
        ]);
        assert_eq!(batch.records.len(), 4);
        let minute = t / 60_000;
        assert!(batch.stats.contains(&StatDelta {
            server_id: "srv_1".into(),
            minute,
            tool: "echo".into(),
            requests: 2,
            errors: 1,
            denials: 0,
        }));
        assert!(batch.stats.contains(&StatDelta {
            server_id: "srv_1".into(),
            minute,
            tool: String::new(),
            requests: 1,
            errors: 0,
            denials: 1,
        }));
        assert_eq!(batch.stats.len(), 3);
        assert_eq!(batch.latency.iter().map(|l| l.count).sum::<i64>(), 4);
        // The denied request is not usage.
        assert_eq!(
            batch.usage,
            vec![UsageDelta {
                project_id: "prj_1".into(),
                environment: Environment::Live,
                day: "2026-11-26".into(),
                requests: 3,
                tool_calls: 2,
            }]
        );
        assert_eq!(batch.actors.len(), 2);
    }
}
