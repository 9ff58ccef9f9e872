//! Remembers narinfos no upstream has, for a short time, so a burst of lookups costs one round.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use nixcache_protocol::StorePathHash;

/// Upper bound on remembered misses; past it, expired entries are dropped, then everything.
const MAX_ENTRIES: usize = 100_000;

pub struct NegativeCache {
    ttl: Duration,
    entries: Mutex<HashMap<StorePathHash, Instant>>,
}

impl NegativeCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn contains(&self, hash: &StorePathHash) -> bool {
        let Ok(mut entries) = self.entries.lock() else {
            return false;
        };
        match entries.get(hash) {
            Some(expiry) if *expiry > Instant::now() => true,
            Some(_) => {
                entries.remove(hash);
                false
            }
            None => false,
        }
    }

    /// Forgets a miss (the path was uploaded since).
    pub fn remove(&self, hash: &StorePathHash) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(hash);
        }
    }

    pub fn insert(&self, hash: StorePathHash) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= MAX_ENTRIES {
            let now = Instant::now();
            entries.retain(|_, expiry| *expiry > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(hash, Instant::now() + self.ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_can_be_disabled() {
        let cache = NegativeCache::new(Duration::from_millis(30));
        let h = StorePathHash([7; 20]);
        assert!(!cache.contains(&h));
        cache.insert(h);
        assert!(cache.contains(&h));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!cache.contains(&h));

        let off = NegativeCache::new(Duration::ZERO);
        off.insert(h);
        assert!(!off.contains(&h));
    }
}
