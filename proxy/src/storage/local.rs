//! A local directory: `<root>/<first two characters>/<key>` (and `<root>/<dir>/<first two>/<file>`
//! for logs and build traces), written by temp file, fsync, rename.

use std::{
    io,
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::{fs, io::AsyncWriteExt};

use super::{bufpool, BlobKey, BlobRead, BlobStore, ByteRange, ByteStream, StorageError};
use crate::scratch::TempPath;

pub struct LocalStore {
    root: PathBuf,
    tmp: PathBuf,
}

impl LocalStore {
    /// Uses `root` for objects and `tmp` for partial writes; both must be on one filesystem.
    pub async fn open(root: PathBuf, tmp: PathBuf) -> Result<Self, StorageError> {
        for dir in [&root, &tmp] {
            fs::create_dir_all(dir)
                .await
                .map_err(|e| StorageError::io(format!("creating {}", dir.display()), e))?;
        }
        Ok(Self { root, tmp })
    }

    fn path_of(&self, key: &BlobKey) -> PathBuf {
        // Keys are `<file>` or `<dir>/<file>` (log, realisations, build-trace-v2), validated: no
        // `..`, no other slash.
        let (dir, file) = key.as_str().rsplit_once('/').unwrap_or(("", key.as_str()));
        let shard = file.get(..2).unwrap_or("__");
        self.root.join(dir).join(shard).join(file)
    }

    async fn install(&self, key: &BlobKey, staged: &Path) -> Result<(), StorageError> {
        let dest = self.path_of(key);
        let shard = dest.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&shard)
            .await
            .map_err(|e| StorageError::io(format!("creating {}", shard.display()), e))?;
        fs::rename(staged, &dest)
            .await
            .map_err(|e| StorageError::io(format!("renaming into {key}"), e))?;
        // The rename is durable only once the directory entry is.
        let dir = fs::File::open(&shard)
            .await
            .map_err(|e| StorageError::io("opening shard dir", e))?;
        dir.sync_all()
            .await
            .map_err(|e| StorageError::io("syncing shard dir", e))
    }
}

#[async_trait]
impl BlobStore for LocalStore {
    fn list(&self) -> super::Listing {
        super::walk::list(self.root.clone())
    }

    async fn stat(&self, key: &BlobKey) -> Result<Option<u64>, StorageError> {
        match fs::metadata(self.path_of(key)).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io(format!("stat of {key}"), e)),
        }
    }

    async fn get(&self, key: &BlobKey, range: Option<ByteRange>) -> Result<BlobRead, StorageError> {
        let path = self.path_of(key);
        let opened = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(path)?;
            let size = file.metadata()?.len();
            Ok::<_, io::Error>((file, size))
        })
        .await
        .map_err(|e| StorageError::io(format!("opening {key}"), io::Error::other(e)))?;
        let (file, size) = match opened {
            Ok(opened) => opened,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StorageError::NotFound(key.to_string()))
            }
            Err(e) => return Err(StorageError::io(format!("opening {key}"), e)),
        };
        let range = match range {
            None if size == 0 => {
                return Ok(BlobRead {
                    size,
                    body: Box::pin(futures::stream::empty()),
                })
            }
            None => ByteRange {
                start: 0,
                end: size - 1,
            },
            Some(r) if r.start > r.end || r.end >= size => {
                return Err(StorageError::BadRange {
                    key: key.to_string(),
                    start: r.start,
                    end: r.end,
                    size,
                });
            }
            Some(r) => r,
        };
        Ok(BlobRead {
            size,
            body: read_in_background(file, range),
        })
    }

    async fn put_stream(&self, key: &BlobKey, mut body: ByteStream) -> Result<u64, StorageError> {
        // Removed however this ends, also when the future is dropped (a client that hung up).
        // Named after the key's start: a log's key has a directory and may be 248 bytes long.
        let name: String = key.as_str().replace('/', "_").chars().take(64).collect();
        let staged = TempPath::new_in(&self.tmp, &name);
        let mut file = fs::File::create(staged.path())
            .await
            .map_err(|e| StorageError::io(format!("creating temp for {key}"), e))?;
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StorageError::io(format!("reading the body for {key}"), e))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| StorageError::io(format!("writing {key}"), e))?;
            size += chunk.len() as u64;
        }
        file.sync_all()
            .await
            .map_err(|e| StorageError::io(format!("syncing {key}"), e))?;
        self.install(key, staged.path()).await?;
        staged.keep();
        Ok(size)
    }

    async fn put_file(&self, key: &BlobKey, staged: &Path) -> Result<(), StorageError> {
        self.install(key, staged).await
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool, StorageError> {
        match fs::remove_file(self.path_of(key)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StorageError::io(format!("deleting {key}"), e)),
        }
    }

    async fn ping(&self) -> Result<(), StorageError> {
        fs::metadata(&self.root)
            .await
            .map(|_| ())
            .map_err(|e| StorageError::io("checking the storage dir", e))
    }
}

/// Streams `range` of `file`: a task reads ahead up to `READ_AHEAD` pooled chunks, each read on
/// the blocking pool and released at once, so a client that stops reading holds no thread.
pub(super) fn read_in_background(file: std::fs::File, range: ByteRange) -> ByteStream {
    const READ_AHEAD: usize = 3;
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(READ_AHEAD);
    let file = std::sync::Arc::new(file);
    tokio::spawn(async move {
        let mut pos = range.start;
        while pos <= range.end {
            let len = (range.end + 1 - pos).min(bufpool::CHUNK as u64) as usize;
            let reader = std::sync::Arc::clone(&file);
            let chunk = tokio::task::spawn_blocking(move || bufpool::read_at(&reader, pos, len))
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                return; // the client went away, or the error was passed on
            }
            pos += len as u64;
        }
    });
    Box::pin(tokio_stream_from(rx))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
) -> impl futures::Stream<Item = io::Result<Bytes>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Collects a stream into memory; for tests.
#[cfg(test)]
pub async fn collect(body: ByteStream) -> io::Result<Vec<u8>> {
    use futures::TryStreamExt;
    body.try_fold(Vec::new(), |mut acc, chunk| async move {
        acc.extend_from_slice(&chunk);
        Ok(acc)
    })
    .await
}
