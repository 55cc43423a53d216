//! A time-bounded cache for the gateway's hot path: a shared, size-bounded moka cache, and in
//! front of it a small copy per thread.
//!
//! Why the copy: every proxied request looks up its route, its token, its grant's liveness,
//! its identity headers and its project's quota. In moka each lookup hashes with SipHash,
//! records the read for its eviction policy and now and then runs housekeeping: about 5% of
//! the gateway's CPU on the benchmark. A thread's own `HashMap` answers the same lookup with
//! no shared write at all.
//!
//! What stays true:
//! - An entry lives no longer than its time to live from when it was first inserted: the copy
//!   carries the shared entry's expiry, not a fresh one.
//! - `invalidate` and `invalidate_all` take effect at once on every thread: they clear the
//!   shared cache first, then bump a generation that every copy is checked against.
//! - Memory stays bounded: the shared cache by its capacity, each thread's copy by
//!   [`LOCAL_CAPACITY`] (a full copy is emptied, then refills from the shared cache).

use std::any::Any;
use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Entries a thread keeps of one cache before it starts over.
pub const LOCAL_CAPACITY: usize = 4096;

pub struct TtlCache<K, V> {
    /// Which of the thread's copies is this cache's.
    id: u64,
    ttl: Duration,
    shared: moka::sync::Cache<K, (V, Instant)>,
    /// Bumped by every invalidation; a copy made under another generation is dropped.
    generation: AtomicU64,
}

/// One thread's copy of one cache.
struct Local<K, V> {
    generation: u64,
    entries: HashMap<K, (V, Instant)>,
}

/// Cache ids are small distinct integers: one multiplication spreads them (Fibonacci hashing),
/// no SipHash needed.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type ById = HashMap<u64, Box<dyn Any>, std::hash::BuildHasherDefault<IdHasher>>;

thread_local! {
    /// This thread's copies, by cache id.
    static LOCAL: RefCell<ById> = RefCell::new(ById::default());
}

