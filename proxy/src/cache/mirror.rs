//! A replica's own copy of the download another replica (the lease holder) is doing: one stream
//! from the holder per NAR, however many local clients want it, written to a temp file that
//! they follow like a fill.
//!
//! If the holder dies, the copy resumes at the byte where it stopped, from whoever has the
//! bytes next: storage, the replica that took the download over, or the upstream itself when
//! this replica takes it over (then the bytes already copied are compared with the upstream's,
//! and the NAR is verified and stored as by any fill). Resuming splices two downloads, so it is
//! done only when the file's bytes are fixed by its name. A finished copy is hashed once against
//! FileHash (or fully verified) before local clients get their last byte.

use std::{io, os::unix::fs::FileExt, sync::Arc, time::Instant};

use bytes::Bytes;
use futures::StreamExt;
use nixcache_protocol::{Compression, Sha256Hash};
use sha2::{Digest, Sha256};

use super::{
    download::{self, write_stream},
    fill::Fill,
    replica::PeerError,
    verify, Cache, CacheError,
};
use crate::{
    db::{Lease, LeaseClaim, LeaseKey, NarInfoRecord, Timestamp},
    lease::HeldLease,
    storage::{BlobKey, ByteRange, ByteStream},
};

/// Pause before asking again when no source can be streamed right now.
const RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// Copies `holder`'s download into `fill`. Should the holder go, this replica may take the
/// download over: `lease` then holds the fetch lease it took.
pub(super) async fn copy(
    cache: &Cache,
    fill: &Arc<Fill>,
    record: &NarInfoRecord,
    holder: Lease,
    lease: &mut Option<HeldLease>,
) -> Result<(), CacheError> {
    let mut copier = Copier {
        cache,
        fill,
        record,
        lease,
    };
    copier.copy(holder).await
}

enum Next {
    Stream(ByteStream),
    /// The holder is gone: this replica downloads from the upstream now.
    TakeOver,
}

struct Copier<'a> {
    cache: &'a Cache,
    fill: &'a Arc<Fill>,
    record: &'a NarInfoRecord,
    /// Held once this replica took the download over.
    lease: &'a mut Option<HeldLease>,
}

