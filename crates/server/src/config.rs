//! The server's resolved configuration. The CLI builds it from flags, `EZFORGE_*` environment
//! variables and an optional TOML file.

use ezforge_core::Settings;
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
