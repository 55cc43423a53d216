//! `ezforge serve`: resolve the configuration (flags > environment > TOML file > defaults),
//! start the server, print where it listens, stop gracefully on SIGINT or SIGTERM.

use crate::cli::ServeArgs;
use crate::error::{CliError, CliResult};
use ezforge_core::SignupMode;
use ezforge_server::ServerConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The TOML file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    public_url: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    db_max_connections: Option<u32>,
    signup: Option<String>,
    session_ttl_secs: Option<i64>,
    login_failures_per_account: Option<u32>,
    login_failures_per_client: Option<u32>,
    api_key_cache_ttl_secs: Option<u64>,
    max_body_bytes: Option<usize>,
    trust_proxy_headers: Option<bool>,
    log_format: Option<String>,
    master_key: Option<String>,
    access_token_ttl_secs: Option<i64>,
    refresh_token_ttl_secs: Option<i64>,
    auth_code_ttl_secs: Option<i64>,
    refresh_grace_secs: Option<i64>,
    signing_key_publish_secs: Option<i64>,
    register_rate: Option<u32>,
    token_rate: Option<u32>,
    client_documents: Option<bool>,
    client_documents_allow_private: Option<bool>,
    mcp_domain: Option<String>,
    request_log: Option<bool>,
    request_log_retention_days: Option<i64>,
    request_log_queue: Option<usize>,
    metrics_listen: Option<SocketAddr>,
    http_threads: Option<usize>,
    header_read_timeout: Option<u64>,
}

fn read_file(path: &PathBuf) -> CliResult<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text)
        .map_err(|e| CliError::Usage(format!("config file {}: {e}", path.display())))
}

fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .map(|d| d.join("ezforge"))
        .unwrap_or_else(|| PathBuf::from(".ezforge"))
}

/// Merges flags/environment (already merged by clap) over the file over the defaults.
pub fn resolve(args: &ServeArgs) -> CliResult<(ServerConfig, String)> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    macro_rules! pick {
        ($field:ident) => {
            args.$field.clone().or(file.$field.clone())
        };
    }
    let listen = pick!(listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let data_dir = pick!(data_dir).unwrap_or_else(default_data_dir);
    let mut config = ServerConfig::new(listen, data_dir);
    config.demo = args.demo;
    config.public_url = pick!(public_url);
    config.database_url = pick!(database_url).filter(|u| !u.is_empty());
    if let Some(n) = pick!(db_max_connections) {
        config.max_db_connections = n;
    }
    if let Some(mode) = pick!(signup) {
        config.core.signup = mode.parse::<SignupMode>().map_err(CliError::Usage)?;
    }
    if let Some(secs) = pick!(session_ttl_secs) {
        if secs <= 0 {
            return Err(CliError::Usage(
                "--session-ttl-secs must be positive".into(),
            ));
        }
        config.core.session_ttl_secs = secs;
    }
    if let Some(n) = pick!(login_failures_per_account) {
        config.core.login_failures_per_account = n.max(1);
    }
    if let Some(n) = pick!(login_failures_per_client) {
        config.core.login_failures_per_client = n.max(1);
    }
    if let Some(secs) = pick!(api_key_cache_ttl_secs) {
        config.core.api_key_cache_ttl_secs = secs;
    }
    if let Some(bytes) = pick!(max_body_bytes) {
        config.max_body_bytes = bytes.max(1024);
    }
    config.trust_proxy_headers = pick!(trust_proxy_headers).unwrap_or(false);
    if let Some(key) = pick!(master_key) {
        config.master_key = Some(
            ezforge_core::crypto::MasterKey::from_base64(&key)
                .map_err(|e| CliError::Usage(format!("--master-key / EZFORGE_MASTER_KEY: {e}")))?,
        );
    }
    let positive = |name: &str, v: Option<i64>| -> CliResult<Option<i64>> {
        match v {
            Some(n) if n <= 0 => Err(CliError::Usage(format!("--{name} must be positive"))),
            other => Ok(other),
        }
    };
    let o = &mut config.oauth;
    if let Some(v) = positive("access-token-ttl-secs", pick!(access_token_ttl_secs))? {
        o.access_token_ttl_secs = v;
    }
    if let Some(v) = positive("refresh-token-ttl-secs", pick!(refresh_token_ttl_secs))? {
        o.refresh_token_ttl_secs = v;
    }
    if let Some(v) = positive("auth-code-ttl-secs", pick!(auth_code_ttl_secs))? {
        o.code_ttl_secs = v;
    }
    if let Some(v) = pick!(refresh_grace_secs) {
        o.refresh_grace_secs = v.max(0);
    }
    if let Some(v) = pick!(signing_key_publish_secs) {
        o.key_publish_secs = v.max(0);
    }
    if let Some(v) = pick!(register_rate) {
        o.register_per_window = v.max(1);
    }
    if let Some(v) = pick!(token_rate) {
        o.token_per_window = v.max(1);
    }
    if let Some(v) = pick!(client_documents) {
        o.client_documents = v;
    }
    config.mcp_domain = pick!(mcp_domain).filter(|d| !d.trim().is_empty());
    if let Some(v) = pick!(client_documents_allow_private) {
        o.client_documents_allow_private = v;
    }
    let r = &mut config.request_log;
    if let Some(v) = pick!(request_log) {
        r.enabled = v;
    }
    if let Some(v) = positive(
        "request-log-retention-days",
        pick!(request_log_retention_days),
    )? {
        r.retention_days = v;
    }
    if let Some(v) = pick!(request_log_queue) {
        if v == 0 {
            return Err(CliError::Usage(
                "--request-log-queue must be positive".into(),
            ));
        }
        r.queue_capacity = v;
    }
    config.metrics_listen = pick!(metrics_listen);
    if let Some(n) = pick!(http_threads) {
        if n == 0 {
            return Err(CliError::Usage("--http-threads must be positive".into()));
        }
        config.http_threads = n;
    }
    if let Some(secs) = pick!(header_read_timeout) {
        if secs == 0 {
            return Err(CliError::Usage(
                "--header-read-timeout must be at least 1 second".into(),
            ));
        }
        config.header_read_timeout = std::time::Duration::from_secs(secs);
    }
    let log_format = pick!(log_format).unwrap_or_else(|| "text".into());
    if log_format != "text" && log_format != "json" {
        return Err(CliError::Usage(format!(
            "--log-format must be text or json, not `{log_format}`"
        )));
    }
    Ok((config, log_format))
}

