//! NAR requests. A NAR comes from storage or from a fill on this replica: its own upstream
//! download when it took the fetch lease, else a copy of the lease holder's download.

use std::sync::Arc;

use nixcache_formats::range::RangeSpec;
use nixcache_protocol::NarFile;

use super::{
    answer::{follow_fill, resolve},
    download::max_file_size,
    feed::Feed,
    fill::Fill,
    hot::{name_fixes_bytes, StoredNar},
    Cache, CacheError, CacheStatus, Interest, NarResponse, OTHER_WORK_RETRY_AFTER,
};
use crate::{
    db::{LeaseClaim, LeaseKey, NarInfoRecord},
    metrics::{LookupResult, ObjectKind},
    storage::{BlobKey, BlobRead, StorageError},
};

/// Pause before looking again at a NAR whose fill was cancelled as this request came.
const CANCELLED_FILL_POLL: std::time::Duration = std::time::Duration::from_millis(10);
/// When the 410 of an uploaded NAR no longer stored was last logged (ms after [`GONE_CLOCK`]'s
/// start, plus one; 0: never): at most once a minute, as anyone may ask again and again.
static GONE_LOGGED_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// A monotonic clock for that: a wall clock stepped back would silence the line.
static GONE_CLOCK: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
/// Pause between looks (reads) at a NAR lease held by other work than a fill (GC).
const OTHER_WORK_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Where a NAR's bytes are.
pub(super) enum Source {
    Stored(StoredNar),
    /// Being written on this replica (downloaded, or copied from the replica downloading it);
    /// `started`: by this locate, not found under way.
    Local {
        fill: Arc<Fill>,
        started: bool,
    },
    /// Another replica (or other work) holds the NAR's lease, or prefetching stopped, and a
    /// prefetch leaves it be: a client that joined the prefetch's locate asks again.
    Elsewhere,
    /// No spare fill room for a prefetch: a client that joined it asks again, on its own terms.
    NoRoom,
}

/// Who wants a fill started, and on what terms.
pub(super) enum Start {
    /// A client: waits for room (or is refused), copies another replica's download.
    Client,
    /// A prefetch: only on spare room, never waits, never copies.
    Prefetch,
}

impl Cache {
    /// Opens a NAR file (or a range of it), from storage or by joining or starting a fetch.
    pub async fn nar(
        &self,
        file: &NarFile,
        range: Option<RangeSpec>,
        interest: Interest,
    ) -> Result<NarResponse, CacheError> {
        let head = interest == Interest::Probe;
        // Before this NAR is opened (a miss waits for the upstream's answer): the rest of the
        // client's walk starts downloading meanwhile.
        if let Interest::Fetch { client } = interest {
            self.nar_fetched(client, file);
        }
        let response = self.record_lookup(ObjectKind::Nar, self.open_nar(file, range, head).await)?;
        self.access.nar(file);
        Ok(response)
    }

    /// The answer, and whether it was a hit (stored) or a miss (a fill).
    async fn open_nar(
        &self,
        file: &NarFile,
        range: Option<RangeSpec>,
        head: bool,
    ) -> Result<(NarResponse, LookupResult), CacheError> {
        let key = BlobKey::for_nar(file);
        if let Some(stored) = self.stored(file).await? {
            if let Some(response) = self.serve_stored(file, &key, stored, range, head).await? {
                return Ok((response, LookupResult::Hit));
            }
        }
        let Some(record) = self.db.narinfo_for_nar(file).await? else {
            return Err(CacheError::NotFound);
        };
        if record.uploaded() {
            return self.uploaded_not_stored(file, &record, range, head).await;
        }
        let fixed_by_name = name_fixes_bytes(file, record.info.nar_hash);
        if let (true, Some(size)) = (head, record.info.file_size) {
            let response =
                NarResponse::headers_only(size, resolve(range, size)?, CacheStatus::Miss, fixed_by_name);
            return Ok((response, LookupResult::Miss));
        }
        let record = Arc::new(record);
        loop {
            let (source, led) = self.locate(file, &record).await?;
            match &*source {
                Source::Stored(stored) => {
                    if let Some(response) = self.serve_stored(file, &key, *stored, range, head).await? {
                        return Ok((response, LookupResult::Hit));
                    }
                }
                Source::Elsewhere | Source::NoRoom => tokio::time::sleep(CANCELLED_FILL_POLL).await,
                Source::Local { fill, started } => {
                    let Some(client) = fill.attach() else {
                        // Cancelled just now for having no client: start anew once it is gone.
                        tokio::time::sleep(CANCELLED_FILL_POLL).await;
                        continue;
                    };
                    let status = if led && *started {
                        CacheStatus::Miss
                    } else {
                        CacheStatus::Joined
                    };
                    let answer = (status, fixed_by_name);
                    let response = follow_fill(fill, client, range, head, answer).await?;
                    return Ok((response, LookupResult::Miss));
                }
            }
        }
    }

