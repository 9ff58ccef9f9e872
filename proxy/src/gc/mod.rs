//! Least-recently-used eviction down to a size limit: `nixcache gc` (a Kubernetes CronJob) and
//! `serve --gc-schedule` run [`run_once`].
//!
//! Entries go in order of last access (`cache::access` records it). First stored NARs that no
//! live narinfo names, then listings and logs (`side`), then narinfos: a narinfo goes with its NAR, but a NAR that several
//! narinfos name goes only with the last of them. An evicted narinfo is marked, not deleted: a
//! lookup of the path is a miss again, yet a client that cached the narinfo itself can still
//! fetch the NAR, which is downloaded again (or, for an uploaded one, answers `410 Gone`), until
//! [`GcOptions::keep_evicted`] has passed. A NAR row is deleted only if, in the same statement, no live narinfo
//! names it, and its object only after that, both under the NAR's lease (which fills hold while
//! they write the object), so a fill cannot store the NAR anew in between; a crash in between
//! leaves an unrecorded object (invisible, overwritten when the NAR is fetched again). A NAR being streamed while it is
//! removed still reaches its client: the open file (or S3 GET) keeps its bytes. One run at a
//! time across all replicas (a lease row).
//!
//! Pinned paths and the closures of closure pins ([`crate::pins`]) are never evicted, nor
//! their listings; with [`GcOptions::keep_uploads`] neither are uploaded paths.

mod evict;
mod record;
mod side;
#[cfg(test)]
mod tests;
pub mod upload;

use std::{fmt, sync::Arc, time::Duration};

use nixcache_protocol::{NarFile, StorePathHash};

use crate::{
    db::{DbError, LeaseClaim, LeaseKey, MetadataStore, Timestamp, Usage},
    lease::hold_lease,
    pins::{closure_of, Closure},
    storage::BlobStore,
    units::format_size,
};

/// Rows read per query.
const PAGE: u32 = 500;
/// How long the GC lease lasts without renewal (it is renewed every third of it).
const LEASE_TTL: Duration = Duration::from_secs(60);
/// Lease rows of replicas that died are deleted this long after they expired.
const DEAD_LEASE_AGE: Duration = Duration::from_secs(3600);
/// Uploaded NARs whose narinfo has not come this long (at least) are deleted.
pub const STALE_UPLOAD_AGE: Duration = Duration::from_secs(3600);
/// How long evicted narinfos are kept unless told otherwise: Nix's own
/// `narinfo-cache-positive-ttl`, the time a client may go on asking for a NAR whose narinfo it
/// cached.
pub const DEFAULT_KEEP_EVICTED: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Evict until the stored NARs take at most this many bytes.
    pub max_size: u64,
    /// Never evict what was accessed more recently than this (what replicas just served and
    /// may still hold in memory). Also the least age of an abandoned upload that is swept.
    pub keep_recent: Duration,
    /// Report what would go, remove nothing.
    pub dry_run: bool,
    /// Evicted narinfos are kept this long, then deleted: meanwhile a client that cached one
    /// finds its NAR (fetched again from the upstream URL kept; an uploaded one answers 410).
    pub keep_evicted: Duration,
    /// Never evict a path a client uploaded (it exists nowhere else).
    pub keep_uploads: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("another garbage collection is running (held by {holder}); nothing done")]
    Busy { holder: String },
}

/// What one run did (or, dry, would do).
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    pub before: Usage,
    pub max_size: u64,
    pub dry_run: bool,
    pub narinfos_evicted: u64,
    pub nars_deleted: u64,
    /// NARs deleted that no narinfo named.
    pub orphans_deleted: u64,
    /// Listings and logs deleted.
    pub side_files_deleted: u64,
    pub bytes_freed: u64,
    /// Objects whose row went but whose deletion from storage failed (left unrecorded).
    pub storage_errors: u64,
    pub leases_swept: u64,
    /// Uploaded NARs deleted because their narinfo never came.
    pub uploads_swept: u64,
    /// Narinfos evicted over [`GcOptions::keep_evicted`] ago, deleted for good.
    pub narinfos_purged: u64,
    /// Pins, and the cached paths they hold (closures walked).
    pub pins: u64,
    pub pinned_paths: u64,
    /// Narinfos that would have gone but are pinned, or uploaded under `keep_uploads`.
    pub pinned_kept: u64,
    pub uploads_kept: u64,
    pub elapsed: Duration,
}

impl GcReport {
    pub fn size_after(&self) -> u64 {
        (self.before.nar_bytes + self.before.side_bytes).saturating_sub(self.bytes_freed)
    }
    /// Still over the limit: what is left was accessed within `keep_recent`.
    pub fn over_limit(&self) -> bool {
        self.size_after() > self.max_size
    }
}

impl fmt::Display for GcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verb, prefix) = if self.dry_run {
            ("would free", "dry run: ")
        } else {
            ("freed", "")
        };
        write!(
            f,
            "{prefix}cache held {} in {} NARs ({} narinfos)",
            format_size(self.before.nar_bytes),
            self.before.nars,
            self.before.narinfos,
        )?;
        if self.before.side_files > 0 {
            write!(
                f,
                " and {} in {} listings and logs",
                format_size(self.before.side_bytes),
                self.before.side_files
            )?;
        }
        writeln!(f, "; limit {}", format_size(self.max_size))?;
        self.write_kept(f, prefix)?;
        write!(
            f,
            "{prefix}evicted {} narinfos and {} NARs ({} without a narinfo), {} listings and logs, {verb} {} in {:.2} s; size now {}",
            self.narinfos_evicted,
            self.nars_deleted,
            self.orphans_deleted,
            self.side_files_deleted,
            format_size(self.bytes_freed),
            self.elapsed.as_secs_f64(),
            format_size(self.size_after()),
        )?;
        if self.over_limit() && self.pinned_kept + self.uploads_kept > 0 {
            write!(f, "\nstill over the limit: the rest is pinned, an upload kept, or accessed too recently to evict")?;
        } else if self.over_limit() {
            write!(
                f,
                "\nstill over the limit: the rest was accessed too recently to evict"
            )?;
        }
        if self.storage_errors > 0 {
            write!(
                f,
                "\n{} objects could not be deleted from storage",
                self.storage_errors
            )?;
        }
        Ok(())
    }
}