impl Copier<'_> {
    async fn copy(&mut self, holder: Lease) -> Result<(), CacheError> {
        let (cache, record) = (self.cache, self.record);
        let (replica, file) = (&cache.replica, &record.nar_file);
        let Some(size) = self.file_size(&holder).await? else {
            return self.download_instead().await;
        };
        // The fill was admitted for at most this many temp bytes.
        if size > download::max_file_size(&self.record.info) {
            return Err(CacheError::peer(
                format!(
                    "replica {} announces {size} bytes, far more than NarSize {}",
                    holder.holder, self.record.info.nar_size
                ),
                None,
            ));
        }
        let mut next = match replica.peer_get(&holder, file, whole(size)?).await {
            Ok(Some(stream)) => Next::Stream(stream),
            // Waiting cannot make the holder take our token: the upstream is asked at once.
            Err(err @ PeerError::Refused { .. }) => {
                replica.log_refusal(&self.fill.key, &err);
                Next::TakeOver
            }
            _ => self.next_source(0, size).await?,
        };
        // Only now is a body promised to local clients: a source has answered.
        self.fill.source_answered(Some(size));
        let mut offset = 0;
        loop {
            let stream = match next {
                Next::Stream(stream) => stream,
                Next::TakeOver => return self.take_over(offset, size).await,
            };
            let copied = write_stream(self.fill, stream, offset, size, |e: io::Error| {
                CacheError::peer(
                    format!("copying from replica {}", holder.holder),
                    Some(Box::new(e)),
                )
            })
            .await;
            offset = self.fill.written_so_far();
            match copied {
                Ok(end) if end == size => break,
                Err(err @ CacheError::Verification { .. }) => return Err(err),
                _ if offset > 0 && !bytes_fixed_by_name(self.record) => {
                    return Err(CacheError::peer("lost the replica streaming this NAR", None))
                }
                lost => tracing::warn!(nar = %self.fill.key, at = offset, outcome = ?lost.err(),
                    "lost the replica streaming this NAR; resuming from the next source"),
            }
            next = self.next_source(offset, size).await?;
        }
        self.check_copy(size).await?;
        self.fill.verified();
        Ok(())
    }

    /// The file's size: the narinfo's, else what the holder says. `None` when the holder
    /// refused our token: then this replica downloads the file itself.
    async fn file_size(&self, holder: &Lease) -> Result<Option<u64>, CacheError> {
        if let Some(size) = self.record.info.file_size {
            return Ok(Some(size));
        }
        let replica = &self.cache.replica;
        match replica.peer_size(holder, &self.record.nar_file).await {
            Ok(Some(size)) => Ok(Some(size)),
            Err(err @ PeerError::Refused { .. }) => {
                replica.log_refusal(&self.fill.key, &err);
                Ok(None)
            }
            Ok(None) => Err(CacheError::peer(
                format!("replica {} does not say the file's size", holder.holder),
                None,
            )),
            Err(err @ PeerError::Failed { .. }) => Err(CacheError::peer(
                format!("asking replica {} for the file's size", holder.holder),
                Some(Box::new(err)),
            )),
        }
    }

    /// Where to continue from `offset`: storage once the NAR is stored, the (new) lease holder
    /// while one is alive, or this replica once the lease expired. A holder that released its
    /// lease without storing the NAR failed: so does the copy.
    async fn next_source(&mut self, offset: u64, size: u64) -> Result<Next, CacheError> {
        let (cache, file) = (self.cache, &self.record.nar_file);
        let range = ByteRange {
            start: offset,
            end: size - 1,
        };
        let lease_key = LeaseKey::nar(file);
        let deadline = Instant::now() + cache.replica.wait_limit();
        loop {
            let holder = match cache.db.get_lease(&lease_key).await? {
                None => return self.stored_range(range, size).await.map(Next::Stream),
                Some(lease) if lease.expires_at < Timestamp::now() => {
                    match cache.replica.claim(&*cache.db, &lease_key).await? {
                        LeaseClaim::Acquired => {
                            *self.lease = Some(cache.replica.hold(Arc::clone(&cache.db), lease_key));
                            return Ok(Next::TakeOver);
                        }
                        LeaseClaim::Held(lease) => lease,
                    }
                }
                Some(lease) => lease,
            };
            // No address: other work on the object (GC, the scrub, an upload), nothing to
            // stream; it goes in moments, or the copy gives up at the deadline.
            if holder.address.is_empty() {
                if Instant::now() > deadline {
                    return Err(CacheError::Busy {
                        retry_after: super::OTHER_WORK_RETRY_AFTER,
                    });
                }
                tokio::time::sleep(RETRY).await;
                continue;
            }
            match cache.replica.peer_get(&holder, file, range).await {
                Ok(Some(stream)) => return Ok(Next::Stream(stream)),
                Err(err @ PeerError::Refused { .. }) => {
                    cache.replica.log_refusal(&self.fill.key, &err);
                    return Ok(Next::TakeOver);
                }
                Ok(None) | Err(PeerError::Failed { .. }) => {}
            }
            if Instant::now() > deadline {
                tracing::warn!(nar = %self.fill.key, holder = %holder.holder, address = %holder.address,
                    "the replica holding the download stays unreachable (check its --advertise-url); \
                     downloading the NAR here as well");
                return Ok(Next::TakeOver);
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    async fn stored_range(&self, range: ByteRange, size: u64) -> Result<ByteStream, CacheError> {
        if self.cache.db.get_nar(&self.record.nar_file).await?.is_none() {
            return Err(CacheError::FillFailed(
                "the replica downloading it gave up without storing it",
            ));
        }
        let read = self
            .cache
            .storage
            .get(&BlobKey::for_nar(&self.record.nar_file), Some(range))
            .await?;
        if read.size != size {
            return Err(CacheError::internal(
                format!("{} is stored with another size", self.fill.key),
                None,
            ));
        }
        Ok(read.body)
    }

    /// Downloads the rest from the upstream as the new holder; the bytes already copied must
    /// equal the upstream's. The whole file is then verified and stored like any fill.
    async fn take_over(&mut self, offset: u64, size: u64) -> Result<(), CacheError> {
        tracing::warn!(nar = %self.fill.key, at = offset, "taking over the download from the upstream");
        let (cache, fill, record) = (self.cache, self.fill, self.record);
        let verifier = verify::spawn(Arc::clone(&fill.file), fill.progress(), &record.info)?;
        let (download, announced) = download::open_upstream(cache, record).await?;
        if announced.is_some_and(|n| n != size) {
            return Err(CacheError::unverified(format!(
                "upstream sends {announced:?} bytes, expected {size}"
            )));
        }
        let mut body = download.body;
        let mut compared = 0;
        let mut rest = Bytes::new();
        while compared < offset {
            let chunk = body
                .next()
                .await
                .ok_or_else(|| CacheError::unverified("upstream body too short"))?;
            let chunk = chunk.map_err(CacheError::Upstream)?;
            let take = chunk.len().min((offset - compared) as usize);
            if !same_as_file(&fill.file, compared, chunk.slice(..take)).await? {
                return Err(CacheError::unverified(format!(
                    "the bytes relayed before {offset} differ from the upstream's"
                )));
            }
            compared += take as u64;
            rest = chunk.slice(take..);
        }
        let body = futures::stream::iter((!rest.is_empty()).then_some(Ok(rest))).chain(body);
        let total = write_stream(fill, body, offset, size, CacheError::Upstream).await?;
        download::finish(cache, fill, record, Some(size), total, verifier).await
    }

    /// The whole file from the upstream, as this replica's own fill would fetch it (its size
    /// comes with the answer), verified and stored; for a holder that refused our token before
    /// saying the file's size.
    async fn download_instead(&self) -> Result<(), CacheError> {
        tracing::warn!(nar = %self.fill.key, "fetching the NAR from the upstream instead");
        download::download_verify_commit(self.cache, self.fill, self.record).await?;
        Ok(())
    }

    /// A complete copy is checked once: its FileHash, or (without one) a full verification.
    async fn check_copy(&self, size: u64) -> Result<(), CacheError> {
        let info = &self.record.info;
        if let Some(expected) = info.file_hash {
            let file = Arc::clone(&self.fill.file);
            let got = tokio::task::spawn_blocking(move || hash_file(&file, size))
                .await
                .map_err(|e| CacheError::task_failed("hashing the copy", e))?
                .map_err(|e| CacheError::internal("reading the copy", Some(Box::new(e))))?;
            if got != expected {
                return Err(CacheError::unverified(format!(
                    "copy of {} has FileHash {got}, expected {expected}",
                    self.fill.key
                )));
            }
            return Ok(());
        }
        let verifier = verify::spawn(Arc::clone(&self.fill.file), self.fill.progress(), info)?;
        self.fill.downloaded(size);
        let digests = verify::digests(verifier, &self.fill.key).await?;
        download::check_digests(self.record, &digests)
    }
}

/// Two downloads can be spliced only when the file's bytes are fixed by its name.
fn bytes_fixed_by_name(record: &NarInfoRecord) -> bool {
    record.info.file_hash.is_some() || record.info.compression == Compression::None
}

fn whole(size: u64) -> Result<ByteRange, CacheError> {
    ByteRange::whole(size).ok_or_else(|| CacheError::unverified("an empty NAR file"))
}

async fn same_as_file(file: &Arc<std::fs::File>, at: u64, bytes: Bytes) -> Result<bool, CacheError> {
    let file = Arc::clone(file);
    tokio::task::spawn_blocking(move || {
        let mut ours = vec![0; bytes.len()];
        file.read_exact_at(&mut ours, at).map(|()| ours == bytes)
    })
    .await
    .map_err(|e| CacheError::task_failed("reading the copy", e))?
    .map_err(|e| CacheError::internal("reading the copy", Some(Box::new(e))))
}

fn hash_file(file: &std::fs::File, size: u64) -> io::Result<Sha256Hash> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    let mut at = 0;
    while at < size {
        let n = buf.len().min((size - at) as usize);
        file.read_exact_at(&mut buf[..n], at)?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(Sha256Hash::from_sha2(hasher))
}
