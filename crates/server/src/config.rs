//! The server's resolved configuration. The CLI builds it from flags, `EZFORGE_*` environment
//! variables and an optional TOML file.

use ezforge_core::Settings;
use ezforge_core::crypto::MasterKey;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The origin ezForge advertises (`https://api.example.com`). `None`: derived from the bound
    /// address. Cookies are `Secure` when it is https.
    pub public_url: Option<String>,
    /// Where the embedded database and generated secrets live.
    pub data_dir: PathBuf,
    /// `postgres://…` or `sqlite://…`; `None`: `ezforge.db` in the data directory.
    pub database_url: Option<String>,
    pub max_db_connections: u32,
    /// Largest request body accepted on `/v1`, in bytes.
    pub max_body_bytes: usize,
    /// Take the client address from `X-Forwarded-For` (only behind a proxy that sets it).
    pub trust_proxy_headers: bool,
    pub core: Settings,
    /// Host-based routing: `{slug}.{mcp_domain}` serves the server `slug` (e.g.
    /// `mcp.example.com`, or `mcp.localhost:8080` with a port). Resource URIs then use it.
    pub mcp_domain: Option<String>,
    /// `serve --demo`: a demo user, project and server backed by a built-in MCP server.
    pub demo: bool,
    /// Encrypts signing keys at rest. `None`: read from, or generated into, `master.key` in the
    /// data directory (mode 0600). Several nodes must share one.
    pub master_key: Option<MasterKey>,
    pub oauth: OAuthConfig,
    /// The request log: on or off, queue size, retention.
    pub request_log: ezforge_core::telemetry::RequestLogSettings,
    /// Serve Prometheus metrics on this address (`/metrics`); `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// Threads serving HTTP connections (see `listener`); default one per core.
    pub http_threads: usize,
    /// How long a client may take to send a request's headers — and so how long an HTTP/1.1
    /// keep-alive connection may sit idle — before the connection is closed. Without it, a
    /// client trickling headers (slowloris) holds a connection for ever.
    pub header_read_timeout: std::time::Duration,
    /// Seconds the gateway routes a server from memory. Changes made on any node drop the copy
    /// at once where they are heard (see `invalidation`); the lifetime bounds how long a node
    /// that missed one keeps routing the old way.
    pub route_cache_secs: u64,
}

/// Authorization server lifetimes (seconds) and limits; defaults are the documentation's.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    pub access_token_ttl_secs: i64,
    pub refresh_token_ttl_secs: i64,
    pub code_ttl_secs: i64,
    pub refresh_grace_secs: i64,
    pub key_publish_secs: i64,
    pub register_per_window: u32,
    pub token_per_window: u32,
    /// Seconds a grant's state (live or revoked) is trusted from memory by the gateway; like
    /// `route_cache_secs`, a bound for a node that missed a revocation.
    pub grant_cache_secs: i64,
    /// Accept Client ID Metadata Documents.
    pub client_documents: bool,
    /// Let those documents live on private or loopback addresses and plain http (development).
    pub client_documents_allow_private: bool,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        let d = ezforge_core::oauth::OAuthSettings::new("");
        OAuthConfig {
            access_token_ttl_secs: d.access_token_ttl_secs,
            refresh_token_ttl_secs: d.refresh_token_ttl_secs,
            code_ttl_secs: d.code_ttl_secs,
            refresh_grace_secs: d.refresh_grace_secs,
            key_publish_secs: d.key_publish_secs,
            register_per_window: d.register_per_window,
            token_per_window: d.token_per_window,
            grant_cache_secs: d.grant_cache_secs,
            client_documents: true,
            client_documents_allow_private: false,
        }
    }
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        ServerConfig {
            listen,
            public_url: None,
            data_dir,
            database_url: None,
            max_db_connections: 10,
            max_body_bytes: 64 * 1024,
            trust_proxy_headers: false,
            core: Settings::default(),
            master_key: None,
            mcp_domain: None,
            demo: false,
            oauth: OAuthConfig::default(),
            request_log: Default::default(),
            metrics_listen: None,
            http_threads: crate::listener::default_threads(),
            header_read_timeout: std::time::Duration::from_secs(30),
            route_cache_secs: 2,
        }
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("ezforge.db").display()
            )
        })
    }
}

/// Settings the HTTP layer needs on every request.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// `scheme://host[:port]`, no trailing slash.
    pub public_origin: String,
    pub secure_cookies: bool,
    pub trust_proxy_headers: bool,
    pub session_ttl_secs: i64,
}

/// The master key from the configuration, or from `master.key` in the data directory, created
/// with mode 0600 on first start.
pub fn load_master_key(config: &ServerConfig) -> Result<MasterKey, String> {
    if let Some(k) = &config.master_key {
        return Ok(k.clone());
    }
    let path = config.data_dir.join("master.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => MasterKey::from_base64(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&config.data_dir)
                .map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
            let key = MasterKey::generate().map_err(|e| e.to_string())?;
            write_private(&path, key.to_base64().as_bytes())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "generated a new master key");
            Ok(key)
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes a new file readable by its owner only.
pub fn write_private_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    write_private(path, bytes)
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}
