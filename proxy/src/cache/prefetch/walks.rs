//! Closure walks of clients: which narinfos a client asked for one after another, following
//! references. Each client (by address) walks apart, so one that only looks is never made to
//! download by another that substitutes the same paths. Nix asks for the narinfo of every path it lacks before it downloads the first
//! NAR (leaves first), so when a client asks for one NAR of a walk it is substituting, and the
//! NARs of the rest of the walk are what it will ask for next. A client that only looks
//! (`nix path-info`) asks for no NAR, so its walk never starts a download.
//!
//! Pure bookkeeping, bounded: at most `MAX_WALKS` walks, each forgotten after `WALK_IDLE`
//! without a new narinfo, each holding at most `max_paths` paths and handing out at most
//! `max_bytes` of NARs, none larger than `nar_max`.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use nixcache_protocol::{NarFile, StorePathHash};

use crate::metrics::PrefetchSkip;

/// A walk nobody added to for this long is over.
pub const WALK_IDLE: Duration = Duration::from_secs(300);
/// Walks remembered at once; the least recently extended goes first.
const MAX_WALKS: usize = 4096;
/// References remembered per path asked for, so a path with thousands of references cannot
/// grow the index without bound.
pub const MAX_REFS_PER_PATH: usize = 256;

/// A path a client asked the narinfo of, whose NAR it will likely ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalkPath {
    pub hash: StorePathHash,
    pub nar: NarFile,
    /// The most its NAR file takes (its FileSize, else about its NarSize).
    pub size: u64,
}

/// Who walks: a client's address (`None`: unknown, all such clients walk as one).
pub type Walker = Option<IpAddr>;

struct Walk {
    walker: Walker,
    touched: Instant,
    /// A client asked for one of its NARs: every path added from now on is due at once.
    downloading: bool,
    /// Asked for, NAR not handed out yet.
    waiting: Vec<WalkPath>,
    /// Paths asked for or expected (references), for forgetting the walk's index entries.
    keys: Vec<StorePathHash>,
    nars: Vec<NarFile>,
    /// Paths asked for, all told (bounded by `max_paths`).
    asked: usize,
    /// NAR bytes it may still hand out.
    bytes_left: u64,
}

/// The bounds of every walk.
#[derive(Clone, Copy, Debug)]
pub struct WalkLimits {
    /// Paths a walk follows; a longer one stops growing.
    pub max_paths: usize,
    /// NAR bytes a walk hands out.
    pub max_bytes: u64,
    /// A NAR larger than this is never handed out: it waits for a client.
    pub nar_max: u64,
}

/// NARs due for prefetching, and how many were not handed out and why.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Due {
    pub paths: Vec<WalkPath>,
    pub skipped: Vec<PrefetchSkip>,
}

impl Walk {
    fn hand_out(&mut self, path: WalkPath, limits: WalkLimits, due: &mut Due) {
        if path.size > limits.nar_max {
            due.skipped.push(PrefetchSkip::TooLarge);
        } else if path.size > self.bytes_left {
            due.skipped.push(PrefetchSkip::Budget);
        } else {
            self.bytes_left -= path.size;
            due.paths.push(path);
        }
    }
}

pub struct Walks {
    limits: WalkLimits,
    next_id: u64,
    walks: HashMap<u64, Walk>,
    /// Paths asked for, and references of paths asked for, by the walk they belong to.
    by_path: HashMap<(Walker, StorePathHash), u64>,
    by_nar: HashMap<(Walker, NarFile), u64>,
    /// When idle walks were last looked for.
    swept: Option<Instant>,
}

impl Walks {
    pub fn new(limits: WalkLimits) -> Self {
        Self {
            limits,
            next_id: 0,
            walks: HashMap::new(),
            by_path: HashMap::new(),
            by_nar: HashMap::new(),
            swept: None,
        }
    }

