//! Talking to upstream MCP servers: the deploy-time health check and the sealing of upstream
//! credentials.

use ezforge_core::crypto::MasterKey;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const CREDENTIALS_CONTEXT: &str = "ezforge-upstream-credentials-v1";
const MAX_HEALTH_BODY: usize = 256 * 1024;

/// The client for upstream traffic: no redirects (an upstream answers, it does not send us
/// elsewhere), HTTP/1.1 and 2, pooled.
pub const USER_AGENT: &str = concat!("ezforge-gateway/", env!("CARGO_PKG_VERSION"));

/// The client the gateway forwards with: hyper's, used directly (reqwest's conveniences cost
/// the hot path a URL parse and a service stack per request). One per thread, so that an
/// upstream connection is driven by the thread whose requests use it (see `listener`): a pool
/// shared between threads would hand every answer across threads.
pub type GatewayClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    axum::body::Body,
>;

pub fn gateway_client() -> Result<GatewayClient, String> {
    thread_local! {
        static CLIENT: Result<GatewayClient, String> = build_gateway_client();
    }
    CLIENT.with(Clone::clone)
}

fn build_gateway_client() -> Result<GatewayClient, String> {
    use hyper_util::client::legacy::connect::HttpConnector;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    // Upstreams are verified like reqwest does it: the platform's trust store.
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .try_with_platform_verifier()
        .map_err(|e| e.to_string())?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(https),
    )
}

/// The client deploys health-check upstreams with. Like the gateway's, it connects directly:
/// proxy environment variables are not used, so that a health check reaches the upstream the
/// way traffic will.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(USER_AGENT)
        .build()
        .unwrap_or_default()
}

/// Headers a deployment may not store: they frame the message or manage the connection, and a
/// second value beside the one hyper writes would make the request ambiguous (smuggling).
const FRAMING_HEADERS: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

pub fn seal_headers(
    master: &MasterKey,
    headers: &BTreeMap<String, String>,
) -> Result<Option<String>, String> {
    if headers.is_empty() {
        return Ok(None);
    }
    let mut seen = std::collections::BTreeSet::new();
    for (k, v) in headers {
        // Header names are case-insensitive: `Host` and `host` would be sent as two.
        if !seen.insert(k.to_ascii_lowercase()) {
            return Err(format!("`{k}` is given twice (header names ignore case)"));
        }
        if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
            || reqwest::header::HeaderValue::from_str(v).is_err()
        {
            return Err(format!("`{k}` is not a valid header name and value"));
        }
        if FRAMING_HEADERS.iter().any(|f| k.eq_ignore_ascii_case(f)) {
            return Err(format!(
                "`{k}` describes the connection or the body's framing; the gateway sets it itself"
            ));
        }
    }
    let json = serde_json::to_vec(headers).map_err(|e| e.to_string())?;
    master
        .seal(CREDENTIALS_CONTEXT, &json)
        .map(Some)
        .map_err(|e| e.to_string())
}

pub fn open_headers(
    master: &MasterKey,
    sealed: Option<&str>,
) -> Result<BTreeMap<String, String>, String> {
    let Some(sealed) = sealed else {
        return Ok(BTreeMap::new());
    };
    let bytes = master
        .open(CREDENTIALS_CONTEXT, sealed)
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// Sends an MCP `initialize` and reports what answered, or why nothing did.
pub async fn health_check(
    client: &reqwest::Client,
    url: &str,
    headers: &BTreeMap<String, String>,
    timeout_ms: i64,
) -> Result<String, String> {
    let started = Instant::now();
    let body = json!({
        "jsonrpc": "2.0",
        "id": "ezforge-health-check",
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "ezforge-health-check", "version": env!("CARGO_PKG_VERSION")}
        }
    });
    let mut req = client
        .post(url)
        .header(
            reqwest::header::ACCEPT,
            "application/json, text/event-stream",
        )
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .json(&body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let timeout = Duration::from_millis(timeout_ms.max(100) as u64);
    let mut resp = tokio::time::timeout(timeout, req.send())
        .await
        .map_err(|_| format!("no answer within {timeout_ms} ms"))?
        .map_err(|e| format!("cannot reach it ({})", root_cause(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("it answered HTTP {}", resp.status().as_u16()));
    }
    let is_sse = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let session = resp.headers().get("mcp-session-id").cloned();
    // Read until a JSON-RPC answer arrives (an SSE stream may stay open after it).
    let mut buf = Vec::new();
    let answer = tokio::time::timeout(timeout, async {
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    buf.extend_from_slice(&chunk);
                    if let Some(v) = find_answer(&buf, is_sse) {
                        return Ok(v);
                    }
                    if buf.len() > MAX_HEALTH_BODY {
                        return Err("its answer is too large".to_string());
                    }
                }
                Ok(None) => {
                    return find_answer(&buf, is_sse)
                        .ok_or_else(|| "its answer is not a JSON-RPC response".to_string());
                }
                Err(e) => return Err(format!("the answer broke off ({})", root_cause(&e))),
            }
        }
    })
    .await
    .map_err(|_| format!("no complete answer within {timeout_ms} ms"))??;
    if let Some(session) = session {
        // Politeness: end the session the check opened.
        let mut del = client.delete(url).header("mcp-session-id", session);
        for (k, v) in headers {
            del = del.header(k, v);
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), del.send()).await;
    }
    if let Some(err) = answer.get("error") {
        return Err(format!("it answered initialize with an error: {err}"));
    }
    let result = answer.get("result").ok_or("its answer has no result")?;
    let info = &result["serverInfo"];
    Ok(format!(
        "ok: {} {} (MCP {}) answered initialize in {} ms",
        info["name"].as_str().unwrap_or("an MCP server"),
        info["version"].as_str().unwrap_or(""),
        result["protocolVersion"].as_str().unwrap_or("?"),
        started.elapsed().as_millis()
    ))
}

fn find_answer(buf: &[u8], sse: bool) -> Option<Value> {
    let text = std::str::from_utf8(buf).ok()?;
    if !sse {
        return serde_json::from_str::<Value>(text).ok();
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id") == Some(&json!("ezforge-health-check")))
}

pub fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_cannot_store_framing_or_connection_headers() {
        let master = MasterKey::generate().unwrap();
        for name in [
            "Content-Length",
            "transfer-encoding",
            "Connection",
            "TE",
            "upgrade",
        ] {
            let headers = BTreeMap::from([(name.to_string(), "1".to_string())]);
            let err = seal_headers(&master, &headers).unwrap_err();
            assert!(err.contains("framing"), "{name}: {err}");
        }
        let headers = BTreeMap::from([
            (
                "authorization".to_string(),
                "Bearer upstream-secret".to_string(),
            ),
            ("host".to_string(), "internal.example".to_string()),
        ]);
        let twice = BTreeMap::from([
            ("Host".to_string(), "a.example".to_string()),
            ("host".to_string(), "b.example".to_string()),
        ]);
        let err = seal_headers(&master, &twice).unwrap_err();
        assert!(err.contains("twice"), "{err}");
        let sealed = seal_headers(&master, &headers).unwrap();
        assert_eq!(open_headers(&master, sealed.as_deref()).unwrap(), headers);
    }
}
