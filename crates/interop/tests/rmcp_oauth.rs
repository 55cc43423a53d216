//! The official Rust MCP SDK, `rmcp` with its `auth` feature, as a third-party OAuth client of a
//! real ezForge server, on SQLite and on PostgreSQL: discovery starting from the MCP endpoint,
//! dynamic client registration, authorization with PKCE (the test signs in and consents over
//! HTTP the way a person does in a browser), code exchange and refresh-token rotation.
//!
//! rmcp is used unmodified, through its public API only. In the first test its OAuth traffic goes
//! through a recorder wrapped around rmcp's own default HTTP client, so the test can check what
//! rmcp fetched and sent; the second test uses rmcp's default constructor as is.

mod common;

use common::{Browser, EMAIL, PASSWORD, claims};
use ezforge_client::{Auth, Client};
use ezforge_core::ManualClock;
use ezforge_proto::{CreateServerRequest, SignupRequest};
use ezforge_server::{RunningServer, ServerConfig};
use ezforge_testkit::TestDb;
use reqwest::header::{AUTHORIZATION, CACHE_CONTROL, WWW_AUTHENTICATE};
use rmcp::transport::auth::{
    AuthError, AuthorizationRequest, OAuthState, OAuthTokenResponse, default_oauth_http_client,
};
use rmcp::transport::{OAuthHttpClient, OAuthHttpClientFuture, OAuthHttpRequest};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use url::Url;

/// Where the browser is sent back to: a loopback redirect, as a native MCP client uses. Nothing
/// listens there; the test takes the URL from the last redirect instead.
const REDIRECT: &str = "http://127.0.0.1:33419/callback";
const CLIENT_NAME: &str = "rmcp interop";

// ---------------------------------------------------------------------------------------------
// A real server on 127.0.0.1:0 with a fresh database and a clock the test can move.

struct Ezforge {
    server: RunningServer,
    /// The issuer and public origin, `http://127.0.0.1:PORT`.
    url: String,
    clock: ManualClock,
    refresh_grace_secs: i64,
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
        let refresh_grace_secs = config.oauth.refresh_grace_secs;
        let clock = ManualClock::new();
        let server = ezforge_server::app::start_with_clock(config, Arc::new(clock.clone()))
            .await
            .expect("server starts");
        let url = format!("http://{}", server.addr);
        assert_eq!(server.public_url.trim_end_matches('/'), url);
        Ezforge {
            server,
            url,
            clock,
            refresh_grace_secs,
            _data: data,
            _db: db,
        }
    }

    /// Signs up the owner, creates `demo-project` with the MCP server `demo`, and returns the
    /// server's resource URI.
    async fn with_mcp_server(&self) -> String {
        let session = Client::new(&self.url)
            .signup(&SignupRequest {
                email: EMAIL.into(),
                password: PASSWORD.into(),
                invite_code: None,
            })
            .await
            .expect("sign-up");
        let owner = Client::new(&self.url).with_auth(Auth::Session {
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
        format!("{}/mcp/demo", self.url)
    }

    async fn stop(self) {
        self.server.shutdown().await.expect("clean shutdown");
    }
}

/// The status `/mcp/demo` answers with when presented `token`.
async fn gateway_status(resource: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .post(resource)
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .expect("gateway answers")
        .status()
        .as_u16()
}

// ---------------------------------------------------------------------------------------------
// What rmcp sends: a recorder around rmcp's own default OAuth HTTP client.

#[derive(Debug, Clone)]
struct Sent {
    method: String,
    url: Url,
    /// Whether an `Authorization` header went along (client authentication).
    authorization: bool,
    body: String,
    status: u16,
    response: String,
    /// The response's `Cache-Control`.
    cache_control: Option<String>,
}

impl Sent {
    fn line(&self) -> String {
        format!("{} {}", self.method, self.url.path())
    }
    fn form(&self) -> HashMap<String, String> {
        serde_urlencoded::from_str(&self.body).expect("form body")
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }
}

type Log = Arc<Mutex<Vec<Sent>>>;

struct Recorder {
    inner: Box<dyn OAuthHttpClient>,
    log: Log,
}

impl OAuthHttpClient for Recorder {
    fn execute(&self, request: OAuthHttpRequest) -> OAuthHttpClientFuture<'_> {
        let http = &request.request;
        let mut sent = Sent {
            method: http.method().to_string(),
            url: Url::parse(&http.uri().to_string()).expect("absolute URL"),
            authorization: http.headers().contains_key(AUTHORIZATION),
            body: String::from_utf8_lossy(http.body()).into_owned(),
            status: 0,
            response: String::new(),
            cache_control: None,
        };
        Box::pin(async move {
            let result = self.inner.execute(request).await;
            if let Ok(resp) = &result {
                sent.status = resp.status().as_u16();
                sent.response = String::from_utf8_lossy(resp.body()).into_owned();
                sent.cache_control = resp
                    .headers()
                    .get(CACHE_CONTROL)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
            }
            self.log.lock().expect("log").push(sent);
            result
        })
    }
}

