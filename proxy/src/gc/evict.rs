//! The steps of one run: orphan NARs, listings and logs (`side`), then narinfos in LRU order,
//! then abandoned uploads.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use futures::{stream, StreamExt, TryStreamExt};
use nixcache_protocol::{NarFile, StorePathHash};

use super::{upload::Swept, Evicted, Run, PAGE, STALE_UPLOAD_AGE};
use crate::{
    db::{
        AccessCursor, DbError, LeaseClaim, LeaseKey, MetadataStore, NarAccess, NarRecord, NarinfoAccess,
        Timestamp,
    },
    lease::hold_lease,
    storage::{BlobKey, BlobStore},
};

/// Database and storage requests a run keeps in flight at once: one at a time, a run spends
/// nearly all its time waiting on round trips (and S3 deletes).
const CONCURRENCY: usize = 16;
/// How long a NAR's lease lasts without renewal while GC removes its row and object (renewed
/// every third of it).
const NAR_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// A narinfo chosen for eviction.
struct Planned {
    entry: NarinfoAccess,
    /// Its stored NAR, if any.
    nar: Option<(NarFile, u64)>,
    /// No other live narinfo names that NAR (as counted when planning).
    last_naming: bool,
}

/// The narinfos of one page chosen for eviction.
#[derive(Default)]
struct Plan {
    chosen: Vec<Planned>,
    /// The last entry looked at, chosen or kept: the next page starts after it.
    last_seen: Option<AccessCursor>,
}

/// Why a narinfo GC would evict stays.
#[derive(Clone, Copy)]
enum Kept {
    Pinned,
    Uploaded,
}

/// What became of one NAR whose removal was asked.
enum Removal {
    Removed {
        file: NarFile,
        size: u64,
        object_deleted: bool,
    },
    /// A narinfo names it again (fetched or uploaded meanwhile): it stays.
    Kept,
}

