//! What was prefetched and not yet asked for by a client: counted as used when a client asks,
//! as wasted when no client asked within `USE_WINDOW` (or its download failed). Bounded.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use nixcache_protocol::{NarFile, StorePathHash};

/// A prefetch no client asked for within this long counts as wasted.
pub const USE_WINDOW: Duration = Duration::from_secs(600);
/// Entries of each kind remembered at once; past it, a prefetch is not followed up.
const MAX_ENTRIES: usize = 1 << 16;

/// Prefetches that went unused: expired, or (NARs) failed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wasted {
    pub narinfos: u64,
    pub nars: u64,
    pub nar_bytes: u64,
}

/// A NAR prefetch: when noted, its size, and whether its download is under way (started by the
/// prefetch, not joined).
struct NarEntry {
    at: Instant,
    size: u64,
    downloading: bool,
}

/// Prefetches by what they fetch; a narinfo's flag is set once the prefetch looked it up (not
/// joined another's lookup).
#[derive(Default)]
pub struct Ledger {
    narinfos: HashMap<StorePathHash, (Instant, bool)>,
    nars: HashMap<NarFile, NarEntry>,
    swept: Option<Instant>,
    /// How many narinfos are noted, readable without the ledger's lock.
    narinfos_noted: Arc<AtomicUsize>,
}

impl Ledger {
    /// How many narinfos are noted, kept up to date by the ledger.
    pub fn narinfos_noted(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.narinfos_noted)
    }

    fn narinfos_changed(&self) {
        self.narinfos_noted.store(self.narinfos.len(), Ordering::Relaxed);
    }
    /// A prefetch of `hash`'s narinfo starts; `false` when one is noted already (or the
    /// ledger is full): then this one is not started.
    pub fn narinfo_started(&mut self, hash: StorePathHash, now: Instant) -> bool {
        if self.narinfos.len() >= MAX_ENTRIES || self.narinfos.contains_key(&hash) {
            return false;
        }
        self.narinfos.insert(hash, (now, false));
        self.narinfos_changed();
        true
    }

    /// The prefetch found it: a client asking for it uses it.
    pub fn narinfo_found(&mut self, hash: StorePathHash) {
        if let Some(entry) = self.narinfos.get_mut(&hash) {
            entry.1 = true;
        }
    }

    /// The prefetch did not fetch it (known already, absent, failed, another request led):
    /// it counts for nothing.
    pub fn narinfo_dropped(&mut self, hash: &StorePathHash) {
        self.narinfos.remove(hash);
        self.narinfos_changed();
    }

    /// A client asked for `hash`: whether a prefetch looked it up. One still under way is
    /// forgotten too (the client joins it): it counts for nothing.
    pub fn narinfo_used(&mut self, hash: &StorePathHash) -> bool {
        let noted = self.narinfos.remove(hash);
        self.narinfos_changed();
        noted.is_some_and(|(_, found)| found)
    }

    /// A prefetch of `nar` (at most `size` bytes) starts; `false` when one is noted already.
    pub fn nar_started(&mut self, nar: &NarFile, size: u64, now: Instant) -> bool {
        if self.nars.len() >= MAX_ENTRIES || self.nars.contains_key(nar) {
            return false;
        }
        let entry = NarEntry {
            at: now,
            size,
            downloading: false,
        };
        self.nars.insert(nar.clone(), entry);
        true
    }

    /// The prefetch started `nar`'s download (it did not join another's).
    pub fn nar_downloading(&mut self, nar: &NarFile) {
        if let Some(entry) = self.nars.get_mut(nar) {
            entry.downloading = true;
        }
    }

    /// The prefetch did not download it (stored already, another request led): not counted.
    pub fn nar_dropped(&mut self, nar: &NarFile) {
        self.nars.remove(nar);
    }

    /// A client asked for `nar` (or the prefetch's download ended unstored): its size when a
    /// prefetch was downloading it. Forgotten either way.
    pub fn nar_used(&mut self, nar: &NarFile) -> Option<u64> {
        self.nars.remove(nar).filter(|e| e.downloading).map(|e| e.size)
    }

    /// Forgets what waited longer than `USE_WINDOW` (looked at most every minute) and says how
    /// much that was.
    pub fn expire(&mut self, now: Instant) -> Wasted {
        let mut wasted = Wasted::default();
        if self
            .swept
            .is_some_and(|at| now.saturating_duration_since(at) < USE_WINDOW / 10)
        {
            return wasted;
        }
        self.swept = Some(now);
        let old = |at: &Instant| now.saturating_duration_since(*at) > USE_WINDOW;
        self.narinfos.retain(|_, (at, found)| {
            // One still being fetched is not judged yet.
            let expired = *found && old(at);
            wasted.narinfos += u64::from(expired);
            !expired
        });
        self.narinfos_changed();
        self.nars.retain(|_, entry| {
            let expired = old(&entry.at);
            if expired && entry.downloading {
                wasted.nars += 1;
                wasted.nar_bytes += entry.size;
            }
            !expired
        });
        wasted
    }
}

#[cfg(test)]
mod tests {
    use nixcache_protocol::{Compression, Sha256Hash};

    use super::*;

    fn nar(n: u8) -> NarFile {
        NarFile {
            hash: Sha256Hash([n; 32]),
            compression: Compression::Zstd,
        }
    }

    #[test]
    fn a_prefetch_is_used_once_and_only_when_started() {
        let (mut ledger, now) = (Ledger::default(), Instant::now());
        let hash = StorePathHash([1; 20]);
        assert!(ledger.narinfo_started(hash, now));
        assert!(!ledger.narinfo_started(hash, now), "one prefetch per narinfo");
        ledger.narinfo_found(hash);
        assert!(ledger.narinfo_used(&hash));
        assert!(!ledger.narinfo_used(&hash));
        assert_eq!(ledger.narinfos_noted().load(Ordering::Relaxed), 0);
        // A client that comes while the lookup is under way joins it: no prefetch of its own.
        ledger.narinfo_started(hash, now);
        assert!(!ledger.narinfo_used(&hash));
        assert!(ledger.nar_started(&nar(2), 500, now));
        ledger.nar_dropped(&nar(2));
        assert_eq!(ledger.nar_used(&nar(2)), None);
        assert!(ledger.nar_started(&nar(3), 700, now));
        assert_eq!(ledger.nar_used(&nar(3)), None, "not downloading yet");
        ledger.nar_started(&nar(3), 700, now);
        ledger.nar_downloading(&nar(3));
        assert_eq!(ledger.nar_used(&nar(3)), Some(700));
    }

    #[test]
    fn what_nobody_asked_for_expires_as_wasted() {
        let (mut ledger, now) = (Ledger::default(), Instant::now());
        ledger.narinfo_started(StorePathHash([1; 20]), now);
        ledger.narinfo_found(StorePathHash([1; 20]));
        ledger.narinfo_started(StorePathHash([2; 20]), now);
        ledger.nar_started(&nar(3), 700, now);
        ledger.nar_downloading(&nar(3));
        assert_eq!(ledger.expire(now), Wasted::default());
        let later = now + USE_WINDOW + Duration::from_secs(1);
        let wasted = ledger.expire(later);
        assert_eq!(
            wasted,
            Wasted {
                narinfos: 1,
                nars: 1,
                nar_bytes: 700
            }
        );
        // The one still being fetched stays.
        assert!(ledger.narinfos.contains_key(&StorePathHash([2; 20])));
    }
}