    /// A client asked for `path`'s narinfo, which names `references`. It joins the walk that
    /// expected it (a reference of a path asked for before), else starts one. Its NAR is due
    /// at once when its walk is downloading already.
    pub fn asked(
        &mut self,
        walker: Walker,
        path: WalkPath,
        references: &[StorePathHash],
        now: Instant,
    ) -> Due {
        let mut due = Due::default();
        self.forget_idle(now);
        let id = match self.by_path.get(&(walker, path.hash)).copied() {
            Some(id) if self.walks.contains_key(&id) => id,
            _ => self.start(walker, path.hash, now),
        };
        let Some(walk) = self.walks.get_mut(&id) else {
            return due;
        };
        walk.touched = now;
        // Nix may ask for a narinfo again (before it downloads): once is enough.
        if walk.asked >= self.limits.max_paths || self.by_nar.contains_key(&(walker, path.nar.clone())) {
            return due;
        }
        walk.asked += 1;
        for reference in references.iter().take(MAX_REFS_PER_PATH) {
            if *reference != path.hash && !self.by_path.contains_key(&(walker, *reference)) {
                self.by_path.insert((walker, *reference), id);
                walk.keys.push(*reference);
            }
        }
        self.by_nar.insert((walker, path.nar.clone()), id);
        walk.nars.push(path.nar.clone());
        if walk.downloading {
            walk.hand_out(path, self.limits, &mut due);
        } else {
            walk.waiting.push(path);
        }
        due
    }

    /// A client asked for the NAR `nar`: when it belongs to a walk, that walk is downloading,
    /// and the NARs of its other paths are due (handed out once).
    pub fn nar_asked(&mut self, walker: Walker, nar: &NarFile, now: Instant) -> Due {
        let mut due = Due::default();
        let key = (walker, nar.clone());
        let Some(walk) = self.by_nar.get(&key).and_then(|id| self.walks.get_mut(id)) else {
            return due;
        };
        walk.touched = now;
        walk.downloading = true;
        let waiting = std::mem::take(&mut walk.waiting);
        // Nix downloads leaves first: those came last.
        for path in waiting.into_iter().rev().filter(|path| path.nar != *nar) {
            walk.hand_out(path, self.limits, &mut due);
        }
        due
    }

