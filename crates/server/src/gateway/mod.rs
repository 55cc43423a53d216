//! The MCP gateway: `/mcp/{slug}` answers clients without a valid token with the RFC 6750 /
//! RFC 9728 challenge that starts discovery, checks each JSON-RPC message against the token's
//! scopes and the server's tool policy, and forwards to the active deployment, streaming.

mod record;

use crate::auth::bearer_token;
use crate::error::ApiError;
use crate::routes::AppState;
use crate::upstream;
use crate::upstream_conns::{self, Lease, LeasedBody};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ezforge_core::CoreError;
use ezforge_core::mcp_scope::{self, Needs};
use ezforge_core::model::DeploymentRow;
use ezforge_core::oauth::token::{AccessClaims, Presented};
use ezforge_core::telemetry::QuotaCheck;
use record::Seen;
use serde_json::{Value, json};
use std::time::Duration;

/// The scope asked for in the first challenge. It includes `offline_access` so that clients
/// which request exactly the challenged scope (the TypeScript SDK) also get a refresh token.
pub const CHALLENGE_SCOPE: &str = "mcp:read mcp:write offline_access";

fn challenge(state: &AppState, slug: &str, error: Option<&str>) -> Response {
    let metadata = state.oauth.resource_metadata_url(slug);
    let mut value = format!("Bearer resource_metadata=\"{metadata}\", scope=\"{CHALLENGE_SCOPE}\"");
    if let Some(e) = error {
        value.push_str(&format!(", error=\"{e}\""));
    }
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": -32001, "message": "authorization required: obtain a token from the authorization server named in the protected-resource metadata"}
    });
    let mut resp = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// A server as the gateway routes it: the row and its active deployment, remembered for a
/// moment (the hot path touches no database). A change forgets it at once on this node and,
/// when heard, on the others (`crate::invalidation`); a node that missed it routes by the old
/// entry for at most its lifetime (`ServerConfig::route_cache_secs`).
pub struct Route {
    pub server: ezforge_core::model::ServerRow,
    /// The active deployment, if any.
    pub active: Option<Active>,
    /// The server's canonical resource URI: the audience its tokens must name.
    pub resource: String,
}

pub struct Active {
    pub deployment: DeploymentRow,
    /// Its upstream, parsed and with its credentials opened once per route lookup rather than
    /// once per request; `Err` says why it cannot be used.
    pub upstream: Result<Upstream, String>,
}

/// An upstream URL as hyper needs it. Through `url` first, as deploys validate it: it puts an
/// IDN host into punycode and percent-encodes what `http::Uri` would refuse, so that every URL a
/// deploy accepted can be forwarded to.
fn upstream_uri(url: &str) -> Result<axum::http::Uri, String> {
    let url = url::Url::parse(url).map_err(|e| e.to_string())?;
    url.as_str()
        .parse::<axum::http::Uri>()
        .map_err(|e| e.to_string())
}

/// Where a deployment's traffic goes, ready to use.
pub struct Upstream {
    pub uri: axum::http::Uri,
    /// For a plain-HTTP upstream: its connections are this node's own (`upstream_conns`);
    /// HTTPS upstreams go through hyper-util's client, which does TLS and HTTP/2.
    pub plain: Option<upstream_conns::Target>,
    /// The deployment's own headers (credentials), decrypted.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Upstream {
    fn open(state: &AppState, deployment: &DeploymentRow) -> Result<Upstream, String> {
        let uri = upstream_uri(&deployment.upstream_url)?;
        let stored = upstream::open_headers(&state.master, deployment.credentials.as_deref())?;
        let mut headers = Vec::with_capacity(stored.len());
        for (name, value) in &stored {
            let name = HeaderName::try_from(name.as_str()).map_err(|e| e.to_string())?;
            let value = HeaderValue::try_from(value.as_str()).map_err(|e| e.to_string())?;
            headers.push((name, value));
        }
        Ok(Upstream {
            plain: upstream_conns::Target::of(&uri),
            uri,
            headers,
        })
    }
}