fn recorder() -> (Arc<dyn OAuthHttpClient>, Log) {
    let log = Log::default();
    let inner = default_oauth_http_client().expect("rmcp's default OAuth HTTP client");
    let recorder = Recorder {
        inner: Box::new(inner),
        log: log.clone(),
    };
    (Arc::new(recorder), log)
}

fn take(log: &Log) -> Vec<Sent> {
    let sent = std::mem::take(&mut *log.lock().expect("log"));
    for s in &sent {
        eprintln!("rmcp -> {} {} -> {}", s.method, s.url, s.status);
        if !s.body.is_empty() {
            eprintln!("         sent: {}", s.body);
        }
        eprintln!(
            "         got:  {} (Cache-Control: {:?})",
            s.response, s.cache_control
        );
    }
    sent
}

// ---------------------------------------------------------------------------------------------

fn query(url: &str) -> HashMap<String, String> {
    Url::parse(url)
        .expect("URL")
        .query_pairs()
        .into_owned()
        .collect()
}

/// The client id and token response rmcp holds.
async fn credentials(oauth: &OAuthState) -> (String, OAuthTokenResponse, Value) {
    let (client_id, tokens) = oauth.get_credentials().await.expect("rmcp credentials");
    let tokens = tokens.expect("rmcp holds tokens");
    let json = serde_json::to_value(&tokens).expect("token response as JSON");
    (client_id, tokens, json)
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// What the MCP client asks for. rmcp adds `offline_access` itself when the authorization server
/// advertises it.
fn authorization_request() -> AuthorizationRequest {
    AuthorizationRequest::new(REDIRECT)
        .with_client_name(CLIENT_NAME)
        .with_scopes(["mcp:read", "mcp:write"])
}

/// Has rmcp start authorization, walks the browser part, and has rmcp finish it; returns the
/// authorization URL rmcp built.
async fn authorize(oauth: &mut OAuthState) -> String {
    oauth
        .start_authorization(authorization_request())
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
    auth_url
}

ezforge_testkit::backend_tests! {
    /// Discovery → registration → authorization → code exchange → refresh, with every request
    /// rmcp makes recorded and checked.
    async fn rmcp_discovers_registers_authorizes_and_refreshes(db) {
        let ez = Ezforge::start(db).await;
        let resource = ez.with_mcp_server().await;
        let (http, log) = recorder();
        let mut oauth = OAuthState::new_with_oauth_http_client(&resource, http)
            .await
            .expect("rmcp OAuth state");

        // Discovery and registration: rmcp starts from the MCP server URL.
        oauth
            .start_authorization(authorization_request())
            .await
            .expect("rmcp discovers, registers and builds the authorization URL");
        let sent = take(&log);
        let lines: Vec<String> = sent.iter().map(Sent::line).collect();
        assert_eq!(
            lines,
            [
                "GET /mcp/demo",
                "GET /.well-known/oauth-protected-resource/mcp/demo",
                "GET /.well-known/oauth-authorization-server",
                "POST /register",
            ],
            "what rmcp fetched"
        );
        let statuses: Vec<u16> = sent.iter().map(|s| s.status).collect();
        assert_eq!(statuses, [401, 200, 200, 201]);
        let registration = sent[3].json();
        assert_eq!(registration["client_name"], CLIENT_NAME);
        assert_eq!(registration["redirect_uris"], json!([REDIRECT]));
        assert_eq!(
            registration["grant_types"],
            json!(["authorization_code", "refresh_token"])
        );
        assert_eq!(registration["response_types"], json!(["code"]));
        assert_eq!(registration["token_endpoint_auth_method"], "none");
        assert_eq!(
            registration["scope"], "mcp:read mcp:write offline_access",
            "rmcp adds offline_access because the authorization server advertises it"
        );

        // The authorization request rmcp built.
        let auth_url = oauth.get_authorization_url().await.expect("authorization URL");
        assert!(auth_url.starts_with(&format!("{}/authorize?", ez.url)), "{auth_url}");
        let q = query(&auth_url);
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["redirect_uri"], REDIRECT);
        assert_eq!(q["resource"], resource, "RFC 8707, from the protected-resource metadata");
        assert_eq!(q["scope"], "mcp:read mcp:write offline_access");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"].len(), 43);
        assert!(!q["state"].is_empty());
        let client_id = q["client_id"].clone();
        assert!(client_id.starts_with("mcp_"), "{client_id}");

        // The person: sign-in page, sign in, consent page, allow, back to the client.
        let mut browser = Browser::new();
        let callback = browser.authorize(&auth_url, REDIRECT).await;
        eprintln!("browser: {:#?}", browser.hops);
        assert_eq!(
            browser.hops,
            [
                "GET /authorize -> 302",
                "GET /login -> 200",
                "POST /login -> 303",
                "GET /authorize -> 200",
                "POST /authorize -> 303",
            ]
        );
        let back = query(&callback);
        assert_eq!(back["state"], q["state"]);
        assert_eq!(back["iss"], ez.url, "RFC 9207 iss");
        assert!(!back["code"].is_empty());

        // Code exchange: rmcp checks `iss`, then sends the code with its PKCE verifier.
        oauth.handle_callback_url(&callback).await.expect("rmcp exchanges the code");
        let sent = take(&log);
        assert_eq!(sent.iter().map(Sent::line).collect::<Vec<_>>(), ["POST /token"]);
        assert_eq!(sent[0].status, 200);
        assert!(!sent[0].authorization, "a public client sends no client authentication");
        assert_eq!(sent[0].cache_control.as_deref(), Some("no-store"), "RFC 6749 §5.1");
        let form = sent[0].form();
        assert_eq!(form["grant_type"], "authorization_code");
        assert_eq!(form["code"], back["code"]);
        assert_eq!(form["redirect_uri"], REDIRECT);
        assert_eq!(form["client_id"], client_id);
        assert_eq!(form["resource"], resource);
        assert_eq!(form["code_verifier"].len(), 43);

        let (held_client_id, first, tokens) = credentials(&oauth).await;
        assert_eq!(held_client_id, client_id);
        assert_eq!(str_of(&tokens, "token_type").to_ascii_lowercase(), "bearer");
        let access = str_of(&tokens, "access_token").to_string();
        let refresh = str_of(&tokens, "refresh_token").to_string();
        assert!(refresh.starts_with("ezf_rt_"), "{refresh}");
        let c = claims(&access);
        assert_eq!(c["aud"], resource);
        assert_eq!(c["iss"], ez.url);
        assert_eq!(c["client_id"], client_id);
        let scopes: Vec<&str> = str_of(&c, "scope").split(' ').collect();
        assert!(scopes.contains(&"mcp:read") && scopes.contains(&"mcp:write"), "{c}");

        // The MCP endpoint challenges without a token and accepts this one (then reports that
        // the server has no deployment yet).
        let unauth = reqwest::Client::new().post(&resource).send().await.unwrap();
        assert_eq!(unauth.status(), 401);
        let challenge = unauth.headers()[WWW_AUTHENTICATE].to_str().unwrap().to_string();
        let pointer = format!(
            "resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp/demo\"",
            ez.url
        );
        assert!(challenge.contains(&pointer), "{challenge}");
        assert_eq!(gateway_status(&resource, &access).await, 503);

        // Refresh: rmcp sends the refresh token and the resource, and gets both tokens rotated.
        oauth.refresh_token().await.expect("rmcp refreshes");
        let sent = take(&log);
        assert_eq!(sent.iter().map(Sent::line).collect::<Vec<_>>(), ["POST /token"]);
        assert_eq!(sent[0].status, 200);
        assert!(!sent[0].authorization);
        assert_eq!(sent[0].cache_control.as_deref(), Some("no-store"));
        let form = sent[0].form();
        assert_eq!(form["grant_type"], "refresh_token");
        assert_eq!(form["refresh_token"], refresh);
        assert_eq!(form["client_id"], client_id);
        assert_eq!(form["resource"], resource);
        assert!(!form.contains_key("scope"), "rmcp omits scope on refresh by default");

        let (_, _, rotated) = credentials(&oauth).await;
        let new_access = str_of(&rotated, "access_token").to_string();
        let new_refresh = str_of(&rotated, "refresh_token").to_string();
        assert_ne!(new_access, access, "a new access token");
        assert_ne!(new_refresh, refresh, "a new refresh token (rotation)");
        let c = claims(&new_access);
        assert_eq!(c["aud"], resource);
        assert!(str_of(&c, "scope").split(' ').any(|s| s == "mcp:read"), "{c}");
        assert_eq!(gateway_status(&resource, &new_access).await, 503);

        // The first token response rmcp got, replayed through rmcp past the grace window: the
        // spent refresh token is refused, and the token family with it.
        ez.clock.advance(ez.refresh_grace_secs + 1);
        let (http, replay_log) = recorder();
        let mut replay = OAuthState::new_with_oauth_http_client(&resource, http)
            .await
            .expect("rmcp OAuth state");
        replay
            .set_credentials(&client_id, first)
            .await
            .expect("rmcp takes stored credentials");
        let err = replay.refresh_token().await.expect_err("a spent token is refused");
        assert!(matches!(err, AuthError::TokenRefreshRejected(_)), "{err:?}");
        let sent = take(&replay_log);
        let last = sent.last().map(|s| (s.line(), s.status));
        assert_eq!(last, Some(("POST /token".into(), 400)));
        let err = oauth.refresh_token().await.expect_err("the family is revoked");
        assert!(matches!(err, AuthError::TokenRefreshRejected(_)), "{err:?}");
        take(&log);
        assert_eq!(gateway_status(&resource, &new_access).await, 401);

        ez.stop().await;
    }

    /// rmcp's default constructor (its address-checking HTTP client, no recorder): a retry of
    /// a refresh within the grace window gets the same successor; after it, a replay is refused.
    async fn rmcp_refresh_retry_within_grace_and_replay_after(db) {
        let ez = Ezforge::start(db).await;
        let resource = ez.with_mcp_server().await;
        let mut oauth = OAuthState::new(&resource, None).await.expect("rmcp OAuth state");
        let auth_url = authorize(&mut oauth).await;
        assert_eq!(query(&auth_url)["resource"], resource);
        let (client_id, first, tokens) = credentials(&oauth).await;
        assert!(client_id.starts_with("mcp_"), "{client_id}");
        let refresh = str_of(&tokens, "refresh_token").to_string();

        oauth.refresh_token().await.expect("rmcp refreshes");
        let (_, _, rotated) = credentials(&oauth).await;
        let successor = str_of(&rotated, "refresh_token").to_string();
        assert_ne!(successor, refresh);

        // A client that lost the refresh response retries with the old token: same successor.
        let mut retry = OAuthState::new(&resource, None).await.expect("rmcp OAuth state");
        retry.set_credentials(&client_id, first.clone()).await.expect("credentials");
        retry.refresh_token().await.expect("a retry within the grace window");
        let (_, _, retried) = credentials(&retry).await;
        assert_eq!(str_of(&retried, "refresh_token"), successor);

        // Past the window, the old token is refused.
        ez.clock.advance(ez.refresh_grace_secs + 1);
        let mut replay = OAuthState::new(&resource, None).await.expect("rmcp OAuth state");
        replay.set_credentials(&client_id, first).await.expect("set credentials");
        let err = replay.refresh_token().await.expect_err("replay refused");
        assert!(matches!(err, AuthError::TokenRefreshRejected(_)), "{err:?}");

        ez.stop().await;
    }
}
