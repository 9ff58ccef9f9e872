//! What a stored NAR's object is worth: there at its recorded size (a stat), or with `verify`
//! read to its end, hashed, decompressed and hashed again, on a blocking thread.

use std::{
    io::{self, Read},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use nixcache_protocol::{Compression, NarInfo};
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::{
    db::NarRecord,
    storage::{BlobKey, BlobStore, StorageError},
};

/// What a stored NAR's check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Intact,
    Missing,
    WrongSize(u64),
    Damaged(String),
}

/// The object is there with the recorded size.
pub(super) async fn stat(storage: &dyn BlobStore, row: &NarRecord) -> Result<Verdict, StorageError> {
    Ok(match storage.stat(&BlobKey::for_nar(&row.nar_file)).await? {
        None => Verdict::Missing,
        Some(size) if size != row.file_size => Verdict::WrongSize(size),
        Some(_) => Verdict::Intact,
    })
}

/// Reads the whole object: its size, FileHash (when the narinfo has one), and the NAR it
/// decompresses to against the recorded NarHash (and the narinfo's NarSize). Returns the
/// verdict and the bytes read.
pub(super) async fn verify(
    storage: &dyn BlobStore,
    row: &NarRecord,
    info: Option<&NarInfo>,
) -> Result<(Verdict, u64), StorageError> {
    let key = BlobKey::for_nar(&row.nar_file);
    let read = match storage.get(&key, None).await {
        Ok(read) => read,
        Err(StorageError::NotFound(_)) => return Ok((Verdict::Missing, 0)),
        Err(err) => return Err(err),
    };
    if read.size != row.file_size {
        return Ok((Verdict::WrongSize(read.size), 0));
    }
    let compression = info.map_or_else(|| row.nar_file.compression.clone(), |i| i.compression.clone());
    if !decodable(&compression) {
        // Never stored by a fill (they refuse it); its size matched, and that is all to check.
        return Ok((Verdict::Intact, 0));
    }
    // Without a narinfo nothing says how large the NAR is.
    let max_nar = info.map_or(u64::MAX, |i| i.nar_size);
    let body = StreamReader::new(read.body);
    // A run cut short (a shutdown) stops the thread too.
    let abandoned = AbandonOnDrop(Arc::new(AtomicBool::new(false)));
    let flag = Arc::clone(&abandoned.0);
    let digested = tokio::task::spawn_blocking(move || {
        let mut source = Tracked {
            inner: SyncIoBridge::new(body),
            failed: false,
        };
        let result = nixcache_formats::nar_digest::digest_read(&mut source, &compression, max_nar, &flag);
        (result, source.failed)
    })
    .await
    .map_err(|e| StorageError::io(format!("verifying {key}"), io::Error::other(e)))?;
    let digests = match digested {
        (Ok(digests), _) => digests,
        // The storage failed to deliver the bytes: no verdict on them.
        (Err(err), true) => return Err(StorageError::io(format!("reading {key}"), err)),
        (Err(err), false) => {
            return Ok((
                Verdict::Damaged(format!("does not decompress: {err}")),
                row.file_size,
            ))
        }
    };
    let read = digests.file_size;
    Ok((judge(row, info, &digests), read))
}

/// Compares what was read with what the row and the narinfo say.
fn judge(row: &NarRecord, info: Option<&NarInfo>, got: &nixcache_formats::nar_digest::Digests) -> Verdict {
    if got.file_size != row.file_size {
        return Verdict::WrongSize(got.file_size);
    }
    if let Some(want) = info.and_then(|i| i.file_hash) {
        if got.file_hash != want {
            return Verdict::Damaged(format!("FileHash is {}, not {want}", got.file_hash));
        }
    }
    if got.nar_hash != row.nar_hash {
        return Verdict::Damaged(format!("NarHash is {}, not {}", got.nar_hash, row.nar_hash));
    }
    match info {
        Some(i) if i.nar_size != got.nar_size => {
            Verdict::Damaged(format!("NarSize is {}, not {}", got.nar_size, i.nar_size))
        }
        _ => Verdict::Intact,
    }
}

/// Sets the flag when dropped: the verifying thread stops at its next chunk.
struct AbandonOnDrop(Arc<AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Whether a read error came from the storage rather than from the bytes' decoding.
struct Tracked<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed = true)
    }
}

/// Whether this compression can be decompressed here (an unknown one only by size).
fn decodable(compression: &Compression) -> bool {
    !matches!(compression, Compression::Other(_))
}
