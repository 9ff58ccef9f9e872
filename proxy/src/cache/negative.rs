//! Remembers narinfos (and listings, logs) no upstream has, for a short time, so a burst of
//! lookups costs one round.
//!
//! Bounded by entries, never flushed as a whole: past the bound, a new miss takes the place of
//! an old one only when it has been looked up more often (TinyLFU admission in `moka`). So a
//! flood of random hashes, each asked once, cannot push out the misses clients keep asking for,
//! and a real miss asked in a burst still gets in while the flood lasts.

use std::{
    hash::Hash,
    time::{Duration, Instant},
};

use moka::sync::Cache;
use nixcache_protocol::StorePathHash;

/// Upper bound on remembered misses (~100 bytes each).
const MAX_ENTRIES: u64 = 100_000;

pub struct NegativeCache<K = StorePathHash> {
    /// When each miss was noted; `None` when misses are not remembered (a TTL of zero).
    entries: Option<Cache<K, Instant>>,
    ttl: Duration,
}

impl<K: Hash + Eq + Send + Sync + 'static> NegativeCache<K> {
    pub fn new(ttl: Duration) -> Self {
        let entries = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(ttl)
                .build()
        });
        Self { entries, ttl }
    }

    /// How long a miss is remembered.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How much longer `hash` is remembered as a miss; `None` when it is not.
    pub fn remembered_for(&self, hash: &K) -> Option<Duration> {
        let noted = self.entries.as_ref()?.get(hash)?;
        self.ttl.checked_sub(noted.elapsed())
    }

    /// Whether `hash` is a remembered miss. Counts as a lookup of it, remembered or not: how
    /// often a hash is asked for decides whether it may take an older miss's place.
    pub fn contains(&self, hash: &K) -> bool {
        self.entries.as_ref().is_some_and(|e| e.get(hash).is_some())
    }

    /// Forgets a miss (the path was uploaded since).
    pub fn remove(&self, hash: &K) {
        if let Some(entries) = &self.entries {
            entries.invalidate(hash);
        }
    }

    pub fn insert(&self, hash: K) {
        if let Some(entries) = &self.entries {
            entries.insert(hash, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn expires_and_can_be_disabled() {
        let cache = NegativeCache::new(Duration::from_millis(30));
        let h = StorePathHash([7; 20]);
        assert!(!cache.contains(&h));
        cache.insert(h);
        assert!(cache.contains(&h));
        let left = cache.remembered_for(&h).unwrap();
        assert!(
            left <= Duration::from_millis(30) && left > Duration::ZERO,
            "{left:?}"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(!cache.contains(&h));
        assert_eq!(cache.remembered_for(&h), None);

        let off = NegativeCache::new(Duration::ZERO);
        off.insert(h);
        assert!(!off.contains(&h));
    }

    /// A hash per `n`, all different (and different from `[7; 20]` and `[8; 20]`).
    fn random_hash(n: u64) -> StorePathHash {
        let mut bytes = [0xff; 20];
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        StorePathHash(bytes)
    }

    /// As the cache sees a lookup that misses upstream: asked for, then remembered.
    fn miss(cache: &NegativeCache, hash: StorePathHash) {
        if !cache.contains(&hash) {
            cache.insert(hash);
        }
    }

    #[test]
    fn a_flood_of_random_misses_does_not_flush_the_real_ones() {
        let cache = NegativeCache::new(Duration::from_secs(600));
        // A path missing upstream that clients keep asking for, through a flood of random
        // hashes past the bound (the old cache cleared everything at 100k entries).
        let real = StorePathHash([7; 20]);
        miss(&cache, real);
        let flood = MAX_ENTRIES + MAX_ENTRIES / 2;
        for n in 0..flood {
            miss(&cache, random_hash(n));
            if n % 1000 == 0 {
                assert!(
                    cache.contains(&real),
                    "the real miss was forgotten after {n} others"
                );
            }
        }
        let entries = cache.entries.as_ref().map(|e| {
            e.run_pending_tasks();
            e.entry_count()
        });
        assert!(cache.contains(&real), "the real miss was forgotten");
        // Still bounded, and still full: nothing was flushed.
        assert!(
            entries.is_some_and(|n| n > MAX_ENTRIES / 2 && n <= MAX_ENTRIES),
            "{entries:?} entries"
        );
        // A new real miss asked in a burst (concurrent lookups) gets in during the flood.
        let burst = StorePathHash([8; 20]);
        for _ in 0..5 {
            miss(&cache, burst);
        }
        if let Some(e) = &cache.entries {
            e.run_pending_tasks();
        }
        assert!(
            cache.contains(&burst),
            "a miss asked in a burst was not remembered"
        );
    }
}