    /// An uploaded NAR that was not stored at the first look: stored since (uploaded again), or
    /// gone, as no upstream has it: evicted (its narinfo is kept a while, so clients that cached
    /// the narinfo hear why) or dropped as damaged.
    async fn uploaded_not_stored(
        &self,
        file: &NarFile,
        record: &NarInfoRecord,
        range: Option<RangeSpec>,
        head: bool,
    ) -> Result<(NarResponse, LookupResult), CacheError> {
        if let Some(stored) = self.stored(file).await? {
            let key = BlobKey::for_nar(file);
            if let Some(response) = self.serve_stored(file, &key, stored, range, head).await? {
                return Ok((response, LookupResult::Hit));
            }
        }
        if gone_log_due() {
            tracing::info!(nar = %file.file_name(), store_path = %record.info.store_path,
                "an uploaded NAR no longer stored was asked for: 410; upload the path again");
        }
        Err(CacheError::Gone)
    }

    /// What the internal endpoint serves to other replicas: this replica's fill in progress only
    /// (never a new fetch, so replicas cannot bounce a request between each other).
    pub async fn local_fill(
        &self,
        file: &NarFile,
        range: Option<RangeSpec>,
        head: bool,
    ) -> Result<NarResponse, CacheError> {
        let fill = self.fills.get(&BlobKey::for_nar(file));
        match fill.as_ref().and_then(|fill| Some((fill, fill.attach()?))) {
            // Neither goes out from the internal endpoint.
            Some((fill, client)) => {
                follow_fill(fill, client, range, head, (CacheStatus::Joined, false)).await
            }
            None => Err(CacheError::NotFound),
        }
    }

    /// One decision per NAR at a time on this replica, so two requests never start two fills;
    /// and whether this request made it (`false`: it shared another's).
    pub(super) async fn locate(
        &self,
        file: &NarFile,
        record: &Arc<NarInfoRecord>,
    ) -> Result<(Arc<Source>, bool), CacheError> {
        self.locate_for(file, record, Start::Client).await
    }

    /// `locate`, for a client or a prefetch.
    pub(super) async fn locate_for(
        &self,
        file: &NarFile,
        record: &Arc<NarInfoRecord>,
        start: Start,
    ) -> Result<(Arc<Source>, bool), CacheError> {
        let (this, owned_file, record) = (self.clone(), file.clone(), Arc::clone(record));
        let (source, led) = self
            .nar_locates
            .run_led(BlobKey::for_nar(file), async move {
                this.locate_now(&owned_file, record, start).await
            })
            .await;
        Ok((source.map_err(CacheError::Shared)?, led))
    }

    async fn locate_now(
        &self,
        file: &NarFile,
        record: Arc<NarInfoRecord>,
        start: Start,
    ) -> Result<Source, CacheError> {
        let key = BlobKey::for_nar(file);
        if let Some(fill) = self.fills.get(&key) {
            self.metrics.coalesced(ObjectKind::Nar);
            return Ok(Source::Local { fill, started: false });
        }
        if let Some(stored) = self.db.get_nar(file).await? {
            return Ok(Source::Stored(StoredNar::of(&stored)));
        }
        let lease_key = LeaseKey::nar(file);
        let (permit, claim) = match start {
            // Before the lease: a replica waiting here must not keep the others waiting too.
            Start::Client => {
                let permit = self.admission.admit(max_file_size(&record.info)).await?;
                (permit, self.claim_fill_lease(&lease_key).await?)
            }
            Start::Prefetch => {
                // Taken here, by the flight's leader only: a prefetch that joins a client's
                // locate must hold no room the client may need.
                if self.prefetch_stopped() {
                    return Ok(Source::Elsewhere);
                }
                let Some(permit) = self.admission.try_admit_spare(max_file_size(&record.info)) else {
                    return Ok(Source::NoRoom);
                };
                match self.replica.claim(&*self.db, &lease_key).await? {
                    LeaseClaim::Held(_) => return Ok(Source::Elsewhere),
                    acquired => (permit, acquired),
                }
            }
        };
        let feed = match claim {
            LeaseClaim::Held(holder) => Feed::Holder(holder),
            LeaseClaim::Acquired => {
                let lease = self.replica.hold(Arc::clone(&self.db), lease_key);
                // A holder stores the NAR before it releases the lease: look again.
                if let Some(stored) = self.db.get_nar(file).await? {
                    lease.release().await;
                    return Ok(Source::Stored(StoredNar::of(&stored)));
                }
                Feed::Upstream(Some(lease))
            }
        };
        let fill = self.start_fill(&key, record, feed, permit).await?;
        Ok(Source::Local { fill, started: true })
    }

