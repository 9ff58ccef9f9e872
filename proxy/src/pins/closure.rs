//! The paths pins hold: a breadth-first walk over the narinfos' references, a batch of hashes
//! per query. Evicted narinfos are walked through too (they still name their references, and
//! what is behind them may be cached), but only live ones count as held.

use std::collections::HashSet;

use nixcache_protocol::StorePathHash;

use crate::db::{DbError, MetadataStore, PathLinks, PinRecord};

/// What a set of pins holds.
#[derive(Clone, Debug, Default)]
pub struct Closure {
    /// Every path held: pinned ones (cached or not) and what closures reach.
    pub paths: HashSet<StorePathHash>,
    /// Of those, the ones the cache holds a live narinfo for.
    pub cached: u64,
    /// Their NAR files' sizes (NarSize where a narinfo gives no FileSize; a NAR several of
    /// them share counts for each).
    pub bytes: u64,
}

impl Closure {
    pub fn holds(&self, hash: &StorePathHash) -> bool {
        self.paths.contains(hash)
    }

    fn count(&mut self, links: &PathLinks) {
        if links.live {
            self.cached += 1;
            self.bytes += links.bytes;
        }
    }
}

/// The paths `pins` hold: each pinned path, and for a closure pin everything its narinfo
/// references, transitively. A path the cache has no narinfo for ends its branch there.
pub async fn closure_of(db: &dyn MetadataStore, pins: &[PinRecord]) -> Result<Closure, DbError> {
    let mut closure = Closure::default();
    // Closures first, so that a path pinned alone which a closure also reaches is walked on.
    let mut frontier: Vec<StorePathHash> = Vec::new();
    for pin in pins.iter().filter(|p| p.closure) {
        if closure.paths.insert(*pin.path.hash()) {
            frontier.push(*pin.path.hash());
        }
    }
    while !frontier.is_empty() {
        for links in db.path_links(&std::mem::take(&mut frontier)).await? {
            closure.count(&links);
            for reference in links.references {
                if closure.paths.insert(reference) {
                    frontier.push(reference);
                }
            }
        }
    }
    let alone: Vec<StorePathHash> = pins
        .iter()
        .filter(|p| !p.closure)
        .map(|p| *p.path.hash())
        .filter(|hash| closure.paths.insert(*hash))
        .collect();
    for links in db.path_links(&alone).await? {
        closure.count(&links);
    }
    Ok(closure)
}
