//! NAR requests. A NAR comes from storage, from this replica's fill, or from the replica that
//! holds its fetch lease (streamed as it arrives there); a miss takes the lease and starts a fill.

use std::{sync::Arc, time::Instant};

use nixcache_protocol::NarFile;

use super::{fill::Fill, relay::Relay, resolve, Cache, CacheError, NarResponse};
use crate::{
    db::{Lease, LeaseClaim, LeaseKey, NarInfoRecord},
    range::RangeSpec,
    storage::{local::tempfile_in, BlobKey, BlobRead, ByteRange, ByteStream, StorageError},
};

/// Pause before asking again when another replica's fetch cannot be streamed right now.
const PEER_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// Where a NAR's bytes are.
pub(super) enum Source {
    Stored(u64),
    Local(Arc<Fill>),
    /// Another replica is fetching it.
    Peer(Lease),
}

impl Cache {
    /// Opens a NAR file (or a range of it), from storage or by joining or starting a fetch.
    pub async fn nar(
        &self,
        file: &NarFile,
        range: Option<RangeSpec>,
        head: bool,
    ) -> Result<NarResponse, CacheError> {
        let key = BlobKey::for_nar(file);
        if let Some(size) = self.stored_size(file).await? {
            if let Some(response) = self.serve_stored(file, &key, size, range, head).await? {
                return Ok(response);
            }
        }
        let Some(record) = self.db.narinfo_for_nar(file).await? else {
            return Err(CacheError::NotFound);
        };
        if let (true, Some(size)) = (head, record.info.file_size) {
            return Ok(NarResponse {
                size,
                range: resolve(range, size)?,
                body: None,
            });
        }
        let record = Arc::new(record);
        let deadline = Instant::now() + self.replica.wait_limit();
        loop {
            let size = match &*self.locate(file, &record).await? {
                Source::Stored(size) => match self.serve_stored(file, &key, *size, range, head).await? {
                    Some(response) => return Ok(response),
                    None => continue,
                },
                Source::Local(fill) => return follow_fill(fill, range, head).await,
                Source::Peer(lease) => match record.info.file_size {
                    Some(size) => Some(size),
                    None => self.replica.peer_size(lease, file).await.ok().flatten(),
                },
            };
            if let Some(size) = size {
                let range = resolve(range, size)?;
                let whole = ByteRange::whole(size);
                let body = match range.or(whole) {
                    Some(bytes) if !head => Some(Relay::new(self.clone(), file, record, bytes).stream()),
                    _ => None,
                };
                return Ok(NarResponse { size, range, body });
            }
            if Instant::now() > deadline {
                return Err(CacheError::Peer("the replica fetching it does not answer".into()));
            }
            tokio::time::sleep(PEER_RETRY).await;
        }
    }

    /// What the internal endpoint serves to other replicas: this replica's fill in progress only
    /// (never a new fetch, so replicas cannot bounce a request between each other).
    pub async fn local_fill(
        &self,
        file: &NarFile,
        range: Option<RangeSpec>,
        head: bool,
    ) -> Result<NarResponse, CacheError> {
        match self.fill_in_progress(&BlobKey::for_nar(file)) {
            Some(fill) => follow_fill(&fill, range, head).await,
            None => Err(CacheError::NotFound),
        }
    }

    /// Opens `range` of the NAR from wherever it is now: storage, a local fill, or the lease
    /// holder. Waits (bounded) while the holder cannot be reached; its lease then expires and
    /// this replica takes the fetch over. `after_loss`: a source was lost mid-stream; if its fetch
    /// ended without storing the NAR, it failed, and so does this.
    pub(super) async fn open_range(
        &self,
        file: &NarFile,
        record: &Arc<NarInfoRecord>,
        range: ByteRange,
        after_loss: bool,
    ) -> Result<ByteStream, CacheError> {
        let key = BlobKey::for_nar(file);
        let deadline = Instant::now() + self.replica.wait_limit();
        let mut warned = false;
        loop {
            if after_loss && self.fetch_gave_up(file, &key).await? {
                return Err(CacheError::FillFailed(
                    "the fetch serving this response failed".into(),
                ));
            }
            match &*self.locate(file, record).await? {
                Source::Stored(size) => {
                    let read = self.storage.get(&key, Some(range)).await?;
                    if read.size == *size {
                        return Ok(read.body);
                    }
                    return Err(CacheError::Internal(format!(
                        "{key} changed size while being read"
                    )));
                }
                Source::Local(fill) => return Ok(fill.follow(range)),
                Source::Peer(lease) => match self.replica.peer_get(lease, file, range).await {
                    Ok(Some(body)) => return Ok(body),
                    Ok(None) => {
                        tracing::debug!(nar = %key, holder = %lease.holder, "peer has no fill for it (yet)")
                    }
                    Err(err) if !warned => {
                        warned = true;
                        tracing::warn!(nar = %key, error = %err, "cannot stream from the replica fetching it; \
                            waiting for it to come back or for its lease to expire");
                    }
                    Err(err) => {
                        tracing::debug!(nar = %key, error = %err, "replica fetching it still unreachable")
                    }
                },
            }
            if Instant::now() > deadline {
                tracing::warn!(nar = %key, "the replica holding the fetch lease stays unreachable (check its \
                    --advertise-url); fetching the NAR here as well");
                return Ok(self.start_fill(&key, Arc::clone(record), None)?.follow(range));
            }
            tokio::time::sleep(PEER_RETRY).await;
        }
    }

