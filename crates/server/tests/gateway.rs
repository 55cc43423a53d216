//! The gateway in front of a deployed MCP server, on SQLite and PostgreSQL: deploys with a
//! health check, forwarding (JSON and SSE), per-message scopes and tool policy, what the
//! upstream receives, rollbacks, and upstream failures.

mod common;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::TestServer;
use common::oauth::http;
use ezforge_proto::{
    CreateDeploymentRequest, ErrorCode, ServerSettings, ToolPolicy, UpdateServerRequest,
};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// What the upstream saw of the last request; and what releases its `hold` requests.
#[derive(Default, Clone)]
struct Seen(Arc<Mutex<Vec<HeaderMap>>>, Arc<tokio::sync::Notify>);

/// A small Streamable HTTP MCP server: JSON answers, except `tools/call`, answered as SSE;
/// `slow` never answers in time; `hold` answers once the test releases it (`Seen.1`).
async fn upstream(seen: Seen) -> String {
    async fn handle(State(seen): State<Seen>, headers: HeaderMap, body: String) -> Response {
        seen.0.lock().unwrap().push(headers);
        let msg: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        match msg.get("method").and_then(Value::as_str) {
            Some("initialize") => (
                [("mcp-session-id", "sess-1")],
                axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": {
                    "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                    "serverInfo": {"name": "test-upstream", "version": "1.2.3"}}})),
            )
                .into_response(),
            Some("tools/call") => {
                let text = format!(
                    "event: message\ndata: {}\n\n",
                    json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": "called"}]}})
                );
                ([(header::CONTENT_TYPE, "text/event-stream")], text).into_response()
            }
            Some("tools/list") => {
                let answer = json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [{"name": "echo"}, {"name": "rm"}, {"name": "shell"}]}});
                if msg.pointer("/params/stall") == Some(&json!(true)) {
                    // JSON of unknown length whose end never comes.
                    return ([(header::CONTENT_TYPE, "application/json")], stalled())
                        .into_response();
                }
                if msg.pointer("/params/huge") == Some(&json!(true)) {
                    let pad = "x".repeat(5 * 1024 * 1024);
                    let huge = json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [{"name": "echo", "description": pad}]}});
                    return axum::Json(huge).into_response();
                }
                if msg.pointer("/params/sse") == Some(&json!(true)) {
                    let text = format!(": keep-alive\n\nevent: message\ndata: {answer}\n\n");
                    ([(header::CONTENT_TYPE, "text/event-stream")], text).into_response()
                } else {
                    axum::Json(answer).into_response()
                }
            }
            Some("stall") => (
                // A small answer of known length whose body stops after its first bytes.
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CONTENT_LENGTH, "100"),
                ],
                stalled(),
            )
                .into_response(),
            Some("slow") => {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                StatusCode::OK.into_response()
            }
            Some("hold") => {
                seen.1.notified().await;
                axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": {"held": true}}))
                    .into_response()
            }
            Some("linger") => {
                tokio::time::sleep(std::time::Duration::from_millis(600)).await;
                axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": {"lingered": true}}))
                    .into_response()
            }
            _ => axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": {}})).into_response(),
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    async fn stream(State(seen): State<Seen>, headers: HeaderMap) -> Response {
        seen.0.lock().unwrap().push(headers);
        let event = "id: 7\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\n";
        ([(header::CONTENT_TYPE, "text/event-stream")], event).into_response()
    }
    let app = Router::new()
        .route(
            "/mcp",
            post(handle).get(stream).delete(|| async { StatusCode::OK }),
        )
        .with_state(seen);
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A body that sends its first bytes and then nothing for 30 s.
fn stalled() -> axum::body::Body {
    let first = futures::stream::once(async {
        Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{\"jsonrpc\": \"2.0\", "))
    });
    let never = futures::stream::once(async {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        Ok::<_, std::io::Error>(axum::body::Bytes::new())
    });
    axum::body::Body::from_stream(futures::StreamExt::chain(first, never))
}