    /// Walks remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.walks.len()
    }

    fn start(&mut self, walker: Walker, first: StorePathHash, now: Instant) -> u64 {
        if self.walks.len() >= MAX_WALKS {
            let oldest = self
                .walks
                .iter()
                .min_by_key(|(_, w)| w.touched)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.remove(id);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.walks.insert(
            id,
            Walk {
                walker,
                touched: now,
                downloading: false,
                waiting: Vec::new(),
                keys: vec![first],
                nars: Vec::new(),
                asked: 0,
                bytes_left: self.limits.max_bytes,
            },
        );
        self.by_path.insert((walker, first), id);
        id
    }

    fn forget_idle(&mut self, now: Instant) {
        // A look at every walk at most every tenth of WALK_IDLE, not on every request.
        if self
            .swept
            .is_some_and(|at| now.saturating_duration_since(at) < WALK_IDLE / 10)
        {
            return;
        }
        self.swept = Some(now);
        let idle: Vec<u64> = self
            .walks
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.touched) > WALK_IDLE)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            self.remove(id);
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(walk) = self.walks.remove(&id) else {
            return;
        };
        for key in walk.keys.into_iter().map(|hash| (walk.walker, hash)) {
            if self.by_path.get(&key) == Some(&id) {
                self.by_path.remove(&key);
            }
        }
        for key in walk.nars.into_iter().map(|nar| (walk.walker, nar)) {
            if self.by_nar.get(&key) == Some(&id) {
                self.by_nar.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use nixcache_protocol::{Compression, Sha256Hash};

    use super::*;

    const A: Walker = None;

    fn hash(n: u8) -> StorePathHash {
        StorePathHash([n; 20])
    }

    fn path(n: u8) -> WalkPath {
        WalkPath {
            hash: hash(n),
            nar: NarFile {
                hash: Sha256Hash([n; 32]),
                compression: Compression::Xz,
            },
            size: u64::from(n) * 100,
        }
    }

    fn walks(max_paths: usize, max_bytes: u64) -> Walks {
        Walks::new(WalkLimits {
            max_paths,
            max_bytes,
            nar_max: 1000,
        })
    }

    fn paths(due: Due) -> Vec<WalkPath> {
        assert!(due.skipped.is_empty(), "{due:?}");
        due.paths
    }

    #[test]
    fn a_walk_is_due_once_a_client_asks_for_one_of_its_nars() {
        let mut walks = walks(100, u64::MAX);
        let now = Instant::now();
        // 1 -> 2 -> 3, asked in that order, as a closure walk asks; 1 also names 4.
        assert_eq!(walks.asked(A, path(1), &[hash(2), hash(4)], now), Due::default());
        assert_eq!(walks.asked(A, path(2), &[hash(3), hash(2)], now), Due::default());
        assert_eq!(walks.asked(A, path(3), &[], now), Due::default());
        assert_eq!(walks.len(), 1);
        // The leaf comes first; the rest are due, deepest first, and only once.
        assert_eq!(
            paths(walks.nar_asked(A, &path(3).nar, now)),
            vec![path(2), path(1)]
        );
        assert_eq!(paths(walks.nar_asked(A, &path(2).nar, now)), vec![]);
        // Asked for again: nothing new. A path of the walk asked for later is due at once.
        assert_eq!(walks.asked(A, path(2), &[], now), Due::default());
        assert_eq!(paths(walks.asked(A, path(4), &[], now)), vec![path(4)]);
    }

    #[test]
    fn narinfos_alone_start_nothing_and_unrelated_paths_are_other_walks() {
        let mut walks = walks(100, u64::MAX);
        let now = Instant::now();
        walks.asked(A, path(1), &[hash(2)], now);
        walks.asked(A, path(9), &[], now);
        assert_eq!(walks.len(), 2);
        assert_eq!(paths(walks.nar_asked(A, &path(9).nar, now)), vec![]);
        // A NAR nobody asked the narinfo of belongs to no walk.
        assert_eq!(paths(walks.nar_asked(A, &path(7).nar, now)), vec![]);
    }

    #[test]
    fn each_client_walks_apart() {
        let mut walks = walks(100, u64::MAX);
        let now = Instant::now();
        let (b, c) = (
            Some(IpAddr::from([10, 0, 0, 2])),
            Some(IpAddr::from([10, 0, 0, 3])),
        );
        // B only looks at 1 -> 2; C substitutes 2 alone: C's download starts nothing of B's.
        walks.asked(b, path(1), &[hash(2)], now);
        walks.asked(b, path(2), &[], now);
        walks.asked(c, path(2), &[], now);
        assert_eq!(walks.len(), 2);
        assert_eq!(paths(walks.nar_asked(c, &path(2).nar, now)), vec![]);
        assert_eq!(paths(walks.nar_asked(b, &path(2).nar, now)), vec![path(1)]);
    }

    #[test]
    fn a_walk_hands_out_its_byte_budget_and_no_nar_past_the_size_limit() {
        // Sizes are 100 × n: 12 is past nar_max 1000; deepest first, the budget takes 4, then
        // has no room for 3 but for 2.
        let mut walks = walks(100, 600);
        let now = Instant::now();
        walks.asked(A, path(1), &[hash(12), hash(2)], now);
        for n in [12, 2, 3, 4] {
            walks.asked(A, path(n), &[hash(n + 1)], now);
        }
        let due = walks.nar_asked(A, &path(1).nar, now);
        assert_eq!(due.paths, vec![path(4), path(2)]);
        assert_eq!(due.skipped, vec![PrefetchSkip::Budget, PrefetchSkip::TooLarge]);
    }

    #[test]
    fn walks_are_bounded_in_paths_and_time() {
        let mut walks = walks(2, u64::MAX);
        let now = Instant::now();
        walks.asked(A, path(1), &[hash(2), hash(3)], now);
        walks.asked(A, path(2), &[], now);
        walks.asked(A, path(3), &[], now);
        assert_eq!(paths(walks.nar_asked(A, &path(1).nar, now)), vec![path(2)]);
        let later = now + WALK_IDLE + Duration::from_secs(1);
        walks.asked(A, path(5), &[], later);
        assert_eq!(walks.len(), 1, "the idle walk is forgotten");
        assert!(walks.by_path.len() == 1 && walks.by_nar.len() == 1);
    }
}
