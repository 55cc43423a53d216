//! `ezforge serve --demo`: a ready-to-try instance. A demo user (credentials printed), a
//! project and a server `demo`, deployed to a small MCP server built into this process at
//! `/_demo/mcp` (Streamable HTTP, JSON answers) with a read-only tool and state-changing ones.

use crate::routes::AppState;
use axum::Json;
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ezforge_core::model::{DeploymentRow, MemberRow, ProjectRow, ServerRow};
use ezforge_core::store::UserAdmission;
use ezforge_proto::{Environment, Role};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

pub const DEMO_EMAIL: &str = "demo@ezforge.local";
pub const DEMO_SLUG: &str = "demo";

/// What `serve --demo` prints.
#[derive(Debug, Clone)]
pub struct DemoInfo {
    pub email: String,
    /// `None` when the demo user existed before and its password file is gone.
    pub password: Option<String>,
    pub mcp_url: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/_demo/mcp",
        post(mcp)
            .get(|| async { StatusCode::METHOD_NOT_ALLOWED })
            .delete(|| async { StatusCode::OK }),
    )
}

fn tools() -> Value {
    json!([
        {"name": "echo", "description": "Repeat a text back.", "annotations": {"readOnlyHint": true},
         "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
        {"name": "add", "description": "Add two numbers.", "annotations": {"readOnlyHint": true},
         "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}},
        {"name": "increment", "description": "Add one to a counter kept by the server and return it (changes state).",
         "annotations": {"readOnlyHint": false}, "inputSchema": {"type": "object", "properties": {}}},
        {"name": "whoami", "description": "Show who the gateway says is calling.", "annotations": {"readOnlyHint": true},
         "inputSchema": {"type": "object", "properties": {}}}
    ])
}

fn text(id: &Value, text: String) -> Response {
    Json(json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": text}], "isError": false}})).into_response()
}

fn error(id: &Value, code: i64, message: &str) -> Response {
    Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
        .into_response()
}

/// The demo MCP server: one JSON-RPC message per POST, JSON answers. It answers only what
/// comes through the gateway: the identity JWT must be ezForge's, for the demo server — the
/// check every upstream should make before trusting the `X-Ezforge-*` headers.
async fn mcp(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let identity = headers
        .get("x-ezforge-identity")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| {
            state
                .oauth
                .verify_identity_token(t, &state.oauth.resource_uri(DEMO_SLUG))
                .ok()
        });
    let Some(identity) = identity else {
        return (
            StatusCode::UNAUTHORIZED,
            error(
                &Value::Null,
                -32001,
                "call this server through ezForge's gateway",
            ),
        )
            .into_response();
    };
    let Ok(msg) = serde_json::from_str::<Value>(&body) else {
        return error(&Value::Null, -32700, "parse error");
    };
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = msg.get("method").and_then(Value::as_str) else {
        return StatusCode::ACCEPTED.into_response();
    };
    if method.starts_with("notifications/") {
        return StatusCode::ACCEPTED.into_response();
    }
    let args = msg
        .pointer("/params/arguments")
        .cloned()
        .unwrap_or(json!({}));
    match method {
        "initialize" => Json(json!({"jsonrpc": "2.0", "id": id, "result": {
            "protocolVersion": msg.pointer("/params/protocolVersion").and_then(Value::as_str).unwrap_or("2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "ezforge-demo", "version": env!("CARGO_PKG_VERSION")},
            "instructions": "A demo MCP server behind ezForge's gateway."
        }}))
        .into_response(),
        "ping" => Json(json!({"jsonrpc": "2.0", "id": id, "result": {}})).into_response(),
        "tools/list" => Json(json!({"jsonrpc": "2.0", "id": id, "result": {"tools": tools()}})).into_response(),
        "tools/call" => match msg.pointer("/params/name").and_then(Value::as_str) {
            Some("echo") => text(&id, args["text"].as_str().unwrap_or_default().to_string()),
            Some("add") => match (args["a"].as_f64(), args["b"].as_f64()) {
                (Some(a), Some(b)) => text(&id, format!("{}", a + b)),
                _ => error(&id, -32602, "add needs numbers a and b"),
            },
            Some("increment") => text(&id, format!("{}", COUNTER.fetch_add(1, Ordering::SeqCst) + 1)),
            Some("whoami") => {
                let c = |name: &str| identity[name].as_str().unwrap_or("-").to_string();
                text(&id, format!("subject {} via client {} with scopes {}", c("sub"), c("client_id"), c("scope")))
            }
            _ => error(&id, -32602, "unknown tool"),
        },
        _ => error(&id, -32601, "method not found"),
    }
}

/// Creates (or finds) the demo user, project, server and deployment.
pub async fn prepare(
    state: &AppState,
    data_dir: &Path,
    public_url: &str,
) -> Result<DemoInfo, String> {
    let store = state.core.store();
    let now = state.core.now();
    let password_file = data_dir.join("demo-password");
    let user = match store
        .user_by_email(DEMO_EMAIL)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(user) => user,
        None => {
            let password = format!("demo-{}", ezforge_core::ids::random_base62(16));
            std::fs::create_dir_all(data_dir).map_err(|e| e.to_string())?;
            crate::config::write_private_file(&password_file, password.as_bytes())
                .map_err(|e| e.to_string())?;
            let row = ezforge_core::model::UserRow {
                id: ezforge_core::ids::user_id(),
                email: DEMO_EMAIL.into(),
                password_hash: ezforge_core::password::hash(password)
                    .await
                    .map_err(|e| e.to_string())?,
                is_admin: false,
                email_verified: false,
                created_at: now,
            };
            store
                .insert_user(&row, UserAdmission::Open)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the demo user could not be created")?
        }
    };
    let project = match store.project("demo").await.map_err(|e| e.to_string())? {
        Some(p) => p,
        None => {
            let p = ProjectRow {
                id: ezforge_core::ids::project_id(),
                name: "demo".into(),
                created_by: user.id.clone(),
                created_at: now,
            };
            let m = MemberRow {
                project_id: p.id.clone(),
                user_id: user.id.clone(),
                role: Role::Owner,
                created_at: now,
            };
            store
                .insert_project(&p, &m)
                .await
                .map_err(|e| e.to_string())?;
            p
        }
    };
    let server = match store
        .server_by_slug(DEMO_SLUG)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(s) => s,
        None => {
            let s = ServerRow {
                id: ezforge_core::ids::server_id(),
                project_id: project.id.clone(),
                name: "Demo".into(),
                slug: DEMO_SLUG.into(),
                environment: Environment::Live,
                created_by: user.id.clone(),
                created_at: now,
                updated_at: now,
                access_policy: Default::default(),
                byoa: None,
                tool_policy: Default::default(),
                active_deployment_id: None,
            };
            store.insert_server(&s).await.map_err(|e| e.to_string())?;
            s
        }
    };
    let upstream = format!("{public_url}/_demo/mcp");
    let active = match &server.active_deployment_id {
        Some(id) => store.deployment(id).await.map_err(|e| e.to_string())?,
        None => None,
    };
    // The built-in upstream moves with the listening address: redeploy when it changed.
    if active.as_ref().is_none_or(|d| d.upstream_url != upstream) {
        let d = DeploymentRow {
            id: ezforge_core::ids::new_id("dep"),
            server_id: server.id.clone(),
            upstream_url: upstream,
            credentials: None,
            timeout_ms: 10_000,
            health: "built-in demo MCP server".into(),
            created_by: user.id.clone(),
            created_at: now,
        };
        store
            .insert_and_activate_deployment(&d)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(DemoInfo {
        email: DEMO_EMAIL.into(),
        password: std::fs::read_to_string(&password_file).ok(),
        mcp_url: state.oauth.resource_uri(DEMO_SLUG),
    })
}
