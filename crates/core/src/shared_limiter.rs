//! Rate limits counted across every node that shares the database: sign-in failures per
//! account and per client address, and dynamic client registrations per address.
//!
//! Counted in memory alone, `n` nodes behind a load balancer would allow `n` times the limit.
//! Here each event is counted in the database (`Store::count_event`: one atomic upsert that
//! returns the window's count), so the limit holds whichever nodes the requests reach. These
//! paths are slow ones (a password hash, a registration's insert), so a round trip more does
//! not show; the token endpoint's per-node limiter (`ratelimit::WindowLimiter`) stays in memory.
//!
//! A limiter keyed by client address also counts in memory first ([`SharedLimiter::gated`]):
//! once this node alone has seen more than the limit in its window, it refuses without asking
//! the database, so a flood from one address costs the database at most `limit + 1` writes per
//! window and node. (The node's window starts with its own first event, so it may refuse for
//! up to one window longer than the database's count alone would.) A limiter keyed by account
//! has no such gate: a success clears its count on every node, and the flood that reaches it
//! has passed the address's limit first.
//!
//! Keys are stored as SHA-256 hashes of the limit's name and the key: not readable at a glance,
//! but whoever can read the database can test a guessed address or email against them.

use crate::ratelimit::FailureLimiter;
use crate::secret;
use crate::store::{Store, StoreResult};

pub struct SharedLimiter {
    /// Names the limit inside the stored key, so that limits never share a count.
    name: &'static str,
    max: u32,
    window_secs: i64,
    /// This node's own count, consulted first; `None`: the database's count alone.
    local: Option<FailureLimiter>,
}

impl SharedLimiter {
    /// Counted in the database only.
    pub fn new(name: &'static str, max: u32, window_secs: i64) -> Self {
        SharedLimiter {
            name,
            max,
            window_secs,
            local: None,
        }
    }

    /// Counted in memory first, for keys a flood can come from (client addresses); up to
    /// `capacity` keys in memory.
    pub fn gated(name: &'static str, max: u32, window_secs: i64, capacity: u64) -> Self {
        SharedLimiter {
            local: Some(FailureLimiter::new(max, window_secs, capacity)),
            ..Self::new(name, max, window_secs)
        }
    }

    fn stored_key(&self, key: &str) -> String {
        secret::hash(&format!("{}\u{0}{key}", self.name))
    }

    /// Counts an attempt and checks it, atomically across nodes. `Ok(Some(retry_after_secs))`
    /// past the limit.
    pub async fn attempt(
        &self,
        store: &dyn Store,
        key: &str,
        now: i64,
    ) -> StoreResult<Option<u64>> {
        if let Some(Err(retry_after)) = self.local.as_ref().map(|l| l.attempt(key, now)) {
            return Ok(Some(retry_after));
        }
        let (count, ends_at) = store
            .count_event(&self.stored_key(key), now, self.window_secs)
            .await?;
        Ok((count > i64::from(self.max)).then(|| (ends_at - now).max(1) as u64))
    }

    /// Takes back one counted attempt (a success that should not count against the limit).
    pub async fn forgive(&self, store: &dyn Store, key: &str, now: i64) -> StoreResult<()> {
        if let Some(local) = &self.local {
            local.forgive(key);
        }
        store.uncount_event(&self.stored_key(key), now).await
    }

    /// Forgets the key's count (a successful sign-in clears its account's failures).
    pub async fn reset(&self, store: &dyn Store, key: &str) -> StoreResult<()> {
        if let Some(local) = &self.local {
            local.reset(key);
        }
        store.clear_events(&self.stored_key(key)).await
    }
}
