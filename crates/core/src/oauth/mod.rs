//! The OAuth 2.1 authorization server for MCP clients (managed mode): client registration,
//! authorization with PKCE and consent, the token endpoint with refresh rotation, ES256 access
//! tokens (RFC 9068), revocation and introspection.

pub mod authorize;
mod batch;
pub mod cimd;
pub mod clients;
mod error;
mod family;
pub mod introspect;
pub mod keys;
pub mod model;
pub mod redirect;
pub mod scope;
pub mod token;

pub use error::OAuthError;

use crate::clock::Clock;
use crate::crypto::MasterKey;
use crate::ratelimit::WindowLimiter;
use crate::store::Store;
use keys::KeyRing;
use std::sync::Arc;

/// Lifetimes and limits; defaults follow the documentation's table.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// The issuer: this server's public origin, e.g. `https://auth.example.com`.
    pub issuer: String,
    /// Resource URIs are `{resource_base}/mcp/{slug}` (path-based routing)…
    pub resource_base: String,
    /// …or `{scheme}://{slug}.{mcp_domain}` when a domain is configured (host-based routing;
    /// the domain may carry a port).
    pub mcp_domain: Option<String>,
    /// Access token: 15 minutes.
    pub access_token_ttl_secs: i64,
    /// Refresh token: 30 days, rotated on use.
    pub refresh_token_ttl_secs: i64,
    /// Authorization code: 5 minutes, single use.
    pub code_ttl_secs: i64,
    /// A retry with a refresh token spent less than this long ago gets the same successor.
    pub refresh_grace_secs: i64,
    /// Dynamic registrations never used are deleted after this long.
    pub unused_client_ttl_secs: i64,
    /// A new signing key is published this long before it starts signing.
    pub key_publish_secs: i64,
    /// Registrations per client address per 10 minutes.
    pub register_per_window: u32,
    /// Token requests per client address per minute.
    pub token_per_window: u32,
    /// Let client metadata documents live on private, loopback or link-local addresses and on
    /// plain http (for development and tests only).
    pub cimd_allow_private: bool,
    /// How long a node trusts its memory that a grant is live. Revocation on the same node is
    /// immediate; this bounds it on the others.
    pub grant_cache_secs: i64,
}

impl OAuthSettings {
    pub fn new(issuer: &str) -> Self {
        OAuthSettings {
            issuer: issuer.trim_end_matches('/').to_string(),
            resource_base: issuer.trim_end_matches('/').to_string(),
            mcp_domain: None,
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            code_ttl_secs: 5 * 60,
            refresh_grace_secs: 30,
            unused_client_ttl_secs: 24 * 3600,
            key_publish_secs: 10 * 60,
            register_per_window: 30,
            token_per_window: 600,
            cimd_allow_private: false,
            grant_cache_secs: 5,
        }
    }
}

pub struct OAuth {
    store: Arc<dyn Store>,
    /// The token endpoint's reads and writes, done many requests at a time.
    batch: batch::TokenBatcher,
    clock: Arc<dyn Clock>,
    settings: OAuthSettings,
    master: MasterKey,
    keys: KeyRing,
    /// Registrations per client address, counted across nodes (see `shared_limiter`).
    register_limiter: crate::shared_limiter::SharedLimiter,
    token_limiter: WindowLimiter,
    /// `None`: client metadata documents are not accepted.
    cimd: Option<cimd::CimdCache>,
    /// Registered clients, briefly: every token request looks its client up.
    client_cache: crate::cache::TtlCache<String, Arc<model::ClientRow>>,
    /// Access tokens whose signature was checked, by token hash (expiry is checked on use).
    verified: crate::cache::TtlCache<String, Arc<token::AccessClaims>>,
    /// Whether a grant is live, for a few seconds (see `grant_live`).
    grant_liveness: crate::cache::TtlCache<String, bool>,
    /// Makes and checks refresh tokens (see `family`).
    families: family::FamilyKeys,
}

