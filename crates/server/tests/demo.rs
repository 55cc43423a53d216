//! `serve --demo`: the demo user signs in, authorizes a client, and the client calls the
//! built-in MCP server's tools through the gateway.

mod common;

use common::TestServer;
use common::oauth::http;
use serde_json::{Value, json};

async fn call(resource: &str, token: &str, method: &str, params: Value) -> Value {
    http()
        .post(resource)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_demo_works_end_to_end() {
    let t = TestServer::start_with(ezforge_testkit::TestDb::sqlite(), |c| c.demo = true).await;
    let demo = t.server.demo.clone().expect("demo info");
    assert_eq!(demo.mcp_url, format!("{}/mcp/demo", t.url));
    let password = demo.password.expect("a fresh demo prints its password");
    let session = t
        .client()
        .login(&demo.email, password.trim())
        .await
        .expect("the demo user signs in");
    let client_id = t.public_client().await;
    let code = t
        .code_for(&session, &client_id, &demo.mcp_url, "mcp:read mcp:write")
        .await;
    let token = t.exchange(&client_id, &code).await.1["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    let init = call(&demo.mcp_url, &token, "initialize", json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}})).await;
    assert_eq!(init["result"]["serverInfo"]["name"], "ezforge-demo");
    let tools = call(&demo.mcp_url, &token, "tools/list", json!({})).await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "add", "increment", "whoami"]);
    let echo = call(
        &demo.mcp_url,
        &token,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "héllo"}}),
    )
    .await;
    assert_eq!(echo["result"]["content"][0]["text"], "héllo");
    let sum = call(
        &demo.mcp_url,
        &token,
        "tools/call",
        json!({"name": "add", "arguments": {"a": 2, "b": 40}}),
    )
    .await;
    assert_eq!(sum["result"]["content"][0]["text"], "42");
    let first: u64 = call(
        &demo.mcp_url,
        &token,
        "tools/call",
        json!({"name": "increment"}),
    )
    .await["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let second: u64 = call(
        &demo.mcp_url,
        &token,
        "tools/call",
        json!({"name": "increment"}),
    )
    .await["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(second, first + 1, "state changes");
    let who = call(
        &demo.mcp_url,
        &token,
        "tools/call",
        json!({"name": "whoami"}),
    )
    .await;
    assert!(
        who["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains(&session.info.user.id)
    );
    // The demo server answers only the gateway: a direct call has no identity JWT.
    let direct = http()
        .post(format!("{}/_demo/mcp", t.url))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "increment"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 401);
    let forged = http()
        .post(format!("{}/_demo/mcp", t.url))
        .header("x-ezforge-identity", "a.b.c")
        .header("x-ezforge-subject", "usr_admin")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
}
