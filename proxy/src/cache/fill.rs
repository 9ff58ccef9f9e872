//! One upstream download of a NAR, shared by every client that wants it meanwhile. The bytes go
//! to a temp file; clients follow the file as it grows (late joiners start from what is already
//! there); the verifier follows it too. Only when every hash matches is the file committed to
//! storage; until then the last byte is held back, so no client ever gets a complete body of
//! an object that failed verification.

use std::{fs::File, io, os::unix::fs::FileExt, path::PathBuf, sync::Arc};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;

use super::{replica::HeldLease, verify, Cache, CacheError};
use crate::{
    db::{NarInfoRecord, NarRecord},
    storage::{bufpool, BlobKey, ByteRange, ByteStream},
};

/// Largest write batch.
const CHUNK: usize = 1 << 20;

#[derive(Clone, Debug)]
pub enum Phase {
    Downloading,
    /// Every byte is in the temp file; verification is finishing.
    Downloaded,
    /// Every hash matched: the last bytes may go out while the file is being stored.
    Verified,
    /// Verified and stored.
    Committed,
    /// Why, as the first waiter would have been told (so a timeout stays a 504 for everyone).
    Failed(Arc<CacheError>),
}

#[derive(Clone, Debug)]
pub struct Progress {
    pub written: u64,
    /// The file's size, once known (narinfo FileSize or the upstream's Content-Length).
    pub size: Option<u64>,
    pub phase: Phase,
}

pub struct Fill {
    pub key: BlobKey,
    file: Arc<File>,
    tmp_path: PathBuf,
    progress: watch::Sender<Progress>,
}

impl Fill {
    /// Creates the temp file. The size stays unknown until the upstream answered, so no client
    /// is promised a body before the upstream has agreed to send one.
    pub fn create(key: BlobKey, tmp_path: PathBuf) -> io::Result<Arc<Self>> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp_path)?;
        let (progress, _) = watch::channel(Progress {
            written: 0,
            size: None,
            phase: Phase::Downloading,
        });
        Ok(Arc::new(Self {
            key,
            file: Arc::new(file),
            tmp_path,
            progress,
        }))
    }

    /// Waits until the size is known; fails if the download failed first.
    pub async fn size(&self) -> Result<u64, CacheError> {
        let mut rx = self.progress.subscribe();
        loop {
            let (size, phase) = {
                let p = rx.borrow_and_update();
                (p.size, p.phase.clone())
            };
            if let Phase::Failed(err) = phase {
                return Err(CacheError::Shared(err));
            }
            if let Some(size) = size {
                return Ok(size);
            }
            rx.changed()
                .await
                .map_err(|_| CacheError::FillFailed("download abandoned".into()))?;
        }
    }

    /// Streams `range` of the file as it arrives.
    pub fn follow(self: &Arc<Self>, range: ByteRange) -> ByteStream {
        let state = Follower {
            fill: Arc::clone(self),
            rx: self.progress.subscribe(),
            pos: range.start,
            end: range.end,
        };
        Box::pin(futures::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            match state.next_chunk().await {
                Ok(Some(bytes)) => Some((Ok(bytes), Some(state))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        }))
    }
}

struct Follower {
    fill: Arc<Fill>,
    rx: watch::Receiver<Progress>,
    pos: u64,
    end: u64,
}

impl Follower {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if self.pos > self.end {
            return Ok(None);
        }
        loop {
            let (written, phase) = {
                let p = self.rx.borrow_and_update();
                (p.written, p.phase.clone())
            };
            // Bytes [pos, readable) may go out now. Until the object is verified, the last byte
            // of this response is held back, so no client has a complete body of a bad object.
            let readable = match &phase {
                Phase::Failed(reason) => {
                    return Err(io::Error::other(format!("upstream download failed: {reason}")))
                }
                Phase::Verified | Phase::Committed => written.min(self.end + 1),
                _ => written.min(self.end),
            };
            if readable > self.pos {
                let len = (readable - self.pos).min(bufpool::CHUNK as u64) as usize;
                let (file, pos) = (Arc::clone(&self.fill.file), self.pos);
                let bytes = tokio::task::spawn_blocking(move || bufpool::read_at(&file, pos, len))
                    .await
                    .map_err(io::Error::other)??;
                self.pos += bytes.len() as u64;
                return Ok(Some(bytes));
            }
            if matches!(phase, Phase::Verified | Phase::Committed) && written <= self.end {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "object shorter than announced",
                ));
            }
            self.rx
                .changed()
                .await
                .map_err(|_| io::Error::other("download abandoned"))?;
        }
    }
}

/// Runs the download to its end and publishes the outcome; spawned, so no client can cancel it.
/// The fetch lease, when held, is released after the outcome is recorded and before the fill
/// is forgotten, so no other request of this replica can take the lease in between.
pub async fn run(cache: Cache, fill: Arc<Fill>, record: Arc<NarInfoRecord>, lease: Option<HeldLease>) {
    // A panic must still end the fill, or its joiners would wait forever.
    let result = std::panic::AssertUnwindSafe(download_verify_commit(&cache, &fill, &record))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(CacheError::Internal("the fill task panicked".into())));
    match result {
        Ok(size) => {
            tracing::info!(nar = %fill.key, size, store_path = %record.info.store_path, "NAR verified and stored");
            // Joiners may finish at once; new requests find the stored object from now on.
            fill.progress.send_modify(|p| p.phase = Phase::Committed);
            if let Some(lease) = lease {
                lease.release().await;
            }
            cache.forget_fill(&fill.key);
        }
        Err(err) => {
            if let Some(lease) = lease {
                lease.release().await;
            }
            cache.forget_fill(&fill.key);
            tracing::error!(nar = %fill.key, store_path = %record.info.store_path, error = %err, "NAR fill failed");
            fill.progress
                .send_modify(|p| p.phase = Phase::Failed(Arc::new(err)));
            let _ = tokio::fs::remove_file(&fill.tmp_path).await;
        }
    }
}