impl OAuth {
    /// Loads (or, on first start, creates) the signing keys.
    pub async fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: OAuthSettings,
        master: MasterKey,
    ) -> Result<Self, OAuthError> {
        let token_ttl =
            std::time::Duration::from_secs(settings.access_token_ttl_secs.max(1) as u64);
        let grant_ttl = std::time::Duration::from_secs(settings.grant_cache_secs.max(1) as u64);
        let keys = KeyRing::default();
        let oauth = OAuth {
            register_limiter: crate::shared_limiter::SharedLimiter::gated(
                "register",
                settings.register_per_window,
                600,
                100_000,
            ),
            token_limiter: WindowLimiter::new(settings.token_per_window, 60, 100_000),
            families: family::FamilyKeys::new(&master),
            batch: batch::TokenBatcher::start(store.clone(), clock.clone()),
            store,
            clock,
            settings,
            master,
            keys,
            cimd: None,
            verified: crate::cache::TtlCache::new(100_000, token_ttl),
            grant_liveness: crate::cache::TtlCache::new(100_000, grant_ttl),
            client_cache: crate::cache::TtlCache::new(50_000, std::time::Duration::from_secs(60)),
        };
        oauth.ensure_signing_key().await?;
        oauth.end_cross_project_grants().await?;
        Ok(oauth)
    }

    /// Ends the grants a project's client got for another project's server before `/authorize`
    /// refused that (b6f4cc3): otherwise their refresh tokens would keep them going for ever.
    /// Nothing is found once they are ended, so this costs one query at each start.
    async fn end_cross_project_grants(&self) -> Result<(), OAuthError> {
        for grant_id in self.store.cross_project_grants().await? {
            if self
                .end_grant(
                    &grant_id,
                    "client registered in another project than the server's",
                )
                .await?
            {
                tracing::warn!(%grant_id, "ended a grant its client's project should never have had");
            }
        }
        Ok(())
    }

    /// Accepts client metadata documents, fetched with `fetcher`.
    pub fn with_document_fetcher(mut self, fetcher: Arc<dyn cimd::DocumentFetcher>) -> Self {
        self.cimd = Some(cimd::CimdCache::new(fetcher));
        self
    }

    pub fn supports_client_documents(&self) -> bool {
        self.cimd.is_some()
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.settings
    }

    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// The canonical resource URI of the server with `slug`.
    pub fn resource_uri(&self, slug: &str) -> String {
        match &self.settings.mcp_domain {
            Some(domain) => format!("{}://{slug}.{domain}", self.scheme()),
            None => format!("{}/mcp/{slug}", self.settings.resource_base),
        }
    }

    /// Where the protected-resource metadata of `slug` is published (RFC 9728 §3.1).
    pub fn resource_metadata_url(&self, slug: &str) -> String {
        match &self.settings.mcp_domain {
            Some(_) => format!(
                "{}/.well-known/oauth-protected-resource",
                self.resource_uri(slug)
            ),
            None => format!(
                "{}/.well-known/oauth-protected-resource/mcp/{slug}",
                self.settings.resource_base
            ),
        }
    }

    fn scheme(&self) -> &str {
        self.settings.issuer.split("://").next().unwrap_or("https")
    }

    /// The slug named by a canonical resource URI, if it is one of ours.
    pub fn slug_of_resource<'a>(&self, resource: &'a str) -> Option<&'a str> {
        let slug = match &self.settings.mcp_domain {
            Some(domain) => {
                let host = resource.strip_prefix(self.scheme())?.strip_prefix("://")?;
                host.strip_suffix(domain.as_str())?.strip_suffix('.')?
            }
            None => resource
                .strip_prefix(&self.settings.resource_base)?
                .strip_prefix("/mcp/")?,
        };
        (!slug.is_empty() && !slug.contains(['/', '.', ':', '@', '?', '#'])).then_some(slug)
    }

    /// Whether servers are also reached at `{slug}.{mcp domain}`.
    pub fn has_mcp_domain(&self) -> bool {
        self.settings.mcp_domain.is_some()
    }

    /// The slug a request's `Host` names under the MCP domain, if any.
    pub fn slug_of_host<'a>(&self, host: &'a str) -> Option<&'a str> {
        let domain = self.settings.mcp_domain.as_deref()?;
        // A domain configured without a port matches the host on any port.
        let host = match host.rsplit_once(':') {
            Some((name, port))
                if !domain.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                name
            }
            _ => host,
        };
        let slug = host.strip_suffix(domain)?.strip_suffix('.')?;
        (!slug.is_empty() && !slug.contains(['.', ':'])).then_some(slug)
    }

    fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Housekeeping: unused registrations, keys no token can need any more.
    pub async fn housekeeping(&self) -> Result<(), OAuthError> {
        self.store.purge_expired_clients(self.now()).await?;
        self.prune_keys().await?;
        self.reload_keys().await
    }
}
