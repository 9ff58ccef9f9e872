//! Prefetch: fetching ahead of a client what it will ask for next, so a cold closure costs
//! about one upstream round trip per level of references instead of several per path.
//!
//! - **Narinfos** (`narinfo` and `nar` modes): when a client `GET`s a narinfo this proxy looks
//!   up now (or one a prefetch looked up), the narinfos of its references are looked up too,
//!   `depth` levels ahead, at most `paths` per trigger. A client asking meanwhile joins the
//!   lookup under way.
//! - **NARs** (`nar` mode): Nix asks for every narinfo of what it lacks before its first NAR.
//!   When a client asks for a NAR of such a walk (see `walks`), the NARs of the rest of the walk
//!   are downloaded in the background, deepest first as Nix asks for them, each at most
//!   `nar_max`, at most `walk_bytes` per walk. A client that only looks (`nix path-info`,
//!   `HEAD`) starts no download.
//!
//! Prefetches never go before clients: a NAR prefetch takes only spare fill room (a quarter is
//! always the clients'), gives its fill up when a client has to wait for room, and takes the
//! same leases as a client's fill, so replicas never fetch one thing twice. All of it is owned by
//! the [`Prefetcher`], stopped first at shutdown.

mod ledger;
mod narinfos;
mod nars;
mod walks;

use std::{
    future::Future,
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Instant,
};

use nixcache_protocol::{NarFile, StorePathHash};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{download::max_file_size, narinfo::Looked, Cache};
use crate::{
    db::NarInfoRecord,
    metrics::{ObjectKind, PrefetchOutcome},
};
use ledger::Ledger;
use walks::{Due, WalkLimits, WalkPath, Walks, MAX_REFS_PER_PATH};

/// What is prefetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefetchMode {
    Off,
    /// Narinfos of references only.
    Narinfo,
    /// Narinfos, and the NARs of a closure a client is downloading.
    Nar,
}

/// The settings, from the command line.
#[derive(Clone, Copy, Debug)]
pub struct PrefetchOptions {
    pub mode: PrefetchMode,
    /// Levels of references looked up ahead of a narinfo a client asked for.
    pub depth: u32,
    /// Narinfos one trigger may look up; paths one walk follows.
    pub paths: usize,
    /// A NAR file larger than this waits until a client asks for it.
    pub nar_max: u64,
    /// NAR bytes one walk may prefetch.
    pub walk_bytes: u64,
    /// Narinfo lookups at once, all triggers together; and NAR prefetches at once, all walks
    /// together.
    pub concurrency: usize,
}

/// The prefetches of one process: their bookkeeping, their bounds and their tasks.
pub struct Prefetcher {
    options: PrefetchOptions,
    book: Mutex<Book>,
    /// Narinfo lookups running.
    lookups: Arc<Semaphore>,
    /// Narinfo lookups waiting or running: past it, a lookup is skipped, not queued.
    queued: Arc<Semaphore>,
    /// NAR prefetches running.
    fills: Arc<Semaphore>,
    /// NAR prefetches waiting or running: past it, one is skipped, not queued.
    nars_queued: Arc<Semaphore>,
    /// Narinfos the ledger notes (kept by it): while none, a hit from memory takes no lock.
    narinfos_noted: Arc<AtomicUsize>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

struct Book {
    walks: Walks,
    ledger: Ledger,
}

impl Prefetcher {
    pub fn new(options: PrefetchOptions) -> Self {
        let limits = WalkLimits {
            max_paths: options.paths,
            max_bytes: options.walk_bytes,
            nar_max: options.nar_max,
        };
        let at_once = options.concurrency.max(1);
        let ledger = Ledger::default();
        Self {
            options,
            narinfos_noted: ledger.narinfos_noted(),
            book: Mutex::new(Book {
                walks: Walks::new(limits),
                ledger,
            }),
            lookups: Arc::new(Semaphore::new(at_once)),
            queued: Arc::new(Semaphore::new(at_once.saturating_mul(16))),
            fills: Arc::new(Semaphore::new(at_once)),
            nars_queued: Arc::new(Semaphore::new(at_once.saturating_mul(64))),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Runs `work` until it ends or prefetching stops.
    fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                biased;
                () = stop.cancelled() => {}
                () = work => {}
            }
        });
    }

    /// Stops every prefetch (a NAR prefetch's download no client follows ends at once) and
    /// waits until their tasks are gone.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A narinfo a client asked for (or a prefetch found): what its walk needs.
struct AskedNarinfo {
    path: WalkPath,
    references: Vec<StorePathHash>,
}