pub type RouteCache = ezforge_core::cache::TtlCache<String, Option<std::sync::Arc<Route>>>;

pub fn route_cache(ttl: Duration) -> RouteCache {
    ezforge_core::cache::TtlCache::new(100_000, ttl)
}

async fn route(state: &AppState, slug: &str) -> Result<Option<std::sync::Arc<Route>>, CoreError> {
    if let Some(cached) = state.routes.get(slug) {
        return Ok(cached);
    }
    // A deploy or a server change during the reads below must not leave the older route.
    let generation = state.routes.generation();
    let route = match state.core.store().server_by_slug(slug).await? {
        Some(server) => {
            let active = state
                .core
                .active_deployment(&server)
                .await?
                .map(|deployment| Active {
                    upstream: Upstream::open(state, &deployment),
                    deployment,
                });
            Some(std::sync::Arc::new(Route {
                server,
                active,
                resource: state.oauth.resource_uri(slug),
            }))
        }
        None => None,
    };
    state
        .routes
        .insert_loaded(generation, slug.to_string(), route.clone());
    Ok(route)
}

/// Answers up to this size with a `Content-Length` are read whole before being sent on.
const SMALL_ANSWER: u64 = 64 * 1024;

/// Largest MCP request body the gateway accepts, and largest `tools/list` answer it filters.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

fn rpc_error(status: StatusCode, id: Value, code: i64, message: &str) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    (status, Json(body)).into_response()
}

/// The router's `/mcp/{slug}` route. Most requests never get here: the front service hands
/// `/mcp/{slug}` straight to [`serve`] (see `app::front`); this catches the rest (a
/// percent-encoded slug, say), so that both ways behave alike.
pub async fn endpoint(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    req: Request,
) -> Response {
    serve(&state, &slug, req).await
}

/// Any method on `/mcp/{slug}`: check the token, check each JSON-RPC message's scope, forward;
/// then record what happened in the request log.
pub async fn serve(state: &AppState, slug: &str, req: Request) -> Response {
    let started = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    let mut seen = Seen::default();
    let resp = handle(state, slug, &parts, body, &mut seen).await;
    record::finish(
        &state.requests,
        &state.core,
        seen,
        parts.method.as_str(),
        started,
        resp,
    )
}

/// The slug of a `/mcp/{slug}` path, when it can name a server as it stands (slugs are
/// DNS-safe, so anything percent-encoded goes through the router instead).
pub fn slug_of_path(path: &str) -> Option<&str> {
    let slug = path.strip_prefix("/mcp/")?;
    (!slug.is_empty() && !slug.contains(['/', '%'])).then_some(slug)
}