fn init_logging(format: &str) {
    let filter = std::env::var("EZFORGE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A database URL without its password, for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}@{}", &url[..scheme_end + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

pub async fn run(args: &ServeArgs) -> CliResult {
    let (config, log_format) = resolve(args)?;
    init_logging(&log_format);
    let db = redact(&config.database_url());
    let server = ezforge_server::start(config)
        .await
        .map_err(|e| CliError::Failure(e.to_string()))?;
    // The first line is stable: tools (and our tests) read the URL from it. A closed stdout
    // must not stop the server, so write errors are ignored.
    let url = &server.public_url;
    let mut banner = format!(
        "ezForge {} listening on {url}\n  database: {} ({db})\n  API:      {url}/v1  (OpenAPI: {url}/v1/openapi.json)\n  dashboard: {url}/dashboard\n",
        env!("CARGO_PKG_VERSION"),
        server.backend,
    );
    if let Some(demo) = &server.demo {
        banner.push_str(&format!(
            "\n  Demo MCP server: {}\n  Give that URL to an MCP client (MCP Inspector, Claude Code, Cursor, the SDKs); sign in as\n    email:    {}\n    password: {}\n  The CLI: ezforge auth login --api-url {url} --email {}\n\n",
            demo.mcp_url,
            demo.email,
            demo.password.as_deref().unwrap_or("(set on an earlier run; delete the data directory to start over)"),
            demo.email,
        ));
    }
    if let Some(addr) = server.metrics_addr {
        banner.push_str(&format!("  metrics:  http://{addr}/metrics (Prometheus)\n"));
    }
    banner.push_str("  stop with Ctrl-C\n");
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes());
        let _ = out.flush();
    }
    server
        .serve_until(shutdown_signal())
        .await
        .map_err(|e| CliError::Failure(format!("server error: {e}")))?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ezforge.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nsignup = \"closed\"\nsession_ttl_secs = 600\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            listen: Some("127.0.0.1:9100".parse().unwrap()),
            ..Default::default()
        };
        let (config, _) = resolve(&args).unwrap();
        assert_eq!(config.listen.port(), 9100, "flag wins");
        assert_eq!(config.core.signup, SignupMode::Closed, "file fills in");
        assert_eq!(config.core.session_ttl_secs, 600);
        assert_eq!(config.max_body_bytes, 64 * 1024, "default");
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        assert!(matches!(
            resolve(&ServeArgs {
                config: Some(file),
                ..Default::default()
            }),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            redact("postgres://ezf:s3cret@db:5432/ezforge"),
            "postgres://ezf@db:5432/ezforge"
        );
        assert_eq!(
            redact("sqlite:///tmp/x.db?mode=rwc"),
            "sqlite:///tmp/x.db?mode=rwc"
        );
    }
}
