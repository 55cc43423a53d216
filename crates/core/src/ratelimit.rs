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
        let _ = self.attempt(key, now);
    }

    /// Counts an attempt and checks it in one atomic step, so that parallel attempts cannot all
    /// pass a check made before any of them is counted. `Err(retry_after_secs)` past the limit.
    pub fn attempt(&self, key: &str, now: i64) -> Result<(), u64> {
        let window_secs = self.window_secs;
        let w = self
            .windows
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
            })
            .into_value();
        if w.count > self.max {
            Err((w.start + window_secs - now).max(1) as u64)
        } else {
            Ok(())
        }
    }

    /// Takes back one counted attempt (a success that should not count against the limit).
    pub fn forgive(&self, key: &str) {
        self.windows
            .entry(key.to_string())
            .and_compute_with(|existing| match existing.map(|e| e.into_value()) {
                Some(w) if w.count > 1 => moka::ops::compute::Op::Put(Window {
                    start: w.start,
                    count: w.count - 1,
                }),
                Some(_) => moka::ops::compute::Op::Remove,
                None => moka::ops::compute::Op::Nop,
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
        self.inner.attempt(key, now)
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

    #[test]
    fn attempts_are_counted_before_they_are_judged() {
        let l = FailureLimiter::new(3, 60, 1000);
        assert!((0..3).all(|_| l.attempt("a", 100).is_ok()));
        assert_eq!(l.attempt("a", 100), Err(60));
        l.forgive("a");
        l.forgive("a");
        assert!(l.attempt("a", 101).is_ok());
    }

    #[test]
    fn parallel_attempts_cannot_exceed_the_limit() {
        let l = std::sync::Arc::new(FailureLimiter::new(10, 900, 1000));
        let passed: usize = (0..8)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || (0..10).filter(|_| l.attempt("acct", 1).is_ok()).count())
            })
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(passed, 10);
    }
}
