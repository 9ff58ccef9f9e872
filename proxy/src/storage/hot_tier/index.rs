//! What the hot tier holds, in least-recently-used order, and the bytes it has promised to
//! fills under way; pure bookkeeping (the caller removes the files it is told to).

use std::collections::{BTreeMap, HashMap};

/// What a file looked like when it was put in the tier. A file written to since, or replaced,
/// differs (its change time moves, which no unprivileged tool sets back), and is not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Fingerprint {
    pub ino: u64,
    pub len: u64,
    pub ctime: (i64, i64),
}

impl Fingerprint {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            ino: meta.ino(),
            len: meta.len(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

#[derive(Debug)]
struct Entry {
    fingerprint: Fingerprint,
    /// Tick of the last read; its key in `order`.
    used: u64,
}

/// The tier's entries by key, with room for fills under way (`reserved`) counted against
/// `max_bytes` before their files exist.
#[derive(Debug)]
pub(super) struct Index {
    max_bytes: u64,
    /// Bytes of the entries' files.
    entry_bytes: u64,
    /// Bytes promised to fills under way.
    reserved_bytes: u64,
    tick: u64,
    entries: HashMap<String, Entry>,
    order: BTreeMap<u64, String>,
    /// Keys being filled; `true` once deleted or overwritten meanwhile, so the fill is dropped.
    fills: HashMap<String, bool>,
    /// Keys whose bytes did not hash to their name (a NAR named by its NarHash, or damaged in
    /// the store): not copied again, so they do not evict what is kept. Bounded by emptying.
    rejected: std::collections::HashSet<String>,
}

/// Keys remembered as rejected before the memory of them is emptied.
const MAX_REJECTED: usize = 4096;

impl Index {
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            entry_bytes: 0,
            reserved_bytes: 0,
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            fills: HashMap::new(),
            rejected: Default::default(),
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// The entry's fingerprint, marking it used.
    pub fn get(&mut self, key: &str) -> Option<Fingerprint> {
        let tick = self.next_tick();
        let entry = self.entries.get_mut(key)?;
        self.order.remove(&entry.used);
        entry.used = tick;
        self.order.insert(tick, key.to_owned());
        Some(entry.fingerprint)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Room for a fill of `key` of `size` bytes: the least recently used entries to remove
    /// (their files are the caller's to delete), or `None` when `key` is filling already or
    /// `size` cannot fit at all.
    pub fn start_fill(&mut self, key: &str, size: u64) -> Option<Vec<String>> {
        if self.fills.contains_key(key) || self.entries.contains_key(key) || self.rejected.contains(key) {
            return None;
        }
        if size > self.max_bytes.saturating_sub(self.reserved_bytes) {
            return None;
        }
        let mut evicted = Vec::new();
        while self.bytes() + size > self.max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&oldest) {
                self.entry_bytes -= entry.fingerprint.len;
            }
            evicted.push(oldest);
        }
        self.reserved_bytes += size;
        self.fills.insert(key.to_owned(), false);
        Some(evicted)
    }

    /// Whether the fill of `key` may still become an entry (not deleted or overwritten since).
    pub fn fill_wanted(&self, key: &str) -> bool {
        self.fills.get(key) == Some(&false)
    }

    /// Ends the fill of `key` that reserved `size`: as an entry when `done` holds its file's
    /// fingerprint and it is still wanted; `false` when it was not taken.
    pub fn end_fill(&mut self, key: &str, size: u64, done: Option<Fingerprint>) -> bool {
        let wanted = self.fills.remove(key) == Some(false);
        self.reserved_bytes -= size;
        let Some(fingerprint) = done.filter(|_| wanted) else {
            return false;
        };
        let tick = self.next_tick();
        self.entry_bytes += fingerprint.len;
        self.order.insert(tick, key.to_owned());
        let entry = Entry {
            fingerprint,
            used: tick,
        };
        if let Some(old) = self.entries.insert(key.to_owned(), entry) {
            self.order.remove(&old.used);
            self.entry_bytes -= old.fingerprint.len;
        }
        true
    }

    /// Forgets `key` (its file is the caller's to delete) and drops a fill of it under way;
    /// whether there was an entry.
    pub fn remove(&mut self, key: &str) -> bool {
        if let Some(cancelled) = self.fills.get_mut(key) {
            *cancelled = true;
        }
        self.rejected.remove(key); // overwritten or deleted: its next bytes may be right
        let Some(entry) = self.entries.remove(key) else {
            return false;
        };
        self.order.remove(&entry.used);
        self.entry_bytes -= entry.fingerprint.len;
        true
    }

    /// Remembers that `key`'s bytes are not the ones its name fixes.
    pub fn reject(&mut self, key: &str) {
        if self.rejected.len() >= MAX_REJECTED {
            self.rejected.clear();
        }
        self.rejected.insert(key.to_owned());
    }

    /// Every key held now.
    pub fn keys(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Entries' bytes and reserved bytes: never above `max_bytes`, but for a file found
    /// longer than it was reserved (it is not taken then).
    pub fn bytes(&self) -> u64 {
        self.entry_bytes + self.reserved_bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn print(len: u64) -> Fingerprint {
        Fingerprint {
            ino: len,
            len,
            ctime: (0, 0),
        }
    }

    #[test]
    fn evicts_least_recently_used_first_and_counts_reservations() {
        let mut index = Index::new(100);
        for (key, size) in [("a", 40), ("b", 40)] {
            assert_eq!(index.start_fill(key, size), Some(vec![]));
            assert!(index.end_fill(key, size, Some(print(size))));
        }
        index.get("a"); // b is now the least recently used
        assert_eq!(index.start_fill("c", 30), Some(vec!["b".to_owned()]));
        assert_eq!(index.bytes(), 70, "a's 40 and c's reserved 30");
        // Reserved room is not evicted: 70 of 100 is a's and c's.
        assert_eq!(
            index.start_fill("d", 71),
            None,
            "more than is left beside the reservation"
        );
        assert_eq!(index.start_fill("d", 70), Some(vec!["a".to_owned()]));
        assert_eq!(index.start_fill("c", 1), None, "c is filling already");
        assert!(!index.end_fill("c", 30, None));
        assert_eq!(index.bytes(), 70, "d's reservation");
    }

    #[test]
    fn a_fill_removed_meanwhile_is_not_taken() {
        let mut index = Index::new(100);
        index.start_fill("a", 10).unwrap();
        assert!(!index.remove("a"));
        assert!(!index.fill_wanted("a"));
        assert!(!index.end_fill("a", 10, Some(print(10))));
        assert_eq!((index.len(), index.bytes()), (0, 0));
    }
}