    /// Claims a NAR's lease for a fill. A lease without an address is not a fill that can be
    /// streamed but other work on the NAR's object (GC or the scrub removing it, an upload
    /// storing it), which usually takes moments: wait for it to go, then claim. Still held at
    /// the deadline (a large upload, a slow scrub re-hash): `503` with `Retry-After`, and Nix
    /// tries again later. There is nothing to copy from, and downloading anyway would write the
    /// object under another's lease, which is what the lease is there to prevent.
    async fn claim_fill_lease(&self, key: &LeaseKey) -> Result<LeaseClaim, CacheError> {
        let deadline = std::time::Instant::now() + self.replica.wait_limit();
        loop {
            match self.replica.claim(&*self.db, key).await? {
                LeaseClaim::Held(holder) if holder.address.is_empty() => {
                    if std::time::Instant::now() >= deadline {
                        return Err(CacheError::Busy {
                            retry_after: OTHER_WORK_RETRY_AFTER,
                        });
                    }
                    tokio::time::sleep(OTHER_WORK_POLL).await;
                }
                claim => return Ok(claim),
            }
        }
    }

    async fn stored(&self, file: &NarFile) -> Result<Option<StoredNar>, CacheError> {
        if let Some(stored) = self.hot.nar(file) {
            return Ok(Some(stored));
        }
        let stored = self.db.get_nar(file).await?.map(|nar| StoredNar::of(&nar));
        if let Some(stored) = stored {
            self.hot.put_nar(file.clone(), stored);
        }
        Ok(stored)
    }

    /// Whether this cache can serve `file` (stored, or named by a narinfo it knows): its size
    /// (the narinfo's `FileSize`, else its `NarSize`, when not stored yet) and whether its name
    /// fixes its bytes; a look only: no download starts, no lookup is counted.
    pub async fn nar_known(&self, file: &NarFile) -> Result<Option<StoredNar>, CacheError> {
        if let Some(stored) = self.stored(file).await? {
            return Ok(Some(stored));
        }
        // An uploaded one's NAR is gone with its object: nothing to revalidate.
        let record = self.db.narinfo_for_nar(file).await?.filter(|r| !r.uploaded());
        Ok(record.map(|r| StoredNar {
            size: r.info.file_size.unwrap_or(r.info.nar_size),
            fixed_by_name: name_fixes_bytes(file, r.info.nar_hash),
        }))
    }

    /// `--s3-redirect`: a URL of the object for the client, when the storage makes one; when it
    /// cannot (credentials being refreshed, say), the NAR is streamed instead.
    async fn redirect_to(&self, key: &BlobKey) -> Option<String> {
        match self.storage.presigned_get(key, self.redirect?).await {
            Ok(url) => url,
            Err(e) => {
                tracing::warn!(nar = %key, error = %e, "cannot presign a NAR's URL; streaming it instead");
                None
            }
        }
    }

    /// `None` when the stored object is missing or damaged: it is dropped and fetched again.
    async fn serve_stored(
        &self,
        file: &NarFile,
        key: &BlobKey,
        stored: StoredNar,
        range: Option<RangeSpec>,
        head: bool,
    ) -> Result<Option<NarResponse>, CacheError> {
        let (size, fixed_by_name) = (stored.size, stored.fixed_by_name);
        let range = resolve(range, size)?;
        if head {
            return Ok(Some(NarResponse::headers_only(
                size,
                range,
                CacheStatus::Hit,
                fixed_by_name,
            )));
        }
        if let Some(redirect) = self.redirect_to(key).await {
            return Ok(Some(NarResponse {
                redirect: Some(redirect),
                ..NarResponse::headers_only(size, range, CacheStatus::Hit, fixed_by_name)
            }));
        }
        match self.storage.get(key, range).await {
            Ok(read) if read.size == size => Ok(Some(NarResponse {
                body: Some(read.body),
                ..NarResponse::headers_only(size, range, CacheStatus::Hit, fixed_by_name)
            })),
            Ok(BlobRead { size: found, .. }) | Err(StorageError::BadRange { size: found, .. }) => {
                tracing::error!(nar = %key, expected = size, found, "stored NAR has the wrong size; dropping it");
                self.hot.forget_nar(file);
                self.storage.delete(key).await?;
                self.db.delete_nar(file).await?;
                Ok(None)
            }
            Err(StorageError::NotFound(_)) => {
                tracing::error!(nar = %key, "NAR recorded but missing from storage; fetching it again");
                self.hot.forget_nar(file);
                self.db.delete_nar(file).await?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether the next 410 of an uploaded NAR is logged (see [`GONE_LOGGED_MS`]).
fn gone_log_due() -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    let elapsed = GONE_CLOCK.get_or_init(std::time::Instant::now).elapsed();
    let now = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX - 1) + 1;
    let last = GONE_LOGGED_MS.load(Relaxed);
    (last == 0 || now.saturating_sub(last) >= 60_000)
        && GONE_LOGGED_MS
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_ok()
}
