//! The upstream download behind a fill: fetch into the temp file, verify while it arrives, and
//! commit (storage, then metadata) only when every hash matches.

use std::{io, os::unix::fs::FileExt, sync::Arc};

use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};

use super::{fill::Fill, verify, Cache, CacheError};
use crate::{
    db::{NarInfoRecord, NarRecord},
    upstream::NarDownload,
};

/// Largest write batch.
const CHUNK: usize = 1 << 20;

/// Downloads the NAR into `fill`, verifies it while it arrives, and stores it.
pub(super) async fn download_verify_commit(
    cache: &Cache,
    fill: &Arc<Fill>,
    record: &NarInfoRecord,
) -> Result<(), CacheError> {
    let info = &record.info;
    let (download, size) = open_upstream(cache, record).await?;
    fill.source_answered(size);
    let verifier = verify::spawn(Arc::clone(&fill.file), fill.progress(), info)?;
    let limit = size.unwrap_or(max_file_size(info));
    let total = write_stream(fill, download.body, 0, limit, CacheError::Upstream).await?;
    finish(cache, fill, record, size, total, verifier).await
}

/// The most a NAR's file may take: its FileSize, else never much more than the NAR itself (xz
/// adds < 1 %). Known before the download starts, so the fill's temp bytes are bounded by it.
pub(super) fn max_file_size(info: &nixcache_protocol::NarInfo) -> u64 {
    info.file_size
        .unwrap_or(info.nar_size.saturating_add(info.nar_size / 100 + (1 << 20)))
}

/// The upstream's answer for the NAR and the file's size, when the narinfo or the answer says.
/// An empty file (a NAR file never is) and one larger than `max_file_size` are refused.
pub(super) async fn open_upstream(
    cache: &Cache,
    record: &NarInfoRecord,
) -> Result<(NarDownload, Option<u64>), CacheError> {
    let info = &record.info;
    let download = cache
        .upstreams
        .get_nar(&info.url)
        .await
        .map_err(CacheError::Upstream)?;
    let announced = download.size;
    if let (Some(expected), Some(got)) = (info.file_size, announced) {
        if expected != got {
            return Err(CacheError::unverified(format!(
                "upstream sends {got} bytes, narinfo says FileSize {expected}"
            )));
        }
    }
    match announced {
        Some(0) => Err(CacheError::unverified("upstream sends an empty NAR file")),
        Some(got) if got > max_file_size(info) => Err(CacheError::unverified(format!(
            "upstream sends {got} bytes, far more than NarSize {}",
            info.nar_size
        ))),
        _ => Ok((download, info.file_size.or(announced))),
    }
}

/// After the last byte is written: check the size, wait for the verifier, then store the file
/// and record it. Clients get their last byte as soon as the hashes match, before the file is
/// synced to disk.
pub(super) async fn finish(
    cache: &Cache,
    fill: &Arc<Fill>,
    record: &NarInfoRecord,
    expected: Option<u64>,
    total: u64,
    verifier: verify::Pending,
) -> Result<(), CacheError> {
    let info = &record.info;
    if total == 0 {
        return Err(CacheError::unverified("upstream sent an empty NAR file"));
    }
    if let Some(expected) = expected {
        if total != expected {
            return Err(CacheError::unverified(format!(
                "upstream sent {total} of {expected} bytes"
            )));
        }
    }
    fill.downloaded(total);
    let digests = verify::digests(verifier, &fill.key).await?;
    if let Err(err) = check_digests(record, &digests) {
        // The file is exactly the one named, yet its NAR is not the narinfo's: retrying cannot
        // help, so the narinfo is forgotten (a byte damaged in transit keeps it, for a retry).
        if info.file_hash == Some(digests.file_hash) {
            cache.forget_lying_narinfo(record).await;
        }
        return Err(err);
    }
    fill.verified();
    // On disk before it is stored under its name (a crash must not leave a short file there);
    // after the clients have their last byte, which never waited for the disk.
    let file = Arc::clone(&fill.file);
    tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .map_err(|e| CacheError::task_failed("writing to the temp file", e))?
        .map_err(io_err)?;
    cache
        .storage
        .put_file(&fill.key, fill.tmp_path())
        .await
        .map_err(CacheError::Storage)?;
    let nar = NarRecord {
        nar_file: record.nar_file.clone(),
        file_size: total,
        nar_hash: digests.nar_hash,
    };
    cache.db.put_nar(&nar).await.map_err(CacheError::Db)?;
    tracing::info!(nar = %fill.key, size = total, store_path = %info.store_path, "NAR verified and stored");
    Ok(())
}

fn io_err(e: io::Error) -> CacheError {
    CacheError::Storage(crate::storage::StorageError::io("writing the temp file", e))
}

/// Appends `body` to the temp file from `start` in batches, publishing progress after each.
/// Returns the end offset; on error, the progress says how far it got.
pub(super) async fn write_stream<S, E>(
    fill: &Arc<Fill>,
    mut body: S,
    start: u64,
    limit: u64,
    body_err: impl Fn(E) -> CacheError,
) -> Result<u64, CacheError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut offset = start;
    while let Some(first) = body.next().await {
        let mut batch = vec![first.map_err(&body_err)?];
        let mut batch_len = batch[0].len();
        // Take whatever else is already here, without waiting, up to CHUNK.
        while batch_len < CHUNK {
            match body.next().now_or_never() {
                Some(Some(chunk)) => {
                    let chunk = chunk.map_err(&body_err)?;
                    batch_len += chunk.len();
                    batch.push(chunk);
                }
                _ => break,
            }
        }
        if offset + batch_len as u64 > limit {
            return Err(CacheError::unverified(format!(
                "the source sends more than the expected {limit} bytes"
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
        .map_err(|e| CacheError::task_failed("writing to the temp file", e))?
        .map_err(io_err)?;
        fill.written(offset);
    }
    Ok(offset)
}

pub(super) fn check_digests(record: &NarInfoRecord, got: &verify::Digests) -> Result<(), CacheError> {
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
        Err(CacheError::unverified(format!(
            "{}: {}",
            info.store_path,
            problems.join("; ")
        )))
    }
}
