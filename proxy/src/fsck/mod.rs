//! `nixcache fsck` (and `serve --fsck-schedule`): checks that storage and the database agree,
//! and with `repair` makes them agree again.
//!
//! Four passes, each paged in key order so memory stays flat: stored NARs (`nars`: the object
//! is there and has the recorded size; with `verify` its content is re-hashed against FileHash,
//! NarHash and NarSize), listings and logs (`side`), pending uploads and uploaded narinfos
//! (`side`), and last the storage listing (`objects`) for objects no row records.
//!
//! Safe while replicas serve: an object without a row is left alone until it is older than
//! `min_age` (a fill or upload stores its object before its row), and every repair of a NAR
//! runs under the NAR's lease, after checking again that the row is unchanged and the object
//! still wrong, so a fill, an upload or a GC at work on it meanwhile is never undone. A repair
//! deletes the broken object and its row, so the next request fetches the NAR again from its
//! upstream; an uploaded path, which exists nowhere else, is evicted (it answers `410 Gone`) and
//! named in the report. A missing object is repaired only once every row is checked, and only
//! while few are missing (an empty volume or the wrong bucket is not damage); an uploaded NAR's
//! missing object is only reported. Orphans likewise (see `objects`).

mod content;
mod nars;
mod objects;
mod record;
mod report;
mod side;
#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Duration};

use crate::{
    db::{DbError, LeaseClaim, LeaseKey, MetadataStore, Timestamp},
    lease::hold_lease,
    storage::{BlobStore, StorageError},
};
pub use report::{FsckReport, Outcome, Tally};

/// Rows read per query, and objects looked up per query.
const PAGE: u32 = 500;
/// How long the fsck lease lasts without renewal (renewed while a run goes on).
const LEASE_TTL: Duration = Duration::from_secs(60);
/// How long a NAR's lease lasts while it is repaired.
const NAR_LEASE_TTL: Duration = Duration::from_secs(60);
/// NARs missing one after another that stop the repairs.
const MISSING_BRAKE: u32 = 16;
/// Default of `min_age`: far longer than an object goes without its row (a fill records it the
/// moment it is stored; an upload's NAR waits for its narinfo in `uploads`, which has a row).
pub const DEFAULT_MIN_AGE: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug)]
pub struct FsckOptions {
    /// Re-hash every stored NAR (reads all of them), not only its size.
    pub verify: bool,
    /// Make storage and database agree: delete what is broken or unrecorded.
    pub repair: bool,
    /// With `repair`: say what would be repaired, change nothing.
    pub dry_run: bool,
    /// Objects without a row younger than this are left alone (a fill may be recording them).
    pub min_age: Duration,
    /// Objects checked at once.
    pub jobs: usize,
}

impl Default for FsckOptions {
    fn default() -> Self {
        Self {
            verify: false,
            repair: false,
            dry_run: false,
            min_age: DEFAULT_MIN_AGE,
            jobs: 4,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("another fsck is running (held by {holder}); nothing done")]
    Busy { holder: String },
}

/// Logs how a scheduled run (`serve --fsck-schedule`) went.
pub fn log_scheduled(result: &Result<FsckReport, FsckError>) {
    match result {
        Ok(report) if report.outcome() == Outcome::Clean => {
            tracing::info!("scheduled fsck: {}", report.to_string().replace('\n', "; "))
        }
        Ok(report) => tracing::warn!(
            problems = report.problems(),
            repaired = report.repaired,
            "scheduled fsck: {}",
            report.to_string().replace('\n', "; ")
        ),
        Err(FsckError::Busy { holder }) => {
            tracing::info!(%holder, "scheduled fsck skipped: another run is in progress")
        }
        Err(err) => tracing::error!(error = %err, "scheduled fsck failed"),
    }
}

/// The shared state of one run.
struct Run<'a> {
    db: &'a Arc<dyn MetadataStore>,
    storage: &'a dyn BlobStore,
    options: &'a FsckOptions,
    /// This run's name in the leases it takes.
    holder: &'a str,
    report: FsckReport,
    missing_in_a_row: u32,
}

/// Checks (and with `options.repair`, repairs) the cache; `holder` names this run in leases. A
/// run that ends (not a dry run, nor one that found another running) is recorded in the
/// database.
pub async fn run_once(
    db: Arc<dyn MetadataStore>,
    storage: &dyn BlobStore,
    options: &FsckOptions,
    holder: &str,
) -> Result<FsckReport, FsckError> {
    let started_at = Timestamp::now();
    let result = check(Arc::clone(&db), storage, options, holder).await;
    if !options.dry_run {
        record::record(&*db, started_at, &result).await;
    }
    result
}

async fn check(
    db: Arc<dyn MetadataStore>,
    storage: &dyn BlobStore,
    options: &FsckOptions,
    holder: &str,
) -> Result<FsckReport, FsckError> {
    let started = std::time::Instant::now();
    let key = LeaseKey::fsck();
    if let LeaseClaim::Held(lease) = db.claim_lease(&key, holder, "", LEASE_TTL).await? {
        return Err(FsckError::Busy { holder: lease.holder });
    }
    let lease = hold_lease(Arc::clone(&db), key, holder.to_owned(), LEASE_TTL);
    let mut run = Run {
        db: &db,
        storage,
        options,
        holder,
        report: FsckReport::new(options),
        missing_in_a_row: 0,
    };
    let result = run.all_passes().await;
    lease.release().await;
    result?;
    let mut report = run.report;
    report.elapsed = started.elapsed();
    Ok(report)
}

impl Run<'_> {
    async fn all_passes(&mut self) -> Result<(), FsckError> {
        self.check_nars().await?;
        self.check_side_files().await?;
        self.check_uploads().await?;
        self.check_uploaded_narinfos().await?;
        self.check_objects().await
    }

    /// Whether problems found now are repaired.
    fn repairing(&self) -> bool {
        self.options.repair && !self.options.dry_run && !self.report.braked
    }

    /// Counts a NAR found missing (or not); enough in a row stop the repairs (a dry run says
    /// that a repair would stop).
    fn note_missing(&mut self, missing: bool) {
        self.missing_in_a_row = if missing { self.missing_in_a_row + 1 } else { 0 };
        if self.missing_in_a_row >= MISSING_BRAKE && self.options.repair && !self.report.braked {
            self.brake(u64::from(self.missing_in_a_row));
        }
    }

    fn brake(&mut self, missing: u64) {
        self.report.braked = true;
        tracing::error!(
            missing,
            "stored NARs are missing: storage looks empty or is not the cache's (another volume, \
             bucket or prefix?); nothing more is repaired"
        );
    }
}
