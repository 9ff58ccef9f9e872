//! Copying a NAR into the tier while it streams from the store to its client: the client's
//! chunks go on to a writer thread that hashes and writes them, and the file is kept only
//! when all of it arrived and it hashes to the FileHash its name carries. A client that stops
//! reading ends the copy; a slow disk slows the client (the channel is small). The writer holds
//! no thread between its writes.

use std::{
    io::{self, Write},
    sync::Arc,
};

use bytes::Bytes;
use futures::StreamExt;
use nixcache_protocol::{NarFile, Sha256Hash};
use sha2::Digest;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::{index::Fingerprint, metrics::TierRead, Shared};
use crate::{
    scratch::TempPath,
    storage::{BlobKey, BlobRead, ByteStream},
};

/// Chunks in flight between a client's stream and its writer (the store's chunks, tens of KiB).
const CHANNEL: usize = 8;

/// `read` (a whole NAR from the store) as it is, or copied into the tier as it streams when
/// there is room and a fill slot, and no other fill of it.
pub(super) fn start(shared: &Arc<Shared>, key: &BlobKey, nar: &NarFile, read: BlobRead) -> BlobRead {
    let size = read.size;
    if size == 0 || size > shared.max_object {
        shared.metrics.read(TierRead::Miss);
        return read;
    }
    let Ok(permit) = Arc::clone(&shared.fill_slots).try_acquire_owned() else {
        shared.metrics.read(TierRead::Miss);
        return read;
    };
    let Some(evicted) = shared.change(|index| index.start_fill(key.as_str(), size)) else {
        shared.metrics.read(TierRead::Miss);
        return read;
    };
    shared.metrics.read(TierRead::Copied);
    for old in &evicted {
        shared.remove_file(old);
    }
    let (tx, rx) = mpsc::channel(CHANNEL);
    let writer = Writer {
        shared: Arc::clone(shared),
        key: key.as_str().to_owned(),
        expected: nar.hash,
        size,
        _permit: permit,
    };
    shared.tasks.spawn(writer.run(rx));
    BlobRead {
        size,
        body: tee(read.body, tx),
    }
}

/// The client's stream, each chunk also sent to the writer until it goes away.
fn tee(body: ByteStream, tx: mpsc::Sender<Bytes>) -> ByteStream {
    Box::pin(futures::stream::unfold(
        (body, Some(tx)),
        |(mut body, mut tx)| async move {
            let item = body.next().await?;
            match (&item, &tx) {
                (Ok(chunk), Some(writer)) => {
                    if writer.send(chunk.clone()).await.is_err() {
                        tx = None; // the writer failed: the client reads on
                    }
                }
                // An error: the writer sees its channel close short of the size and drops the file.
                (Err(_), _) => tx = None,
                (Ok(_), None) => {}
            }
            Some((item, (body, tx)))
        },
    ))
}

/// Writes one fill; owns its room in the index until it ends, kept or not.
struct Writer {
    shared: Arc<Shared>,
    key: String,
    expected: Sha256Hash,
    size: u64,
    _permit: OwnedSemaphorePermit,
}

/// The file being written and the hash of what went into it, passed to the blocking pool for
/// each batch of chunks: no thread is held while the client is slow.
struct Written {
    file: std::fs::File,
    hasher: sha2::Sha256,
    len: u64,
}

impl Writer {
    async fn run(self, rx: mpsc::Receiver<Bytes>) {
        // Removed when this ends, unless renamed into the tier.
        let staged = TempPath::new_in(&self.shared.tmp, &self.key);
        let written = self.write(&staged, rx).await.unwrap_or_else(|e| {
            tracing::warn!(nar = %self.key, error = %e, "cannot write a NAR to the hot tier");
            None
        });
        let kept = self
            .shared
            .change(|index| index.end_fill(&self.key, self.size, written));
        if written.is_some() && !kept {
            // Deleted or overwritten while it was renamed into place: the file goes too.
            self.shared.remove_file(&self.key);
        }
    }

    /// The file's fingerprint once it is whole, verified and in place; `None` when the client
    /// stopped early or the bytes are not the ones the name fixes.
    async fn write(
        &self,
        staged: &TempPath,
        mut rx: mpsc::Receiver<Bytes>,
    ) -> io::Result<Option<Fingerprint>> {
        let path = staged.path().to_owned();
        let mut written = blocking(move || {
            if let Some(tmp) = path.parent() {
                std::fs::create_dir_all(tmp)?; // wiped under a running replica
            }
            let file = std::fs::File::create(path)?;
            Ok(Written {
                file,
                hasher: sha2::Sha256::new(),
                len: 0,
            })
        })
        .await?;
        while written.len < self.size {
            let Some(first) = rx.recv().await else {
                return Ok(None);
            };
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            written = blocking(move || {
                for chunk in &batch {
                    written.hasher.update(chunk);
                    written.file.write_all(chunk)?;
                    written.len += chunk.len() as u64;
                }
                Ok(written)
            })
            .await?;
        }
        drop(rx);
        if written.len != self.size || Sha256Hash::from_sha2(written.hasher) != self.expected {
            self.shared.lock().reject(&self.key);
            tracing::warn!(nar = %self.key, written = written.len, size = self.size,
                "a NAR read from the store does not hash to its name (named by its NarHash, or \
                damaged); not keeping it in the hot tier");
            return Ok(None);
        }
        if !self.shared.lock().fill_wanted(&self.key) {
            return Ok(None);
        }
        // No fsync: the tier starts empty after a restart, so an unsynced file is never read.
        let (from, dest) = (staged.path().to_owned(), self.shared.path_of(&self.key));
        let fingerprint = blocking(move || {
            if let Some(shard) = dest.parent() {
                std::fs::create_dir_all(shard)?;
            }
            std::fs::rename(from, &dest)?;
            Ok(Fingerprint::of(&std::fs::metadata(&dest)?))
        })
        .await?;
        Ok(Some(fingerprint))
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}