impl GcReport {
    /// What pins and `--gc-keep-uploads` kept, when they kept anything.
    fn write_kept(&self, f: &mut fmt::Formatter<'_>, prefix: &str) -> fmt::Result {
        if self.pins > 0 {
            writeln!(
                f,
                "{prefix}{} pins hold {} cached paths; kept {} pinned paths it would have evicted",
                self.pins, self.pinned_paths, self.pinned_kept
            )?;
        }
        if self.uploads_kept > 0 {
            writeln!(
                f,
                "{prefix}kept {} uploaded paths it would have evicted (--gc-keep-uploads)",
                self.uploads_kept
            )?;
        }
        Ok(())
    }
}

/// Logs how a scheduled collection (`serve --gc-schedule`) went.
pub fn log_scheduled(result: &Result<GcReport, GcError>) {
    match result {
        Ok(report) => tracing::info!(
            narinfos = report.narinfos_evicted,
            nars = report.nars_deleted,
            freed = report.bytes_freed,
            size = report.size_after(),
            "scheduled GC: {}",
            report.to_string().replace('\n', "; ")
        ),
        Err(GcError::Busy { holder }) => {
            tracing::info!(%holder, "scheduled GC skipped: another run is in progress")
        }
        Err(err) => tracing::error!(error = %err, "scheduled GC failed"),
    }
}

/// One thing removed, for callers that keep copies (the serving process's memory cache).
pub enum Evicted<'a> {
    Narinfo(&'a StorePathHash),
    Nar(&'a NarFile),
}

/// The shared state of one run.
struct Run<'a> {
    /// Shared, for the NAR leases a run holds (released when dropped, as by a cancelled run).
    db: &'a Arc<dyn MetadataStore>,
    storage: &'a dyn BlobStore,
    options: &'a GcOptions,
    on_evict: &'a mut (dyn FnMut(Evicted<'_>) + Send),
    report: GcReport,
    /// Entries last accessed since are kept (`keep_recent`).
    before: Timestamp,
    /// This run's name in the leases it takes.
    holder: &'a str,
    /// What pins hold: never evicted.
    pinned: Closure,
}

/// Evicts least-recently-used entries until the cache fits `options.max_size`. `holder` names
/// this run in the GC lease; `on_evict` hears of every removal. A run that ends (not a dry
/// run, nor one that found another running) is recorded in the database.
pub async fn run_once(
    db: Arc<dyn MetadataStore>,
    storage: &dyn BlobStore,
    options: &GcOptions,
    holder: &str,
    on_evict: &mut (dyn FnMut(Evicted<'_>) + Send),
) -> Result<GcReport, GcError> {
    let started_at = Timestamp::now();
    let result = collect(Arc::clone(&db), storage, options, holder, on_evict).await;
    if !options.dry_run {
        record::record(&*db, started_at, options.max_size, &result).await;
    }
    result
}

async fn collect(
    db: Arc<dyn MetadataStore>,
    storage: &dyn BlobStore,
    options: &GcOptions,
    holder: &str,
    on_evict: &mut (dyn FnMut(Evicted<'_>) + Send),
) -> Result<GcReport, GcError> {
    let started = std::time::Instant::now();
    let key = LeaseKey::gc();
    if let LeaseClaim::Held(lease) = db.claim_lease(&key, holder, "", LEASE_TTL).await? {
        return Err(GcError::Busy { holder: lease.holder });
    }
    let lease = hold_lease(Arc::clone(&db), key, holder.to_owned(), LEASE_TTL);
    let mut report = GcReport {
        before: db.usage().await?,
        max_size: options.max_size,
        dry_run: options.dry_run,
        ..GcReport::default()
    };
    // Read once the lease is held (and only when something is to go); a pin added during the
    // run still keeps its own path (the eviction checks it), its closure from the next run on.
    let mut pinned = Closure::default();
    if report.over_limit() {
        (report.pins, pinned) = read_pins(&*db, options.max_size).await?;
        report.pinned_paths = pinned.cached;
    }
    let mut run = Run {
        db: &db,
        storage,
        options,
        on_evict,
        report,
        before: Timestamp::now() - options.keep_recent,
        holder,
        pinned,
    };
    let result = run.evict().await;
    lease.release().await;
    result?;
    if !options.dry_run {
        run.sweep_stale_uploads().await?;
        let now = Timestamp::now();
        run.report.narinfos_purged = db.purge_evicted_narinfos(now - options.keep_evicted).await?;
        run.report.leases_swept = db.delete_expired_leases(now - DEAD_LEASE_AGE).await?;
    }
    let mut report = run.report;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The pins, and the paths they hold; says so when those alone take `max_size` or more (every
/// run then evicts all the rest).
async fn read_pins(db: &dyn MetadataStore, max_size: u64) -> Result<(u64, Closure), DbError> {
    let pins = db.pins().await?;
    let held = closure_of(db, &pins).await?;
    if held.bytes >= max_size && held.cached > 0 {
        tracing::warn!(
            pinned = %format_size(held.bytes),
            limit = %format_size(max_size),
            paths = held.cached,
            "pinned paths alone take the size limit or more: GC evicts everything else; \
             raise --max-size or unpin some"
        );
    }
    Ok((pins.len() as u64, held))
}
