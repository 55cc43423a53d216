//! The official Rust MCP SDK, `rmcp`, on both sides of ezForge's gateway, on SQLite and on
//! PostgreSQL: an rmcp Streamable HTTP *server* (tools `echo`, read-only; `increment`, which
//! changes the server's state; `slow`, which streams progress before it answers; `announce`,
//! which makes the server send a notification of its own) is deployed behind `/mcp/demo`, and
//! an rmcp Streamable HTTP *client* holding an access token from the OAuth flow talks to it
//! through the gateway.
//!
//! The upstream runs in each of the modes rmcp 3.11 offers: stateful (sessions, SSE answers,
//! the standalone GET stream, DELETE at the end), stateless with SSE answers, and stateless with
//! JSON answers. (rmcp's `json_response` only applies without sessions: in session mode it
//! always answers with SSE.) A recorder wrapped around the upstream's router checks what the
//! gateway sent it: the subject headers, never the client's `Authorization`, the upstream's own
//! `Host`, and the session id.
//!
//! rmcp is used unmodified, through its public API only.

mod common;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use common::{Browser, EMAIL, PASSWORD, claims};
use ezforge_client::{Auth, Client};
use ezforge_proto::{CreateDeploymentRequest, CreateServerRequest, SignupRequest};
use ezforge_server::{RunningServer, ServerConfig};
use ezforge_testkit::TestDb;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientRequest, Implementation, PingRequest,
    ProgressNotificationParam, ProtocolVersion, Request as McpRequest, RequestMetaObject,
    ServerCapabilities, ServerConfig as McpServerConfig, ServerResult,
};
use rmcp::service::{
    ClientInitializeError, NotificationContext, PeerRequestOptions, RunningService,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{AuthorizationRequest, OAuthState};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{
    ClientHandler, ClientLifecycleMode, ClientServiceExt, ErrorData, Peer, RoleClient, RoleServer,
    ServerHandler, tool, tool_handler, tool_router,
};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// Where the browser is sent back to; nothing listens there.
const REDIRECT: &str = "http://127.0.0.1:33419/callback";
/// What the upstream calls itself in its `initialize` answer.
const UPSTREAM_NAME: &str = "rmcp-counter";
const UPSTREAM_VERSION: &str = "3.11.0-interop";
/// Non-ASCII on purpose: it crosses the gateway inside JSON and SSE frames.
const ECHO_TEXT: &str = "héllo through the gateway ✓";

// ---------------------------------------------------------------------------------------------
// The upstream: a real rmcp Streamable HTTP server.

#[derive(Debug, serde::Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct EchoArgs {
    /// The text to send back.
    text: String,
}

/// One instance per session (stateful) or per request (stateless): rmcp calls the service
/// factory for each, so the counter shows which of the two the client got.
#[derive(Clone)]
struct Counter {
    count: Arc<AtomicU64>,
    /// Shared by all instances: lets the test finish a `slow` call.
    release: Arc<Notify>,
    tool_router: ToolRouter<Self>,
}

impl Counter {
    fn new(release: Arc<Notify>) -> Counter {
        Counter {
            count: Arc::new(AtomicU64::new(0)),
            release,
            tool_router: Self::tool_router(),
        }
    }
}

#[tool_router]
impl Counter {
    /// Sends the text back.
    #[tool(annotations(read_only_hint = true))]
    fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    /// Adds one to this server instance's counter and returns the new value.
    #[tool]
    fn increment(&self) -> String {
        (self.count.fetch_add(1, Ordering::SeqCst) + 1).to_string()
    }

    /// Reports progress at once, then answers only when the test releases it: the progress
    /// can reach the client before the answer only if every hop streams.
    #[tool]
    async fn slow(
        &self,
        meta: RequestMetaObject,
        client: Peer<RoleServer>,
    ) -> Result<String, ErrorData> {
        let token = meta
            .get_progress_token()
            .ok_or_else(|| ErrorData::invalid_params("a progress token is required", None))?;
        client
            .notify_progress(
                ProgressNotificationParam::new(token, 1.0)
                    .with_total(2.0)
                    .with_message("halfway"),
            )
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        self.release.notified().await;
        Ok("released".into())
    }

