//! Cached state that a change makes stale, told to every node sharing the database.
//!
//! Each node keeps short-lived copies of what its hot paths read: verified API keys, whether a
//! grant is live, registered clients, the gateway's routes, quotas, the signing keys. A change
//! on one node drops its own copy at once. The other nodes hear of it through the store
//! (`Store::publish_invalidation`; on PostgreSQL a `NOTIFY`, see `ezforge-store`'s
//! `invalidations`) and drop theirs within milliseconds. Every copy keeps its short lifetime
//! besides: if a node misses a message (its listening connection dropped), the lifetime still
//! bounds how long it can act on a stale copy, and on reconnecting it drops everything
//! ([`Invalidation::Everything`]).

use crate::store::Store;

/// The PostgreSQL channel the messages travel on.
pub const CHANNEL: &str = "ezforge_invalidate";

/// The largest message sent as it is. PostgreSQL refuses `NOTIFY` payloads of 8,000 bytes or
/// more; a longer one (a client id that is a very long URL) is sent as `Everything`.
pub const MAX_MESSAGE: usize = 7_900;

/// What changed, named by what the caches key it by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Invalidation {
    /// An API key, by the hash of its secret (revoked).
    ApiKey(String),
    /// A grant, by id (revoked: its tokens stop at every gateway).
    Grant(String),
    /// Every grant's state (grants revoked in bulk: a member removed, an access policy changed).
    GrantStates,
    /// A registered client, by client id (updated, deleted, or used for the first time).
    Client(String),
    /// The gateway's routes (a server changed, or a deployment was activated).
    Routes,
    /// A project's quota.
    Quota(String),
    /// The signing keys (one was added or retired).
    SigningKeys,
    /// Anything may have changed: messages were missed, or one was too long to send.
    Everything,
}

impl Invalidation {
    /// The message's text: a one-letter kind, then `:` and the key where there is one.
    pub fn encode(&self) -> String {
        let (kind, key) = match self {
            Invalidation::ApiKey(k) => ("k", Some(k)),
            Invalidation::Grant(g) => ("g", Some(g)),
            Invalidation::GrantStates => ("G", None),
            Invalidation::Client(c) => ("c", Some(c)),
            Invalidation::Routes => ("r", None),
            Invalidation::Quota(p) => ("q", Some(p)),
            Invalidation::SigningKeys => ("s", None),
            Invalidation::Everything => ("*", None),
        };
        match key {
            Some(key) if kind.len() + 1 + key.len() > MAX_MESSAGE => "*".to_string(),
            Some(key) => format!("{kind}:{key}"),
            None => kind.to_string(),
        }
    }

    /// Reads a message. An unknown one (sent by a newer build, say) is taken as `Everything`:
    /// dropping too much costs a few reloads, dropping too little serves stale state.
    pub fn decode(message: &str) -> Invalidation {
        let (kind, key) = match message.split_once(':') {
            Some((kind, key)) => (kind, Some(key)),
            None => (message, None),
        };
        match (kind, key) {
            ("k", Some(k)) if !k.is_empty() => Invalidation::ApiKey(k.to_string()),
            ("g", Some(g)) if !g.is_empty() => Invalidation::Grant(g.to_string()),
            ("G", None) => Invalidation::GrantStates,
            ("c", Some(c)) if !c.is_empty() => Invalidation::Client(c.to_string()),
            ("r", None) => Invalidation::Routes,
            ("q", Some(p)) if !p.is_empty() => Invalidation::Quota(p.to_string()),
            ("s", None) => Invalidation::SigningKeys,
            _ => Invalidation::Everything,
        }
    }
}

/// Tells the other nodes, after this node has changed the database and dropped its own copy.
/// The change is made already, so a failure to tell is logged, not returned: the other nodes'
/// copies then expire by their lifetimes, as they would without the message.
pub async fn publish(store: &dyn Store, change: Invalidation) {
    if let Err(e) = store.publish_invalidation(&change).await {
        // The kind only: a key names a secret's hash or a grant.
        let kind = change.encode().chars().next().unwrap_or('*');
        tracing::warn!(error = %e, kind = %kind, "cannot tell the other nodes of a change; their caches expire by themselves");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_as_itself() {
        let all = [
            Invalidation::ApiKey("2d2f7b".into()),
            Invalidation::Grant("grt_01".into()),
            Invalidation::GrantStates,
            Invalidation::Client("https://client.example/metadata.json?a=b:c".into()),
            Invalidation::Routes,
            Invalidation::Quota("prj_01".into()),
            Invalidation::SigningKeys,
            Invalidation::Everything,
        ];
        for change in all {
            assert_eq!(Invalidation::decode(&change.encode()), change, "{change:?}");
        }
    }

    #[test]
    fn a_key_too_long_for_a_message_is_sent_as_everything() {
        let long = Invalidation::Client(format!("https://client.example/{}", "a".repeat(8_000)));
        assert_eq!(long.encode(), "*");
        let fits = Invalidation::Client("c".repeat(MAX_MESSAGE - 2));
        assert_eq!(fits.encode().len(), MAX_MESSAGE);
        assert_eq!(Invalidation::decode(&fits.encode()), fits);
    }

    #[test]
    fn unknown_or_malformed_messages_drop_everything() {
        for message in [
            "", "x", "x:1", "k", "k:", "g:", "r:extra", "G:1", "s:k", "*:1",
        ] {
            assert_eq!(
                Invalidation::decode(message),
                Invalidation::Everything,
                "{message:?}"
            );
        }
    }
}