async fn handle(
    state: &AppState,
    slug: &str,
    parts: &Parts,
    body: Body,
    seen: &mut Seen,
) -> Response {
    let (method, uri, headers) = (&parts.method, &parts.uri, &parts.headers);
    let route = match route(state, slug).await {
        Ok(Some(route)) => route,
        Ok(None) => return ApiError::NoRoute(format!("/mcp/{slug}")).into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let server = &route.server;
    seen.server = Some((
        server.project_id.clone(),
        server.id.clone(),
        server.environment,
    ));
    // RFC 6750 §2.3 allows tokens in the query; RFC 9700 and MCP forbid it: it leaks into logs.
    if uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("access_token=")))
    {
        seen.deny("token_in_query");
        return challenge(state, slug, Some("invalid_request"));
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        seen.deny("no_token");
        return challenge(state, slug, None);
    };
    let Some(token) = value.to_str().ok().and_then(bearer_token) else {
        seen.deny("invalid_token");
        return challenge(state, slug, Some("invalid_request"));
    };
    let resource = &route.resource;
    let presented = Presented::new(token);
    let claims = match &server.byoa {
        Some(byoa) => match state
            .byoa
            .verify(token, &byoa.issuer, &byoa.jwks_uri, resource)
            .await
        {
            Ok(c) => std::sync::Arc::new(AccessClaims {
                iss: byoa.issuer.clone(),
                sub: c.sub,
                aud: resource.clone(),
                client_id: c.client_id,
                scope: c.scope,
                jti: String::new(),
                iat: 0,
                exp: c.exp,
                gid: String::new(),
            }),
            Err(reason) => {
                tracing::info!(server = %slug, %reason, "BYOA token refused");
                seen.deny("invalid_token");
                return challenge(state, slug, Some("invalid_token"));
            }
        },
        None => match state
            .oauth
            .verify_presented(&presented, Some(resource))
            .await
        {
            Ok(claims) => claims,
            Err(_) => {
                seen.deny("invalid_token");
                return challenge(state, slug, Some("invalid_token"));
            }
        },
    };
    seen.subject = Some(claims.sub.clone());
    seen.client_id = Some(claims.client_id.clone());
    seen.token_id = Some(record::token_id(&claims.jti, &presented));
    let Some(Active {
        deployment,
        upstream,
    }) = &route.active
    else {
        seen.deny("no_deployment");
        return rpc_error(
            StatusCode::SERVICE_UNAVAILABLE,
            Value::Null,
            -32603,
            &format!("server `{slug}` has no active deployment"),
        );
    };
    seen.deployment_id = Some(deployment.id.clone());
    let upstream = match upstream {
        Ok(upstream) => upstream,
        Err(e) => {
            tracing::error!(deployment_id = %deployment.id, error = %e, "cannot use the deployment's upstream");
            seen.deny("internal_error");
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                Value::Null,
                -32603,
                "the gateway cannot use this deployment's upstream or credentials",
            );
        }
    };
    let payload = if method == Method::POST {
        let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(_) => {
                seen.deny("too_large");
                return rpc_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Value::Null,
                    -32600,
                    "the request body is too large",
                );
            }
        };
        seen.bytes_in = bytes.len();
        let parsed: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                seen.deny("bad_request");
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    Value::Null,
                    -32700,
                    &format!("parse error: {e}"),
                );
            }
        };
        seen.message(&parsed);
        if let Err((reason, resp)) =
            check_scopes(state, slug, &server.tool_policy, &claims.scope, &parsed)
        {
            seen.deny(reason);
            return *resp;
        }
        if let Err(resp) = check_mcp_headers(headers, &parsed) {
            seen.deny("header_mismatch");
            return *resp;
        }
        // Forward what was checked, re-serialized: the upstream cannot read the bytes any
        // other way than the gateway did.
        let bytes = Bytes::from(serde_json::to_vec(&parsed).unwrap_or_default());
        Some((bytes, parsed))
    } else {
        // GET streams and DELETE are part of a conversation that needs at least mcp:read.
        if !mcp_scope::satisfies(&claims.scope, ezforge_core::oauth::scope::MCP_READ) {
            seen.deny("insufficient_scope");
            return insufficient(
                state,
                slug,
                Value::Null,
                ezforge_core::oauth::scope::MCP_READ,
            );
        }
        None
    };
    match state
        .quotas
        .admit(&server.project_id, state.core.now())
        .await
    {
        Ok(QuotaCheck::Unlimited) => {}
        Ok(QuotaCheck::Counted) => seen.quota_counted = true,
        Ok(QuotaCheck::Exceeded {
            limit,
            retry_after_secs,
        }) => {
            seen.deny("quota_exceeded");
            return quota_exceeded(limit, retry_after_secs);
        }
        Err(e) => {
            seen.deny("internal_error");
            return ApiError::from(CoreError::from(e)).into_response();
        }
    }
    // Answers that list tools are cut down to the tools this token may call: for any request
    // that asks for tools/list (batches included), and for GET streams, which may replay one.
    let asks_tools = match payload.as_ref().map(|(_, v)| v) {
        Some(Value::Array(items)) => items
            .iter()
            .any(|m| m.get("method").and_then(Value::as_str) == Some("tools/list")),
        Some(v) => v.get("method").and_then(Value::as_str) == Some("tools/list"),
        None => method == Method::GET,
    };
    let filter = asks_tools.then(|| ToolsFilter {
        policy: server.tool_policy.clone(),
        granted: claims.scope.clone(),
    });
    let out = Outgoing {
        method: method.clone(),
        headers,
        body: payload.map(|(bytes, _)| bytes),
        filter,
        token: &presented,
    };
    forward(state, deployment, upstream, &claims, out).await
}

