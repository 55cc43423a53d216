//! The request log's storage format: each written batch becomes one row per server holding its
//! records as a JSON array. Reading walks the chunks newest first and stops as soon as no
//! further chunk can hold a record that belongs on the page.

use ezforge_core::telemetry::RequestRow;
use ezforge_proto::{Decision, Environment};
use serde::{Deserialize, Serialize};

/// One record inside a chunk (the server is the chunk's). Short names: chunks are stored as
/// written, millions of times. Written from borrowed text (`Stored<&str>`), read into owned.
#[derive(Serialize, Deserialize)]
struct Stored<S> {
    i: S,
    p: S,
    e: Environment,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<S>,
    t: i64,
    h: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool: Option<S>,
    a: Decision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<S>,
    s: u16,
    l: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    k: Option<S>,
    bi: i64,
    bo: i64,
}

/// A chunk to insert: (server, first at, last at, count, JSON).
pub(crate) struct Chunk {
    pub server_id: String,
    pub first_at: i64,
    pub last_at: i64,
    pub count: i64,
    pub json: String,
}

/// Groups records by server, each group one chunk (records oldest first).
pub(crate) fn chunks(records: &[RequestRow]) -> Vec<Chunk> {
    let mut by_server: std::collections::BTreeMap<&str, Vec<&RequestRow>> = Default::default();
    for r in records {
        by_server.entry(&r.server_id).or_default().push(r);
    }
    by_server
        .into_iter()
        .map(|(server_id, mut rows)| {
            rows.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
            let stored: Vec<Stored<&str>> = rows
                .iter()
                .map(|r| Stored {
                    i: r.id.as_str(),
                    p: r.project_id.as_str(),
                    e: r.environment,
                    d: r.deployment_id.as_deref(),
                    t: r.at_ms,
                    h: r.http_method.as_str(),
                    m: r.method.as_deref(),
                    tool: r.tool.as_deref(),
                    a: r.decision,
                    r: r.reason.as_deref(),
                    s: r.status,
                    l: r.latency_us,
                    sub: r.subject.as_deref(),
                    c: r.client_id.as_deref(),
                    k: r.token_id.as_deref(),
                    bi: r.bytes_in,
                    bo: r.bytes_out,
                })
                .collect();
            Chunk {
                server_id: server_id.to_string(),
                first_at: rows.first().map(|r| r.at_ms).unwrap_or(0),
                last_at: rows.last().map(|r| r.at_ms).unwrap_or(0),
                count: rows.len() as i64,
                json: serde_json::to_string(&stored).unwrap_or_else(|_| "[]".into()),
            }
        })
        .collect()
}

/// The records of a stored chunk.
pub(crate) fn decode(server_id: &str, json: &str) -> Result<Vec<RequestRow>, String> {
    let stored: Vec<Stored<String>> =
        serde_json::from_str(json).map_err(|e| format!("a request log chunk is corrupt: {e}"))?;
    Ok(stored
        .into_iter()
        .map(|s| RequestRow {
            id: s.i,
            project_id: s.p,
            server_id: server_id.to_string(),
            environment: s.e,
            deployment_id: s.d,
            at_ms: s.t,
            http_method: s.h,
            method: s.m,
            tool: s.tool,
            decision: s.a,
            reason: s.r,
            status: s.s,
            latency_us: s.l,
            subject: s.sub,
            client_id: s.c,
            token_id: s.k,
            bytes_in: s.bi,
            bytes_out: s.bo,
            tool_calls: 0,
            quota_counted: false,
        })
        .collect())
}