    /// Answers, then has the server send `notifications/tools/list_changed` on its own, outside
    /// any request: in a session it travels on the client's standalone GET stream.
    #[tool]
    fn announce(&self, client: Peer<RoleServer>) -> String {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = client.notify_tool_list_changed().await;
        });
        "soon".into()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Counter {
    fn get_info(&self) -> McpServerConfig {
        McpServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(UPSTREAM_NAME, UPSTREAM_VERSION))
    }
}

/// One HTTP request the upstream received, and how it answered (the head only).
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// The JSON-RPC method of a POST body, or `response` for a JSON-RPC response.
    rpc: Option<String>,
    /// `params.name` of a `tools/call`.
    tool: Option<String>,
    headers: HeaderMap,
    status: u16,
    content_type: Option<String>,
    /// The `Mcp-Session-Id` the upstream answered with.
    session: Option<String>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn line(&self) -> String {
        format!(
            "{} {}{} -> {} {}",
            self.method,
            self.rpc.as_deref().unwrap_or("-"),
            self.tool
                .as_deref()
                .map(|t| format!(" {t}"))
                .unwrap_or_default(),
            self.status,
            self.content_type.as_deref().unwrap_or("-")
        )
    }
}

type SeenLog = Arc<Mutex<Vec<Seen>>>;