/// 429 for a project past its monthly quota: which quota, and when it resets.
fn quota_exceeded(limit: i64, retry_after_secs: i64) -> Response {
    let body = json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": -32029,
            "message": format!("the project's monthly request quota ({limit} requests) is used up; it resets at the start of next month (UTC)"),
            "data": {"quota": "monthly_requests", "limit": limit, "retry_after": retry_after_secs}
        }
    });
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn insufficient(state: &AppState, slug: &str, id: Value, needed: &str) -> Response {
    let metadata = state.oauth.resource_metadata_url(slug);
    let value = format!(
        "Bearer error=\"insufficient_scope\", scope=\"{needed}\", resource_metadata=\"{metadata}\""
    );
    let mut resp = rpc_error(
        StatusCode::FORBIDDEN,
        id,
        -32001,
        &format!("insufficient scope: this request needs `{needed}`"),
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// MCP 2026-07-28's `Mcp-Method` and `Mcp-Name` headers must say what the body says, or an
/// upstream that routes by them would run something the scope check never saw.
fn check_mcp_headers(headers: &HeaderMap, parsed: &Value) -> Result<(), Box<Response>> {
    const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
    const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
    let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let mismatch = |what: &str| {
        Box::new(rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            -32600,
            &format!("the {what} header does not match the body"),
        ))
    };
    if let Some(m) = header(&MCP_METHOD)
        && parsed.get("method").and_then(Value::as_str) != Some(m)
    {
        return Err(mismatch("Mcp-Method"));
    }
    if let Some(n) = header(&MCP_NAME)
        && parsed
            .get("params")
            .and_then(|p| p.get("name").or_else(|| p.get("uri")))
            .and_then(Value::as_str)
            != Some(n)
    {
        return Err(mismatch("Mcp-Name"));
    }
    Ok(())
}

/// JSON-RPC member names that differ only in case from the real ones (`Method`, `NAME`): some
/// JSON decoders match keys case-insensitively, so the upstream could act on a different method
/// or tool than the one checked here.
fn has_ambiguous_keys(message: &Value) -> bool {
    const FIELDS: [&str; 6] = ["jsonrpc", "id", "method", "params", "result", "error"];
    const PARAMS: [&str; 3] = ["name", "arguments", "uri"];
    let odd = |v: &Value, names: &[&str]| {
        v.as_object().is_some_and(|o| {
            o.keys()
                .any(|k| names.iter().any(|n| k.eq_ignore_ascii_case(n) && k != n))
        })
    };
    odd(message, &FIELDS) || message.get("params").is_some_and(|p| odd(p, &PARAMS))
}

/// Every message of a POST (batches included) must be allowed by the tool policy and reachable
/// with the token's scopes.
fn check_scopes(
    state: &AppState,
    slug: &str,
    policy: &ezforge_proto::ToolPolicy,
    granted: &str,
    parsed: &Value,
) -> Result<(), (&'static str, Box<Response>)> {
    let messages: Vec<&Value> = match parsed {
        Value::Array(items) if !items.is_empty() => items.iter().collect(),
        Value::Object(_) => vec![parsed],
        _ => {
            return Err((
                "bad_request",
                Box::new(rpc_error(
                    StatusCode::BAD_REQUEST,
                    Value::Null,
                    -32600,
                    "invalid request: expected a JSON-RPC message or batch",
                )),
            ));
        }
    };
    let single_id = if messages.len() == 1 {
        messages[0].get("id").cloned().unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    for message in messages {
        if has_ambiguous_keys(message) {
            return Err((
                "bad_request",
                Box::new(rpc_error(
                    StatusCode::BAD_REQUEST,
                    single_id,
                    -32600,
                    "invalid request: member names must be exactly the JSON-RPC and MCP ones",
                )),
            ));
        }
        match mcp_scope::needs(message, policy) {
            Needs::Denied(reason) => {
                return Err((
                    "tool_policy",
                    Box::new(rpc_error(StatusCode::FORBIDDEN, single_id, -32001, &reason)),
                ));
            }
            Needs::Scope(needed) if !mcp_scope::satisfies(granted, needed) => {
                let metadata = state.oauth.resource_metadata_url(slug);
                let value = format!(
                    "Bearer error=\"insufficient_scope\", scope=\"{needed}\", resource_metadata=\"{metadata}\""
                );
                let mut resp = rpc_error(
                    StatusCode::FORBIDDEN,
                    single_id,
                    -32001,
                    &format!("insufficient scope: this request needs `{needed}`"),
                );
                if let Ok(v) = HeaderValue::from_str(&value) {
                    resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                return Err(("insufficient_scope", Box::new(resp)));
            }
            Needs::Scope(_) => {}
        }
    }
    Ok(())
}

/// Request headers passed to the upstream; everything else (the client's `Authorization`,
/// cookies, hop-by-hop headers, `Host`) stays here.
/// Besides these, every `mcp-*` header goes through (see `forward`).
const FORWARDED_REQUEST_HEADERS: [HeaderName; 4] = [
    header::ACCEPT,
    header::CONTENT_TYPE,
    HeaderName::from_static("last-event-id"),
    header::ACCEPT_LANGUAGE,
];
/// Response headers passed back to the client.
const FORWARDED_RESPONSE_HEADERS: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    HeaderName::from_static("mcp-session-id"),
    HeaderName::from_static("mcp-protocol-version"),
    header::CACHE_CONTROL,
    header::RETRY_AFTER,
];

/// The headers that tell the upstream who is calling: the subject, client and scopes, and the
/// identity JWT that lets it trust them. Made once per token and deployment (see `forward`).
pub struct Identity {
    /// The deployment whose upstream the identity JWT names.
    deployment_id: String,
    subject: HeaderValue,
    client_id: HeaderValue,
    scopes: HeaderValue,
    token: HeaderValue,
}

impl Identity {
    /// `None` when a claim cannot be carried in a header.
    fn new(deployment_id: &str, claims: &AccessClaims, token: &str) -> Option<Identity> {
        let value = |s: &str| HeaderValue::from_str(s).ok();
        Some(Identity {
            deployment_id: deployment_id.to_string(),
            subject: value(&claims.sub)?,
            client_id: value(&claims.client_id)?,
            scopes: value(&claims.scope)?,
            token: value(token)?,
        })
    }

    fn set(&self, headers: &mut HeaderMap) {
        const SUBJECT: HeaderName = HeaderName::from_static("x-ezforge-subject");
        const CLIENT_ID: HeaderName = HeaderName::from_static("x-ezforge-client-id");
        const SCOPES: HeaderName = HeaderName::from_static("x-ezforge-scopes");
        const TOKEN: HeaderName = HeaderName::from_static("x-ezforge-identity");
        headers.insert(SUBJECT, self.subject.clone());
        headers.insert(CLIENT_ID, self.client_id.clone());
        headers.insert(SCOPES, self.scopes.clone());
        headers.insert(TOKEN, self.token.clone());
    }
}

/// Which answer to filter, and by what.
#[derive(Clone)]
struct ToolsFilter {
    policy: ezforge_proto::ToolPolicy,
    granted: String,
}

impl ToolsFilter {
    /// Filters every message (or batch item) whose result lists tools, whatever its id;
    /// `None` when there is nothing to filter.
    fn apply(&self, message: &Value) -> Option<Value> {
        let lists_tools = |m: &Value| {
            m.get("result")
                .and_then(|r| r.get("tools"))
                .is_some_and(Value::is_array)
        };
        match message {
            Value::Array(items) if items.iter().any(lists_tools) => Some(Value::Array(
                items
                    .iter()
                    .map(|m| self.apply(m).unwrap_or_else(|| m.clone()))
                    .collect(),
            )),
            m if lists_tools(m) => {
                let mut out = m.clone();
                if let Some(result) = out.get_mut("result") {
                    mcp_scope::filter_tools_list(result, &self.policy, &self.granted);
                }
                Some(out)
            }
            _ => None,
        }
    }

    /// Rewrites the `data:` lines of an SSE chunk stream, line by line, as they arrive.
    fn sse<E>(
        self,
        upstream: impl futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
    ) -> Body
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        use futures_util::StreamExt;
        let pending = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let tail = pending.clone();
        let filter = self.clone();
        let lines = upstream.map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            let mut buf = pending
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?;
            buf.extend_from_slice(&chunk);
            let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
                return Ok(Bytes::new());
            };
            let complete: Vec<u8> = buf.drain(..=end).collect();
            Ok::<_, std::io::Error>(Bytes::from(filter.rewrite(&complete)))
        });
        let flush = futures_util::stream::once(async move {
            let rest = tail
                .lock()
                .map(|mut b| std::mem::take(&mut *b))
                .unwrap_or_default();
            Ok::<_, std::io::Error>(Bytes::from(rest))
        });
        Body::from_stream(lines.chain(flush))
    }

    fn rewrite(&self, complete_lines: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(complete_lines);
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            let filtered = line
                .strip_prefix("data:")
                .and_then(|d| serde_json::from_str::<Value>(d.trim()).ok())
                .and_then(|m| self.apply(&m));
            match filtered {
                Some(m) => out.push_str(&format!("data: {m}\n")),
                None => out.push_str(line),
            }
        }
        out.into_bytes()
    }
}

