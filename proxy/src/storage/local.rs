//! A local directory: `<root>/<first two characters>/<key>`, written by temp file, fsync, rename.

use std::{
    io::{self, SeekFrom},
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::{
    fs,
    io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt},
};
use tokio_util::io::ReaderStream;

use super::{BlobKey, BlobRead, BlobStore, ByteRange, ByteStream, StorageError};

/// Read size for streaming objects out; large enough that per-chunk overhead is small.
const READ_CHUNK: usize = 512 * 1024;

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
        let shard = key.as_str().get(..2).unwrap_or("__");
        self.root.join(shard).join(key.as_str())
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
    async fn stat(&self, key: &BlobKey) -> Result<Option<u64>, StorageError> {
        match fs::metadata(self.path_of(key)).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io(format!("stat of {key}"), e)),
        }
    }

    async fn get(&self, key: &BlobKey, range: Option<ByteRange>) -> Result<BlobRead, StorageError> {
        let mut file = match fs::File::open(self.path_of(key)).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StorageError::NotFound(key.to_string()))
            }
            Err(e) => return Err(StorageError::io(format!("opening {key}"), e)),
        };
        let size = file
            .metadata()
            .await
            .map_err(|e| StorageError::io(format!("stat of {key}"), e))?
            .len();
        let Some(range) = range else {
            let body = ReaderStream::with_capacity(file, READ_CHUNK);
            return Ok(BlobRead {
                size,
                body: Box::pin(body),
            });
        };
        if range.start > range.end || range.end >= size {
            let (start, end) = (range.start, range.end);
            return Err(StorageError::BadRange {
                key: key.to_string(),
                start,
                end,
                size,
            });
        }
        file.seek(SeekFrom::Start(range.start))
            .await
            .map_err(|e| StorageError::io(format!("seeking {key}"), e))?;
        let body = ReaderStream::with_capacity(file.take(range.len()), READ_CHUNK);
        Ok(BlobRead {
            size,
            body: Box::pin(body),
        })
    }

    async fn put_stream(&self, key: &BlobKey, mut body: ByteStream) -> Result<u64, StorageError> {
        let staged = tempfile_in(&self.tmp, key);
        let result: Result<u64, StorageError> = async {
            let mut file = fs::File::create(&staged)
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
            self.install(key, &staged).await?;
            Ok(size)
        }
        .await;
        if result.is_err() {
            let _ = fs::remove_file(&staged).await;
        }
        result
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

/// A unique temp path for `key` in `dir`.
pub fn tempfile_in(dir: &Path, key: &BlobKey) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!("{key}.{}.{n}.tmp", std::process::id()))
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
