//! Re-hashing stored NARs in the background (`--scrub-rate`): serving compares only sizes, so a
//! file damaged on disk or in the bucket would be served for ever. A file whose bytes no longer
//! hash to what its narinfo says is dropped (row, object, memory), so the next request fetches
//! it again; an uploaded one, which cannot be fetched again, takes its narinfo with it.
//!
//! One pass walks the narinfos in least-recently-used order, reading at most `rate` bytes per
//! second; one replica at a time scrubs (a lease), every `interval`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use nixcache_protocol::{Compression, Sha256Hash};
use sha2::{Digest, Sha256};

use super::{Cache, CacheError};
use crate::{
    db::{now_ms, AccessCursor, LeaseClaim, LeaseKey, NarInfoRecord, NarinfoAccess},
    storage::{BlobKey, StorageError},
};

/// Narinfos read per query.
const PAGE: u32 = 200;
/// How long the scrub lease lasts without renewal (renewed while a pass runs).
const LEASE_TTL: Duration = Duration::from_secs(60);
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
    pub bytes: u64,
    /// Damaged (or missing) files dropped.
    pub dropped: u64,
}

impl Cache {
    /// Starts scrubbing in the background: a first pass soon (pods seldom live a whole
    /// interval), then one every `options.interval`.
    pub fn start_scrub(&self, options: ScrubOptions) {
        tokio::spawn(self.clone().scrub_forever(options));
    }

    async fn scrub_forever(self, options: ScrubOptions) {
        let mut pause = options.interval.min(FIRST_PASS_AFTER);
        loop {
            tokio::time::sleep(pause).await;
            pause = options.interval;
            match self.scrub_pass(options.rate).await {
                Ok(Some(report)) => tracing::info!(?report, "scrub pass done"),
                Ok(None) => tracing::debug!("another replica is scrubbing"),
                Err(err) => tracing::warn!(error = %err, "scrub pass failed; trying again later"),
            }
        }
    }

    /// One pass over every stored NAR a narinfo names; `None` when another replica is scrubbing.
    pub async fn scrub_pass(&self, rate: u64) -> Result<Option<ScrubReport>, CacheError> {
        let (key, holder) = (LeaseKey::scrub(), &self.replica.options.id);
        if let LeaseClaim::Held(_) = self.db.claim_lease(&key, holder, "", LEASE_TTL).await? {
            return Ok(None);
        }
        let lease = super::replica::hold_lease(Arc::clone(&self.db), key, holder.clone(), LEASE_TTL);
        let result = self.scrub_all(rate).await;
        lease.release().await;
        result.map(Some)
    }

    async fn scrub_all(&self, rate: u64) -> Result<ScrubReport, CacheError> {
        let (started, before_ms) = (Instant::now(), now_ms());
        let mut report = ScrubReport::default();
        let mut cursor: Option<AccessCursor> = None;
        loop {
            let page = self
                .db
                .least_recent_narinfos(before_ms, cursor.as_ref(), PAGE)
                .await?;
            let Some(last) = page.last() else {
                return Ok(report);
            };
            cursor = Some(last.cursor());
            for entry in &page {
                self.scrub_one(entry, &mut report).await?;
                // Never faster than `rate` on average over the pass.
                let due = Duration::from_secs_f64(report.bytes as f64 / rate.max(1) as f64);
                if let Some(ahead) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(ahead).await;
                }
            }
        }
    }

    async fn scrub_one(&self, entry: &NarinfoAccess, report: &mut ScrubReport) -> Result<(), CacheError> {
        let (Some(record), Some(stored)) = (
            self.db.get_narinfo(&entry.hash).await?,
            self.db.get_nar(&entry.nar_file).await?,
        ) else {
            return Ok(());
        };
        let Some(expected) = expected_file_hash(&record) else {
            // Without FileHash a compressed file is checked only by decompressing: not here.
            return Ok(());
        };
        let key = BlobKey::for_nar(&entry.nar_file);
        let found = match self.storage.get(&key, None).await {
            Ok(read) => match hash_stream(read.body, &mut report.bytes).await {
                Ok(found) => Some(found),
                Err(err) => {
                    // Storage failing is not damage: the file is looked at in the next pass.
                    tracing::warn!(nar = %key, error = %err, "reading a stored NAR failed; not checked");
                    return Ok(());
                }
            },
            Err(StorageError::NotFound(_)) => None,
            Err(err) => return Err(err.into()),
        };
        report.checked += 1;
        self.metrics.scrubbed(found.as_ref().map_or(0, |(_, size)| *size));
        if found == Some((expected, stored.file_size)) {
            return Ok(());
        }
        tracing::error!(nar = %key, store_path = %record.info.store_path, ?found, %expected, size = stored.file_size,
            "stored NAR is damaged or missing; dropping it (fetched again on the next request)");
        if self.drop_damaged(&record, entry.uploaded).await? {
            report.dropped += 1;
            self.metrics.scrub_dropped();
        }
        Ok(())
    }

    /// Forgets the NAR (and an uploaded narinfo) under the NAR's lease, so a fill writing it
    /// anew right now is left alone. Whether it was dropped.
    async fn drop_damaged(&self, record: &NarInfoRecord, uploaded: bool) -> Result<bool, CacheError> {
        let (file, holder) = (&record.nar_file, &self.replica.options.id);
        let lease = LeaseKey::nar(file);
        // No address: this is not a fill other replicas could stream.
        if let LeaseClaim::Held(_) = self.db.claim_lease(&lease, holder, "", NAR_LEASE_TTL).await? {
            return Ok(false);
        }
        let hash = record.info.store_path.hash();
        let result = async {
            if uploaded {
                self.db.delete_narinfo(hash).await?;
                self.hot.forget_narinfo(hash);
            }
            self.db.delete_nar(file).await?;
            self.hot.forget_nar(file);
            self.storage.delete(&BlobKey::for_nar(file)).await?;
            Ok::<_, CacheError>(true)
        }
        .await;
        if let Err(err) = self.db.release_lease(&lease, holder).await {
            tracing::warn!(lease = %lease, error = %err, "releasing a NAR lease failed; it will expire");
        }
        result
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

/// The hash and size of what the stream holds.
async fn hash_stream(
    mut body: crate::storage::ByteStream,
    total: &mut u64,
) -> std::io::Result<(Sha256Hash, u64)> {
    let (mut hasher, mut size) = (Sha256::new(), 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        *total += chunk.len() as u64;
    }
    Ok((Sha256Hash::from_sha2(hasher), size))
}