/// What goes to the upstream.
struct Outgoing<'a> {
    method: Method,
    headers: &'a HeaderMap,
    body: Option<Bytes>,
    filter: Option<ToolsFilter>,
    /// The client's token: only to key the identity JWT cache, never forwarded.
    token: &'a Presented<'a>,
}

async fn forward(
    state: &AppState,
    deployment: &DeploymentRow,
    upstream: &Upstream,
    claims: &AccessClaims,
    out: Outgoing<'_>,
) -> Response {
    let Outgoing {
        method,
        headers,
        body,
        filter,
        token,
    } = out;
    // One identity JWT per token and deployment, reused for half its minute: signing on every
    // request would cost more than everything else the gateway does. The headers naming the
    // caller are made with it, once.
    // Keyed by the token alone and checked against the deployment: a token names one server,
    // and a server has one active deployment at a time.
    let identity = match state
        .identities
        .get(token.hash())
        .filter(|i| i.deployment_id == deployment.id)
    {
        Some(t) => t,
        None => {
            let minted = match state
                .oauth
                .mint_identity_token(&deployment.upstream_url, claims)
            {
                Ok(t) => t,
                Err(e) => return ApiError::from(e).into_response(),
            };
            let Some(identity) = Identity::new(&deployment.id, claims, &minted) else {
                // A subject or client id no header can carry.
                return rpc_error(
                    StatusCode::BAD_GATEWAY,
                    Value::Null,
                    -32603,
                    "the request could not be passed on to the upstream MCP server",
                );
            };
            let identity = std::sync::Arc::new(identity);
            state
                .identities
                .insert(token.hash().to_string(), identity.clone());
            identity
        }
    };
    let mut outgoing = HeaderMap::with_capacity(9 + upstream.headers.len());
    outgoing.insert(
        header::USER_AGENT,
        HeaderValue::from_static(upstream::USER_AGENT),
    );
    for (name, value) in headers {
        // The MCP headers (session, protocol version, and the 2026-07-28 Mcp-Method, Mcp-Name,
        // Mcp-Param-*) and a few content headers; nothing else.
        if FORWARDED_REQUEST_HEADERS.contains(name) || name.as_str().starts_with("mcp-") {
            outgoing.append(name.clone(), value.clone());
        }
    }
    for (name, value) in &upstream.headers {
        outgoing.append(name.clone(), value.clone());
    }
    // `Host`: the deployment's own if it stores one. Else, on a plain-HTTP upstream, the
    // upstream's host; through hyper-util's client (HTTPS), none here: it adds one on HTTP/1
    // connections only (an HTTP/2 upstream gets `:authority`, and some refuse both).
    if let Some(plain) = &upstream.plain {
        outgoing
            .entry(header::HOST)
            .or_insert_with(|| plain.host.clone());
    }
    // Inserted last, replacing any value, so that neither the client nor a stored header can
    // forge them.
    identity.set(&mut outgoing);
    let mut req = axum::http::Request::new(body.map(Body::from).unwrap_or_else(Body::empty));
    *req.method_mut() = method;
    *req.uri_mut() = match &upstream.plain {
        Some(plain) => plain.path.clone(),
        None => upstream.uri.clone(),
    };
    *req.headers_mut() = outgoing;
    // The deployment's timeout covers the answer's head and every answer read whole below; a
    // body passed through as it arrives (SSE, large answers) is the client's to wait for.
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(deployment.timeout_ms.max(100) as u64);
    let (resp, lease) = match send(upstream, req, deadline).await {
        Ok(sent) => sent,
        Err(Unsent::Late) => return too_late(),
        Err(Unsent::Client(e)) => {
            tracing::error!(error = %e, "the gateway's upstream client cannot be set up");
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                Value::Null,
                -32603,
                "the gateway cannot reach upstream MCP servers",
            );
        }
        Err(Unsent::Unreachable(cause)) => {
            tracing::warn!(deployment_id = %deployment.id, error = %cause, "upstream unreachable");
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                Value::Null,
                -32603,
                "the upstream MCP server cannot be reached",
            );
        }
    };
    let (parts, incoming) = resp.into_parts();
    let mut kept = HeaderMap::with_capacity(FORWARDED_RESPONSE_HEADERS.len() + 4);
    for name in &FORWARDED_RESPONSE_HEADERS {
        for v in parts.headers.get_all(name) {
            kept.append(name.clone(), v.clone());
        }
    }
    let is_sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let length = http_body::Body::size_hint(&incoming).exact();
    let body = match filter {
        // A JSON answer to tools/list is small: read it whole, filter, send.
        Some(filter) if !is_sse && parts.status.is_success() => {
            let bytes = match whole(incoming, lease, deadline).await {
                Ok(bytes) => bytes,
                Err(cut) => return cut.response(),
            };
            match serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|m| filter.apply(&m))
            {
                Some(m) => Body::from(m.to_string()),
                None => Body::from(bytes),
            }
        }
        Some(filter) if is_sse => filter.sse(streamed(incoming, lease).into_data_stream()),
        // A small JSON answer of known length: read whole, so it goes out as one body of known
        // size (no stream to poll, and the request log knows its size at once).
        _ if !is_sse && length.is_some_and(|n| n <= SMALL_ANSWER) => {
            match whole(incoming, lease, deadline).await {
                Ok(bytes) => Body::from(bytes),
                Err(cut) => return cut.response(),
            }
        }
        // Passed through as it arrives: SSE events reach the client without buffering.
        _ => streamed(incoming, lease),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = parts.status;
    *resp.headers_mut() = kept;
    resp
}