async fn token(
    t: &TestServer,
    owner: &ezforge_client::Session,
    resource: &str,
    scope: &str,
) -> String {
    let client_id = t.public_client().await;
    let code = t.code_for(owner, &client_id, resource, scope).await;
    t.exchange(&client_id, &code).await.1["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn rpc(resource: &str, token: &str, body: Value) -> (u16, HeaderMap, String) {
    let resp = http()
        .post(resource)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

fn call(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
}

/// The demo server deployed to a fresh test upstream, and an `mcp:execute` token for it.
async fn deployed_demo(t: &TestServer) -> (String, String) {
    let (owner, resource) = t
        .with_deployed_mcp_server(upstream(Seen::default()).await, 5000)
        .await;
    let exec = token(t, &owner, &resource, "mcp:execute").await;
    (resource, exec)
}

ezforge_testkit::backend_tests! {
    async fn a_request_in_flight_across_a_deploy_finishes_where_it_started(db) {
        let t = TestServer::start(db).await;
        let (before, after) = (Seen::default(), Seen::default());
        let (owner, resource) = t
            .with_deployed_mcp_server(upstream(before.clone()).await, 30_000)
            .await;
        let exec = token(&t, &owner, &resource, "mcp:execute").await;

        // A request held by the first upstream...
        let held = tokio::spawn({
            let (resource, exec) = (resource.clone(), exec.clone());
            async move { rpc(&resource, &exec, call("hold", json!({}))).await }
        });
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while before.0.lock().unwrap().len() < 2 {
            // (the deploy's health check was the first request it saw)
            assert!(tokio::time::Instant::now() < deadline, "the held request never arrived");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // ...while the server is deployed to another one.
        let second = upstream(after.clone()).await;
        t.as_session(&owner)
            .deploy("demo", &CreateDeploymentRequest { upstream_url: second, headers: Default::default(), timeout_ms: Some(30_000), force: false })
            .await
            .unwrap();
        let before_seen = before.0.lock().unwrap().len();
        let (status, _, body) = rpc(&resource, &exec, call("ping", json!({}))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(after.0.lock().unwrap().len(), 2, "new requests go to the new deployment (after its health check)");
        assert_eq!(before.0.lock().unwrap().len(), before_seen, "and not to the old one");
        assert!(!held.is_finished(), "the held request is still in flight");

        // Released, the request in flight gets its answer from where it started.
        before.1.notify_one();
        let (status, _, body) = held.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"held\":true"), "{body}");
    }

    async fn deploy_forward_scope_and_roll_back(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let admin = t.as_session(&owner);
        let seen = Seen::default();
        let up = upstream(seen.clone()).await;

        // A dead upstream is refused unless forced.
        let dead = CreateDeploymentRequest { upstream_url: "http://127.0.0.1:9/mcp".into(), headers: Default::default(), timeout_ms: Some(1000), force: false };
        let err = admin.deploy("demo", &dead).await.unwrap_err();
        assert_eq!((err.status(), err.code()), (Some(422), Some(ErrorCode::UpstreamUnhealthy)));
        let forced = admin.deploy("demo", &CreateDeploymentRequest { force: true, ..dead.clone() }).await.unwrap();
        assert!(forced.health.starts_with("forced:"), "{}", forced.health);

        let mut headers = std::collections::BTreeMap::new();
        headers.insert("x-upstream-key".to_string(), "upstream-secret".to_string());
        let good = admin.deploy("demo", &CreateDeploymentRequest { upstream_url: up.clone(), headers, timeout_ms: Some(1000), force: false }).await.unwrap();
        assert!(good.health.contains("test-upstream 1.2.3"), "{}", good.health);
        assert!(good.has_credentials);
        let list = admin.deployments("demo").await.unwrap().deployments;
        assert_eq!(list.len(), 2);
        assert!(list[0].active && !list[1].active);
        assert!(!serde_json::to_string(&list).unwrap().contains("upstream-secret"), "credentials are never returned");

        let write = token(&t, &owner, &resource, "mcp:read mcp:write").await;
        seen.0.lock().unwrap().clear();
        let (status, h, body) = rpc(&resource, &write, call("initialize", json!({}))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(h["mcp-session-id"], "sess-1");
        assert!(body.contains("test-upstream"));
        let got = seen.0.lock().unwrap()[0].clone();
        assert!(got.get("authorization").is_none(), "the client's token never reaches the upstream");
        assert_eq!(got["x-upstream-key"], "upstream-secret");
        assert_eq!(got["x-ezforge-subject"], owner.info.user.id.as_str());
        assert_eq!(got["x-ezforge-scopes"], "mcp:read mcp:write");
        assert!(got["host"].to_str().unwrap().starts_with("127.0.0.1:"), "the upstream's own host");
        let identity = got["x-ezforge-identity"].to_str().unwrap();
        let identity_claims: Value = serde_json::from_slice(&base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, identity.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(identity_claims["aud"], json!([resource, up]), "for the upstream, and bound to this server: an upstream URL anyone could deploy to");
        assert!(t.server.oauth.verify_identity_token(identity, &resource).is_ok());
        let other = format!("{}x", resource.trim_end_matches('/'));
        assert!(t.server.oauth.verify_identity_token(identity, &other).is_err(), "not for another server");

        // Hop-by-hop headers, the client's cookies and proxy credentials, and headers that would
        // forge the caller's identity stay with the gateway.
        seen.0.lock().unwrap().clear();
        let resp = http()
            .post(&resource)
            .bearer_auth(&write)
            .header("accept", "application/json, text/event-stream")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "for the next hop only")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers")
            .header("proxy-authorization", "Basic cHJveHk6c2VjcmV0")
            .header("cookie", "ezf_session=not-for-upstreams")
            .header("x-ezforge-subject", "someone-else")
            .json(&call("ping", json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let got = seen.0.lock().unwrap()[0].clone();
        for name in ["x-hop", "keep-alive", "te", "proxy-authorization", "cookie", "authorization"] {
            assert!(got.get(name).is_none(), "{name} reached the upstream");
        }
        assert_ne!(got.get("connection").map(|v| v.to_str().unwrap()), Some("keep-alive, x-hop"));
        assert_eq!(got["x-ezforge-subject"], owner.info.user.id.as_str(), "not the client's forgery");

        // SSE answers stream through.
        let (status, h, body) = rpc(&resource, &write, call("tools/call", json!({"name": "echo"}))).await;
        assert_eq!(status, 200);
        assert_eq!(h["content-type"], "text/event-stream");
        assert!(body.contains("data: ") && body.contains("called"));

        // Scopes per message: a read-only token may list, not call; batches are checked whole.
        let read = token(&t, &owner, &resource, "mcp:read").await;
        assert_eq!(rpc(&resource, &read, call("tools/list", json!({}))).await.0, 200);
        let (status, h, body) = rpc(&resource, &read, call("tools/call", json!({"name": "echo"}))).await;
        assert_eq!(status, 403, "{body}");
        assert!(h["www-authenticate"].to_str().unwrap().contains("error=\"insufficient_scope\", scope=\"mcp:write\""));
        let batch = json!([call("tools/list", json!({})), call("tools/call", json!({"name": "echo"}))]);
        assert_eq!(rpc(&resource, &read, batch).await.0, 403);

        // Tool policy: execute-class tools need mcp:execute; denied tools never pass.
        let policy = UpdateServerRequest::from(ServerSettings { tool_policy: Some(ToolPolicy { allow: vec![], deny: vec!["rm".into()], execute: vec!["shell".into()] }), ..Default::default() });
        admin.update_server_by_slug("demo", &policy).await.unwrap();
        let (status, h, _) = rpc(&resource, &write, call("tools/call", json!({"name": "shell"}))).await;
        assert_eq!(status, 403);
        assert!(h["www-authenticate"].to_str().unwrap().contains("scope=\"mcp:execute\""));
        let (status, h, body) = rpc(&resource, &write, call("tools/call", json!({"name": "rm"}))).await;
        assert_eq!(status, 403);
        assert!(h.get("www-authenticate").is_none() && body.contains("not allowed"));

        // tools/list answers show only what the token may call, in JSON and in SSE.
        let names = |body: &str| -> Vec<String> {
            let json = body.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or(body);
            let v: Value = serde_json::from_str(json).unwrap();
            v["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect()
        };
        let (status, _, body) = rpc(&resource, &write, call("tools/list", json!({}))).await;
        assert_eq!(status, 200);
        assert_eq!(names(&body), ["echo"]);
        let (_, h, body) = rpc(&resource, &write, call("tools/list", json!({"sse": true}))).await;
        assert_eq!(h["content-type"], "text/event-stream");
        assert!(body.starts_with(": keep-alive"), "other SSE lines pass through: {body}");
        assert_eq!(names(&body), ["echo"]);
        let (_, _, body) = rpc(&resource, &read, call("tools/list", json!({}))).await;
        assert!(names(&body).is_empty(), "a read-only token may call no tool");

        // An allow list: only the tools it names pass, less the denied ones, and tools/list
        // shows only those.
        let policy = UpdateServerRequest::from(ServerSettings { tool_policy: Some(ToolPolicy { allow: vec!["echo".into(), "rm".into()], deny: vec!["rm".into()], execute: vec![] }), ..Default::default() });
        admin.update_server_by_slug("demo", &policy).await.unwrap();
        assert_eq!(rpc(&resource, &write, call("tools/call", json!({"name": "echo"}))).await.0, 200);
        for tool in ["shell", "rm"] {
            let (status, _, body) = rpc(&resource, &write, call("tools/call", json!({"name": tool}))).await;
            assert_eq!(status, 403, "{tool}");
            assert!(body.contains("not allowed"), "{tool}: {body}");
        }
        let (_, _, body) = rpc(&resource, &write, call("tools/list", json!({}))).await;
        assert_eq!(names(&body), ["echo"]);
        let (_, _, body) = rpc(&resource, &write, call("tools/list", json!({"sse": true}))).await;
        assert_eq!(names(&body), ["echo"]);
        let policy = UpdateServerRequest::from(ServerSettings { tool_policy: Some(ToolPolicy { allow: vec![], deny: vec!["rm".into()], execute: vec!["shell".into()] }), ..Default::default() });
        admin.update_server_by_slug("demo", &policy).await.unwrap();

        // A body over the gateway's limit (4 MiB): 413 with a JSON-RPC error, nothing forwarded.
        let big = call("tools/call", json!({"name": "echo", "arguments": {"text": "x".repeat(4 * 1024 * 1024)}}));
        let (status, _, body) = rpc(&resource, &write, big).await;
        assert_eq!(status, 413, "{body}");
        let err: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((err["jsonrpc"].as_str(), err["error"]["code"].as_i64()), (Some("2.0"), Some(-32600)), "{body}");
        // An unknown server: 404 with the API's JSON error.
        let resp = http().post(format!("{}/mcp/no-such-server", t.url)).bearer_auth(&write).json(&call("ping", json!({}))).send().await.unwrap();
        assert_eq!(resp.status(), 404);
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "not_found", "{err}");
        assert!(err["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{err}");

        // Not a JSON-RPC body; a token in the query string.
        let resp = http().post(&resource).bearer_auth(&write).body("{nope").send().await.unwrap();
        assert_eq!(resp.status(), 400);
        let resp = http().post(format!("{resource}?access_token={write}")).json(&call("ping", json!({}))).send().await.unwrap();
        assert_eq!(resp.status(), 401);

        // Roll back to the dead one: 502 with a JSON-RPC error; then forward to the good one again.
        admin.rollback("demo", None).await.unwrap();
        let (status, _, body) = rpc(&resource, &write, call("ping", json!({}))).await;
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("\"jsonrpc\""));
        admin.rollback("demo", Some(&good.id)).await.unwrap();
        assert_eq!(rpc(&resource, &write, call("ping", json!({}))).await.0, 200);
        let err = admin.rollback("demo", Some(&good.id)).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Conflict));

        // A token for this server is refused by every other server (audience).
        admin
            .create_server("demo-project", &ezforge_proto::CreateServerRequest { name: "Other".into(), slug: "other".into(), environment: None, ..Default::default() })
            .await
            .unwrap();
        admin.deploy("other", &CreateDeploymentRequest { upstream_url: up.clone(), headers: Default::default(), timeout_ms: None, force: false }).await.unwrap();
        let other = format!("{}/mcp/other", t.url);
        let (status, h, _) = rpc(&other, &write, call("ping", json!({}))).await;
        assert_eq!(status, 401);
        assert!(h["www-authenticate"].to_str().unwrap().contains("error=\"invalid_token\""));

        // Revoking the grant stops its token at once, although the gateway had verified it.
        assert_eq!(rpc(&resource, &read, call("ping", json!({}))).await.0, 200);
        let grants = admin.list_grants("demo-project", "demo").await.unwrap().grants;
        let read_claims: Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, read.split('.').nth(1).unwrap()).unwrap(),
        )
        .unwrap();
        let grant = grants.iter().find(|g| g.id == read_claims["gid"]).unwrap();
        admin.revoke_grant("demo-project", "demo", &grant.id).await.unwrap();
        assert_eq!(rpc(&resource, &read, call("ping", json!({}))).await.0, 401);

        // An upstream slower than the deployment's timeout: 504.
        // (`slow` is not in the scope table, so it needs mcp:execute.)
        let exec = token(&t, &owner, &resource, "mcp:execute").await;
        let (_, _, body) = rpc(&resource, &exec, call("tools/list", json!({"sse": true}))).await;
        assert_eq!(names(&body), ["echo", "shell"]);
        let (status, _, body) = rpc(&resource, &exec, call("slow", json!({}))).await;
        assert_eq!(status, 504, "{body}");
        assert!(body.contains("did not answer in time"));
    }

    /// An upstream that sends its answer's head in time and then stalls its body gets the
    /// client a 504 at the deployment's timeout, where the gateway reads the answer whole (a
    /// small JSON answer of known length, a `tools/list` answer it filters); a `tools/list`
    /// answer larger than the gateway filters is refused, not passed on unfiltered.
    async fn answers_read_whole_keep_the_deployments_timeout(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_deployed_mcp_server(upstream(Seen::default()).await, 2000).await;
        let exec = token(&t, &owner, &resource, "mcp:execute").await;
        for (method, params) in [("stall", json!({})), ("tools/list", json!({"stall": true}))] {
            let started = std::time::Instant::now();
            let (status, _, body) = rpc(&resource, &exec, call(method, params)).await;
            assert_eq!(status, 504, "{method}: {body}");
            assert!(body.contains("did not answer in time"), "{body}");
            assert!(started.elapsed() < std::time::Duration::from_secs(10), "{method} waited for the upstream");
        }
        let (status, _, body) = rpc(&resource, &exec, call("tools/list", json!({"huge": true}))).await;
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("larger than the gateway filters"), "{body}");
        // The upstream still answers what it answers in time.
        let (status, _, body) = rpc(&resource, &exec, call("tools/list", json!({}))).await;
        assert_eq!(status, 200, "{body}");
    }

    /// A client that trickles its headers (slowloris), sends nothing, or stalls inside HTTP/2's
    /// preface is cut off; a request slower than the limit, once its headers are in, is not.
    async fn slow_headers_are_cut_off(db) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limit = std::time::Duration::from_millis(400);
        let t = TestServer::start_with(db, |c| c.header_read_timeout = limit).await;
        let (resource, exec) = deployed_demo(&t).await;

        let addr = t.url.trim_start_matches("http://").to_string();
        // Trickled HTTP/1.1 headers, nothing at all, and part of HTTP/2's preface.
        let sends: [&[u8]; 3] = [b"GET /v1/session HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"", b"PRI * HTTP/2.0\r\n"];
        for sent in sends {
            let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let started = std::time::Instant::now();
            slow.write_all(sent).await.unwrap();
            let mut buf = [0u8; 256];
            let read = tokio::time::timeout(std::time::Duration::from_secs(10), slow.read(&mut buf)).await;
            let waited = started.elapsed();
            let sent = String::from_utf8_lossy(sent);
            assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "after {sent:?} the connection is closed, not answered: {read:?}");
            // tokio's timer counts whole milliseconds from its own start, so it can fire up to
            // a millisecond before a clock read on this side says (seen: 399.1 ms for 400).
            assert!(waited + std::time::Duration::from_millis(5) >= limit, "after {sent:?}, not before the limit: {waited:?}");
            assert!(waited < std::time::Duration::from_secs(5), "after {sent:?}, soon after it: {waited:?}");
        }

        // The upstream takes 600 ms, longer than the limit: only header reading is timed.
        let (status, _, body) = rpc(&resource, &exec, call("linger", json!({}))).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("lingered"), "{body}");
    }

    /// The gateway's answers carry the default headers (it is served in front of the router);
    /// many connections at once are all served (three serving threads); a shutdown lets
    /// requests in flight finish and then refuses new connections.
    async fn serving_threads_headers_and_graceful_shutdown(db) {
        let t = TestServer::start_with(db, |c| c.http_threads = 3).await;
        let (resource, exec) = deployed_demo(&t).await;

        let challenge = http().post(&resource).json(&call("ping", json!({}))).send().await.unwrap();
        assert_eq!(challenge.status(), 401);
        let (status, h, _) = rpc(&resource, &exec, call("ping", json!({}))).await;
        assert_eq!(status, 200);
        for h in [challenge.headers(), &h] {
            assert_eq!(h["cache-control"], "no-store");
            assert_eq!(h["x-content-type-options"], "nosniff");
            assert_eq!(h["referrer-policy"], "no-referrer");
            assert_eq!(h["x-frame-options"], "DENY");
        }

        // Many connections at once, spread over the threads, all answered.
        let calls = (0..24).map(|_| {
            let (resource, exec) = (resource.clone(), exec.clone());
            tokio::spawn(async move {
                // A client per call: a connection per call.
                let c = reqwest::Client::new();
                c.post(&resource).bearer_auth(&exec).json(&call("ping", json!({}))).send().await.unwrap().status().as_u16()
            })
        });
        for status in futures::future::join_all(calls).await {
            assert_eq!(status.unwrap(), 200);
        }

        // A request in flight when the shutdown starts still gets its answer.
        let in_flight = tokio::spawn({
            let (resource, exec) = (resource.clone(), exec.clone());
            async move { rpc(&resource, &exec, call("linger", json!({}))).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let url = t.url.clone();
        t.server.shutdown().await.expect("graceful shutdown");
        let (status, _, body) = in_flight.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("lingered"), "{body}");
        assert!(reqwest::Client::new().get(format!("{url}/v1/session")).send().await.is_err(), "no longer accepting");
    }

    /// Every row of docs/gateway-scopes.md over HTTP, on both databases: allowed with the scope it
    /// needs, refused with the one below it on the ladder.
    async fn every_scope_table_row_is_enforced(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let seen = Seen::default();
        let up = upstream(seen.clone()).await;
        let admin = t.as_session(&owner);
        admin
            .deploy(
                "demo",
                &CreateDeploymentRequest {
                    upstream_url: up,
                    headers: Default::default(),
                    timeout_ms: None,
                    force: false,
                },
            )
            .await
            .unwrap();
        let policy = UpdateServerRequest::from(ServerSettings {
            tool_policy: Some(ToolPolicy {
                allow: vec![],
                deny: vec![],
                execute: vec!["shell".into()],
            }),
            ..Default::default()
        });
        admin.update_server_by_slug("demo", &policy).await.unwrap();
        let none = token(&t, &owner, &resource, "offline_access").await;
        let read = token(&t, &owner, &resource, "mcp:read").await;
        let write = token(&t, &owner, &resource, "mcp:write").await;
        let exec = token(&t, &owner, &resource, "mcp:execute").await;
        let rows: Vec<(Value, &str)> = vec![
            (call("initialize", json!({})), "read"),
            (call("server/discover", json!({})), "read"),
            (call("ping", json!({})), "read"),
            (
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                "read",
            ),
            (call("tools/list", json!({})), "read"),
            (call("resources/list", json!({})), "read"),
            (call("resources/templates/list", json!({})), "read"),
            (call("prompts/list", json!({})), "read"),
            (call("resources/read", json!({"uri": "x"})), "read"),
            (call("resources/subscribe", json!({"uri": "x"})), "read"),
            (call("resources/unsubscribe", json!({"uri": "x"})), "read"),
            (call("prompts/get", json!({"name": "x"})), "read"),
            (call("completion/complete", json!({})), "read"),
            (call("logging/setLevel", json!({"level": "info"})), "read"),
            (json!({"jsonrpc": "2.0", "id": 5, "result": {}}), "read"),
            (call("tools/call", json!({"name": "echo"})), "write"),
            (call("tools/call", json!({"name": "shell"})), "execute"),
            (call("something/new", json!({})), "execute"),
        ];
        for (message, needed) in rows {
            let (allowed, below) = match needed {
                "read" => (&read, &none),
                "write" => (&write, &read),
                _ => (&exec, &write),
            };
            let (status, _, body) = rpc(&resource, allowed, message.clone()).await;
            assert_eq!(status, 200, "{message} with mcp:{needed}: {body}");
            let (status, h, _) = rpc(&resource, below, message.clone()).await;
            assert_eq!(status, 403, "{message} below mcp:{needed}");
            assert!(
                h["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .contains(&format!("scope=\"mcp:{needed}\"")),
                "{message}"
            );
        }

        // Names that differ only in case are refused: a case-insensitive decoder upstream could
        // otherwise run `tools/call` while the gateway checked `ping`.
        let sneaky = json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "Method": "tools/call", "params": {"name": "echo", "Name": "shell"}});
        assert_eq!(rpc(&resource, &read, sneaky).await.0, 400);
        let sneaky = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "NAME": "shell"}});
        assert_eq!(rpc(&resource, &write, sneaky).await.0, 400);
        // Mcp-Method must say what the body says.
        let resp = http()
            .post(&resource)
            .bearer_auth(&exec)
            .header("mcp-method", "ping")
            .json(&call("tools/call", json!({"name": "echo"})))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        // A batch's tools/list answers are filtered too.
        let batch = json!([call("tools/list", json!({}))]);
        let (status, _, body) = rpc(&resource, &write, batch).await;
        assert_eq!(status, 200, "{body}");
        // GET and DELETE need at least mcp:read.
        let resp = http()
            .get(&resource)
            .bearer_auth(&none)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);

        // GET streams go through with Last-Event-ID (resumption) and the session id.
        seen.0.lock().unwrap().clear();
        let resp = http()
            .get(&resource)
            .bearer_auth(&read)
            .header("accept", "text/event-stream")
            .header("last-event-id", "6")
            .header("mcp-session-id", "sess-1")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.text().await.unwrap().contains("id: 7"));
        let got = seen.0.lock().unwrap()[0].clone();
        assert_eq!(got["last-event-id"], "6");
        assert_eq!(got["mcp-session-id"], "sess-1");
        assert!(got.get("authorization").is_none());
    }

    /// Host-based routing: `{slug}.{mcp domain}` is the server, with its metadata at the host root.
    async fn host_based_routing(db) {
        let t = TestServer::start_with(db, |c| {
            c.mcp_domain = Some("mcp.test".into())
        })
        .await;
        // The same server `demo`; its resource URI is its host.
        let (owner, _) = t.with_mcp_server().await;
        let resource = "http://demo.mcp.test";
        // The documentation's document, byte for byte: its fields, in its order; at the host root
        // and at the path-inserted URI of `/mcp`, where this host serves the server too.
        for path in [
            "/.well-known/oauth-protected-resource",
            "/.well-known/oauth-protected-resource/mcp",
        ] {
            let resp = http()
                .get(format!("{}{path}", t.url))
                .header("host", "demo.mcp.test")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            assert_eq!(resp.headers()["content-type"], "application/json");
            assert_eq!(
                resp.text().await.unwrap(),
                format!(
                    r#"{{"resource":"{resource}","authorization_servers":["{}"],"scopes_supported":["mcp:read","mcp:write","mcp:execute","offline_access"],"bearer_methods_supported":["header"]}}"#,
                    t.url
                ),
                "{path}"
            );
        }
        let resp = http()
            .post(format!("{}/", t.url))
            .header("host", "Demo.MCP.test")
            .json(&call("ping", json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Bearer resource_metadata=\"http://demo.mcp.test/.well-known/oauth-protected-resource\", scope=\"mcp:read mcp:write offline_access\""
        );
        let token = token(&t, &owner, resource, "mcp:read").await;
        let resp = http()
            .post(format!("{}/", t.url))
            .header("host", "demo.mcp.test")
            .bearer_auth(&token)
            .json(&call("ping", json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503, "past the token check: nothing deployed");
        // The path form still works with the same token.
        assert_eq!(
            http()
                .post(format!("{}/mcp/demo", t.url))
                .bearer_auth(&token)
                .json(&call("ping", json!({})))
                .send()
                .await
                .unwrap()
                .status(),
            503
        );
        let resp = http()
            .post(format!("{}/", t.url))
            .header("host", "nope.mcp.test")
            .json(&call("ping", json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        let resp = http()
            .get(format!("{}/v1/projects", t.url))
            .header("host", "demo.mcp.test")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "an MCP host serves only its server");
    }
}
