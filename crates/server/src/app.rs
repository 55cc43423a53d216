//! Starting the server: open the store, build the domain, bind, serve until told to stop.

use crate::config::{HttpSettings, ServerConfig};
use crate::extract::BodyLimit;
use crate::routes::{self, AppState};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Request, header};
use axum::response::Response;
use ezforge_core::oauth::{OAuth, OAuthSettings};
use ezforge_core::{Clock, Core, SystemClock};
use ezforge_store::SqlStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_http::trace::TraceLayer;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] ezforge_store::OpenError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid --public-url `{0}`: expected http(s)://host[:port]")]
    PublicUrl(String),
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("authorization server: {0}")]
    OAuth(String),
    #[error("demo set-up: {0}")]
    Demo(String),
    #[error("cannot start the serving threads: {0}")]
    Threads(std::io::Error),
}

/// A server that is accepting connections.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The origin it advertises.
    pub public_url: String,
    pub backend: &'static str,
    pub core: Arc<Core>,
    pub oauth: Arc<OAuth>,
    /// With `--demo`: the demo user's credentials and the MCP URL.
    pub demo: Option<crate::demo::DemoInfo>,
    /// The request log, flushed on shutdown.
    pub requests: Arc<ezforge_core::telemetry::RequestLog>,
    /// Where Prometheus metrics are served, if configured.
    pub metrics_addr: Option<SocketAddr>,
    metrics_task: Option<JoinHandle<()>>,
    /// Applies other nodes' changes to this node's caches (PostgreSQL only); stops when dropped.
    invalidations: Option<crate::invalidation::Listening>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, lets requests in flight finish, and waits.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        // Follow streams of the request log never end by themselves: end them first.
        self.requests.close();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let served = self
            .task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        // Requests in flight have finished: write their records (and quota counts) before
        // the process ends.
        self.requests.flush().await;
        if let Some(t) = self.metrics_task.take() {
            t.abort();
        }
        // Ends the listening connection too: it stops once nobody receives what it hears.
        drop(self.invalidations.take());
        served
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    pub async fn serve_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        signal.await;
        self.shutdown().await
    }
}

