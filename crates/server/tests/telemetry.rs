//! The request log, metrics, usage, quotas and the audit log, on SQLite and PostgreSQL: what a
//! gateway request leaves behind, who may read it, following it live, and quotas that survive
//! a restart.

mod common;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use common::TestServer;
use common::oauth::http;
use ezforge_client::Session;
use ezforge_proto::{Environment, ErrorCode, RequestLogPage};
use serde_json::{Value, json};
use std::time::Duration;

/// An MCP server that answers everything with a small JSON result.
async fn upstream() -> String {
    async fn handle(body: String) -> axum::Json<Value> {
        let msg: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let result = match msg.get("method").and_then(Value::as_str) {
            Some("initialize") => {
                json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                "serverInfo": {"name": "telemetry-upstream", "version": "1"}})
            }
            Some("tools/call") => json!({"content": [{"type": "text", "text": "done"}]}),
            _ => json!({}),
        };
        axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result}))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let app = Router::new().route("/mcp", post(handle));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn token(t: &TestServer, owner: &Session, resource: &str, scope: &str) -> String {
    let client_id = t.public_client().await;
    let code = t.code_for(owner, &client_id, resource, scope).await;
    t.exchange(&client_id, &code).await.1["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn rpc(
    resource: &str,
    token: Option<&str>,
    method: &str,
    params: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = http()
        .post(resource)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

/// A deployed server `demo` in `demo-project`; returns the owner and the resource URI.
async fn deployed(t: &TestServer) -> (Session, String) {
    t.with_deployed_mcp_server(upstream().await, 2000).await
}

/// Waits (up to 10 s) until the request log holds at least `n` records for `demo`.
async fn records(t: &TestServer, owner: &Session, n: usize) -> RequestLogPage {
    for _ in 0..100 {
        let page = t
            .as_session(owner)
            .server_logs("demo", &[("limit", Some("1000".into()))])
            .await
            .unwrap();
        if page.records.len() >= n {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the request log never reached {n} records");
}

ezforge_testkit::backend_tests! {
    async fn gateway_requests_are_logged_measured_and_billed(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = deployed(&t).await;
        let write = token(&t, &owner, &resource, "mcp:read mcp:write").await;
        let read = token(&t, &owner, &resource, "mcp:read").await;

        assert_eq!(rpc(&resource, Some(&write), "initialize", json!({})).await.0, 200);
        let (status, _, body) = rpc(&resource, Some(&write), "tools/call", json!({"name": "echo", "arguments": {"text": "hi"}})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(rpc(&resource, None, "tools/list", json!({})).await.0, 401);
        assert_eq!(rpc(&resource, Some(&read), "tools/call", json!({"name": "echo", "arguments": {}})).await.0, 403);

        let page = records(&t, &owner, 4).await;
        assert_eq!(page.records.len(), 4);
        let call = page.records.iter().find(|r| r.tool.as_deref() == Some("echo") && r.status == 200).expect("the allowed call");
        assert_eq!(call.method.as_deref(), Some("tools/call"));
        assert_eq!(call.decision, ezforge_proto::Decision::Allowed);
        assert_eq!(call.subject.as_deref(), Some(owner.info.user.id.as_str()));
        assert!(call.client_id.is_some() && call.deployment_id.is_some());
        assert!(call.bytes_in > 0 && call.bytes_out > 0, "{call:?}");
        assert_eq!(call.http_method, "POST");
        let token_id = call.token_id.clone().expect("a token id");
        assert!(!write.contains(&token_id) || token_id.len() < 40, "a token id, not the token");
        let denied: Vec<_> = page.records.iter().filter(|r| r.decision == ezforge_proto::Decision::Denied).collect();
        assert_eq!(denied.len(), 2);
        assert!(denied.iter().any(|r| r.status == 401 && r.reason.as_deref() == Some("no_token")));
        assert!(denied.iter().any(|r| r.status == 403 && r.reason.as_deref() == Some("insufficient_scope")));
        let text = serde_json::to_string(&page).unwrap();
        assert!(!text.contains(&write) && !text.contains(&read), "no token in the log");

        // Filters and pages.
        let admin = t.as_session(&owner);
        let only = |k: &'static str, v: &str| vec![(k, Some(v.to_string()))];
        assert_eq!(admin.server_logs("demo", &only("tool", "echo")).await.unwrap().records.len(), 2);
        assert_eq!(admin.server_logs("demo", &only("decision", "denied")).await.unwrap().records.len(), 2);
        assert_eq!(admin.server_logs("demo", &only("status", "401")).await.unwrap().records.len(), 1);
        assert_eq!(admin.server_logs("demo", &only("since", "1h")).await.unwrap().records.len(), 4);
        let first = admin.server_logs("demo", &only("limit", "3")).await.unwrap();
        assert_eq!(first.records.len(), 3);
        let cursor = first.next_cursor.clone().expect("a second page");
        let second = admin.server_logs("demo", &[("limit", Some("3".into())), ("cursor", Some(cursor))]).await.unwrap();
        assert_eq!(second.records.len(), 1);
        assert!(second.next_cursor.is_none());
        assert!(first.records.iter().all(|r| r.id != second.records[0].id));
        let bad = admin.server_logs("demo", &only("decision", "maybe")).await.unwrap_err();
        assert_eq!((bad.status(), bad.code()), (Some(400), Some(ErrorCode::InvalidRequest)));
        let bad = admin.server_logs("demo", &only("since", "yesterday")).await.unwrap_err();
        assert_eq!(bad.status(), Some(400));

        // Metrics.
        let m = admin.server_metrics("demo", Some("15m")).await.unwrap();
        assert_eq!((m.totals.requests, m.totals.denials, m.totals.errors), (4, 2, 0));
        assert!(m.totals.p50_ms.is_some() && m.totals.p99_ms.is_some());
        assert_eq!(m.series.len(), 15);
        assert_eq!(m.series.iter().map(|p| p.requests).sum::<u64>(), 4);
        let echo = m.tools.iter().find(|x| x.tool == "echo").expect("per-tool metrics");
        assert_eq!((echo.summary.requests, echo.summary.denials), (2, 1));
        let bad = admin.server_metrics("demo", Some("2w")).await.unwrap_err();
        assert_eq!(bad.status(), Some(400));

        // Usage: forwarded requests only.
        let u = admin.project_usage("demo-project", &[]).await.unwrap();
        assert_eq!(u.days.len(), 1);
        let today = &u.days[0];
        assert_eq!((today.requests, today.tool_calls, today.clients, today.users), (2, 1, 1, 1));
        assert_eq!(u.months.last().unwrap().requests, 2);
        assert!(u.quota.is_none());
    }

    async fn each_endpoint_needs_its_scope_project_and_environment(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = deployed(&t).await;
        let write = token(&t, &owner, &resource, "mcp:read mcp:write").await;
        assert_eq!(rpc(&resource, Some(&write), "initialize", json!({})).await.0, 200);
        records(&t, &owner, 1).await;

        let all = ["logs:read", "metrics:read", "billing:read"];
        let with_all = t.as_key(&t.key(&owner, "demo-project", &all, Environment::Live).await);
        let without = t.as_key(&t.key(&owner, "demo-project", &["servers:read", "deployments:write"], Environment::Live).await);
        let test_env = t.as_key(&t.key(&owner, "demo-project", &all, Environment::Test).await);
        let other_owner = t.owner_of("other@example.com", "other-project").await;
        let other = t.as_key(&t.key(&other_owner, "other-project", &all, Environment::Live).await);

        // With the scope: served.
        assert_eq!(with_all.server_logs("demo", &[]).await.unwrap().records.len(), 1);
        assert_eq!(with_all.server_metrics("demo", None).await.unwrap().totals.requests, 1);
        assert_eq!(with_all.project_usage("demo-project", &[]).await.unwrap().days[0].requests, 1);
        assert!(!with_all.audit("demo-project", &[]).await.unwrap().entries.is_empty());

        // Without it: 403 insufficient_scope, for each.
        let scope = |e: ezforge_client::ClientError| (e.status(), e.code());
        let refused = (Some(403), Some(ErrorCode::InsufficientScope));
        assert_eq!(scope(without.server_logs("demo", &[]).await.unwrap_err()), refused);
        assert_eq!(scope(without.server_metrics("demo", None).await.unwrap_err()), refused);
        assert_eq!(scope(without.project_usage("demo-project", &[]).await.unwrap_err()), refused);
        assert_eq!(scope(without.audit("demo-project", &[]).await.unwrap_err()), refused);
        let only_metrics = t.as_key(&t.key(&owner, "demo-project", &["metrics:read"], Environment::Live).await);
        assert_eq!(scope(only_metrics.server_logs("demo", &[]).await.unwrap_err()), refused);
        assert_eq!(scope(only_metrics.project_usage("demo-project", &[]).await.unwrap_err()), refused);

        // The other environment's key: refused for the live server; its usage is its own (none).
        let env = (Some(403), Some(ErrorCode::EnvironmentMismatch));
        assert_eq!(scope(test_env.server_logs("demo", &[]).await.unwrap_err()), env);
        assert_eq!(scope(test_env.server_metrics("demo", None).await.unwrap_err()), env);
        assert!(test_env.project_usage("demo-project", &[]).await.unwrap().days.is_empty());
        let asked = test_env.project_usage("demo-project", &[("environment", Some("live".into()))]).await.unwrap_err();
        assert_eq!(scope(asked), env);
        // Live-environment audit entries (the server, its deployment) are not the test key's.
        let seen = test_env.audit("demo-project", &[]).await.unwrap();
        assert!(seen.entries.iter().all(|e| e.environment != Some(Environment::Live)), "{seen:?}");

        // Another project's key: nothing of this project.
        let e = other.server_logs("demo", &[]).await.unwrap_err();
        assert_eq!(e.status(), Some(403));
        let e = other.project_usage("demo-project", &[]).await.unwrap_err();
        assert_eq!((e.status(), e.code()), (Some(403), Some(ErrorCode::ProjectMismatch)));
        let e = other.audit("demo-project", &[]).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::ProjectMismatch));

        // Quotas are set by signed-in owners only.
        let e = with_all.set_quota("demo-project", Some(10)).await.unwrap_err();
        assert_eq!((e.status(), e.code()), (Some(403), Some(ErrorCode::SessionRequired)));
    }

    async fn following_the_log_sees_a_request_made_after_it_started(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = deployed(&t).await;
        let write = token(&t, &owner, &resource, "mcp:read mcp:write").await;
        // An earlier request, which the follower must not replay.
        assert_eq!(rpc(&resource, Some(&write), "initialize", json!({})).await.0, 200);
        records(&t, &owner, 1).await;

        let key = t.key(&owner, "demo-project", &["logs:read"], Environment::Live).await;
        // The test clock ticks in seconds: step past the earlier request's second.
        t.clock.advance(1);
        let mut stream = t.as_key(&key).follow_server_logs("demo", &[]).await.unwrap();
        assert!(stream.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, _, _) = rpc(&resource, Some(&write), "tools/call", json!({"name": "after", "arguments": {}})).await;
        assert_eq!(status, 200);

        let mut buffer = String::new();
        let record: Value = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                let chunk = stream.chunk().await.unwrap().expect("the stream stays open");
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                if let Some(line) = buffer.lines().find(|l| l.starts_with("data:")) {
                    return serde_json::from_str(line.trim_start_matches("data:").trim()).unwrap();
                }
            }
        })
        .await
        .expect("a record arrives");
        assert_eq!(record["tool"], "after", "the first event is the new request: {record}");
        assert_eq!(record["status"], 200);
        assert!(buffer.contains("event: record"));
    }

    async fn a_monthly_quota_is_enforced_and_survives_a_restart(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = deployed(&t).await;
        let admin = t.as_session(&owner);
        let q = admin.set_quota("demo-project", Some(3)).await.unwrap();
        assert_eq!(q.monthly_requests, Some(3));
        let write = token(&t, &owner, &resource, "mcp:read mcp:write").await;
        for _ in 0..3 {
            assert_eq!(rpc(&resource, Some(&write), "tools/list", json!({})).await.0, 200);
        }
        let (status, headers, body) = rpc(&resource, Some(&write), "tools/list", json!({})).await;
        assert_eq!(status, 429, "{body}");
        let retry: i64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry > 0 && retry <= 31 * 86_400, "{retry}");
        assert_eq!(body["error"]["data"]["quota"], "monthly_requests", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("monthly request quota"), "{body}");
        // Refused requests are denials, not usage.
        records(&t, &owner, 4).await;
        let u = admin.project_usage("demo-project", &[]).await.unwrap();
        let quota = u.quota.expect("the quota");
        assert_eq!((quota.used, quota.monthly_requests), (3, 3));
        let denied = admin.server_logs("demo", &[("decision", Some("denied".into()))]).await.unwrap();
        assert_eq!(denied.records[0].reason.as_deref(), Some("quota_exceeded"));
        assert_eq!(denied.records[0].status, 429);

        // A restart forgets nothing: the count is in the database.
        let t = t.restart().await;
        let resource = format!("{}/mcp/demo", t.url);
        let write = token(&t, &owner, &resource, "mcp:read mcp:write").await;
        let (status, _, body) = rpc(&resource, Some(&write), "tools/list", json!({})).await;
        assert_eq!(status, 429, "still over the quota after a restart: {body}");

        // Raising it lets requests through again, at once on this node.
        t.as_session(&owner).set_quota("demo-project", Some(4)).await.unwrap();
        assert_eq!(rpc(&resource, Some(&write), "tools/list", json!({})).await.0, 200);
        assert_eq!(rpc(&resource, Some(&write), "tools/list", json!({})).await.0, 429);
        t.as_session(&owner).set_quota("demo-project", None).await.unwrap();
        assert_eq!(rpc(&resource, Some(&write), "tools/list", json!({})).await.0, 200);
    }

    async fn a_monthly_quota_starts_over_when_the_month_turns(db) {
        let t = TestServer::start(db).await;
        let (owner, resource) = deployed(&t).await;
        t.as_session(&owner).set_quota("demo-project", Some(1)).await.unwrap();
        let write = token(&t, &owner, &resource, "mcp:read mcp:write").await;
        assert_eq!(rpc(&resource, Some(&write), "tools/list", json!({})).await.0, 200);
        assert_eq!(rpc(&resource, Some(&write), "tools/list", json!({})).await.0, 429);
        records(&t, &owner, 2).await;

        // A minute into next month (UTC), on the server's clock: the month it remembered is over.
        let now = ezforge_core::Clock::now(&t.clock);
        t.clock.advance(ezforge_core::telemetry::calendar::next_month_start(now) - now + 60);
        let owner = t.client().login("owner@example.com", common::PASSWORD).await.unwrap();
        let write = token(&t, &owner, &resource, "mcp:read mcp:write").await;
        assert_eq!(rpc(&resource, Some(&write), "tools/list", json!({})).await.0, 200, "a new month");
        assert_eq!(rpc(&resource, Some(&write), "tools/list", json!({})).await.0, 429, "and its own count");
    }

    async fn control_plane_changes_are_audited(db) {
        let t = TestServer::start(db).await;
        let (owner, _) = deployed(&t).await;
        let admin = t.as_session(&owner);
        let key = t.key(&owner, "demo-project", &["servers:write"], Environment::Live).await;
        // A change made with a key is the key's.
        t.as_key(&key)
            .update_server_by_slug("demo", &ezforge_proto::UpdateServerRequest { name: Some("Renamed".into()), ..Default::default() })
            .await
            .unwrap();
        let keys = admin.list_keys("demo-project").await.unwrap().keys;
        admin.revoke_key("demo-project", &keys[0].id).await.unwrap();
        t.signup("member@example.com").await;
        admin.add_member("demo-project", "member@example.com", ezforge_proto::Role::Member).await.unwrap();

        let page = admin.audit("demo-project", &[]).await.unwrap();
        let actions: Vec<&str> = page.entries.iter().map(|e| e.action.as_str()).collect();
        for expected in ["project.create", "server.create", "deployment.create", "api_key.create", "server.update", "api_key.revoke", "member.add"] {
            assert!(actions.contains(&expected), "{expected} missing from {actions:?}");
        }
        assert_eq!(actions[0], "member.add", "newest first");
        let update = page.entries.iter().find(|e| e.action == "server.update").unwrap();
        assert_eq!(update.actor_kind, ezforge_proto::ActorKind::ApiKey);
        assert_eq!(update.actor_id, keys[0].id);
        assert_eq!(update.details["name"], "Renamed");
        let create = page.entries.iter().find(|e| e.action == "api_key.create").unwrap();
        assert_eq!(create.actor_email.as_deref(), Some("owner@example.com"));
        assert_eq!(create.details["scopes"], json!(["servers:write"]));
        assert!(!serde_json::to_string(&page).unwrap().contains(&key), "no key secret in the audit log");

        let only_keys = admin.audit("demo-project", &[("action", Some("api_key.".into()))]).await.unwrap();
        assert_eq!(only_keys.entries.len(), 2);
        let first = admin.audit("demo-project", &[("limit", Some("2".into()))]).await.unwrap();
        let next = admin.audit("demo-project", &[("limit", Some("100".into())), ("cursor", first.next_cursor.clone())]).await.unwrap();
        assert_eq!(first.entries.len() + next.entries.len(), page.entries.len());
    }
}

#[tokio::test]
async fn prometheus_metrics_are_served_where_configured() {
    let t = TestServer::start_with(ezforge_testkit::TestDb::sqlite(), |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let (_, resource) = deployed(&t).await;
    assert_eq!(rpc(&resource, None, "initialize", json!({})).await.0, 401);
    let addr = t.server.metrics_addr.expect("a metrics address");
    let text = http()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), StatusCode::OK);
    let text = text.text().await.unwrap();
    assert!(
        text.contains("ezforge_gateway_requests_total{decision=\"denied\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("ezforge_gateway_request_duration_seconds_count 1"),
        "{text}"
    );
    assert!(
        text.contains("ezforge_request_log_dropped_total 0"),
        "{text}"
    );
    // Not on the public listener.
    let public = http()
        .get(format!("{}/metrics", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
}
