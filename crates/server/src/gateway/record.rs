//! What the gateway learns about a request as it handles it, turned into a request-log record
//! when the answer is complete. Bodies of known size are recorded at once; streamed bodies
//! (SSE) are counted as they pass and recorded when they end or the client goes away.

use axum::body::{Body, Bytes, HttpBody};
use axum::response::Response;
use ezforge_core::Core;
use ezforge_core::oauth::token::Presented;
use ezforge_core::telemetry::{RequestLog, RequestRow};
use ezforge_proto::{Decision, Environment};
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

/// Filled in by the handler as it goes; every refusal sets `reason`.
#[derive(Default)]
pub struct Seen {
    pub server: Option<(String, String, Environment)>,
    pub deployment_id: Option<String>,
    pub method: Option<String>,
    pub tool: Option<String>,
    pub reason: Option<&'static str>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub token_id: Option<String>,
    pub bytes_in: usize,
    pub tool_calls: u32,
    pub quota_counted: bool,
}

impl Seen {
    /// Refused, for this reason.
    pub fn deny(&mut self, reason: &'static str) {
        self.reason = Some(reason);
    }

    /// The JSON-RPC method and tool of a checked body: a batch is `batch`, without a tool.
    pub fn message(&mut self, parsed: &Value) {
        let is_call = |m: &Value| m.get("method").and_then(Value::as_str) == Some("tools/call");
        match parsed {
            Value::Array(items) => {
                self.method = Some("batch".into());
                self.tool_calls = items.iter().filter(|m| is_call(m)).count() as u32;
            }
            m => {
                self.method = m.get("method").and_then(Value::as_str).map(clip);
                if is_call(m) {
                    self.tool = m
                        .get("params")
                        .and_then(|p| p.get("name"))
                        .and_then(Value::as_str)
                        .map(clip);
                    self.tool_calls = 1;
                }
            }
        }
    }
}

/// Longest method or tool name recorded: they come from the client, and they key the metrics.
const MAX_NAME: usize = 128;

/// A client-supplied name, cut to `MAX_NAME` bytes on a character boundary.
fn clip(s: &str) -> String {
    if s.len() <= MAX_NAME {
        return s.to_string();
    }
    let mut end = MAX_NAME;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Records the request when its answer is complete; returns the answer to send.
pub fn finish(
    log: &Arc<RequestLog>,
    core: &Arc<Core>,
    seen: Seen,
    http_method: &str,
    started: Instant,
    resp: Response,
) -> Response {
    let Some((project_id, server_id, environment)) = seen.server else {
        // No such server: nothing to attach a record to.
        return resp;
    };
    let decision = if seen.reason.is_some() {
        Decision::Denied
    } else {
        Decision::Allowed
    };
    let row = RequestRow {
        id: ezforge_core::ids::ordered_id("req"),
        project_id,
        server_id,
        environment,
        deployment_id: seen.deployment_id,
        at_ms: 0,
        http_method: http_method.to_string(),
        method: seen.method,
        tool: seen.tool,
        decision,
        reason: seen.reason.map(String::from),
        status: resp.status().as_u16(),
        latency_us: started.elapsed().as_micros() as i64,
        subject: seen.subject,
        client_id: seen.client_id,
        token_id: seen.token_id,
        bytes_in: seen.bytes_in as i64,
        bytes_out: 0,
        tool_calls: if decision == Decision::Allowed {
            seen.tool_calls
        } else {
            0
        },
        quota_counted: seen.quota_counted,
    };
    let (parts, body) = resp.into_parts();
    if let Some(size) = body.size_hint().exact() {
        let mut row = row;
        row.bytes_out = size as i64;
        row.at_ms = core.now_ms();
        log.record(row);
        return Response::from_parts(parts, body);
    }
    let mut pending = Pending {
        log: log.clone(),
        core: core.clone(),
        row: Some(row),
        bytes: 0,
    };
    use futures_util::StreamExt;
    let counted = body.into_data_stream().map(move |chunk| {
        if let Ok(c) = &chunk {
            // A method call, so the closure owns all of `pending` (and drops it at the end).
            pending.add(c.len());
        }
        chunk.map(|c: Bytes| c)
    });
    Response::from_parts(parts, Body::from_stream(counted))
}

/// A streamed answer's record, written when the stream is dropped: at its end or when the
/// client disconnects.
struct Pending {
    log: Arc<RequestLog>,
    core: Arc<Core>,
    row: Option<RequestRow>,
    bytes: i64,
}

impl Pending {
    fn add(&mut self, n: usize) {
        self.bytes += n as i64;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut row) = self.row.take() {
            row.bytes_out = self.bytes;
            row.at_ms = self.core.now_ms();
            self.log.record(row);
        }
    }
}

/// A token's identifier for the log: its `jti` when it has one, else the first 16 hex digits of
/// its SHA-256 (enough to tell tokens apart, useless for using one).
pub fn token_id(jti: &str, token: &Presented<'_>) -> String {
    if jti.is_empty() {
        let h = token.hash();
        format!("sha256:{}", &h[..16.min(h.len())])
    } else {
        jti.to_string()
    }
}