impl<K, V> TtlCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(max_capacity: u64, ttl: Duration) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        TtlCache {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            ttl,
            shared: moka::sync::Cache::builder()
                .max_capacity(max_capacity)
                .time_to_live(ttl)
                .build(),
            generation: AtomicU64::new(0),
        }
    }

    /// Runs `f` on this thread's copy, emptied first if an invalidation happened since it was
    /// filled. `None` when the thread is being torn down.
    fn local<R>(&self, generation: u64, f: impl FnOnce(&mut Local<K, V>) -> R) -> Option<R> {
        LOCAL
            .try_with(|all| {
                let mut all = all.try_borrow_mut().ok()?;
                let slot = all.entry(self.id).or_insert_with(|| {
                    Box::new(Local::<K, V> {
                        generation,
                        entries: HashMap::new(),
                    })
                });
                let local = slot.downcast_mut::<Local<K, V>>()?;
                if local.generation != generation {
                    local.entries.clear();
                    local.generation = generation;
                }
                Some(f(local))
            })
            .ok()
            .flatten()
    }

    fn remember(&self, generation: u64, key: K, value: V, expires: Instant) {
        self.local(generation, |local| {
            if local.entries.len() >= LOCAL_CAPACITY {
                local.entries.clear();
            }
            local.entries.insert(key, (value, expires));
        });
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        // Read before the shared cache: an invalidation after this point bumps it, and the
        // copy made below is then dropped on its next use.
        let generation = self.generation.load(Ordering::Acquire);
        let now = Instant::now();
        let hit = self.local(generation, |local| match local.entries.get(key) {
            Some((value, expires)) if *expires > now => Some(value.clone()),
            Some(_) => {
                local.entries.remove(key);
                None
            }
            None => None,
        });
        if let Some(Some(value)) = hit {
            return Some(value);
        }
        let (value, expires) = self.shared.get(key)?;
        if expires <= now {
            return None;
        }
        self.remember(generation, key.to_owned(), value.clone(), expires);
        Some(value)
    }

    pub fn insert(&self, key: K, value: V) {
        let generation = self.generation.load(Ordering::Acquire);
        let expires = Instant::now() + self.ttl;
        self.shared.insert(key.clone(), (value.clone(), expires));
        self.remember(generation, key, value, expires);
    }

    /// Where invalidations stand: read it before loading a value from its source, and pass it
    /// to [`TtlCache::insert_loaded`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Inserts a value loaded from its source after `generation` was read, unless an
    /// invalidation happened since: then the value may predate it (a grant read as live just
    /// before its revocation committed), and it is dropped everywhere.
    pub fn insert_loaded(&self, generation: u64, key: K, value: V) {
        let expires = Instant::now() + self.ttl;
        self.shared.insert(key.clone(), (value.clone(), expires));
        if self.generation.load(Ordering::Acquire) != generation {
            // Another thread may have copied it already: `invalidate` bumps the generation.
            self.invalidate(&key);
            return;
        }
        self.remember(generation, key, value, expires);
    }

    /// The value stored under `key` if `keep` accepts it and it has not expired; otherwise
    /// `fresh` replaces it. Atomic: racing callers all get the same value. Replacing a value
    /// drops every thread's copy of it.
    pub fn get_or_replace(&self, key: K, keep: impl Fn(&V) -> bool, fresh: V) -> V {
        use moka::ops::compute::{CompResult, Op};
        let generation = self.generation.load(Ordering::Acquire);
        let now = Instant::now();
        let fresh = (fresh, now + self.ttl);
        let result = self
            .shared
            .entry(key.clone())
            .and_compute_with(|current| match current {
                Some(e) if e.value().1 > now && keep(&e.value().0) => Op::Nop,
                _ => Op::Put(fresh.clone()),
            });
        let (value, expires, replaced) = match result {
            CompResult::Unchanged(e) => {
                let (v, x) = e.into_value();
                (v, x, false)
            }
            CompResult::ReplacedWith(e) => {
                let (v, x) = e.into_value();
                (v, x, true)
            }
            CompResult::Inserted(e) => {
                let (v, x) = e.into_value();
                (v, x, false)
            }
            // `Op::Remove` is never returned above; take the fresh value for completeness.
            CompResult::Removed(_) | CompResult::StillNone(_) => (fresh.0, fresh.1, false),
        };
        if replaced {
            self.generation.fetch_add(1, Ordering::AcqRel);
        } else {
            self.remember(generation, key, value.clone(), expires);
        }
        value
    }

    /// Replaces the value under `key`, keeping its expiry, if it is there and no invalidation
    /// happened since `generation` was read (before the value was loaded or last read): a
    /// value that changes while cached (a key's last use) without living longer than the
    /// value first loaded. Every thread's copy goes, so each sees the new value.
    pub fn update_loaded(&self, generation: u64, key: K, value: V) {
        use moka::ops::compute::Op;
        self.shared
            .entry(key.clone())
            .and_compute_with(|current| match current {
                Some(e) => Op::Put((value.clone(), e.value().1)),
                None => Op::Nop,
            });
        let bumped = self.generation.compare_exchange(
            generation,
            generation.wrapping_add(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if bumped.is_err() {
            // An invalidation since: the row read before it may be stale.
            self.invalidate(&key);
        }
    }

    // Both take the generation up before and after the shared cache is cleared: before, so
    // that a value loaded before the change and inserted while it is being cleared fails its
    // `insert_loaded` check or is cleared; after, so that a copy a thread made of a value read
    // just before the clearing is dropped.
    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // Every thread's copy goes: invalidations are rare, lookups are not.
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.shared.invalidate(key);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.shared.invalidate_all();
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn cache(ttl_ms: u64) -> Arc<TtlCache<String, u32>> {
        Arc::new(TtlCache::new(1000, Duration::from_millis(ttl_ms)))
    }

    #[test]
    fn a_value_is_seen_by_every_thread_until_it_is_invalidated() {
        let c = cache(60_000);
        c.insert("a".into(), 1);
        assert_eq!(c.get("a"), Some(1));
        let other = c.clone();
        // Another thread fills its own copy from the shared cache.
        std::thread::spawn(move || assert_eq!(other.get("a"), Some(1)))
            .join()
            .unwrap();
        c.invalidate("a");
        assert_eq!(c.get("a"), None, "this thread's copy");
        let other = c.clone();
        std::thread::spawn(move || assert_eq!(other.get("a"), None))
            .join()
            .unwrap();
    }

    #[test]
    fn an_invalidation_on_another_thread_reaches_this_threads_copy() {
        let c = cache(60_000);
        c.insert("a".into(), 1);
        c.insert("b".into(), 2);
        assert_eq!(c.get("a"), Some(1));
        let other = c.clone();
        std::thread::spawn(move || other.invalidate_all())
            .join()
            .unwrap();
        assert_eq!(c.get("a"), None);
        assert_eq!(c.get("b"), None);
        c.insert("a".into(), 3);
        assert_eq!(c.get("a"), Some(3));
    }

    #[test]
    fn a_copy_expires_with_the_entry_it_was_made_from() {
        let c = cache(150);
        c.insert("a".into(), 1);
        std::thread::sleep(Duration::from_millis(100));
        // Copied into another thread late in its life: it must not get a new lifetime there.
        let other = c.clone();
        std::thread::spawn(move || {
            assert_eq!(other.get("a"), Some(1));
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(other.get("a"), None);
        })
        .join()
        .unwrap();
        assert_eq!(c.get("a"), None);
    }

    #[test]
    fn racing_inserts_keep_the_first_value_until_it_is_replaced() {
        let c = cache(60_000);
        let always = |_: &u32| true;
        assert_eq!(c.get_or_replace("q".into(), always, 1), 1);
        assert_eq!(c.get_or_replace("q".into(), always, 2), 1);
        let other = c.clone();
        let seen = std::thread::spawn(move || other.get_or_replace("q".into(), always, 3))
            .join()
            .unwrap();
        assert_eq!(seen, 1);
        // A value `keep` refuses is replaced once, and every thread sees the replacement.
        assert_eq!(c.get_or_replace("q".into(), |v| *v != 1, 4), 4);
        assert_eq!(c.get_or_replace("q".into(), |v| *v != 1, 5), 4);
        let other = c.clone();
        assert_eq!(
            std::thread::spawn(move || other.get("q")).join().unwrap(),
            Some(4)
        );
        assert_eq!(c.get("q"), Some(4));
        c.invalidate("q");
        assert_eq!(c.get_or_replace("q".into(), always, 6), 6);
    }

    #[test]
    fn an_update_keeps_the_entrys_expiry_and_reaches_every_thread() {
        let c = cache(1000);
        let generation = c.generation();
        c.insert_loaded(generation, "k".into(), 1);
        // Another thread holds a copy of the first value.
        let other = c.clone();
        let copy = std::thread::spawn(move || {
            let first = other.get("k");
            (other, first)
        });
        let (other, first) = copy.join().unwrap();
        assert_eq!(first, Some(1));
        std::thread::sleep(Duration::from_millis(600));
        c.update_loaded(c.generation(), "k".into(), 2);
        assert_eq!(c.get("k"), Some(2));
        let seen = std::thread::spawn(move || other.get("k")).join().unwrap();
        assert_eq!(seen, Some(2));
        // It expires when the first value would have, not a second after the update.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(c.get("k"), None);
        // Nothing to update: nothing is inserted.
        c.update_loaded(c.generation(), "absent".into(), 3);
        assert_eq!(c.get("absent"), None);
    }

    #[test]
    fn an_update_after_an_invalidation_drops_the_entry() {
        let c = cache(60_000);
        let before = c.generation();
        c.insert_loaded(before, "k".into(), 1);
        let read_at = c.generation();
        // Read (say, a key not yet revoked)... revoked and invalidated on another thread, then
        // loaded again there...
        let other = c.clone();
        std::thread::spawn(move || {
            other.invalidate("k");
            let g = other.generation();
            other.insert_loaded(g, "k".into(), 9);
        })
        .join()
        .unwrap();
        // ...then the stale read's update comes: the entry goes rather than hold it.
        c.update_loaded(read_at, "k".into(), 2);
        assert_eq!(c.get("k"), None);
    }

    #[test]
    fn a_value_loaded_before_an_invalidation_is_not_kept() {
        let c = cache(60_000);
        let before = c.generation();
        // Loaded (say, a grant read as live)... then revoked and invalidated elsewhere...
        let other = c.clone();
        std::thread::spawn(move || other.invalidate("g"))
            .join()
            .unwrap();
        // ...then stored: it must not stay.
        c.insert_loaded(before, "g".into(), 1);
        assert_eq!(c.get("g"), None);
        let other = c.clone();
        assert_eq!(
            std::thread::spawn(move || other.get("g")).join().unwrap(),
            None
        );
        // Loaded with no invalidation in between: kept.
        let now = c.generation();
        c.insert_loaded(now, "g".into(), 2);
        assert_eq!(c.get("g"), Some(2));
    }

    #[test]
    fn two_caches_on_one_thread_keep_apart() {
        let (a, b) = (cache(60_000), cache(60_000));
        a.insert("k".into(), 1);
        b.insert("k".into(), 2);
        assert_eq!(a.get("k"), Some(1));
        assert_eq!(b.get("k"), Some(2));
    }

    #[test]
    fn a_threads_copy_stays_bounded() {
        let c = cache(60_000);
        for i in 0..(LOCAL_CAPACITY as u32 * 2 + 10) {
            c.insert(i.to_string(), i);
        }
        let len = c
            .local(c.generation.load(Ordering::Acquire), |l| l.entries.len())
            .unwrap();
        assert!(len <= LOCAL_CAPACITY, "{len}");
        assert_eq!(c.get("5"), Some(5), "still in the shared cache");
    }
}
