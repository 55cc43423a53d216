//! Fixed-window counters, bounded in memory.
//!
//! Counters live in this process: on several nodes each node counts on its own. Sign-in and
//! registration limits count in the database as well (`shared_limiter`, which uses
//! [`FailureLimiter`] as its first, local gate); the token endpoint's [`WindowLimiter`] counts
//! per node only, so across nodes it allows up to `nodes × max`.

use moka::sync::Cache;
use std::net::IpAddr;
use std::time::Duration;

/// The part of a client address a limit counts by: an IPv4 address whole (an IPv4-mapped IPv6
/// address as IPv4), an IPv6 address by its /64, one subscriber's network, in which a client
/// may take any of 2^64 addresses. Anything else (an unparsable forwarded value) as it is.
pub fn address_key(addr: &str) -> String {
    // An address with a port (`1.2.3.4:5678`, `[2001:db8::1]:5678`, as some proxies forward
    // it) counts by its address: a port per connection must not make a key per connection.
    let ip = addr
        .parse::<std::net::SocketAddr>()
        .map(|s| s.ip())
        .or_else(|_| addr.parse::<IpAddr>());
    match ip {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Err(_) => addr.to_string(),
    }
}

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
///
/// It sits on the token endpoint's path, counted for every request, so it is a few maps under
/// short locks rather than a moka cache (whose upsert took 3–4% of a serving thread there).
/// Memory stays bounded: a full shard first forgets the windows that have ended (at most once
/// a second, so that a flood of new keys does not sweep on every request), then, if every key
/// in it is still inside its window, one arbitrary key. A new key is never refused for want of
/// room; a forgotten one starts again from zero, as with any bounded cache.
pub struct WindowLimiter {
    max: u32,
    window_secs: i64,
    per_shard: usize,
    hasher: std::hash::RandomState,
    shards: Box<[std::sync::Mutex<Shard>]>,
}

#[derive(Default)]
struct Shard {
    windows: std::collections::HashMap<String, Window>,
    swept_at: i64,
}

const SHARDS: usize = 16;

impl WindowLimiter {
    pub fn new(max: u32, window_secs: i64, capacity: u64) -> Self {
        let per_shard = usize::try_from(capacity).unwrap_or(usize::MAX) / SHARDS;
        WindowLimiter {
            max,
            window_secs,
            per_shard: per_shard.max(1),
            hasher: std::hash::RandomState::new(),
            shards: (0..SHARDS).map(|_| Default::default()).collect(),
        }
    }

    /// Counts a request; `Err(retry_after_secs)` when the window's allowance is used up.
    pub fn hit(&self, key: &str, now: i64) -> Result<(), u64> {
        use std::hash::BuildHasher;
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        // A panic while the lock was held leaves at worst a count off by one.
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        let window_secs = self.window_secs;
        let w = match shard.windows.get_mut(key) {
            Some(w) if now < w.start + window_secs => {
                w.count = w.count.saturating_add(1);
                *w
            }
            Some(w) => {
                *w = Window {
                    start: now,
                    count: 1,
                };
                *w
            }
            None => {
                if shard.windows.len() >= self.per_shard && shard.swept_at != now {
                    shard.swept_at = now;
                    shard.windows.retain(|_, w| now < w.start + window_secs);
                }
                if shard.windows.len() >= self.per_shard {
                    let some = shard.windows.keys().next().cloned();
                    if let Some(k) = some {
                        shard.windows.remove(&k);
                    }
                }
                let w = Window {
                    start: now,
                    count: 1,
                };
                shard.windows.insert(key.to_string(), w);
                w
            }
        };
        if w.count > self.max {
            Err((w.start + window_secs - now).max(1) as u64)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_count_by_host_for_ipv4_and_by_network_for_ipv6() {
        assert_eq!(address_key("203.0.113.7"), "203.0.113.7");
        assert_eq!(address_key("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(
            address_key("2001:db8:1:2:aaaa::1"),
            address_key("2001:db8:1:2:bbbb:cccc:dddd:eeee")
        );
        assert_eq!(address_key("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_ne!(
            address_key("2001:db8:1:2::1"),
            address_key("2001:db8:1:3::1")
        );
        assert_eq!(address_key("203.0.113.7:51234"), "203.0.113.7");
        assert_eq!(address_key("[2001:db8:1:2::1]:51234"), "2001:db8:1:2::/64");
        assert_eq!(address_key("not an address"), "not an address");
    }

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
    fn request_windows_count_per_key_and_start_again() {
        let l = WindowLimiter::new(2, 60, 1000);
        assert!(l.hit("a", 100).is_ok());
        assert!(l.hit("a", 110).is_ok());
        assert_eq!(l.hit("a", 120), Err(40));
        assert!(l.hit("b", 120).is_ok(), "each key has its own window");
        assert_eq!(l.hit("a", 159), Err(1));
        assert!(l.hit("a", 160).is_ok(), "a new window");
    }

    #[test]
    fn request_windows_stay_bounded() {
        let l = WindowLimiter::new(1, 60, (SHARDS * 4) as u64);
        for i in 0..10_000 {
            assert!(
                l.hit(&format!("k{i}"), 100).is_ok(),
                "a new key always gets in"
            );
        }
        let held: usize = l
            .shards
            .iter()
            .map(|s| s.lock().unwrap().windows.len())
            .sum();
        assert!(held <= SHARDS * 4, "{held} windows held");
        // Ended windows go first when a shard is full.
        for i in 0..10_000 {
            assert!(l.hit(&format!("later{i}"), 200).is_ok());
        }
        let live: usize = l
            .shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap()
                    .windows
                    .values()
                    .filter(|w| w.start == 200)
                    .count()
            })
            .sum();
        assert_eq!(live, SHARDS * 4);
    }

    #[test]
    fn parallel_requests_cannot_exceed_the_limit() {
        let l = std::sync::Arc::new(WindowLimiter::new(10, 900, 1000));
        let passed: usize = (0..8)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || (0..10).filter(|_| l.hit("ip", 1).is_ok()).count())
            })
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(passed, 10);
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
