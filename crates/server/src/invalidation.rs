//! Keeping this node's caches true to the database when any node changes it (see
//! `ezforge_core::invalidation`): handlers that change cached state call [`Shared::invalidate`],
//! and a task applies what every node publishes ([`listen`]).

use crate::routes::{AppState, Shared};
use ezforge_core::invalidation::{self, Invalidation};
use tokio::task::JoinHandle;

impl Shared {
    /// After a change this node made: drops its own copies at once, then tells the other nodes.
    pub async fn invalidate(&self, change: Invalidation) {
        self.apply_invalidation(&change).await;
        invalidation::publish(&**self.core.store(), change).await;
    }

    /// Drops the copies `change` made stale, whichever node made it.
    pub async fn apply_invalidation(&self, change: &Invalidation) {
        match change {
            Invalidation::ApiKey(hash) => self.core.forget_key(hash),
            Invalidation::Grant(id) => self.oauth.forget_grant(id),
            Invalidation::GrantStates => self.oauth.forget_grant_states(),
            Invalidation::Client(id) => self.oauth.forget_client(id),
            Invalidation::Routes => self.routes.invalidate_all(),
            Invalidation::Quota(project_id) => self.quotas.forget(project_id),
            Invalidation::SigningKeys => self.reload_signing_keys().await,
            Invalidation::Everything => {
                self.core.clear_caches();
                self.oauth.forget_grant_states();
                self.oauth.forget_clients();
                self.routes.invalidate_all();
                self.identities.invalidate_all();
                self.quotas.forget_all();
                self.reload_signing_keys().await;
            }
        }
    }

    /// After a server's settings changed: its routes, and the grants a new access policy may
    /// have revoked.
    pub async fn server_updated(&self) {
        self.invalidate(Invalidation::GrantStates).await;
        self.invalidate(Invalidation::Routes).await;
    }

    async fn reload_signing_keys(&self) {
        // Keys are reloaded every minute as well; a failure here only delays a new key.
        if let Err(e) = self.oauth.reload_keys().await {
            tracing::warn!(error = %e, "cannot reload the signing keys after another node changed them");
        }
    }
}

/// Applies the changes every node publishes, for as long as the store reports them; `None` when
/// this node is the only one (SQLite).
pub async fn listen(state: AppState) -> Option<JoinHandle<()>> {
    let mut heard = match state.core.store().subscribe_invalidations().await {
        Ok(Some(rx)) => rx,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for other nodes' changes; cached state expires by its lifetime");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        while let Some(change) = heard.recv().await {
            state.apply_invalidation(&change).await;
        }
    }))
}
