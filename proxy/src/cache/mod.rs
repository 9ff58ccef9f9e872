//! The cache service: answers narinfo and NAR requests from metadata and storage, and fills misses
//! from the upstreams. No HTTP types here; `http` turns results into responses.

mod access;
mod admission;
mod answer;
mod decode;
mod download;
mod error;
mod feed;
mod fill;
mod hot;
mod mirror;
mod nar;
mod narinfo;
mod negative;
mod pins;
mod prefetch;
pub mod replica;
mod scrub;
mod side;
mod singleflight;
mod trace;
mod upload;
mod verify;

use std::{path::PathBuf, sync::Arc};

use nixcache_protocol::{SigningKey, StorePathHash};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    db::{MetadataStore, NarInfoRecord},
    metrics::{LookupResult, Metrics, ObjectKind},
    scratch::Scratch,
    storage::{BlobKey, BlobStore},
    tasks::Background,
    upstream::Upstreams,
};
pub use access::AccessLog;
use admission::Admission;
pub use admission::FillLimits;
pub use answer::{CacheStatus, Interest, NarResponse};
pub use error::{BoxError, CacheError};
use fill::Fills;
pub use hot::HotCache;
pub use negative::NegativeCache;
use prefetch::Prefetcher;
pub use prefetch::{PrefetchMode, PrefetchOptions};
use replica::Replica;
pub use scrub::{ScrubOptions, ScrubReport};
pub use side::{SideResponse, MAX_SIDE_FILE};
use singleflight::SingleFlight;
pub use trace::TraceResponse;
pub use upload::{Stored, UploadError};

/// How often the cache's size is read for the metrics.
const USAGE_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);
/// Pause between looks at a narinfo another replica is fetching.
const NARINFO_POLL: std::time::Duration = std::time::Duration::from_millis(20);
/// When a client refused for a NAR that other work (GC, the scrub, an upload) holds too long
/// should come back.
const OTHER_WORK_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// What a cache is made of; `app::build_state` assembles it from the command line.
pub struct CacheParts {
    pub db: Arc<dyn MetadataStore>,
    pub storage: Arc<dyn BlobStore>,
    /// The storage behind a hot tier; `storage` itself without one.
    pub backing: Arc<dyn BlobStore>,
    pub upstreams: Arc<Upstreams>,
    pub signer: SigningKey,
    pub negative: NegativeCache,
    pub hot: HotCache,
    /// Local directory for downloads in progress, locked while this cache lives.
    pub scratch: Scratch,
    pub replica: Replica,
    pub access: AccessLog,
    pub metrics: Arc<Metrics>,
    pub fill_limits: FillLimits,
    pub prefetch: PrefetchOptions,
    /// `--s3-redirect`: a NAR hit the storage can hand out a URL for is answered with a
    /// redirect to it, valid this long.
    pub redirect: Option<std::time::Duration>,
}

#[derive(Clone)]
pub struct Cache {
    db: Arc<dyn MetadataStore>,
    storage: Arc<dyn BlobStore>,
    /// What scrub and fsck read: the store itself, not a replica's verified copies in its hot
    /// tier (their reads would also churn it). Their deletes reach the tier through `storage`
    /// (scrub) or its sweep (fsck, which removes the database row too).
    backing: Arc<dyn BlobStore>,
    upstreams: Arc<Upstreams>,
    signer: Arc<SigningKey>,
    public_key: Arc<str>,
    negative: Arc<NegativeCache>,
    hot: Arc<HotCache>,
    replica: Arc<Replica>,
    access: Arc<AccessLog>,
    metrics: Arc<Metrics>,
    narinfo_flights: Arc<SingleFlight<StorePathHash, NarInfoRecord>>,
    nar_locates: Arc<SingleFlight<BlobKey, nar::Source>>,
    /// Listings and logs: misses remembered, fetches shared, transfers bounded (`side`).
    side_negative: Arc<NegativeCache<BlobKey>>,
    side_flights: Arc<SingleFlight<BlobKey, u64>>,
    side_fetches: Arc<tokio::sync::Semaphore>,
    side_uploads: Arc<tokio::sync::Semaphore>,
    trace_flights: Arc<SingleFlight<BlobKey, nixcache_protocol::BuildTrace>>,
    trace_fetches: Arc<tokio::sync::Semaphore>,
    /// Held while a build trace is checked for and kept: nothing kept is replaced.
    trace_writes: Arc<tokio::sync::Mutex<()>>,
    fills: Fills,
    admission: Arc<Admission>,
    prefetch: Arc<Prefetcher>,
    tmp_dir: Arc<PathBuf>,
    /// Keeps the lock on `tmp_dir`: other processes remove it once the last clone is gone.
    _scratch: Arc<Scratch>,
    /// Fills, which outlive the requests that started them: shutdown waits for them
    /// ([`Self::fills_finished`]).
    fill_tasks: TaskTracker,
    /// Cancelled when shutdown's grace period is over: the fills still running end as failed.
    fills_cancelled: CancellationToken,
    background: Background,
    redirect: Option<std::time::Duration>,
}