impl Run<'_> {
    fn over(&self) -> bool {
        self.report.over_limit()
    }

    pub(super) async fn evict(&mut self) -> Result<(), DbError> {
        if self.over() {
            self.evict_orphans().await?;
        }
        if self.over() {
            self.evict_side_files().await?;
        }
        if self.over() {
            self.evict_narinfos().await?;
        }
        Ok(())
    }

    async fn evict_orphans(&mut self) -> Result<(), DbError> {
        let mut cursor: Option<AccessCursor> = None;
        while self.over() {
            let page = (self.db)
                .least_recent_orphan_nars(self.before, cursor.as_ref(), PAGE)
                .await?;
            let mut to_free = self.report.size_after().saturating_sub(self.report.max_size);
            let chosen: Vec<NarAccess> = page
                .into_iter()
                .take_while(|nar| {
                    let take = to_free > 0;
                    to_free = to_free.saturating_sub(nar.file_size);
                    take
                })
                .collect();
            // The next page starts after what was looked at, not after the page: a NAR that
            // stays (a narinfo names it again) leaves the run over its limit, and the rest of
            // this page comes first.
            let Some(last) = chosen.last() else { break };
            cursor = Some(last.cursor());
            let files = chosen.into_iter().map(|n| (n.nar_file, n.file_size)).collect();
            self.report.orphans_deleted += self.remove_nars(files).await?;
        }
        Ok(())
    }

    async fn evict_narinfos(&mut self) -> Result<(), DbError> {
        // Narinfos taken per NAR: a NAR goes with the last narinfo naming it. A real run has
        // evicted earlier pages' narinfos (they no longer count), a dry run has not.
        let mut taken: HashMap<NarFile, u64> = HashMap::new();
        let mut cursor: Option<AccessCursor> = None;
        while self.over() {
            let page = (self.db)
                .least_recent_narinfos(self.before, cursor.as_ref(), PAGE)
                .await?;
            if !self.options.dry_run {
                taken.clear();
            }
            let plan = self.plan(page, &mut taken).await?;
            // The next page starts after what was looked at (kept or chosen).
            let Some(last_seen) = plan.last_seen else { break };
            cursor = Some(last_seen);
            self.evict_planned(plan.chosen).await?;
        }
        Ok(())
    }

    /// Why an entry the LRU order offers stays: pinned, or uploaded under `keep_uploads`.
    fn kept(&self, entry: &NarinfoAccess) -> Option<Kept> {
        if self.pinned.holds(&entry.hash) {
            Some(Kept::Pinned)
        } else if entry.uploaded && self.options.keep_uploads {
            Some(Kept::Uploaded)
        } else {
            None
        }
    }

    /// The least recently used narinfos of `page` that bring the cache under its limit (as far
    /// as the page goes), each with the NAR it frees; kept ones are counted and passed over.
    /// Looked up `CONCURRENCY` at a time, so a small overshoot costs a few queries.
    async fn plan(
        &mut self,
        page: Vec<NarinfoAccess>,
        taken: &mut HashMap<NarFile, u64>,
    ) -> Result<Plan, DbError> {
        let db: &dyn MetadataStore = &**self.db;
        let mut to_free = self.report.size_after().saturating_sub(self.report.max_size);
        let mut plan = Plan::default();
        for chunk in page.chunks(CONCURRENCY) {
            let kept: Vec<Option<Kept>> = chunk.iter().map(|e| self.kept(e)).collect();
            // Collected first: a lazy iterator of futures held across the await makes the
            // run's future not `Send` (a higher-ranked lifetime rustc cannot prove).
            let lookups: Vec<_> = chunk
                .iter()
                .zip(&kept)
                .filter(|(_, kept)| kept.is_none())
                .map(|(e, _)| nar_and_naming(db, e.nar_file.clone()))
                .collect();
            let facts: Vec<(Option<NarRecord>, u64)> =
                stream::iter(lookups).buffered(CONCURRENCY).try_collect().await?;
            let mut facts = facts.into_iter();
            for (entry, kept) in chunk.iter().zip(kept) {
                if to_free == 0 {
                    return Ok(plan);
                }
                plan.last_seen = Some(entry.cursor());
                match kept {
                    Some(Kept::Pinned) => self.report.pinned_kept += 1,
                    Some(Kept::Uploaded) => self.report.uploads_kept += 1,
                    None => {}
                }
                // Only entries not kept were looked up.
                let Some((nar, naming)) = kept.is_none().then(|| facts.next()).flatten() else {
                    continue;
                };
                let n = taken.entry(entry.nar_file.clone()).or_insert(0);
                *n += 1;
                let last_naming = *n >= naming;
                let nar = nar.map(|nar| (nar.nar_file, nar.file_size));
                if let (true, Some((_, size))) = (last_naming, &nar) {
                    to_free = to_free.saturating_sub(*size);
                }
                plan.chosen.push(Planned {
                    entry: entry.clone(),
                    nar,
                    last_naming,
                });
            }
        }
        Ok(plan)
    }

    /// Marks the planned narinfos evicted, then removes the NARs they freed. What succeeded is reported even when some
    /// request failed (the serving process's memory must hear of it), then the error returned.
    async fn evict_planned(&mut self, plan: Vec<Planned>) -> Result<(), DbError> {
        let results: Vec<Result<bool, DbError>> = if self.options.dry_run {
            plan.iter().map(|_| Ok(true)).collect()
        } else {
            let db: &dyn MetadataStore = &**self.db;
            let before = self.before;
            let evictions: Vec<_> = plan
                .iter()
                .map(|p| evict_narinfo(db, p.entry.hash, before))
                .collect();
            stream::iter(evictions).buffered(CONCURRENCY).collect().await
        };
        let mut first_error = None;
        for (p, result) in plan.iter().zip(results) {
            match result {
                Ok(true) => {
                    (self.on_evict)(Evicted::Narinfo(&p.entry.hash));
                    self.report.narinfos_evicted += 1;
                }
                // Pinned since the run began, or gone already: its NAR stays named (or is an
                // orphan, for the next run).
                Ok(false) => {}
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_error {
            // The NARs of what was evicted are orphans now: the next run takes them first.
            return Err(err);
        }
        // A dry run counts only the NARs it expects to go. A real run asks for every NAR of the
        // plan to go (a narinfo naming it may have gone since the count): the conditional
        // delete keeps those still named.
        let mut seen = HashSet::new();
        let files: Vec<(NarFile, u64)> = plan
            .into_iter()
            .filter(|p| p.last_naming || !self.options.dry_run)
            .filter_map(|p| p.nar)
            .filter(|(file, _)| seen.insert(file.clone()))
            .collect();
        self.remove_nars(files).await?;
        Ok(())
    }

    /// Each NAR's row, if no live narinfo names it (in the same statement), then its object.
    /// Returns how many went; what went is reported even when some request failed.
    async fn remove_nars(&mut self, nars: Vec<(NarFile, u64)>) -> Result<u64, DbError> {
        let (db, storage, dry_run, holder) = (self.db, self.storage, self.options.dry_run, self.holder);
        let removals: Vec<_> = nars
            .into_iter()
            .map(|(file, size)| remove_nar(db, storage, file, size, dry_run, holder))
            .collect();
        let outcomes: Vec<Result<Removal, DbError>> = stream::iter(removals)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut removed = 0;
        let mut first_error = None;
        for outcome in outcomes {
            let (file, size, object_deleted) = match outcome {
                Ok(Removal::Removed {
                    file,
                    size,
                    object_deleted,
                }) => (file, size, object_deleted),
                Ok(Removal::Kept) => continue,
                Err(err) => {
                    first_error.get_or_insert(err);
                    continue;
                }
            };
            (self.on_evict)(Evicted::Nar(&file));
            removed += 1;
            self.report.nars_deleted += 1;
            self.report.bytes_freed += size;
            self.report.storage_errors += u64::from(!object_deleted);
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(removed),
        }
    }

    /// Uploads abandoned before their narinfo came: never visible, so simply deleted
    /// ([`super::upload::sweep_upload`]).
    pub(super) async fn sweep_stale_uploads(&mut self) -> Result<(), DbError> {
        let before = Timestamp::now() - self.options.keep_recent.max(STALE_UPLOAD_AGE);
        loop {
            let stale = self.db.stale_uploads(before, PAGE).await?;
            if stale.is_empty() {
                return Ok(());
            }
            for upload in stale {
                let file = &upload.nar_file;
                let swept =
                    super::upload::sweep_upload(self.db, self.storage, self.holder, file, before).await?;
                let Swept::Deleted { storage_error } = swept else {
                    continue;
                };
                if let Some(err) = storage_error {
                    tracing::warn!(nar = %file.file_name(), error = %err, "deleting an abandoned upload failed");
                    self.report.storage_errors += 1;
                }
                self.report.uploads_swept += 1;
            }
        }
    }
}

/// The stored NAR's row, if any, and how many live narinfos name it.
async fn nar_and_naming(db: &dyn MetadataStore, file: NarFile) -> Result<(Option<NarRecord>, u64), DbError> {
    let Some(nar) = db.get_nar(&file).await? else {
        return Ok((None, 0));
    };
    Ok((Some(nar), db.count_narinfos_for_nar(&file).await?))
}

/// Marks a narinfo evicted unless it is pinned or was accessed (or replaced, by an upload) since
/// `before` (`false` then, or when it was not live). An uploaded one too: its NAR cannot be
/// fetched again, and a client that cached the narinfo hears so (`410 Gone`) rather than a bare
/// `404`.
async fn evict_narinfo(
    db: &dyn MetadataStore,
    hash: StorePathHash,
    before: Timestamp,
) -> Result<bool, DbError> {
    db.evict_unpinned_narinfo(&hash, Timestamp::now(), before).await
}

/// The NAR's row, if no live narinfo names it (in the same statement), then its object, under
/// the NAR's lease: fills and uploads write the object under it too, so none can store a new
/// object between the two steps for GC to delete. A NAR being written now stays.
async fn remove_nar(
    db: &Arc<dyn MetadataStore>,
    storage: &dyn BlobStore,
    file: NarFile,
    size: u64,
    dry_run: bool,
    holder: &str,
) -> Result<Removal, DbError> {
    if dry_run {
        return Ok(Removal::Removed {
            file,
            size,
            object_deleted: true,
        });
    }
    let lease = LeaseKey::nar(&file);
    // No address: other replicas wait for this lease to go instead of streaming from it.
    if let LeaseClaim::Held(_) = db.claim_lease(&lease, holder, "", NAR_LEASE_TTL).await? {
        return Ok(Removal::Kept);
    }
    // Released also when the run is dropped (cancelled) meanwhile: no lease left to expire.
    let held = hold_lease(Arc::clone(db), lease, holder.to_owned(), NAR_LEASE_TTL);
    let removal = remove_row_and_object(&**db, storage, file, size).await;
    held.release().await;
    removal
}

async fn remove_row_and_object(
    db: &dyn MetadataStore,
    storage: &dyn BlobStore,
    file: NarFile,
    size: u64,
) -> Result<Removal, DbError> {
    if !db.delete_nar_if_unnamed(&file).await? {
        return Ok(Removal::Kept);
    }
    let key = BlobKey::for_nar(&file);
    let object_deleted = match storage.delete(&key).await {
        Ok(_) => true,
        Err(err) => {
            tracing::warn!(nar = %key, error = %err, "deleting an evicted NAR from storage failed; it stays unrecorded");
            false
        }
    };
    Ok(Removal::Removed {
        file,
        size,
        object_deleted,
    })
}
