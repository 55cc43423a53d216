//! Nothing the server writes down — the request log, the audit log, the process log at debug
//! level — holds a password, session, API key, upstream credential, authorization code or
//! token. The test drives every flow that handles one and scans all of it for each.

mod common;

use axum::Router;
use axum::routing::post;
use common::TestServer;
use common::oauth::http;
use ezforge_proto::{CreateDeploymentRequest, Environment};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, OnceLock};

/// Everything the process logs, at debug level, for the whole test binary.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_ansi(false)
            .with_writer(move || Writer(sink.clone()))
            .try_init();
        buffer
    })
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn upstream() -> String {
    async fn handle(body: String) -> axum::Json<Value> {
        let msg: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "u", "version": "1"}}}))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(
        async move { axum::serve(listener, Router::new().route("/mcp", post(handle))).await },
    );
    url
}

/// Every text column of the tables the server writes as it works.
async fn dump(db_url: &str) -> String {
    let store = ezforge_store::SqlStore::open(db_url, 1).await.unwrap();
    let mut out = String::new();
    for (table, cols) in [
        ("request_log", "id || server_id || records"),
        ("audit_log", "id || actor_id || action || target || details"),
        ("usage_actors", "actor"),
    ] {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT CAST({cols} AS TEXT) FROM {table}"
        )))
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert!(
            !rows.is_empty(),
            "{table} is empty: the test did not exercise it"
        );
        out.push_str(&rows.join("\n"));
    }
    out
}

ezforge_testkit::backend_tests! {
    async fn no_secret_reaches_any_log(db) {
        let log = captured();
        let t = TestServer::start(db).await;
        let (owner, resource) = t.with_mcp_server().await;
        let admin = t.as_session(&owner);
        let key = t.key(&owner, "demo-project", &["logs:read", "servers:write"], Environment::Live).await;
        let upstream_secret = "upstream-credential-5f2b9c";
        let mut headers = std::collections::BTreeMap::new();
        headers.insert("authorization".to_string(), format!("Bearer {upstream_secret}"));
        admin
            .deploy("demo", &CreateDeploymentRequest { upstream_url: upstream().await, headers, timeout_ms: Some(2000), force: false })
            .await
            .unwrap();

        // The OAuth flow: code, access token, refresh token, rotation.
        let client_id = t.public_client().await;
        let code = t.code_for(&owner, &client_id, &resource, "mcp:read mcp:write offline_access").await;
        let (_, tokens) = t.exchange(&client_id, &code).await;
        let access = tokens["access_token"].as_str().unwrap().to_string();
        let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
        let (_, rotated) = t.refresh(&client_id, &refresh).await;
        let access2 = rotated["access_token"].as_str().unwrap().to_string();
        let refresh2 = rotated["refresh_token"].as_str().unwrap().to_string();

        // Gateway traffic: allowed, refused, and a token in the query string (refused).
        for token in [&access, &access2] {
            let resp = http().post(&resource).bearer_auth(token)
                .header("accept", "application/json, text/event-stream")
                .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}))
                .send().await.unwrap();
            assert_eq!(resp.status(), 200);
        }
        let resp = http().post(format!("{resource}?access_token={access}")).json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let resp = http().post(&resource).bearer_auth(format!("{access}x")).json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).send().await.unwrap();
        assert_eq!(resp.status(), 401);

        // Control plane with the key; a failed sign-in with a wrong password.
        t.as_key(&key).update_server_by_slug("demo", &ezforge_proto::UpdateServerRequest { name: Some("Renamed".into()), ..Default::default() }).await.unwrap();
        let wrong = "wrong-password-8c1d7e";
        assert!(t.client().login("owner@example.com", wrong).await.is_err());
        let login = t.client().login("owner@example.com", common::PASSWORD).await.unwrap();

        // What the API serves back.
        let mut seen = String::new();
        for _ in 0..100 {
            let page = t.as_key(&key).server_logs("demo", &[]).await.unwrap();
            if page.records.len() >= 4 {
                seen.push_str(&serde_json::to_string(&page).unwrap());
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(!seen.is_empty(), "the request log was written");
        seen.push_str(&serde_json::to_string(&t.as_key(&key).audit("demo-project", &[]).await.unwrap()).unwrap());
        seen.push_str(&dump(&t.db.url).await);
        let process = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
        assert!(process.contains("DEBUG") || process.contains("INFO"), "the process log was captured");

        let secrets = [
            ("password", common::PASSWORD.to_string()),
            ("wrong password", wrong.to_string()),
            ("session", owner.token.clone()),
            ("second session", login.token.clone()),
            ("CSRF token", owner.info.csrf_token.clone()),
            ("API key", key.clone()),
            ("API key body", key[9..].to_string()),
            ("upstream credential", upstream_secret.to_string()),
            ("authorization code", code.clone()),
            ("access token", access.clone()),
            ("rotated access token", access2.clone()),
            ("refresh token", refresh.clone()),
            ("rotated refresh token", refresh2.clone()),
        ];
        for (what, secret) in &secrets {
            assert!(!seen.contains(secret.as_str()), "the {what} is in the request or audit log");
            assert!(!process.contains(secret.as_str()), "the {what} is in the process log");
        }
        // The token's signature alone would be enough to recognise it.
        let signature = access.rsplit('.').next().unwrap();
        assert!(!process.contains(signature) && !seen.contains(signature));
    }
}