/// Why a request did not reach the upstream.
enum Unsent {
    /// No answer's head by the deployment's deadline.
    Late,
    /// The gateway's HTTPS client could not be built (its trust store).
    Client(String),
    Unreachable(String),
}

/// Sends to the upstream: a plain-HTTP one on this thread's own connections, an HTTPS one
/// through hyper-util's client. The lease, when there is one, gives the connection back once
/// the answer has been read.
async fn send(
    upstream: &Upstream,
    req: axum::http::Request<Body>,
    deadline: tokio::time::Instant,
) -> Result<(hyper::Response<hyper::body::Incoming>, Option<Lease>), Unsent> {
    let unreachable = |e: &dyn std::error::Error| Unsent::Unreachable(upstream::root_cause(e));
    match &upstream.plain {
        Some(plain) => {
            match tokio::time::timeout_at(deadline, upstream_conns::send(plain, req)).await {
                Err(_) => Err(Unsent::Late),
                Ok(Err(e)) => Err(unreachable(&e)),
                Ok(Ok((resp, lease))) => Ok((resp, Some(lease))),
            }
        }
        None => {
            let client = upstream::gateway_client().map_err(Unsent::Client)?;
            match tokio::time::timeout_at(deadline, client.request(req)).await {
                Err(_) => Err(Unsent::Late),
                Ok(Err(e)) => Err(unreachable(&e)),
                Ok(Ok(resp)) => Ok((resp, None)),
            }
        }
    }
}

