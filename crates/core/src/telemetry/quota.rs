//! Monthly request quotas per project, enforced by the gateway without a database round trip
//! per request.
//!
//! Each node keeps, per project, the month's count as the database had it when loaded plus the
//! requests this node admitted since and has not yet written (`unflushed`). On one node the
//! count is exact; across nodes each node sees the others' requests within the cache lifetime
//! (5 s) plus their write delay, so a busy project may overshoot its quota by that much.

use super::calendar;
use crate::store::{Store, StoreResult};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct QuotaState {
    limit: Option<i64>,
    /// The month it counts, as unix times: its first second, and the next month's.
    from: i64,
    until: i64,
    used: AtomicI64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaCheck {
    /// The project has no quota.
    Unlimited,
    /// Admitted and counted.
    Counted,
    /// The month's quota is used up; it resets in `retry_after_secs`.
    Exceeded { limit: i64, retry_after_secs: i64 },
}

pub struct Quotas {
    store: Arc<dyn Store>,
    cache: crate::cache::TtlCache<String, Arc<QuotaState>>,
    /// Moved on by every `forget`: a state loaded across one may predate the change. One count
    /// for all projects: a change to one also drops other projects' loads in flight, which then
    /// load again on their next request.
    forgotten: AtomicU64,
    /// Per project: requests admitted on this node and not yet written.
    unflushed: Mutex<HashMap<String, i64>>,
}

impl Quotas {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Quotas {
            store,
            cache: crate::cache::TtlCache::new(100_000, Duration::from_secs(5)),
            forgotten: AtomicU64::new(0),
            unflushed: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request against the project's quota, unless that would exceed it.
    pub async fn admit(&self, project_id: &str, now_secs: i64) -> StoreResult<QuotaCheck> {
        // The month is compared as a time range: no date formatting on the gateway's hot path.
        let this_month = |s: &Arc<QuotaState>| (s.from..s.until).contains(&now_secs);
        let state = match self.cache.get(project_id) {
            Some(s) if this_month(&s) => s,
            _ => {
                let forgotten = self.forgotten.load(Ordering::Acquire);
                let fresh = Arc::new(self.load(project_id, now_secs).await?);
                // Racing loads (a cold cache, or the month turning) all end up counting on the
                // first state put in, so no increment is lost on a state nobody else sees.
                let state = self
                    .cache
                    .get_or_replace(project_id.to_string(), this_month, fresh);
                if self.forgotten.load(Ordering::Acquire) != forgotten {
                    // A quota changed while this state was read: this request counts on it,
                    // the next one reads again. (Its count is in `unflushed`, so not lost.)
                    self.cache.invalidate(project_id);
                }
                state
            }
        };
        let Some(limit) = state.limit else {
            return Ok(QuotaCheck::Unlimited);
        };
        if state.used.fetch_add(1, Ordering::SeqCst) >= limit {
            state.used.fetch_sub(1, Ordering::SeqCst);
            return Ok(QuotaCheck::Exceeded {
                limit,
                retry_after_secs: (calendar::next_month_start(now_secs) - now_secs).max(1),
            });
        }
        if let Ok(mut u) = self.unflushed.lock() {
            *u.entry(project_id.to_string()).or_default() += 1;
        }
        Ok(QuotaCheck::Counted)
    }

    async fn load(&self, project_id: &str, now_secs: i64) -> StoreResult<QuotaState> {
        let limit = self.store.project_quota(project_id).await?;
        let used = match limit {
            Some(_) => {
                let month = calendar::month(now_secs);
                let stored = self.store.month_requests(project_id, &month).await?;
                let pending = self
                    .unflushed
                    .lock()
                    .map(|u| u.get(project_id).copied().unwrap_or(0))
                    .unwrap_or(0);
                stored + pending
            }
            None => 0,
        };
        Ok(QuotaState {
            limit,
            from: calendar::month_start(now_secs),
            until: calendar::next_month_start(now_secs),
            used: AtomicI64::new(used),
        })
    }

    /// `n` counted requests of the project are now in the database.
    pub fn handed_over(&self, project_id: &str, n: i64) {
        if n == 0 {
            return;
        }
        if let Ok(mut u) = self.unflushed.lock()
            && let Some(v) = u.get_mut(project_id)
        {
            *v = (*v - n).max(0);
            if *v == 0 {
                u.remove(project_id);
            }
        }
    }

    /// The quota changed on this node: reload it on the next request.
    pub fn forget(&self, project_id: &str) {
        self.forgotten.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate(project_id);
    }

    /// Every quota may have changed (invalidations were missed): reload each on its next request.
    pub fn forget_all(&self) {
        self.forgotten.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate_all();
    }
}