/// Starts the server with the system clock.
pub async fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// Starts the server with the given clock (tests use a manual one).
pub async fn start_with_clock(
    config: ServerConfig,
    clock: Arc<dyn Clock>,
) -> Result<RunningServer, StartError> {
    if config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
    }
    let store = SqlStore::open(&config.database_url(), config.max_db_connections).await?;
    let backend = ezforge_core::Store::backend(&store);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let public_url = match &config.public_url {
        Some(url) => normalize_origin(url).ok_or_else(|| StartError::PublicUrl(url.clone()))?,
        None => format!("http://{addr}"),
    };
    let master = crate::config::load_master_key(&config).map_err(StartError::MasterKey)?;
    let store: Arc<dyn ezforge_core::Store> = Arc::new(store);
    let core = Arc::new(Core::new(store.clone(), clock.clone(), config.core.clone()));
    let mut oauth_settings = OAuthSettings::new(&public_url);
    let o = &config.oauth;
    oauth_settings.access_token_ttl_secs = o.access_token_ttl_secs;
    oauth_settings.refresh_token_ttl_secs = o.refresh_token_ttl_secs;
    oauth_settings.code_ttl_secs = o.code_ttl_secs;
    oauth_settings.refresh_grace_secs = o.refresh_grace_secs;
    oauth_settings.key_publish_secs = o.key_publish_secs;
    oauth_settings.register_per_window = o.register_per_window;
    oauth_settings.token_per_window = o.token_per_window;
    oauth_settings.grant_cache_secs = o.grant_cache_secs;
    oauth_settings.cimd_allow_private = o.client_documents_allow_private;
    oauth_settings.mcp_domain = config
        .mcp_domain
        .clone()
        .map(|d| d.trim().trim_start_matches('.').to_lowercase());
    let master_for_state = Arc::new(master.clone());
    // JWKS URIs are set by project members and may name an identity provider on a private
    // network; what comes back must parse as a JWKS, so a probe learns little.
    let byoa_verifier = Arc::new(ezforge_core::byoa::ByoaVerifier::new(
        Arc::new(crate::oauth::fetch::HttpFetcher {
            allow_private: true,
        }),
        clock.clone(),
    ));
    let mut oauth = OAuth::new(store.clone(), clock, oauth_settings, master)
        .await
        .map_err(|e| {
            StartError::OAuth(match e {
                ezforge_core::oauth::OAuthError::Server(detail) => detail,
                other => other.to_string(),
            })
        })?;
    if o.client_documents {
        let fetcher = crate::oauth::fetch::HttpFetcher {
            allow_private: o.client_documents_allow_private,
        };
        oauth = oauth.with_document_fetcher(Arc::new(fetcher));
    }
    let oauth = Arc::new(oauth);
    let http = HttpSettings {
        secure_cookies: public_url.starts_with("https://"),
        public_origin: public_url.clone(),
        trust_proxy_headers: config.trust_proxy_headers,
        session_ttl_secs: config.core.session_ttl_secs,
    };
    let quotas = Arc::new(ezforge_core::telemetry::Quotas::new(store.clone()));
    let requests = ezforge_core::telemetry::RequestLog::start(
        store.clone(),
        quotas.clone(),
        config.request_log.clone(),
    );
    let state = AppState::new(routes::Shared {
        requests: requests.clone(),
        quotas,
        core: core.clone(),
        oauth: oauth.clone(),
        master: master_for_state,
        byoa: byoa_verifier,
        routes: crate::gateway::route_cache(Duration::from_secs(config.route_cache_secs.max(1))),
        identities: ezforge_core::cache::TtlCache::new(100_000, Duration::from_secs(30)),
        http: Arc::new(http),
    });
    let demo = if config.demo {
        Some(
            crate::demo::prepare(&state, &config.data_dir, &public_url)
                .await
                .map_err(StartError::Demo)?,
        )
    } else {
        None
    };
    let state_for_listening = state.clone();
    let state_for_front = state.clone();
    let mut app = router(state.clone(), config.max_body_bytes);
    if config.demo {
        app = app.merge(crate::demo::routes().with_state(state));
    }
    let app = front(app, state_for_front);

    spawn_housekeeping(
        core.clone(),
        oauth.clone(),
        config.request_log.retention_days,
    );
    let metrics_task = match config.metrics_listen {
        Some(addr) => Some(
            crate::prometheus::serve(addr, requests.clone())
                .await
                .map_err(|source| StartError::Bind { addr, source })?,
        ),
        None => None,
    };
    let (tx, rx) = oneshot::channel::<()>();
    let threads =
        crate::listener::Threads::start(app, config.http_threads, config.header_read_timeout)
            .map_err(StartError::Threads)?;
    // Other nodes' changes, heard through the database (PostgreSQL). Started after every step
    // that can fail, and stopped when the server is dropped.
    let invalidations = crate::invalidation::listen(state_for_listening).await;
    let task = tokio::spawn(threads.serve(listener, async move {
        let _ = rx.await;
    }));
    Ok(RunningServer {
        addr,
        public_url,
        backend,
        core,
        oauth,
        demo,
        requests,
        metrics_addr: metrics_task.as_ref().map(|(a, _)| *a),
        metrics_task: metrics_task.map(|(_, t)| t),
        invalidations,
        shutdown: Some(tx),
        task,
    })
}

/// The whole HTTP application.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let state_for_oauth = state.clone();
    let state_for_dashboard = state.clone();
    let (v1, _) = routes::v1(state);
    Router::new()
        .merge(v1)
        .merge(crate::oauth::router().with_state(state_for_oauth))
        .merge(crate::dashboard::router().with_state(state_for_dashboard))
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::Extension(BodyLimit(max_body_bytes)))
        .layer(axum::middleware::map_response(|mut resp: Response| async move {
            default_headers(resp.headers_mut());
            resp
        }))
        // Spans carry the method and path only: never headers (credentials) or query strings.
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
        }))
}