async fn record(State(log): State<SeenLog>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .expect("request body");
    let body = serde_json::from_slice::<Value>(&bytes).ok();
    let rpc = body.as_ref().map(|v| {
        v.get("method")
            .and_then(Value::as_str)
            .unwrap_or("response")
            .to_string()
    });
    let tool = body
        .as_ref()
        .and_then(|v| v.pointer("/params/name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let method = parts.method.to_string();
    let headers = parts.headers.clone();
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let text = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let seen = Seen {
        method,
        rpc,
        tool,
        headers,
        status: response.status().as_u16(),
        content_type: text(header::CONTENT_TYPE.as_str()),
        session: text("mcp-session-id"),
    };
    log.lock().expect("log").push(seen);
    response
}

struct Upstream {
    /// `http://127.0.0.1:PORT/mcp`
    url: String,
    /// `127.0.0.1:PORT`
    authority: String,
    log: SeenLog,
    release: Arc<Notify>,
    stop: Box<dyn FnOnce() + Send>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// An rmcp server on 127.0.0.1:0 with rmcp's default Host allow-list (loopback names).
    async fn start(config: StreamableHttpServerConfig) -> Upstream {
        let ct = config.cancellation_token.clone();
        let release = Arc::new(Notify::new());
        let factory = {
            let release = release.clone();
            move || Ok(Counter::new(release.clone()))
        };
        let service: StreamableHttpService<Counter, LocalSessionManager> =
            StreamableHttpService::new(factory, Default::default(), config);
        let log = SeenLog::default();
        let router = axum::Router::new()
            .nest_service("/mcp", service)
            .layer(axum::middleware::from_fn_with_state(log.clone(), record));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let shutdown = ct.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
                .await
                .expect("upstream serves");
        });
        Upstream {
            url: format!("http://{addr}/mcp"),
            authority: addr.to_string(),
            log,
            release,
            stop: Box::new(move || ct.cancel()),
            task,
        }
    }

    fn take(&self) -> Vec<Seen> {
        let seen = std::mem::take(&mut *self.log.lock().expect("log"));
        for s in &seen {
            eprintln!("upstream <- {}", s.line());
        }
        seen
    }

    /// Waits up to five seconds for a request matching `what` to have arrived.
    async fn wait_for(&self, what: impl Fn(&Seen) -> bool) -> bool {
        for _ in 0..100 {
            if self.log.lock().expect("log").iter().any(&what) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn stop(self) {
        (self.stop)();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the upstream stops")
            .expect("the upstream task");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Sessions; every POST answered with an SSE stream.
    StatefulSse,
    /// No sessions; POSTs answered with an SSE stream.
    StatelessSse,
    /// No sessions; POSTs answered with `application/json`.
    StatelessJson,
}

impl Mode {
    fn config(self) -> StreamableHttpServerConfig {
        let config = StreamableHttpServerConfig::default();
        match self {
            Mode::StatefulSse => config.with_legacy_session_mode(true),
            Mode::StatelessSse => config
                .with_legacy_session_mode(false)
                .with_json_response(false),
            Mode::StatelessJson => config
                .with_legacy_session_mode(false)
                .with_json_response(true),
        }
    }
    fn stateful(self) -> bool {
        self == Mode::StatefulSse
    }
    /// The content type of the upstream's answers to requests.
    fn answers_with(self) -> &'static str {
        match self {
            Mode::StatefulSse | Mode::StatelessSse => "text/event-stream",
            Mode::StatelessJson => "application/json",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ezForge on 127.0.0.1:0 with a fresh database, the owner, `demo-project` and the server `demo`.

struct Ezforge {
    server: RunningServer,
    url: String,
    owner: Client,
    _data: tempfile::TempDir,
    _db: TestDb,
}

impl Ezforge {
    async fn start(db: TestDb) -> Ezforge {
        let data = tempfile::tempdir().expect("data dir");
        let mut config = ServerConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            data.path().to_path_buf(),
        );
        config.database_url = Some(db.url.clone());
        let server = ezforge_server::start(config).await.expect("server starts");
        let url = format!("http://{}", server.addr);
        let session = Client::new(&url)
            .signup(&SignupRequest {
                email: EMAIL.into(),
                password: PASSWORD.into(),
                invite_code: None,
            })
            .await
            .expect("sign-up");
        let owner = Client::new(&url).with_auth(Auth::Session {
            token: session.token.clone(),
            csrf: session.info.csrf_token.clone(),
        });
        owner
            .create_project("demo-project")
            .await
            .expect("create project");
        owner
            .create_server(
                "demo-project",
                &CreateServerRequest {
                    name: "Demo".into(),
                    slug: "demo".into(),
                    environment: None,
                    ..Default::default()
                },
            )
            .await
            .expect("create server");
        Ezforge {
            server,
            url,
            owner,
            _data: data,
            _db: db,
        }
    }

    fn resource(&self) -> String {
        format!("{}/mcp/demo", self.url)
    }

    /// Deploys the upstream behind `demo`; the deploy's health check is an MCP `initialize`.
    async fn deploy(&self, upstream: &Upstream) {
        let deployment = self
            .owner
            .deploy(
                "demo",
                &CreateDeploymentRequest {
                    upstream_url: upstream.url.clone(),
                    headers: Default::default(),
                    timeout_ms: Some(5000),
                    force: false,
                },
            )
            .await
            .expect("deploy: the rmcp server answers the health check");
        eprintln!("health: {}", deployment.health);
        assert!(deployment.active);
        assert!(
            deployment.health.starts_with("ok: "),
            "{}",
            deployment.health
        );
        assert!(
            deployment
                .health
                .contains(&format!("{UPSTREAM_NAME} {UPSTREAM_VERSION}")),
            "the health check names the rmcp server: {}",
            deployment.health
        );
        // The health check's own traffic: an initialize, no subject, and (stateful) the DELETE
        // that ends the session it opened (sent after the deploy answered, so waited for).
        let session = upstream.log.lock().expect("log")[0].session.clone();
        if let Some(session) = &session {
            assert!(
                upstream
                    .wait_for(
                        |s| s.method == "DELETE" && s.header("mcp-session-id") == Some(session)
                    )
                    .await,
                "the health check ends its session"
            );
        }
        let seen = upstream.take();
        assert_eq!(seen[0].rpc.as_deref(), Some("initialize"));
        assert_eq!(seen[0].status, 200);
        assert!(seen.iter().all(|s| s.header("x-ezforge-subject").is_none()));
    }

    async fn stop(self) {
        self.server.shutdown().await.expect("clean shutdown");
    }
}

// ---------------------------------------------------------------------------------------------
// An access token for `/mcp/demo`: rmcp's OAuth client, and a person at a browser who signs in
// and allows (the same walk as rmcp_oauth.rs).

/// An access token for `resource` with `scopes` (rmcp adds `offline_access`), and its claims.
async fn access_token(resource: &str, scopes: &[&str]) -> (String, Value) {
    let mut oauth = OAuthState::new(resource, None)
        .await
        .expect("rmcp OAuth state");
    oauth
        .start_authorization(
            AuthorizationRequest::new(REDIRECT)
                .with_client_name("rmcp gateway interop")
                .with_scopes(scopes.iter().copied()),
        )
        .await
        .expect("rmcp discovers, registers and builds the authorization URL");
    let auth_url = oauth
        .get_authorization_url()
        .await
        .expect("authorization URL");
    let callback = Browser::new().authorize(&auth_url, REDIRECT).await;
    oauth
        .handle_callback_url(&callback)
        .await
        .expect("rmcp exchanges the code");
    let (_, tokens) = oauth.get_credentials().await.expect("rmcp credentials");
    let tokens = serde_json::to_value(tokens.expect("rmcp holds tokens")).expect("JSON");
    let access = tokens["access_token"]
        .as_str()
        .expect("an access token")
        .to_string();
    let c = claims(&access);
    assert_eq!(c["aud"], resource);
    (access, c)
}

// ---------------------------------------------------------------------------------------------
// The MCP client: rmcp's Streamable HTTP client, pointed at the gateway.

/// rmcp's client handler, passing on the notifications it gets.
struct Watcher {
    events: mpsc::UnboundedSender<String>,
}

impl ClientHandler for Watcher {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let message = params.message.unwrap_or_default();
        let _ = self
            .events
            .send(format!("progress {}: {message}", params.progress));
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.events.send("tools/list_changed".into());
    }
}

type McpClient = RunningService<RoleClient, Watcher>;

/// The next notification the client got, within five seconds.
async fn next_event(events: &mut Events, what: &str) -> String {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: no notification reached the client"))
        .expect("the client handler is alive")
}

type Events = mpsc::UnboundedReceiver<String>;

/// rmcp's client at `url` (the gateway, with `token`; or the upstream itself, without), started
/// with `lifecycle`.
async fn start_client(
    url: &str,
    token: Option<&str>,
    lifecycle: ClientLifecycleMode,
) -> Result<(McpClient, Events), ClientInitializeError> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url)
        // A lost session must show up as a failure here, not be papered over.
        .reinit_on_expired_session(false);
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    let (events, received) = mpsc::unbounded_channel();
    let client = tokio::time::timeout(
        Duration::from_secs(10),
        Watcher { events }.serve_with_lifecycle(transport, lifecycle),
    )
    .await
    .expect("the client's start does not hang")?;
    Ok((client, received))
}

/// rmcp's client at the gateway, started with the `initialize` handshake (rmcp's default).
async fn connect(resource: &str, token: &str) -> (McpClient, Events) {
    start_client(resource, Some(token), ClientLifecycleMode::Initialize)
        .await
        .expect("rmcp initializes through the gateway")
}

fn text_of(result: &CallToolResult) -> String {
    assert_ne!(result.is_error, Some(true), "{result:?}");
    assert_eq!(result.content.len(), 1, "{result:?}");
    result.content[0]
        .as_text()
        .unwrap_or_else(|| panic!("text content: {result:?}"))
        .text
        .clone()
}

async fn call(client: &McpClient, tool: &'static str, args: Value) -> CallToolResult {
    let mut params = CallToolRequestParams::new(tool);
    if let Value::Object(args) = args {
        params = params.with_arguments(args);
    }
    tokio::time::timeout(Duration::from_secs(10), client.call_tool(params))
        .await
        .unwrap_or_else(|_| panic!("{tool} does not hang"))
        .unwrap_or_else(|e| panic!("{tool} through the gateway: {e:?}"))
}

// ---------------------------------------------------------------------------------------------

/// Deploy, authorize, then initialize → tools/list → echo → increment twice → slow (streamed
/// progress) → (stateful) a notification on the GET stream → close, with the upstream in `mode`;
/// checks what the client got and what the upstream was sent.
async fn round_trip(db: TestDb, mode: Mode) {
    let upstream = Upstream::start(mode.config()).await;
    let ez = Ezforge::start(db).await;
    ez.deploy(&upstream).await;
    let resource = ez.resource();
    let (token, c) = access_token(&resource, &["mcp:read", "mcp:write"]).await;
    let subject = c["sub"].as_str().expect("sub").to_string();
    let client_id = c["client_id"].as_str().expect("client_id").to_string();

    // initialize: the client sees the rmcp server's own answer.
    let (client, mut events) = connect(&resource, &token).await;
    let info = client.peer_info().expect("the server's initialize result");
    let server = info.server_info.as_ref().expect("serverInfo");
    assert_eq!(server.name, UPSTREAM_NAME);
    assert_eq!(server.version, UPSTREAM_VERSION);
    assert!(info.capabilities.tools.is_some(), "{info:?}");

    // tools/list: every tool, as the upstream describes it.
    let tools = tokio::time::timeout(Duration::from_secs(10), client.list_all_tools())
        .await
        .expect("tools/list does not hang")
        .expect("tools/list through the gateway");
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(names, ["announce", "echo", "increment", "slow"]);
    let echo = tools.iter().find(|t| t.name == "echo").expect("echo");
    assert_eq!(echo.description.as_deref(), Some("Sends the text back."));
    assert_eq!(
        echo.annotations.as_ref().and_then(|a| a.read_only_hint),
        Some(true)
    );
    assert_eq!(
        echo.input_schema["properties"]["text"]["type"], "string",
        "{:?}",
        echo.input_schema
    );

    // tools/call, read-only and state-changing.
    let echoed = call(&client, "echo", json!({"text": ECHO_TEXT})).await;
    assert_eq!(text_of(&echoed), ECHO_TEXT);
    let first = text_of(&call(&client, "increment", json!({})).await);
    let second = text_of(&call(&client, "increment", json!({})).await);
    if mode.stateful() {
        assert_eq!((first.as_str(), second.as_str()), ("1", "2"), "one session");
    } else {
        // Stateless: rmcp builds a fresh server for each request.
        assert_eq!((first.as_str(), second.as_str()), ("1", "1"), "no session");
    }

    // Streaming: the progress of a call still running reaches the client, then the answer.
    let slow = client
        .send_cancellable_request(
            ClientRequest::CallToolRequest(McpRequest::new(CallToolRequestParams::new("slow"))),
            PeerRequestOptions::no_options(),
        )
        .await
        .expect("tools/call slow is sent");
    assert_eq!(
        next_event(&mut events, "progress of a running call").await,
        "progress 1: halfway",
        "the SSE event reaches the client while the upstream still holds the answer"
    );
    upstream.release.notify_one();
    let answer = tokio::time::timeout(Duration::from_secs(10), slow.await_response())
        .await
        .expect("the released call answers")
        .expect("tools/call slow");
    match answer {
        ServerResult::CallToolResult(result) => assert_eq!(text_of(&result), "released"),
        other => panic!("not a tool result: {other:?}"),
    }

    if mode.stateful() {
        // The standalone GET stream is open, and carries what the server sends on its own.
        assert!(
            upstream
                .wait_for(|s| s.method == "GET" && s.status == 200)
                .await,
            "rmcp's GET stream reaches the upstream through the gateway"
        );
        assert_eq!(text_of(&call(&client, "announce", json!({})).await), "soon");
        assert_eq!(
            next_event(&mut events, "a notification on the GET stream").await,
            "tools/list_changed"
        );
    }
    assert!(events.try_recv().is_err(), "no other notification");

    // Close: a stateful client ends its session with a DELETE.
    tokio::time::timeout(Duration::from_secs(10), client.cancel())
        .await
        .expect("the client closes")
        .expect("the client's task");
    if mode.stateful() {
        assert!(
            upstream.wait_for(|s| s.method == "DELETE").await,
            "rmcp's DELETE reaches the upstream through the gateway"
        );
    }

    // What the upstream received from the gateway.
    let seen = upstream.take();
    let rpcs: Vec<&str> = seen
        .iter()
        .filter(|s| s.method == "POST")
        .map(|s| s.rpc.as_deref().unwrap_or("?"))
        .collect();
    assert_eq!(
        rpcs,
        [
            "initialize",
            "notifications/initialized",
            "tools/list",
            "tools/call",
            "tools/call",
            "tools/call",
            "tools/call"
        ]
        .into_iter()
        .chain(mode.stateful().then_some("tools/call"))
        .collect::<Vec<_>>()
    );
    for s in &seen {
        let line = s.line();
        assert!(
            s.header("authorization").is_none(),
            "the client's token stays at the gateway: {line}"
        );
        assert_eq!(
            s.header("x-ezforge-subject"),
            Some(subject.as_str()),
            "{line}"
        );
        assert_eq!(
            s.header("x-ezforge-client-id"),
            Some(client_id.as_str()),
            "{line}"
        );
        let scopes = s.header("x-ezforge-scopes").unwrap_or_default();
        assert!(
            scopes.split(' ').any(|x| x == "mcp:write"),
            "{line}: {scopes}"
        );
        assert!(s.header("x-ezforge-identity").is_some(), "{line}");
        assert_eq!(
            s.header("host"),
            Some(upstream.authority.as_str()),
            "{line}"
        );
        assert!(s.status < 300, "{line}");
    }
    for s in seen.iter().filter(|s| s.method == "POST") {
        let line = s.line();
        if s.rpc.as_deref() == Some("notifications/initialized") {
            assert_eq!(s.status, 202, "{line}");
            continue;
        }
        let content_type = s.content_type.as_deref().unwrap_or_default();
        // `slow` sends a notification before its answer: rmcp then answers with SSE in JSON
        // mode too.
        let expected = match s.tool.as_deref() {
            Some("slow") => "text/event-stream",
            _ => mode.answers_with(),
        };
        assert!(content_type.starts_with(expected), "{line}");
        let accept = s.header("accept").unwrap_or_default();
        assert!(
            accept.contains("application/json") && accept.contains("text/event-stream"),
            "the client's Accept is passed on: {line}: {accept}"
        );
    }
    let initialize = &seen[0];
    if mode.stateful() {
        let session = initialize
            .session
            .as_deref()
            .expect("the upstream opens a session");
        for s in &seen[1..] {
            assert_eq!(
                s.header("mcp-session-id"),
                Some(session),
                "the client got the session id through the gateway and sends it back: {}",
                s.line()
            );
        }
        for s in &seen[1..] {
            assert!(
                s.header("mcp-protocol-version").is_some(),
                "the negotiated version is passed on: {}",
                s.line()
            );
        }
        let get = seen.iter().find(|s| s.method == "GET").expect("GET");
        assert!(
            get.content_type
                .as_deref()
                .unwrap_or_default()
                .starts_with("text/event-stream")
        );
        let delete = seen.iter().find(|s| s.method == "DELETE").expect("DELETE");
        assert_eq!(delete.status, 202, "{}", delete.line());
    } else {
        assert!(
            seen.iter()
                .all(|s| s.session.is_none() && s.header("mcp-session-id").is_none()),
            "no sessions"
        );
        assert!(
            seen.iter().all(|s| s.method == "POST"),
            "a stateless client sends only POSTs"
        );
    }

    ez.stop().await;
    upstream.stop().await;
}

ezforge_testkit::backend_tests! {
    /// Sessions: SSE answers, `Mcp-Session-Id` both ways, the GET stream, the closing DELETE.
    async fn rmcp_server_stateful_sse_behind_the_gateway(db) {
        round_trip(db, Mode::StatefulSse).await;
    }

    /// No sessions, SSE answers.
    async fn rmcp_server_stateless_sse_behind_the_gateway(db) {
        round_trip(db, Mode::StatelessSse).await;
    }

    /// No sessions, JSON answers.
    async fn rmcp_server_stateless_json_behind_the_gateway(db) {
        round_trip(db, Mode::StatelessJson).await;
    }

    async fn rmcp_read_only_token_lists_nothing_and_cannot_call(db) {
        read_only_token_lists_nothing_and_cannot_call(db).await;
    }

    async fn rmcp_2026_07_28_discover_through_the_gateway(db) {
        discover_2026_07_28_through_the_gateway(db).await;
    }
}

/// A token with only `mcp:read`: `tools/list` works but shows no tools (each needs `mcp:write`),
/// `tools/call` is refused at the gateway with `insufficient_scope` and never reaches the
/// upstream. In a stateful and a stateless mode, each on a fresh database.
async fn read_only_token_lists_nothing_and_cannot_call(db: TestDb) {
    let backend = db.backend;
    let mut first = Some(db);
    for mode in [Mode::StatefulSse, Mode::StatelessJson] {
        let db = match first.take() {
            Some(db) => db,
            None => TestDb::new(backend).await.expect("a second fresh database"),
        };
        let upstream = Upstream::start(mode.config()).await;
        let ez = Ezforge::start(db).await;
        ez.deploy(&upstream).await;
        let resource = ez.resource();
        let (token, c) = access_token(&resource, &["mcp:read"]).await;
        let scopes: Vec<&str> = c["scope"].as_str().expect("scope").split(' ').collect();
        assert!(
            scopes.contains(&"mcp:read") && !scopes.contains(&"mcp:write"),
            "{c}"
        );

        let (client, _events) = connect(&resource, &token).await;
        assert_eq!(
            client
                .peer_info()
                .expect("initialize result")
                .server_info
                .as_ref()
                .map(|i| i.name.clone()),
            Some(UPSTREAM_NAME.to_string())
        );
        let tools = tokio::time::timeout(Duration::from_secs(10), client.list_all_tools())
            .await
            .expect("tools/list does not hang")
            .expect("tools/list is allowed with mcp:read");
        assert!(
            tools.is_empty(),
            "{mode:?}: a read-only token sees no tools: {tools:?}"
        );

        let err = tokio::time::timeout(
            Duration::from_secs(10),
            client.call_tool(
                CallToolRequestParams::new("echo").with_arguments(
                    json!({"text": "x"})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                ),
            ),
        )
        .await
        .expect("call_tool does not hang")
        .expect_err("tools/call needs mcp:write");
        eprintln!("{mode:?}: read-only call_tool: {err:?}");
        let challenge = err.auth_challenge().unwrap_or_default().to_string();
        assert!(
            challenge.contains("error=\"insufficient_scope\"")
                && challenge.contains("scope=\"mcp:write\""),
            "{mode:?}: {err:?}"
        );

        // The refusal is one answer, not the end of the conversation: a ping still goes through.
        let pong = tokio::time::timeout(
            Duration::from_secs(10),
            client.send_request(ClientRequest::PingRequest(PingRequest::default())),
        )
        .await
        .expect("ping does not hang")
        .expect("ping after the refused call");
        assert!(matches!(pong, ServerResult::EmptyResult(_)), "{pong:?}");

        let _ = tokio::time::timeout(Duration::from_secs(10), client.cancel()).await;
        let seen = upstream.take();
        let rpcs: Vec<&str> = seen
            .iter()
            .filter(|s| s.method == "POST")
            .map(|s| s.rpc.as_deref().unwrap_or("?"))
            .collect();
        assert_eq!(
            rpcs,
            [
                "initialize",
                "notifications/initialized",
                "tools/list",
                "ping"
            ],
            "{mode:?}: the refused call never reaches the upstream"
        );
        ez.stop().await;
        upstream.stop().await;
    }
}

/// MCP 2026-07-28, the revision without `initialize` or sessions, as rmcp's client speaks it in
/// its `Discover` lifecycle: `server/discover` first, then self-contained requests carrying
/// `MCP-Protocol-Version` and the SEP-2243 headers `Mcp-Method` and `Mcp-Name`, which rmcp's
/// server requires at that version. The same client talks to the upstream directly first, as
/// the control.
///
/// A regression test for two defects this test found: the gateway once answered
/// `server/discover` itself (it needed `mcp:execute`; it needs `mcp:read`, like `initialize`),
/// and forwarded no `Mcp-Method`/`Mcp-Name`/`Mcp-Param-*` headers (rmcp's server then refused
/// with JSON-RPC -32020).
async fn discover_2026_07_28_through_the_gateway(db: TestDb) {
    let upstream = Upstream::start(Mode::StatelessJson.config()).await;
    let ez = Ezforge::start(db).await;
    ez.deploy(&upstream).await;
    let resource = ez.resource();
    let (token, _) = access_token(&resource, &["mcp:read", "mcp:write"]).await;
    let modern = || ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    };

    for (label, url, token) in [
        ("directly", upstream.url.clone(), None),
        (
            "through the gateway",
            resource.clone(),
            Some(token.as_str()),
        ),
    ] {
        let (client, _events) = start_client(&url, token, modern())
            .await
            .unwrap_or_else(|e| panic!("{label}: server/discover: {e:?}"));
        let version = client.peer_info().map(|i| i.protocol_version.clone());
        assert_eq!(version, Some(ProtocolVersion::V_2026_07_28), "{label}");
        let tools = tokio::time::timeout(Duration::from_secs(10), client.list_all_tools())
            .await
            .expect("tools/list does not hang")
            .unwrap_or_else(|e| panic!("{label}: tools/list: {e:?}"));
        assert_eq!(tools.len(), 4, "{label}: {tools:?}");
        let echoed = call(&client, "echo", json!({"text": ECHO_TEXT})).await;
        assert_eq!(text_of(&echoed), ECHO_TEXT, "{label}");
        let _ = tokio::time::timeout(Duration::from_secs(10), client.cancel()).await;

        let seen = upstream.take();
        let rpcs: Vec<&str> = seen.iter().filter_map(|s| s.rpc.as_deref()).collect();
        assert_eq!(
            rpcs,
            ["server/discover", "tools/list", "tools/call"],
            "{label}"
        );
        for s in &seen {
            assert_eq!(
                s.header("mcp-method"),
                s.rpc.as_deref(),
                "{label}: {}",
                s.line()
            );
            assert_eq!(
                s.header("mcp-name"),
                s.tool.as_deref(),
                "{label}: {}",
                s.line()
            );
            assert_eq!(s.header("mcp-protocol-version"), Some("2026-07-28"));
        }
    }

    ez.stop().await;
    upstream.stop().await;
}
