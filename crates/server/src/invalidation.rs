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

/// Messages applied together at most: what has queued up while the last ones were applied.
const BATCH: usize = 256;

/// The task applying other nodes' changes; dropping it stops the task, and with it the store's
/// listening connection (which ends once nobody receives what it hears).
pub struct Listening(JoinHandle<()>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Applies the changes every node publishes, for as long as the store reports them; `None` when
/// this node is the only one (SQLite).
pub async fn listen(state: AppState) -> Option<Listening> {
    let mut heard = match state.core.store().subscribe_invalidations().await {
        Ok(Some(rx)) => rx,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for other nodes' changes; cached state expires by its lifetime");
            return None;
        }
    };
    Some(Listening(tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        while heard.recv_many(&mut batch, BATCH).await > 0 {
            for change in coalesce(&mut batch) {
                state.apply_invalidation(&change).await;
            }
        }
    })))
}

/// What a batch of messages comes to: `Everything` alone if it is among them, else each change
/// once (a flood of one message, or of signing-key reloads, is applied once).
fn coalesce(batch: &mut Vec<Invalidation>) -> Vec<Invalidation> {
    if batch.contains(&Invalidation::Everything) {
        batch.clear();
        return vec![Invalidation::Everything];
    }
    let mut seen = std::collections::HashSet::new();
    batch.drain(..).filter(|c| seen.insert(c.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_applies_each_change_once_and_everything_alone() {
        let mut batch = vec![
            Invalidation::SigningKeys,
            Invalidation::Grant("a".into()),
            Invalidation::SigningKeys,
            Invalidation::Grant("b".into()),
            Invalidation::Grant("a".into()),
        ];
        assert_eq!(
            coalesce(&mut batch),
            vec![
                Invalidation::SigningKeys,
                Invalidation::Grant("a".into()),
                Invalidation::Grant("b".into()),
            ]
        );
        assert!(batch.is_empty());
        let mut batch = vec![
            Invalidation::Routes,
            Invalidation::Everything,
            Invalidation::Quota("p".into()),
        ];
        assert_eq!(coalesce(&mut batch), vec![Invalidation::Everything]);
        assert!(batch.is_empty());
    }
}