/// Headers every answer carries unless its handler set them: nothing is cached, sniffed,
/// framed or sent on as a referrer.
pub fn default_headers(headers: &mut axum::http::HeaderMap) {
    let defaults = [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
}

/// The front of the application, as the serving threads call it. `/mcp/{slug}` goes straight
/// to the gateway, skipping the router and its layers: it is the hot path, and it records each
/// request itself. Host-based routing: a request to `{slug}.{mcp domain}` is served as
/// `/mcp/{slug}`, and its `/.well-known/oauth-protected-resource` as that server's metadata.
/// Everything else goes to the router, with the peer's address as `ConnectInfo` (rate limits).
pub fn front(inner: Router, state: AppState) -> crate::listener::App {
    use tower::ServiceExt;
    Arc::new(
        move |req: Request<hyper::body::Incoming>, peer: SocketAddr| {
            let inner = inner.clone();
            let state = state.clone();
            Box::pin(async move {
                let mut req = req.map(axum::body::Body::new);
                let host = state.oauth.has_mcp_domain().then(|| {
                    req.headers()
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_ascii_lowercase)
                        .or_else(|| req.uri().authority().map(|a| a.to_string()))
                });
                if let Some(slug) = host
                    .flatten()
                    .as_deref()
                    .and_then(|h| state.oauth.slug_of_host(h))
                {
                    let path = match req.uri().path() {
                        "/" | "/mcp" => {
                            return gateway_answer(&state, slug, req).await;
                        }
                        // The host-root form, and the path-inserted form for `/mcp` (which this
                        // host also serves the server at; RFC 9728 §3.1).
                        "/.well-known/oauth-protected-resource"
                        | "/.well-known/oauth-protected-resource/mcp" => {
                            Some(format!("/.well-known/oauth-protected-resource/mcp/{slug}"))
                        }
                        _ => None,
                    };
                    let path =
                        path.unwrap_or_else(|| "/__no_such_route_on_an_mcp_host".to_string());
                    let pq = match req.uri().query() {
                        Some(q) => format!("{path}?{q}"),
                        None => path,
                    };
                    if let Ok(uri) = pq.parse::<axum::http::Uri>() {
                        *req.uri_mut() = uri;
                    }
                }
                if let Some(slug) = crate::gateway::slug_of_path(req.uri().path()) {
                    let slug = slug.to_string();
                    return gateway_answer(&state, &slug, req).await;
                }
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                match inner.oneshot(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                }
            })
        },
    )
}

async fn gateway_answer(state: &AppState, slug: &str, req: axum::extract::Request) -> Response {
    let mut resp = crate::gateway::serve(state, slug, req).await;
    default_headers(resp.headers_mut());
    resp
}

/// `scheme://host[:port]` without a trailing slash or path.
fn normalize_origin(url: &str) -> Option<String> {
    let url = url.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    (!rest.is_empty() && !rest.contains('/') && !rest.contains('?') && !rest.contains('#'))
        .then(|| url.to_string())
}

/// Every minute: reload signing keys (another node may have rotated), drop unused client
/// registrations, unpublish keys no token needs and delete ended rate-limit windows; every
/// hour, purge long-expired sessions and request records (and per-minute metrics) older than
/// the retention period.
fn spawn_housekeeping(core: Arc<Core>, oauth: Arc<OAuth>, retention_days: i64) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        let mut minutes = 0u64;
        loop {
            tick.tick().await;
            if let Err(e) = oauth.housekeeping().await {
                tracing::warn!(error = %e, "authorization server housekeeping failed");
            }
            if let Err(e) = core.store().purge_event_windows(core.now()).await {
                tracing::warn!(error = %e, "rate-limit window purge failed");
            }
            if minutes.is_multiple_of(60) {
                let before = core
                    .now_ms()
                    .saturating_sub(retention_days.max(1).saturating_mul(86_400_000));
                match core.store().purge_telemetry(before).await {
                    Ok(n) if n > 0 => tracing::info!(records = n, "purged old request records"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "request log purge failed"),
                }
                match core.purge_expired_sessions().await {
                    Ok(n) if n > 0 => tracing::info!(sessions = n, "purged expired sessions"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "session purge failed"),
                }
            }
            minutes += 1;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::normalize_origin;

    #[test]
    fn origins() {
        assert_eq!(
            normalize_origin("https://api.example.com/").as_deref(),
            Some("https://api.example.com")
        );
        assert_eq!(
            normalize_origin("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(normalize_origin("ftp://x"), None);
        assert_eq!(normalize_origin("https://x/path"), None);
    }
}
