//! Rate limits counted across every node that shares the database: sign-in failures per
//! account and per client address, and dynamic client registrations per address.
//!
//! Counted in memory alone, `n` nodes behind a load balancer would allow `n` times the limit.
//! Here each event is counted in the database (`Store::count_event`: one atomic upsert that
//! returns the window's count), so the limit holds whichever nodes the requests reach. The
//! node's own in-memory count comes first: once this node alone has seen more than the limit
//! in a window, it refuses without asking the database, so a flood costs the database at most
//! `limit` writes per key, window and node. These paths are slow ones (a password hash, a
//! registration's insert), so a round trip more does not show; the token endpoint's per-node
//! limiter (`ratelimit::WindowLimiter`) stays in memory.
//!
//! Keys are stored hashed (SHA-256 of the limit's name and the key): the table never holds an
//! email address someone tried.

use crate::ratelimit::FailureLimiter;
use crate::secret;
use crate::store::{Store, StoreResult};

pub struct SharedLimiter {
    /// Names the limit inside the stored key, so that limits never share a count.
    name: &'static str,
    max: u32,
    window_secs: i64,
    local: FailureLimiter,
}

impl SharedLimiter {
    pub fn new(name: &'static str, max: u32, window_secs: i64, capacity: u64) -> Self {
        SharedLimiter {
            name,
            max,
            window_secs,
            local: FailureLimiter::new(max, window_secs, capacity),
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
        if let Err(retry_after) = self.local.attempt(key, now) {
            return Ok(Some(retry_after));
        }
        let (count, ends_at) = store
            .count_event(&self.stored_key(key), now, self.window_secs)
            .await?;
        Ok((count > i64::from(self.max)).then(|| (ends_at - now).max(1) as u64))
    }

    /// Takes back one counted attempt (a success that should not count against the limit).
    pub async fn forgive(&self, store: &dyn Store, key: &str, now: i64) -> StoreResult<()> {
        self.local.forgive(key);
        store.uncount_event(&self.stored_key(key), now).await
    }

    /// Forgets the key's count (a successful sign-in clears its account's failures).
    pub async fn reset(&self, store: &dyn Store, key: &str) -> StoreResult<()> {
        self.local.reset(key);
        store.clear_events(&self.stored_key(key)).await
    }
}
