//! Re-hashing stored NARs in the background (`--scrub-rate`): serving compares only sizes, so a
//! file damaged on disk or in the bucket would be served for ever. A file whose bytes no longer
//! hash to what its narinfo says is checked again under the NAR's lease, then dropped (row,
//! object, memory), so the next request fetches it again; a damaged uploaded one, which cannot be
//! fetched again, takes its narinfo with it (a missing one is only reported). Many files missing
//! in a row stop the pass: storage mounted wrong is not damage.
//!
//! One pass walks the stored NARs it looked at longest ago first (never first), reading at most
//! `rate` bytes per second, and records for each when it looked and, when intact, that it
//! verified it then: a pass cut short (a restart, shutdown) is taken up where it stopped, and a
//! NAR it cannot check or repair goes to the back rather than stay at the head. One replica at
//! a time scrubs (a lease), every `interval`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use nixcache_protocol::{Compression, Sha256Hash};
use sha2::{Digest, Sha256};

use super::{Cache, CacheError};
use crate::tasks::Stopping;
use crate::{
    db::{LeaseClaim, LeaseKey, NarInfoRecord, NarVerification, Timestamp},
    storage::{BlobKey, StorageError},
};

/// NARs read per query.
const PAGE: u32 = 200;
/// How long the scrub lease lasts without renewal (renewed while a pass runs).
const LEASE_TTL: Duration = Duration::from_secs(60);
/// Stored NARs missing one after another that stop a pass (storage mounted wrong, not damage).
const MISSING_BRAKE: u32 = 16;
/// The first pass starts this long after the process (or sooner, with a shorter interval).
const FIRST_PASS_AFTER: Duration = Duration::from_secs(600);
/// How long a NAR's lease lasts while a damaged NAR is dropped.
const NAR_LEASE_TTL: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
pub struct ScrubOptions {
    /// Bytes read per second at most.
    pub rate: u64,
    /// Pause between passes.
    pub interval: Duration,
}

/// What a pass found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrubReport {
    pub checked: u64,
    /// Damaged (or missing) files dropped.
    pub dropped: u64,
}

impl Cache {
    /// Starts scrubbing in the background: a first pass soon (pods seldom live a whole
    /// interval), then one every `options.interval`.
    pub fn start_scrub(&self, options: ScrubOptions) {
        let this = self.clone();
        self.background
            .spawn("scrub", move |stop| this.scrub_forever(options, stop));
    }

    async fn scrub_forever(self, options: ScrubOptions, stop: Stopping) {
        let mut pause = options.interval.min(FIRST_PASS_AFTER);
        while stop.pause(pause).await {
            pause = options.interval;
            // A pass is cut at shutdown: each of its steps is safe to cut, as by a crash.
            let result = tokio::select! {
                result = self.scrub_pass(options.rate) => result,
                () = stop.stopped() => return,
            };
            match result {
                Ok(Some(report)) => tracing::info!(?report, "scrub pass done"),
                Ok(None) => tracing::debug!("another replica is scrubbing"),
                Err(err) => tracing::warn!(error = %err, "scrub pass failed; trying again later"),
            }
        }
    }

    /// One pass over every stored NAR a narinfo names that was not verified since the pass
    /// began; `None` when another replica is scrubbing.
    pub async fn scrub_pass(&self, rate: u64) -> Result<Option<ScrubReport>, CacheError> {
        let (key, holder) = (LeaseKey::scrub(), &self.replica.holder_for("scrub"));
        if let LeaseClaim::Held(_) = self.db.claim_lease(&key, holder, "", LEASE_TTL).await? {
            return Ok(None);
        }
        let lease = crate::lease::hold_lease(Arc::clone(&self.db), key, holder.clone(), LEASE_TTL);
        let result = self.scrub_all(rate).await;
        lease.release().await;
        result.map(Some)
    }

    async fn scrub_all(&self, rate: u64) -> Result<ScrubReport, CacheError> {
        let before = Timestamp::now();
        let (mut report, mut pace) = (ScrubReport::default(), Pace::new(rate));
        let (mut cursor, mut missing_in_a_row): (Option<NarVerification>, u32) = (None, 0);
        loop {
            let page = self.db.nars_by_check(before, cursor.as_ref(), PAGE).await?;
            let Some(last) = page.last() else {
                return Ok(report);
            };
            cursor = Some(last.clone());
            for nar in &page {
                match self.scrub_one(&nar.nar_file, &mut pace, &mut report).await {
                    Ok(Found::Missing) => missing_in_a_row += 1,
                    Ok(_) => missing_in_a_row = 0,
                    Err(err) => tracing::warn!(nar = %nar.nar_file.file_name(), error = %err,
                        "checking a stored NAR failed; it is looked at in the next pass"),
                }
                // Many files missing in a row: storage is more likely mounted wrong or empty
                // than damaged, and dropping rows would not help. Stop and say so.
                if missing_in_a_row >= MISSING_BRAKE {
                    tracing::error!(
                        missing = missing_in_a_row,
                        "scrub stopped: stored NARs are missing \
                        from storage one after another (an empty volume, another bucket or prefix?)"
                    );
                    return Ok(report);
                }
            }
        }
    }

    /// Looks at one stored NAR and records that it did (and whether the NAR was intact).
    async fn scrub_one(
        &self,
        file: &nixcache_protocol::NarFile,
        pace: &mut Pace,
        report: &mut ScrubReport,
    ) -> Result<Found, CacheError> {
        let found = self.check_stored(file, pace, report).await?;
        // A dropped NAR has no row left to mark.
        self.db
            .mark_nar_checked(file, Timestamp::now(), found == Found::Intact)
            .await?;
        Ok(found)
    }