impl Cache {
    pub fn new(parts: CacheParts) -> Self {
        let public_key = parts.signer.public_key().to_string().into();
        let miss_ttl = parts.negative.ttl();
        Self {
            db: parts.db,
            storage: parts.storage,
            backing: parts.backing,
            upstreams: parts.upstreams,
            signer: Arc::new(parts.signer),
            public_key,
            negative: Arc::new(parts.negative),
            hot: Arc::new(parts.hot),
            replica: Arc::new(parts.replica),
            access: Arc::new(parts.access),
            narinfo_flights: Arc::new(SingleFlight::counting_joins(
                parts.metrics.coalesced_counter(ObjectKind::Narinfo),
            )),
            nar_locates: Arc::new(SingleFlight::counting_joins(
                parts.metrics.coalesced_counter(ObjectKind::Nar),
            )),
            side_negative: Arc::new(NegativeCache::new(miss_ttl)),
            // Joins are not counted: side files are fetched too seldom for the metric to tell.
            side_flights: Arc::new(SingleFlight::counting_joins(Default::default())),
            side_fetches: Arc::new(tokio::sync::Semaphore::new(side::SIDE_TRANSFERS)),
            side_uploads: Arc::new(tokio::sync::Semaphore::new(side::SIDE_TRANSFERS)),
            trace_flights: Arc::new(SingleFlight::counting_joins(
                parts.metrics.coalesced_counter(ObjectKind::BuildTrace),
            )),
            trace_fetches: Arc::new(tokio::sync::Semaphore::new(trace::TRACE_FETCHES)),
            trace_writes: Arc::default(),
            admission: Arc::new(Admission::new(parts.fill_limits, Arc::clone(&parts.metrics))),
            prefetch: Arc::new(Prefetcher::new(parts.prefetch)),
            fills: Fills::new(
                parts.metrics.fills_in_flight.clone(),
                parts.metrics.fill_temp_bytes.clone(),
            ),
            metrics: parts.metrics,
            tmp_dir: Arc::new(parts.scratch.path().to_owned()),
            _scratch: Arc::new(parts.scratch),
            fill_tasks: TaskTracker::new(),
            fills_cancelled: CancellationToken::new(),
            background: Background::new(),
            redirect: parts.redirect,
        }
    }

    /// How much longer a narinfo miss is remembered; `None` when it is not.
    pub fn miss_remembered_for(&self, hash: &StorePathHash) -> Option<std::time::Duration> {
        self.negative.remembered_for(hash)
    }

    /// The proxy's public key, `name:base64`.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Counts a lookup's outcome (hit, miss, …) in the metrics and the request's span.
    fn record_lookup<T>(
        &self,
        kind: ObjectKind,
        result: Result<(T, LookupResult), CacheError>,
    ) -> Result<T, CacheError> {
        let outcome = match &result {
            Ok((_, outcome)) => *outcome,
            Err(err) => err.outcome(),
        };
        self.metrics.lookup(kind, outcome);
        tracing::Span::current().record("cache", outcome.as_str());
        result.map(|(value, _)| value)
    }