/// An answer passed on as it arrives, its connection given back at its end.
fn streamed(incoming: hyper::body::Incoming, lease: Option<Lease>) -> Body {
    match lease {
        Some(lease) => Body::new(LeasedBody::new(incoming, lease)),
        None => Body::new(incoming),
    }
}

/// Why an upstream answer could not be read whole.
enum Cut {
    /// Not all there by the deployment's deadline.
    Late,
    /// Larger than `MAX_BODY` (only a `tools/list` answer, which is filtered, can get here).
    TooLarge,
    BrokeOff,
}

impl Cut {
    fn response(self) -> Response {
        match self {
            Cut::Late => too_late(),
            Cut::TooLarge => rpc_error(
                StatusCode::BAD_GATEWAY,
                Value::Null,
                -32603,
                "the upstream's tools/list answer is larger than the gateway filters (4 MiB)",
            ),
            Cut::BrokeOff => rpc_error(
                StatusCode::BAD_GATEWAY,
                Value::Null,
                -32603,
                "the upstream answer broke off",
            ),
        }
    }
}

/// Reads an answer whole, by `deadline` and up to `MAX_BODY`: an upstream that sends its
/// head and then stalls, or streams without end, must not hold the client (or the gateway's
/// memory) past its deployment's timeout.
/// A connection whose answer was read whole goes back to be reused.
async fn whole(
    body: hyper::body::Incoming,
    lease: Option<Lease>,
    deadline: tokio::time::Instant,
) -> Result<Bytes, Cut> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match tokio::time::timeout_at(deadline, http_body_util::BodyExt::collect(limited)).await {
        Err(_) => Err(Cut::Late),
        Ok(Ok(collected)) => {
            if let Some(lease) = lease {
                lease.release();
            }
            Ok(collected.to_bytes())
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Cut::TooLarge),
        Ok(Err(_)) => Err(Cut::BrokeOff),
    }
}

fn too_late() -> Response {
    rpc_error(
        StatusCode::GATEWAY_TIMEOUT,
        Value::Null,
        -32603,
        "the upstream MCP server did not answer in time",
    )
}

#[cfg(test)]
mod tests {
    use super::upstream_uri;

    #[test]
    fn every_url_a_deploy_accepts_can_be_forwarded_to() {
        for (given, expected) in [
            ("http://127.0.0.1:8080/mcp", "http://127.0.0.1:8080/mcp"),
            (" https://up.example/mcp ", "https://up.example/mcp"),
            (
                "https://bücher.example/mcp",
                "https://xn--bcher-kva.example/mcp",
            ),
            (
                "https://up.example/mcp/ü x",
                "https://up.example/mcp/%C3%BC%20x",
            ),
        ] {
            assert_eq!(
                upstream_uri(given).unwrap().to_string(),
                expected,
                "{given}"
            );
        }
        assert!(upstream_uri("not a url").is_err());
    }
}
