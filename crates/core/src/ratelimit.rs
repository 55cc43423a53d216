//! Fixed-window failure counters for brute-force protection, bounded in memory.
//!
//! Counters live in this process: on several nodes each node counts on its own, so the
//! effective limit is at most `nodes × max`. That is still enough to make online guessing of a
//! password hopeless, and needs no shared state on the sign-in path.

use moka::sync::Cache;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    count: u32,
}

pub struct FailureLimiter {
    max: u32,
    window_secs: i64,
    windows: Cache<String, Window>,
}

impl FailureLimiter {
    pub fn new(max: u32, window_secs: i64, capacity: u64) -> Self {
        FailureLimiter {
            max,
            window_secs,
            windows: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(Duration::from_secs(window_secs.max(1) as u64))
                .build(),
        }
    }

    /// `Err(retry_after_secs)` when `key` has used up its failures in the current window.
    pub fn check(&self, key: &str, now: i64) -> Result<(), u64> {
        match self.windows.get(key) {
            Some(w) if now < w.start + self.window_secs && w.count >= self.max => {
                Err((w.start + self.window_secs - now).max(1) as u64)
            }
            _ => Ok(()),
        }
    }

    pub fn record_failure(&self, key: &str, now: i64) {
        let window_secs = self.window_secs;
        self.windows
            .entry(key.to_string())
            .and_upsert_with(|existing| match existing.map(|e| e.into_value()) {
                Some(w) if now < w.start + window_secs => Window {
                    start: w.start,
                    count: w.count.saturating_add(1),
                },
                _ => Window {
                    start: now,
                    count: 1,
                },
            });
    }

    pub fn reset(&self, key: &str) {
        self.windows.invalidate(key);
    }
}

/// Counts every request (not only failures) per key in fixed windows.
pub struct WindowLimiter {
    inner: FailureLimiter,
}

impl WindowLimiter {
    pub fn new(max: u32, window_secs: i64, capacity: u64) -> Self {
        WindowLimiter {
            inner: FailureLimiter::new(max, window_secs, capacity),
        }
    }

    /// Counts a request; `Err(retry_after_secs)` when the window's allowance is used up.
    pub fn hit(&self, key: &str, now: i64) -> Result<(), u64> {
        self.inner.check(key, now)?;
        self.inner.record_failure(key, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_until_the_window_ends() {
        let l = FailureLimiter::new(3, 60, 1000);
        for _ in 0..3 {
            assert!(l.check("a", 100).is_ok());
            l.record_failure("a", 100);
        }
        assert_eq!(l.check("a", 110), Err(50));
        assert!(l.check("b", 110).is_ok());
        assert!(l.check("a", 160).is_ok());
        l.reset("a");
        assert!(l.check("a", 110).is_ok());
    }
}