async fn download_verify_commit(
    cache: &Cache,
    fill: &Arc<Fill>,
    record: &NarInfoRecord,
) -> Result<u64, CacheError> {
    let info = &record.info;
    let response = cache
        .upstreams
        .get_nar(&info.url)
        .await
        .map_err(CacheError::Upstream)?;
    let announced = response.content_length();
    if let (Some(expected), Some(got)) = (info.file_size, announced) {
        if expected != got {
            return Err(CacheError::Verification(format!(
                "upstream sends {got} bytes, narinfo says FileSize {expected}"
            )));
        }
    }
    fill.progress
        .send_modify(|p| p.size = info.file_size.or(announced));
    let verifier = verify::spawn(Arc::clone(&fill.file), fill.progress.subscribe(), info)?;
    // No more than announced, and never much more than the NAR itself (xz adds < 1 %).
    let limit = info
        .file_size
        .or(announced)
        .unwrap_or(info.nar_size + info.nar_size / 100 + (1 << 20));
    let total = write_body(fill, response, limit).await?;
    if let Some(expected) = info.file_size.or(announced) {
        if total != expected {
            return Err(CacheError::Verification(format!(
                "upstream sent {total} of {expected} bytes"
            )));
        }
    }
    let file = Arc::clone(&fill.file);
    tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .map_err(CacheError::internal)?
        .map_err(io_err)?;
    fill.progress.send_modify(|p| {
        p.size = Some(total);
        p.phase = Phase::Downloaded;
    });
    let digests = verifier
        .await
        .map_err(|_| CacheError::Internal("the verifier thread ended without a result".into()))?
        .map_err(|e| CacheError::Verification(format!("cannot verify {}: {e}", fill.key)))?;
    if let Err(err) = check_digests(record, &digests) {
        // The file is exactly the one named, yet its NAR is not the narinfo's: retrying cannot
        // help, so the narinfo is forgotten (a byte damaged in transit keeps it, for a retry).
        if info.file_hash == Some(digests.file_hash) {
            cache.forget_lying_narinfo(record).await;
        }
        return Err(err);
    }
    fill.progress.send_modify(|p| p.phase = Phase::Verified);
    cache
        .storage
        .put_file(&fill.key, &fill.tmp_path)
        .await
        .map_err(CacheError::Storage)?;
    let nar = NarRecord {
        nar_file: record.nar_file.clone(),
        file_size: total,
        nar_hash: digests.nar_hash,
    };
    cache.db.put_nar(&nar).await.map_err(CacheError::Db)?;
    Ok(total)
}

fn io_err(e: io::Error) -> CacheError {
    CacheError::Storage(crate::storage::StorageError::io("writing the temp file", e))
}

/// Appends the upstream body to the temp file in batches, publishing progress after each.
async fn write_body(fill: &Arc<Fill>, response: reqwest::Response, limit: u64) -> Result<u64, CacheError> {
    let url = response.url().to_string();
    let mut body = response.bytes_stream();
    let mut offset = 0u64;
    while let Some(first) = body.next().await {
        let mut batch = vec![first.map_err(|e| upstream_body_err(&url, e))?];
        let mut batch_len = batch[0].len();
        // Take whatever else is already here, without waiting, up to CHUNK.
        while batch_len < CHUNK {
            match body.next().now_or_never() {
                Some(Some(chunk)) => {
                    let chunk = chunk.map_err(|e| upstream_body_err(&url, e))?;
                    batch_len += chunk.len();
                    batch.push(chunk);
                }
                _ => break,
            }
        }
        if offset + batch_len as u64 > limit {
            return Err(CacheError::Verification(format!(
                "upstream sends more than the expected {limit} bytes"
            )));
        }
        let file = Arc::clone(&fill.file);
        offset = tokio::task::spawn_blocking(move || {
            let mut at = offset;
            for chunk in batch {
                file.write_all_at(&chunk, at)?;
                at += chunk.len() as u64;
            }
            Ok::<_, io::Error>(at)
        })
        .await
        .map_err(CacheError::internal)?
        .map_err(io_err)?;
        fill.progress.send_modify(|p| p.written = offset);
    }
    Ok(offset)
}

fn upstream_body_err(url: &str, error: reqwest::Error) -> CacheError {
    CacheError::Upstream(crate::upstream::UpstreamError::Request {
        url: url.to_owned(),
        error,
    })
}

fn check_digests(record: &NarInfoRecord, got: &verify::Digests) -> Result<(), CacheError> {
    let info = &record.info;
    let mut problems = Vec::new();
    if let Some(expected) = info.file_hash.filter(|h| *h != got.file_hash) {
        problems.push(format!("FileHash expected {expected}, got {}", got.file_hash));
    }
    if let Some(expected) = info.file_size.filter(|s| *s != got.file_size) {
        problems.push(format!("FileSize expected {expected}, got {}", got.file_size));
    }
    if info.nar_hash != got.nar_hash {
        problems.push(format!(
            "NarHash expected {}, got {}",
            info.nar_hash, got.nar_hash
        ));
    }
    if info.nar_size != got.nar_size {
        problems.push(format!(
            "NarSize expected {}, got {}",
            info.nar_size, got.nar_size
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CacheError::Verification(format!(
            "{}: {}",
            info.store_path,
            problems.join("; ")
        )))
    }
}