impl AskedNarinfo {
    fn of(record: &NarInfoRecord) -> Self {
        let info = &record.info;
        Self {
            path: WalkPath {
                hash: *info.store_path.hash(),
                nar: record.nar_file.clone(),
                size: max_file_size(info),
            },
            references: followed_references(record),
        }
    }
}

/// The references of `record` a walk or a lookup ahead follows (bounded).
fn followed_references(record: &NarInfoRecord) -> Vec<StorePathHash> {
    let references = record.info.references.iter().take(MAX_REFS_PER_PATH);
    references.map(|r| *r.hash()).collect()
}

impl Cache {
    /// `client` `GET` a narinfo, `looked` up from memory, the database or the upstreams. Each
    /// joins the client's walk. What was looked up now (by the client or a prefetch) also has its
    /// references looked up ahead; a hit only when a prefetch looked it up (its references were
    /// looked at when it was fetched).
    pub(super) fn narinfo_fetched(&self, client: Option<IpAddr>, hash: &StorePathHash, looked: Looked) {
        let mode = self.prefetch.options.mode;
        if mode == PrefetchMode::Off || self.prefetch.stopped() {
            return;
        }
        // The hottest path: a hit from memory joins a walk (`nar` mode) or, if a prefetch noted
        // it, has its references looked up ahead; otherwise it needs nothing, not even a lock.
        if matches!(looked, Looked::Hot(_))
            && mode != PrefetchMode::Nar
            && self.prefetch.narinfos_noted.load(Ordering::Relaxed) == 0
        {
            return;
        }
        let now = Instant::now();
        // Made before the lock is taken (it copies up to MAX_REFS_PER_PATH references).
        let (fetched, asked) = match looked {
            Looked::Fetched(record) => (true, AskedNarinfo::of(&record)),
            Looked::Stored(record) | Looked::Hot(record) => (false, AskedNarinfo::of(&record)),
        };
        let (asked, used, due) = {
            let mut book = self.prefetch.book();
            self.count_wasted(&mut book.ledger, now);
            let used = book.ledger.narinfo_used(hash);
            // A plain hit joins the walk only: its references were looked at when it was fetched.
            let ahead = fetched || used;
            let due = match mode {
                PrefetchMode::Nar => book
                    .walks
                    .asked(client, asked.path.clone(), &asked.references, now),
                _ => Due::default(),
            };
            (ahead.then_some(asked), used, due)
        };
        if used {
            let metrics = &self.metrics.prefetch;
            metrics.count(ObjectKind::Narinfo, PrefetchOutcome::Used, 1);
        }
        self.prefetch_nars(due);
        if let Some(asked) = asked {
            self.prefetch_references(asked.path.hash, asked.references);
        }
    }

    /// `client` `GET`s the NAR `file`, which is about to be opened (from storage, or a fill).
    pub(super) fn nar_fetched(&self, client: Option<IpAddr>, file: &NarFile) {
        let mode = self.prefetch.options.mode;
        if mode == PrefetchMode::Off || self.prefetch.stopped() {
            return;
        }
        let (used, due) = {
            let mut book = self.prefetch.book();
            self.count_wasted(&mut book.ledger, Instant::now());
            let used = book.ledger.nar_used(file);
            let due = match mode {
                PrefetchMode::Nar => book.walks.nar_asked(client, file, Instant::now()),
                _ => Due::default(),
            };
            (used, due)
        };
        if let Some(bytes) = used {
            let metrics = &self.metrics.prefetch;
            metrics.count(ObjectKind::Nar, PrefetchOutcome::Used, 1);
            metrics.nar_bytes(PrefetchOutcome::Used, bytes);
        }
        self.prefetch_nars(due);
    }

    /// Stops prefetching (shutdown) and waits for its tasks to end.
    pub async fn stop_prefetching(&self) {
        self.prefetch.stop().await;
    }

    /// Whether prefetching stopped (no prefetch may start a download any more).
    pub(super) fn prefetch_stopped(&self) -> bool {
        self.prefetch.stopped()
    }

    fn count_wasted(&self, ledger: &mut Ledger, now: Instant) {
        let wasted = ledger.expire(now);
        let metrics = &self.metrics.prefetch;
        metrics.count(ObjectKind::Narinfo, PrefetchOutcome::Wasted, wasted.narinfos);
        metrics.count(ObjectKind::Nar, PrefetchOutcome::Wasted, wasted.nars);
        if wasted.nar_bytes > 0 {
            metrics.nar_bytes(PrefetchOutcome::Wasted, wasted.nar_bytes);
        }
    }
}