    /// True when nobody fetches the NAR any more and it was not stored: the fetch failed.
    async fn fetch_gave_up(&self, file: &NarFile, key: &BlobKey) -> Result<bool, CacheError> {
        if self.fill_in_progress(key).is_some() {
            return Ok(false);
        }
        // The holder stores the NAR before releasing the lease: lease gone and nothing stored
        // means it gave up.
        if self.db.get_lease(&LeaseKey::nar(file)).await?.is_some() {
            return Ok(false);
        }
        Ok(self.db.get_nar(file).await?.is_none())
    }

    /// One decision per NAR at a time on this replica, so two requests never start two fills.
    pub(super) async fn locate(
        &self,
        file: &NarFile,
        record: &Arc<NarInfoRecord>,
    ) -> Result<Arc<Source>, CacheError> {
        let (this, owned_file, record) = (self.clone(), file.clone(), Arc::clone(record));
        self.nar_locates
            .run(BlobKey::for_nar(file), async move {
                this.locate_now(&owned_file, record).await
            })
            .await
            .map_err(CacheError::Shared)
    }

    async fn locate_now(&self, file: &NarFile, record: Arc<NarInfoRecord>) -> Result<Source, CacheError> {
        let key = BlobKey::for_nar(file);
        if let Some(fill) = self.fill_in_progress(&key) {
            return Ok(Source::Local(fill));
        }
        if let Some(stored) = self.db.get_nar(file).await? {
            return Ok(Source::Stored(stored.file_size));
        }
        let lease_key = LeaseKey::nar(file);
        match self.replica.claim(&*self.db, &lease_key).await? {
            LeaseClaim::Held(lease) => Ok(Source::Peer(lease)),
            LeaseClaim::Acquired => {
                let lease = self.replica.hold(Arc::clone(&self.db), lease_key);
                // A holder stores the NAR before it releases the lease: look again.
                if let Some(stored) = self.db.get_nar(file).await? {
                    lease.release().await;
                    return Ok(Source::Stored(stored.file_size));
                }
                Ok(Source::Local(self.start_fill(&key, record, Some(lease))?))
            }
        }
    }

    pub(super) fn fill_in_progress(&self, key: &BlobKey) -> Option<Arc<Fill>> {
        self.fills
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key)
            .cloned()
    }

    /// Registers and spawns a fill; `lease` (when held) is released when it ends.
    fn start_fill(
        &self,
        key: &BlobKey,
        record: Arc<NarInfoRecord>,
        lease: Option<super::replica::HeldLease>,
    ) -> Result<Arc<Fill>, CacheError> {
        let tmp = tempfile_in(&self.tmp_dir, key);
        let fill = Fill::create(key.clone(), tmp).map_err(|e| StorageError::io("creating a temp file", e))?;
        self.fills
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key.clone(), Arc::clone(&fill));
        tracing::info!(nar = %key, store_path = %record.info.store_path, upstream = %record.info.url, "fetching NAR");
        tokio::spawn(super::fill::run(self.clone(), Arc::clone(&fill), record, lease));
        Ok(fill)
    }

    pub(super) fn forget_fill(&self, key: &BlobKey) {
        self.fills
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(key);
    }

    async fn stored_size(&self, file: &NarFile) -> Result<Option<u64>, CacheError> {
        if let Some(size) = self.hot.nar_size(file) {
            return Ok(Some(size));
        }
        let stored = self.db.get_nar(file).await?;
        if let Some(nar) = &stored {
            self.hot.put_nar_size(file.clone(), nar.file_size);
        }
        Ok(stored.map(|nar| nar.file_size))
    }

    /// `None` when the stored object is missing or damaged: it is dropped and fetched again.
    async fn serve_stored(
        &self,
        file: &NarFile,
        key: &BlobKey,
        size: u64,
        range: Option<RangeSpec>,
        head: bool,
    ) -> Result<Option<NarResponse>, CacheError> {
        let range = resolve(range, size)?;
        if head {
            return Ok(Some(NarResponse {
                size,
                range,
                body: None,
            }));
        }
        match self.storage.get(key, range).await {
            Ok(read) if read.size == size => Ok(Some(NarResponse {
                size,
                range,
                body: Some(read.body),
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

async fn follow_fill(
    fill: &Arc<Fill>,
    range: Option<RangeSpec>,
    head: bool,
) -> Result<NarResponse, CacheError> {
    let size = fill.size().await?;
    let range = resolve(range, size)?;
    let body = match range.or(ByteRange::whole(size)) {
        Some(bytes) if !head => Some(fill.follow(bytes)),
        _ => None,
    };
    Ok(NarResponse { size, range, body })
}
