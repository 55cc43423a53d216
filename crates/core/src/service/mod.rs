//! The operations of the control plane. Handlers parse input, call one of these with the
//! authenticated [`Principal`](crate::Principal), and map the result.

mod access;
mod auth;
pub mod deployments;
pub mod keys;
mod projects;
mod servers;
mod telemetry;

pub use auth::NewSession;
pub use telemetry::{LogFilter, MetricsWindow};

use crate::clock::Clock;
use crate::model::ApiKeyRow;
use crate::shared_limiter::SharedLimiter;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// Who may create an account once the instance has its first user (who always may, and becomes
/// admin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignupMode {
    #[default]
    Open,
    /// Only with an invite code created by an admin.
    Invite,
    Closed,
}

impl std::str::FromStr for SignupMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(SignupMode::Open),
            "invite" | "invite-only" | "invite_only" => Ok(SignupMode::Invite),
            "closed" => Ok(SignupMode::Closed),
            other => Err(format!(
                "unknown sign-up mode `{other}`; expected open, invite or closed"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub signup: SignupMode,
    /// The docs: "HTTP-only cookies, 1-hour expiry".
    pub session_ttl_secs: i64,
    pub invite_ttl_secs: i64,
    /// Failed sign-ins allowed per account, then per client address, in one window.
    pub login_failures_per_account: u32,
    pub login_failures_per_client: u32,
    pub login_window_secs: i64,
    /// How long a verified API key is trusted from memory. Revocation on this node clears it at
    /// once; this bounds how long another node may still accept a revoked key.
    pub api_key_cache_ttl_secs: u64,
    /// `last_used_at` is written at most this often per key, off the request path.
    pub last_used_resolution_secs: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            signup: SignupMode::Open,
            session_ttl_secs: 3600,
            invite_ttl_secs: 7 * 24 * 3600,
            login_failures_per_account: 10,
            login_failures_per_client: 100,
            login_window_secs: 15 * 60,
            api_key_cache_ttl_secs: 10,
            last_used_resolution_secs: 60,
        }
    }
}

pub struct Core {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    /// Verified keys by secret hash; `None` when the TTL is 0.
    key_cache: Option<crate::cache::TtlCache<String, Arc<ApiKeyRow>>>,
    /// Sign-in failures, counted across nodes (see `shared_limiter`).
    login_by_account: SharedLimiter,
    login_by_client: SharedLimiter,
}

impl Core {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: Settings) -> Self {
        let key_cache = (settings.api_key_cache_ttl_secs > 0).then(|| {
            crate::cache::TtlCache::new(
                100_000,
                Duration::from_secs(settings.api_key_cache_ttl_secs),
            )
        });
        let window = settings.login_window_secs;
        Core {
            login_by_account: SharedLimiter::new(
                "sign-in/account",
                settings.login_failures_per_account,
                window,
            ),
            login_by_client: SharedLimiter::gated(
                "sign-in/client",
                settings.login_failures_per_client,
                window,
                100_000,
            ),
            store,
            clock,
            settings,
            key_cache,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Drops every cached API key verification (after missed invalidations; benchmarks use it
    /// to measure the cold path).
    pub fn clear_caches(&self) {
        if let Some(cache) = &self.key_cache {
            cache.invalidate_all();
        }
    }
}