    /// Checks one stored NAR against the narinfo naming it (one an upstream has first).
    async fn check_stored(
        &self,
        file: &nixcache_protocol::NarFile,
        pace: &mut Pace,
        report: &mut ScrubReport,
    ) -> Result<Found, CacheError> {
        let (Some(record), Some(stored)) =
            (self.db.narinfo_for_nar(file).await?, self.db.get_nar(file).await?)
        else {
            // Gone meanwhile, or named by no narinfo (GC's to remove): nothing to check against.
            return Ok(Found::Unchecked);
        };
        let Some(expected) = expected_file_hash(&record) else {
            // Without FileHash a compressed file is checked only by decompressing: not here.
            return Ok(Found::Unchecked);
        };
        let key = BlobKey::for_nar(file);
        let found = self.check(&key, (expected, stored.file_size), Some(pace)).await?;
        report.checked += 1;
        if found == Found::Intact {
            return Ok(found);
        }
        let store_path = &record.info.store_path;
        let uploaded = record.uploaded();
        if found == Found::Missing && uploaded {
            // It exists nowhere else: dropping its narinfo would lose the path for good.
            tracing::error!(nar = %key, %store_path, "an uploaded NAR is missing from storage; push it again");
            return Ok(found);
        }
        tracing::error!(nar = %key, %store_path, ?found, "stored NAR is damaged or missing; dropping it \
            (fetched again on the next request)");
        if self
            .drop_damaged(&record, (expected, stored.file_size), uploaded)
            .await?
        {
            report.dropped += 1;
            self.metrics.scrub_dropped();
        }
        Ok(found)
    }

    /// Reads the object and compares its hash and size; `pace` bounds how fast.
    async fn check(
        &self,
        key: &BlobKey,
        want: (Sha256Hash, u64),
        pace: Option<&mut Pace>,
    ) -> Result<Found, CacheError> {
        let read = match self.backing.get(key, None).await {
            Ok(read) => read,
            Err(StorageError::NotFound(_)) => return Ok(Found::Missing),
            Err(err) => return Err(err.into()),
        };
        let got = hash_stream(read.body, pace)
            .await
            .map_err(|e| StorageError::io(format!("reading {key}"), e))?;
        self.metrics.scrubbed(got.1);
        Ok(if got == want {
            Found::Intact
        } else {
            Found::Damaged
        })
    }

    /// Forgets the NAR (and a damaged upload's narinfo) under the NAR's lease, once the object
    /// is checked again under it: a fill or upload writing it anew meanwhile is left alone.
    /// Whether it was dropped.
    async fn drop_damaged(
        &self,
        record: &NarInfoRecord,
        want: (Sha256Hash, u64),
        uploaded: bool,
    ) -> Result<bool, CacheError> {
        let (file, holder) = (&record.nar_file, self.replica.holder_for("scrub"));
        let lease = LeaseKey::nar(file);
        // No address: this is not a fill other replicas could stream.
        if let LeaseClaim::Held(_) = self.db.claim_lease(&lease, &holder, "", NAR_LEASE_TTL).await? {
            return Ok(false);
        }
        let held = crate::lease::hold_lease(Arc::clone(&self.db), lease, holder, NAR_LEASE_TTL);
        let key = BlobKey::for_nar(file);
        let result = async {
            let found = self.check(&key, want, None).await?;
            if found == Found::Intact || self.db.get_nar(file).await?.is_none() {
                return Ok(false);
            }
            let hash = record.info.store_path.hash();
            if uploaded {
                // Evicted, not deleted: a client that cached it hears `410 Gone`.
                self.db.evict_narinfo(hash, Timestamp::now()).await?;
                self.hot.forget_narinfo(hash);
            }
            self.db.delete_nar(file).await?;
            self.hot.forget_nar(file);
            self.storage.delete(&key).await?;
            Ok::<_, CacheError>(true)
        }
        .await;
        held.release().await;
        result
    }
}

/// What a stored NAR's check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    Intact,
    /// Nothing to check it against (no narinfo names it, or none gives its file's hash).
    Unchecked,
    Damaged,
    Missing,
}

/// Keeps reading at or under `rate` bytes per second, chunk by chunk.
struct Pace {
    rate: u64,
    started: Instant,
    bytes: u64,
}

impl Pace {
    fn new(rate: u64) -> Self {
        Self {
            rate: rate.max(1),
            started: Instant::now(),
            bytes: 0,
        }
    }

    async fn after(&mut self, bytes: u64) {
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(ahead).await;
        }
    }
}

/// The SHA-256 the stored file must have: FileHash, or NarHash for an uncompressed file.
fn expected_file_hash(record: &NarInfoRecord) -> Option<Sha256Hash> {
    let info = &record.info;
    match (info.file_hash, &info.compression) {
        (Some(hash), _) => Some(hash),
        (None, Compression::None) => Some(info.nar_hash),
        (None, _) => None,
    }
}

/// The hash and size of what the stream holds, read at `pace` (unbounded without one).
async fn hash_stream(
    mut body: crate::storage::ByteStream,
    mut pace: Option<&mut Pace>,
) -> std::io::Result<(Sha256Hash, u64)> {
    let (mut hasher, mut size) = (Sha256::new(), 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        if let Some(pace) = pace.as_deref_mut() {
            pace.after(chunk.len() as u64).await;
        }
    }
    Ok((Sha256Hash::from_sha2(hasher), size))
}
