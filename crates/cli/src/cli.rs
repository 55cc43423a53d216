//! The command line, as clap definitions. `--help` at every level is the reference.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "ezforge",
    version,
    about = "Put an MCP server on the internet safely",
    long_about = "ezForge is an OAuth 2.1 authorization server, MCP gateway and control plane in one binary.\n\n\
                  Start a server with `ezforge serve`; manage it with the other commands.\n\
                  The CLI signs in with `ezforge auth login`, or uses an API key from EZFORGE_API_KEY.",
    after_help = "Exit codes: 0 ok, 1 failure, 2 bad input, 3 not signed in / session expired / key refused, \
                  4 forbidden, 5 not found, 6 conflict, 7 rate limited, 8 server unreachable."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// The ezForge server to talk to [default: the one you logged in to, else http://127.0.0.1:8080]
    #[arg(long, global = true, env = "EZFORGE_API_URL", value_name = "URL")]
    pub api_url: Option<String>,
    /// Print machine-readable JSON instead of tables and sentences.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the ezForge server.
    Serve(Box<ServeArgs>),
    /// Sign in, check and end the CLI's session.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Projects and their API keys.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Deploy a server: point its traffic at an upstream MCP server (checked with an MCP
    /// `initialize` first).
    Deploy {
        /// Server slug or id.
        server: String,
        /// The upstream's Streamable HTTP URL, e.g. http://10.0.0.5:3001/mcp.
        #[arg(long)]
        upstream: String,
        /// A header sent to the upstream with every request, e.g. "Authorization: Bearer …"
        /// (repeat). Stored encrypted, never shown again. Framing and connection headers
        /// (Content-Length, Transfer-Encoding, Connection, …) are refused.
        #[arg(long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// Upstream timeout in milliseconds [default: 30000].
        #[arg(long)]
        timeout_ms: Option<i64>,
        /// Deploy even if the upstream does not answer.
        #[arg(long)]
        force: bool,
    },
    /// Deployment history.
    #[command(subcommand)]
    Deployments(DeploymentCommand),
    /// Roll a server back to its previous deployment, or to --to ID.
    Rollback {
        server: String,
        #[arg(long, value_name = "DEPLOYMENT_ID")]
        to: Option<String>,
    },
    /// MCP servers: create, list, show, update (auth mode, BYOA, access and tool policy), delete.
    #[command(subcommand)]
    Servers(ServerCommand),
    /// OAuth clients registered by the project for its MCP servers.
    #[command(subcommand, name = "oauth-clients")]
    OauthClients(OauthClientCommand),
    /// Which users let which MCP clients act on a server; revoke them.
    #[command(subcommand)]
    Grants(GrantCommand),
    /// Instance administration.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// A server's request log: every gateway request with its decision, status and latency.
    /// Needs `logs:read`.
    ///
    /// Examples: ezforge logs my-server --since 1h --decision denied;
    /// ezforge logs my-server --follow
    Logs(LogsArgs),
    /// A server's requests, errors, denials and latency percentiles, with a chart. Needs
    /// `metrics:read`.
    Metrics {
        /// Server slug or id.
        server: String,
        /// 15m, 1h, 6h, 24h, 7d or 30d.
        #[arg(long, default_value = "1h")]
        window: String,
    },
    /// A project's usage per day and month, and its quota. Needs `billing:read`.
    Usage {
        /// Project name or id [default: your only project].
        #[arg(long)]
        project: Option<String>,
        /// First day, YYYY-MM-DD [default: 29 days before --to].
        #[arg(long)]
        from: Option<String>,
        /// Last day, YYYY-MM-DD [default: today, UTC].
        #[arg(long)]
        to: Option<String>,
        /// live or test [default: both; an API key sees its own].
        #[arg(long = "env", value_name = "ENV")]
        environment: Option<String>,
    },
    /// A project's audit log: who changed what, newest first. Needs `logs:read`.
    Audit {
        /// Project name or id [default: your only project].
        #[arg(long)]
        project: Option<String>,
        /// Only actions starting with this, e.g. api_key. or server.update.
        #[arg(long)]
        action: Option<String>,
        /// Entries to show (1–1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Server slug or id.
    pub server: String,
    /// Keep printing new records as they come (Ctrl-C to stop).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// From this time on: a duration before now (15m, 2h, 7d) or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only calls of this tool.
    #[arg(long)]
    pub tool: Option<String>,
    /// allowed or denied.
    #[arg(long)]
    pub decision: Option<String>,
    /// Only this HTTP status.
    #[arg(long)]
    pub status: Option<u16>,
    /// Records to show (1–1000), newest first; ignored with --follow.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Subcommand, Debug)]
pub enum DeploymentCommand {
    /// List a server's deployments, newest first.
    List {
        /// Server slug or id.
        server: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ServerCommand {
    /// Create a server in a project.
    Create {
        /// DNS-safe slug, unique on the instance: the server's MCP URL is {public URL}/mcp/SLUG,
        /// or https://SLUG.{mcp domain} with host-based routing.
        slug: String,
        /// Project name or id.
        #[arg(long)]
        project: String,
        /// Display name [default: the slug].
        #[arg(long)]
        name: Option<String>,
        /// `live` or `test` [default: live, or the API key's environment].
        #[arg(long = "env", value_name = "ENV")]
        environment: Option<String>,
        #[command(flatten)]
        settings: Box<ServerSettingsArgs>,
    },
    /// List servers (all your projects', or one project's).
    List {
        #[arg(long)]
        project: Option<String>,
    },
    /// Show a server.
    Get {
        /// Server slug or id.
        server: String,
    },
    /// Change a server. Example (BYOA):
    /// ezforge servers update my-server --auth-mode byoa --byoa-issuer https://auth.example.com
    /// --byoa-jwks-uri https://auth.example.com/.well-known/jwks.json
    /// --byoa-authorization-endpoint https://auth.example.com/oauth/authorize
    /// --byoa-token-endpoint https://auth.example.com/oauth/token
    Update(Box<ServerUpdate>),
    /// Delete a server.
    Delete {
        server: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args, Debug)]
pub struct ServerUpdate {
    /// Server slug or id.
    pub server: String,
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub settings: ServerSettingsArgs,
}

/// A server's settings, as `servers create` and `servers update` take them.
#[derive(Args, Debug)]
pub struct ServerSettingsArgs {
    /// `ezforge_managed` (ezForge is the authorization server) or `byoa` (your own).
    #[arg(long, value_name = "MODE")]
    pub auth_mode: Option<String>,
    #[arg(long, value_name = "URL")]
    pub byoa_issuer: Option<String>,
    #[arg(long, value_name = "URL")]
    pub byoa_jwks_uri: Option<String>,
    #[arg(long, value_name = "URL")]
    pub byoa_authorization_endpoint: Option<String>,
    #[arg(long, value_name = "URL")]
    pub byoa_token_endpoint: Option<String>,
    /// Who may authorize MCP clients: members, instance or allowlist.
    #[arg(long, value_name = "POLICY")]
    pub access_policy: Option<String>,
    /// An email or @domain for the allowlist policy (repeat; replaces the list).
    #[arg(long = "allow", value_name = "EMAIL_OR_DOMAIN")]
    pub allow: Vec<String>,
    /// Only these tools may be called (repeat). Any --tool-* flag replaces the whole tool policy.
    #[arg(long = "tool-allow", value_name = "TOOL")]
    pub tool_allow: Vec<String>,
    /// These tools may never be called (repeat).
    #[arg(long = "tool-deny", value_name = "TOOL")]
    pub tool_deny: Vec<String>,
    /// These tools need the mcp:execute scope (repeat).
    #[arg(long = "tool-execute", value_name = "TOOL")]
    pub tool_execute: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum OauthClientCommand {
    /// Register a client (owners only). A confidential client's secret is printed once, on
    /// standard output.
    Create {
        /// Project name or id.
        project: String,
        /// The name users see on the consent page.
        #[arg(long)]
        name: String,
        /// A redirect URI (https, or http on loopback); repeat for several.
        #[arg(long = "redirect-uri", required = true, value_name = "URI")]
        redirect_uris: Vec<String>,
        /// A public client (PKCE only, no secret), e.g. a desktop or CLI app.
        #[arg(long)]
        public: bool,
    },
    /// List the project's registered clients.
    List { project: String },
    /// Delete a registered client.
    Delete { project: String, client_id: String },
}

#[derive(Subcommand, Debug)]
pub enum GrantCommand {
    /// List a server's grants.
    List {
        /// Project name or id.
        project: String,
        /// Server slug or id.
        server: String,
    },
    /// Revoke a grant: its refresh tokens die and its access tokens stop working.
    Revoke {
        project: String,
        server: String,
        grant_id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Sign in and keep the session (1 hour) in your configuration directory.
    ///
    /// Prompts for the email and password. Non-interactive: pass --email and send the password
    /// on standard input, e.g. `printf '%s' "$PW" | ezforge auth login --email me@example.com`.
    Login(Credentials),
    /// Create an account on the server and sign in. The first account becomes the admin.
    Signup {
        #[command(flatten)]
        credentials: Credentials,
        /// Invite code, when the server's sign-up is invite-only.
        #[arg(long, env = "EZFORGE_INVITE_CODE")]
        invite_code: Option<String>,
    },
    /// Show who the CLI acts as, and until when.
    Status,
    /// End the session on the server and forget it here.
    Logout {
        /// End every session of your account, on every device.
        #[arg(long)]
        everywhere: bool,
    },
}

#[derive(Args, Debug)]
pub struct Credentials {
    /// Your email address (prompted for when omitted).
    #[arg(long)]
    pub email: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ProjectCommand {
    /// Create a project; you become its owner.
    Create {
        /// Lowercase letters, digits and hyphens, e.g. my-first-project.
        name: String,
    },
    /// List your projects (with an API key: the key's project).
    List,
    /// Set a project's monthly request quota, or remove it with `none`. Past it the gateway
    /// answers 429 until the month ends (UTC).
    #[command(name = "set-quota")]
    SetQuota {
        /// Project name or id.
        project: String,
        /// Requests per month, or `none`.
        requests: String,
    },
    /// Create a scoped API key. Its secret is printed once, on standard output.
    ///
    /// Example: ezforge project create-key my-first-project --name "ci-deploy" --scopes "deployments:write,servers:read"
    #[command(name = "create-key")]
    CreateKey {
        /// Project name or id.
        project: String,
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: servers:read, servers:write, deployments:read,
        /// deployments:write, logs:read, metrics:read, billing:read.
        #[arg(long)]
        scopes: String,
        /// `live` for production (ezf_live_…) or `test` (ezf_test_…).
        #[arg(long = "env", default_value = "live", value_name = "ENV")]
        environment: String,
        /// Expire the key after this long: 30d, 12h, 90m.
        #[arg(long, value_name = "DURATION", conflicts_with = "expires_at")]
        expires_in: Option<String>,
        /// Expire the key at this time (RFC 3339, e.g. 2027-01-01T00:00:00Z).
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
    },
    /// List a project's API keys (never their secrets).
    #[command(name = "list-keys")]
    ListKeys {
        /// Project name or id.
        project: String,
    },
    /// Revoke an API key; it stops working immediately.
    #[command(name = "revoke-key")]
    RevokeKey {
        /// Project name or id.
        project: String,
        /// The key's id (key_…), from `list-keys`.
        key_id: String,
    },
    /// List a project's members.
    Members {
        /// Project name or id.
        project: String,
    },
    /// Add an existing user to a project.
    #[command(name = "add-member")]
    AddMember {
        project: String,
        email: String,
        /// owner or member.
        #[arg(long, default_value = "member")]
        role: String,
    },
    /// Remove a member from a project.
    #[command(name = "remove-member")]
    RemoveMember {
        project: String,
        /// The member's user id (usr_…), from `members`.
        user_id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Rotate the access-token signing key: the new key is published now and signs after the
    /// publication delay; the old one stays published until its tokens have expired.
    #[command(name = "rotate-signing-key")]
    RotateSigningKey,
    /// List the signing keys.
    #[command(name = "signing-keys")]
    SigningKeys,
    /// Create an invite code for an invite-only instance (admins only).
    #[command(name = "create-invite")]
    CreateInvite {
        /// Only this email address may use the invite.
        #[arg(long)]
        email: Option<String>,
    },
}

/// `ezforge serve`. Every option can also come from an `EZFORGE_*` environment variable or the
/// TOML file given by --config; a flag beats the environment, which beats the file.
#[derive(Args, Debug, Default)]
#[command(
    after_help = "Configuration file (TOML), keys as the long options with underscores, e.g.:\n  \
                  listen = \"0.0.0.0:8080\"\n  public_url = \"https://api.example.com\"\n  \
                  database_url = \"postgres://ezforge@db/ezforge\"\n  signup = \"invite\"\n\n\
                  Logging: EZFORGE_LOG (or RUST_LOG) sets the filter, e.g. EZFORGE_LOG=debug."
)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "EZFORGE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A ready-to-try instance: a demo user (credentials printed), a project and a server `demo`
    /// backed by a small built-in MCP server; prints the MCP URL to give an MCP client.
    #[arg(long, env = "EZFORGE_DEMO")]
    pub demo: bool,
    /// Address and port to listen on [default: 127.0.0.1:8080]. Port 0 picks a free port.
    #[arg(long, env = "EZFORGE_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// The origin clients reach this server at, e.g. https://api.example.com [default: derived from --listen].
    /// Session cookies are marked Secure when it is https.
    #[arg(long, env = "EZFORGE_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Where the embedded database lives [default: ezforge in your data directory, e.g. ~/.local/share/ezforge].
    #[arg(long, env = "EZFORGE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://user@host/db) for running several nodes; or sqlite://PATH
    /// [default: SQLite file ezforge.db in the data directory].
    #[arg(long, env = "EZFORGE_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Database connection pool size [default: 10].
    #[arg(long, env = "EZFORGE_DB_MAX_CONNECTIONS", value_name = "N")]
    pub db_max_connections: Option<u32>,
    /// Who may sign up after the first user (who becomes admin): open, invite or closed [default: open].
    #[arg(long, env = "EZFORGE_SIGNUP", value_name = "MODE")]
    pub signup: Option<String>,
    /// Session lifetime in seconds [default: 3600, as documented].
    #[arg(long, env = "EZFORGE_SESSION_TTL_SECS", value_name = "SECS")]
    pub session_ttl_secs: Option<i64>,
    /// Failed sign-ins allowed per account in 15 minutes before 429, counted across all nodes
    /// [default: 10].
    #[arg(long, env = "EZFORGE_LOGIN_FAILURES_PER_ACCOUNT", value_name = "N")]
    pub login_failures_per_account: Option<u32>,
    /// Failed sign-ins allowed per client address in 15 minutes before 429, counted across all
    /// nodes [default: 100].
    #[arg(long, env = "EZFORGE_LOGIN_FAILURES_PER_CLIENT", value_name = "N")]
    pub login_failures_per_client: Option<u32>,
    /// Seconds a verified API key is trusted from memory. A revocation drops it at once on
    /// every node that hears of it (on PostgreSQL, all of them); this bounds how long a node
    /// that missed the message may accept a revoked key [default: 10; 0 disables the cache].
    #[arg(long, env = "EZFORGE_API_KEY_CACHE_TTL_SECS", value_name = "SECS")]
    pub api_key_cache_ttl_secs: Option<u64>,
    /// Largest accepted request body in bytes [default: 65536].
    #[arg(long, env = "EZFORGE_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Trust X-Forwarded-For for the client address (only behind a proxy that sets it).
    #[arg(long, env = "EZFORGE_TRUST_PROXY_HEADERS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub trust_proxy_headers: Option<bool>,
    /// The master key (32 bytes, base64) that encrypts signing keys at rest. Prefer the
    /// environment variable. Several nodes must share one [default: master.key in the data
    /// directory, generated with mode 0600 on first start].
    #[arg(
        long,
        env = "EZFORGE_MASTER_KEY",
        value_name = "BASE64",
        hide_env_values = true
    )]
    pub master_key: Option<String>,
    /// Access token lifetime in seconds [default: 900, as documented].
    #[arg(long, env = "EZFORGE_ACCESS_TOKEN_TTL_SECS", value_name = "SECS")]
    pub access_token_ttl_secs: Option<i64>,
    /// Refresh token lifetime in seconds; rotated on every use [default: 2592000 = 30 days].
    #[arg(long, env = "EZFORGE_REFRESH_TOKEN_TTL_SECS", value_name = "SECS")]
    pub refresh_token_ttl_secs: Option<i64>,
    /// Authorization code lifetime in seconds; single use [default: 300].
    #[arg(long, env = "EZFORGE_AUTH_CODE_TTL_SECS", value_name = "SECS")]
    pub auth_code_ttl_secs: Option<i64>,
    /// A retry with a just-spent refresh token within this many seconds gets the same
    /// successor instead of revoking the family [default: 30].
    #[arg(long, env = "EZFORGE_REFRESH_GRACE_SECS", value_name = "SECS")]
    pub refresh_grace_secs: Option<i64>,
    /// A rotated signing key is published this many seconds before it signs [default: 600].
    #[arg(long, env = "EZFORGE_SIGNING_KEY_PUBLISH_SECS", value_name = "SECS")]
    pub signing_key_publish_secs: Option<i64>,
    /// Dynamic client registrations allowed per client address per 10 minutes, counted across
    /// all nodes [default: 30].
    #[arg(long, env = "EZFORGE_REGISTER_RATE", value_name = "N")]
    pub register_rate: Option<u32>,
    /// Token requests allowed per client address per minute, on each node [default: 600].
    #[arg(long, env = "EZFORGE_TOKEN_RATE", value_name = "N")]
    pub token_rate: Option<u32>,
    /// Accept Client ID Metadata Documents (client_id = an https URL) [default: true].
    #[arg(long, env = "EZFORGE_CLIENT_DOCUMENTS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub client_documents: Option<bool>,
    /// Let client metadata documents live on private or loopback addresses and plain http.
    /// For development only: it lets anyone make the server fetch internal URLs.
    #[arg(long, env = "EZFORGE_CLIENT_DOCUMENTS_ALLOW_PRIVATE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub client_documents_allow_private: Option<bool>,
    /// Host-based routing: serve each server at {slug}.DOMAIN (e.g. mcp.example.com) as well as
    /// at /mcp/{slug}; resource URIs then use the host form [default: path-based only].
    #[arg(long, env = "EZFORGE_MCP_DOMAIN", value_name = "DOMAIN")]
    pub mcp_domain: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "EZFORGE_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Store a record of every gateway request (`ezforge logs`). Off, metrics, usage and
    /// quotas are still counted [default: true].
    #[arg(long, env = "EZFORGE_REQUEST_LOG", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub request_log: Option<bool>,
    /// Days request records and per-minute metrics are kept [default: 30].
    #[arg(long, env = "EZFORGE_REQUEST_LOG_RETENTION_DAYS", value_name = "DAYS")]
    pub request_log_retention_days: Option<i64>,
    /// Request records waiting to be written before new ones are dropped (and counted)
    /// [default: 16384].
    #[arg(long, env = "EZFORGE_REQUEST_LOG_QUEUE", value_name = "N")]
    pub request_log_queue: Option<usize>,
    /// Threads serving HTTP connections; each connection stays on one of them
    /// [default: one per CPU core].
    #[arg(long, env = "EZFORGE_HTTP_THREADS", value_name = "N")]
    pub http_threads: Option<usize>,
    /// Seconds a client may take to send a request's headers, and an HTTP/1.1 keep-alive
    /// connection may sit idle, before the connection is closed [default: 30].
    #[arg(long, env = "EZFORGE_HEADER_READ_TIMEOUT", value_name = "SECONDS")]
    pub header_read_timeout: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 [default: off].
    #[arg(long, env = "EZFORGE_METRICS_LISTEN", value_name = "ADDR:PORT")]
    pub metrics_listen: Option<SocketAddr>,
}