    /// Starts the background work of a serving process: writing access times, and reading the
    /// cache's size for the metrics every minute.
    pub fn start_background(&self) {
        let (access, db) = (Arc::clone(&self.access), Arc::clone(&self.db));
        self.background
            .spawn("access_flush", move |stop| access.flush_every_interval(db, stop));
        let (db, metrics) = (Arc::clone(&self.db), Arc::clone(&self.metrics));
        self.background.spawn("cache_size", move |stop| async move {
            loop {
                metrics.sample_recent();
                refresh_shared_metrics(&*db, &metrics).await;
                if !stop.pause(USAGE_REFRESH).await {
                    return;
                }
            }
        });
    }

    /// The background loops of this process, stopped by shutdown.
    pub fn background(&self) -> &Background {
        &self.background
    }

    /// Waits until every fill has ended (stored or failed, its temp file gone). Fills started
    /// meanwhile are waited for too.
    pub async fn fills_finished(&self) {
        self.fill_tasks.close();
        self.fill_tasks.wait().await;
    }

    /// Ends the fills still running as failed (each releases its lease and removes its temp
    /// file, see `fill::Fill::end`), and waits until they have.
    pub async fn cancel_fills(&self) {
        self.fills_cancelled.cancel();
        self.fills_finished().await;
    }

    /// This process's directory for downloads and uploads in progress.
    pub fn tmp_dir(&self) -> &std::path::Path {
        &self.tmp_dir
    }

    /// NAR downloads (or copies from another replica) under way in this process.
    pub fn fills_in_progress(&self) -> usize {
        self.fills.len()
    }

    /// Writes what is only in memory (access times) before the process exits.
    pub async fn flush(&self) {
        if let Err(err) = self.access.flush(&*self.db).await {
            tracing::warn!(error = %err, "recording the last access times failed");
        }
    }

    /// Evicts least-recently-used entries down to `options.max_size` (see `gc`), forgetting
    /// them in this process's memory too.
    pub async fn collect_garbage(
        &self,
        options: &crate::gc::GcOptions,
    ) -> Result<crate::gc::GcReport, crate::gc::GcError> {
        // What this process noted counts, so flush it first.
        self.flush().await;
        let hot = Arc::clone(&self.hot);
        let mut forget = move |evicted: crate::gc::Evicted<'_>| match evicted {
            crate::gc::Evicted::Narinfo(hash) => hot.forget_narinfo(hash),
            crate::gc::Evicted::Nar(file) => hot.forget_nar(file),
        };
        let result = crate::gc::run_once(
            Arc::clone(&self.db),
            &*self.storage,
            options,
            &self.replica.holder_for("gc"),
            &mut forget,
        )
        .await;
        self.metrics.gc_finished(&result);
        refresh_shared_metrics(&*self.db, &self.metrics).await;
        result
    }

    /// One `fsck` (`serve --fsck-schedule`), counted in the metrics.
    pub async fn fsck(
        &self,
        options: &crate::fsck::FsckOptions,
    ) -> Result<crate::fsck::FsckReport, crate::fsck::FsckError> {
        let holder = self.replica.holder_for("fsck");
        let result = crate::fsck::run_once(Arc::clone(&self.db), &*self.backing, options, &holder).await;
        self.metrics.fsck.finished(&result);
        refresh_shared_metrics(&*self.db, &self.metrics).await;
        result
    }

    /// Whether an `Authorization` header value is another replica's (for the internal endpoint).
    pub fn is_replica(&self, authorization: Option<&str>) -> bool {
        self.replica.options.peer_token.accepts(authorization)
    }

    /// Whether the database records `file` as stored (for the hot tier's sweep).
    pub async fn nar_recorded(&self, file: &nixcache_protocol::NarFile) -> Result<bool, CacheError> {
        Ok(self.db.get_nar(file).await?.is_some())
    }

    /// Checks metadata and storage; for readiness.
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.db.ping().await?;
        self.storage.ping().await?;
        Ok(())
    }
}

/// Reads what the metrics take from the shared database: the cache's size, and what GC and fsck
/// runs recorded (however they ran). A failure leaves the last values.
async fn refresh_shared_metrics(db: &dyn MetadataStore, metrics: &Metrics) {
    match db.usage().await {
        Ok(usage) => metrics.set_usage(&usage),
        Err(err) => tracing::debug!(error = %err, "reading the cache size failed"),
    }
    match db.upkeep().await {
        Ok(records) => metrics.upkeep.set(records),
        Err(err) => tracing::debug!(error = %err, "reading the GC and fsck records failed"),
    }
}
