//! A replica's local hot tier in front of a shared store (S3): NARs read whole from the store
//! are copied to a local directory as they stream to the client, kept when their bytes hash to
//! the FileHash their name carries, and served from there afterwards at disk speed. Bounded
//! by an LRU of its own; a cache only: the store stays the truth, and every write and delete
//! goes to it.
//!
//! What another process deletes (the GC CronJob, another replica's DELETE) is dropped from the
//! tier by [`HotTier::sweep`], which asks the cache's database; the cache asks it too before
//! it reads a NAR, so nothing deleted is served for longer than the cache remembers it. The
//! tier starts empty: a file left by an earlier run is not known to be whole.

mod fill;
mod index;
mod metrics;
#[cfg(test)]
mod tests;

use std::{
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use nixcache_protocol::NarFile;
use tokio_util::task::TaskTracker;

pub use metrics::HotTierMetrics;
use metrics::TierRead;

use super::{local, BlobKey, BlobRead, BlobStore, ByteRange, ByteStream, Listing, StorageError};
use index::{Fingerprint, Index};

/// Copies to the tier at once: a closure's NARs are fetched tens at a time (Nix opens 25
/// connections), and each copy holds only a few chunks and its reserved room.
const MAX_FILLS: usize = 64;

/// Where the tier lives and how large it may grow.
#[derive(Clone, Debug)]
pub struct HotTierConfig {
    pub dir: PathBuf,
    /// Bytes of NAR files kept (fills under way included); a NAR above an eighth of it is not
    /// kept, so one large NAR does not empty the tier.
    pub max_bytes: u64,
    pub metrics: HotTierMetrics,
}

/// A [`BlobStore`] that serves NARs from a local tier when it has them, else from `cold`.
#[derive(Clone)]
pub struct HotTier {
    shared: Arc<Shared>,
}

struct Shared {
    cold: Arc<dyn BlobStore>,
    /// `<dir>/nar`: the files, as `<first two characters>/<key>`.
    files: PathBuf,
    /// `<dir>/tmp`: fills under way.
    tmp: PathBuf,
    index: Mutex<Index>,
    max_object: u64,
    fill_slots: Arc<tokio::sync::Semaphore>,
    /// The fills' writers and the removal of an earlier run's files.
    tasks: TaskTracker,
    metrics: HotTierMetrics,
}

impl HotTier {
    /// Opens the tier in `config.dir`, emptied: an earlier run's files are moved aside at once
    /// and removed in the background.
    pub async fn open(config: &HotTierConfig, cold: Arc<dyn BlobStore>) -> Result<Self, StorageError> {
        let (files, tmp) = (config.dir.join("nar"), config.dir.join("tmp"));
        let dir = config.dir.clone();
        let old = tokio::task::spawn_blocking(move || set_aside(&dir))
            .await
            .map_err(|e| StorageError::io("emptying the hot tier", io::Error::other(e)))?
            .map_err(|e| StorageError::io(format!("emptying the hot tier {}", config.dir.display()), e))?;
        for dir in [&files, &tmp] {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| StorageError::io(format!("creating {}", dir.display()), e))?;
        }
        let tasks = TaskTracker::new();
        tasks.spawn_blocking(move || remove_all(&old));
        Ok(Self {
            shared: Arc::new(Shared {
                cold,
                files,
                tmp,
                index: Mutex::new(Index::new(config.max_bytes)),
                max_object: config.max_bytes / 8,
                fill_slots: Arc::new(tokio::sync::Semaphore::new(MAX_FILLS)),
                tasks,
                metrics: config.metrics.clone(),
            }),
        })
    }

    /// Drops the NARs `recorded` says the cache no longer has (deleted by another process:
    /// the GC CronJob, another replica's DELETE); returns how many went. One question per
    /// NAR held; a NAR put in meanwhile is looked at next time.
    pub async fn sweep<E, F, Fut>(&self, mut recorded: F) -> Result<usize, E>
    where
        F: FnMut(NarFile) -> Fut,
        Fut: std::future::Future<Output = Result<bool, E>>,
    {
        let keys = self.shared.lock().keys();
        let mut dropped = 0;
        for key in keys {
            let Ok(nar) = NarFile::parse(&key) else { continue };
            if !recorded(nar).await? {
                self.shared.forget(&key);
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// Whether `key` is in the tier now.
    pub fn holds(&self, key: &BlobKey) -> bool {
        self.shared.lock().contains(key.as_str())
    }

    /// The tier's bytes (files and fills under way) and its number of files.
    pub fn usage(&self) -> (u64, usize) {
        let index = self.shared.lock();
        (index.bytes(), index.len())
    }

    /// Waits for the fills' writers and the removal of old files to end (at shutdown: the
    /// writers end with their clients' bodies).
    pub async fn close(&self) {
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }

    /// `key`'s file in the tier, when it is there and unchanged since it was put there.
    async fn read_local(
        &self,
        key: &BlobKey,
        range: Option<ByteRange>,
    ) -> Result<Option<BlobRead>, StorageError> {
        let Some(expected) = self.shared.lock().get(key.as_str()) else {
            return Ok(None);
        };
        let path = self.shared.path_of(key.as_str());
        let opened = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(path)?;
            let meta = file.metadata()?;
            Ok::<_, io::Error>((file, Fingerprint::of(&meta)))
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        let file = match opened {
            Ok((file, found)) if found == expected => file,
            Ok(_) => {
                tracing::warn!(nar = %key, "a file in the hot tier changed since it was verified; reading the store");
                self.shared.metrics.read(TierRead::Changed);
                self.shared.forget(key.as_str());
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Evicted just now, or the directory was wiped.
                self.shared.metrics.read(TierRead::Changed);
                self.shared.change(|index| index.remove(key.as_str()));
                return Ok(None);
            }
            Err(e) => {
                // Out of file descriptors, say: the file may be fine, so it stays.
                tracing::warn!(nar = %key, error = %e, "cannot open a file of the hot tier; reading the store");
                return Ok(None);
            }
        };
        self.shared.metrics.read(TierRead::Hit);
        let size = expected.len;
        let Some(range) = range.or(ByteRange::whole(size)) else {
            let body: ByteStream = Box::pin(futures::stream::empty());
            return Ok(Some(BlobRead { size, body }));
        };
        if range.start > range.end || range.end >= size {
            let (start, end, key) = (range.start, range.end, key.to_string());
            return Err(StorageError::BadRange {
                key,
                start,
                end,
                size,
            });
        }
        let body = local::read_in_background(file, range);
        Ok(Some(BlobRead { size, body }))
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `change` on the index and shows the tier's new size in the metrics.
    fn change<T>(&self, change: impl FnOnce(&mut Index) -> T) -> T {
        let mut index = self.lock();
        let out = change(&mut index);
        self.metrics.usage(index.bytes(), index.len());
        out
    }

    fn path_of(&self, key: &str) -> PathBuf {
        // Only NAR keys come here: `<nixbase32>.nar[.ext]`, no slash.
        self.files.join(key.get(..2).unwrap_or("__")).join(key)
    }

    /// Drops `key` from the tier and removes its file (a reader that has it open keeps reading).
    fn forget(&self, key: &str) {
        self.change(|index| index.remove(key));
        self.remove_file(key);
    }

    /// `forget`, for a key that may be a NAR's (only those are in the tier).
    fn forget_nar(&self, key: &BlobKey) {
        if nar_of(key).is_some() {
            self.forget(key.as_str());
        }
    }

    fn remove_file(&self, key: &str) {
        match std::fs::remove_file(self.path_of(key)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(nar = key, error = %e, "cannot remove a file from the hot tier"),
        }
    }
}

/// The NAR a key names, when it is one: only NARs are kept (their name fixes their bytes).
fn nar_of(key: &BlobKey) -> Option<NarFile> {
    NarFile::parse(key.as_str()).ok()
}

#[async_trait]
impl BlobStore for HotTier {
    async fn stat(&self, key: &BlobKey) -> Result<Option<u64>, StorageError> {
        self.shared.cold.stat(key).await
    }

    async fn get(&self, key: &BlobKey, range: Option<ByteRange>) -> Result<BlobRead, StorageError> {
        let Some(nar) = nar_of(key) else {
            return self.shared.cold.get(key, range).await;
        };
        if let Some(read) = self.read_local(key, range).await? {
            return Ok(read);
        }
        let read = self.shared.cold.get(key, range).await?;
        if range.is_some() {
            self.shared.metrics.read(TierRead::Miss);
            return Ok(read);
        }
        Ok(fill::start(&self.shared, key, &nar, read))
    }

    async fn put_stream(&self, key: &BlobKey, body: ByteStream) -> Result<u64, StorageError> {
        self.shared.forget_nar(key);
        self.shared.cold.put_stream(key, body).await
    }

    async fn put_file(&self, key: &BlobKey, staged: &Path) -> Result<(), StorageError> {
        self.shared.forget_nar(key);
        self.shared.cold.put_file(key, staged).await
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool, StorageError> {
        self.shared.forget_nar(key);
        self.shared.cold.delete(key).await
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.shared.cold.ping().await
    }

    /// None for what the tier holds: it is served from here, at disk speed.
    async fn presigned_get(
        &self,
        key: &BlobKey,
        expires: std::time::Duration,
    ) -> Result<Option<String>, StorageError> {
        if self.holds(key) {
            return Ok(None);
        }
        self.shared.cold.presigned_get(key, expires).await
    }

    fn list(&self) -> Listing {
        self.shared.cold.list()
    }
}

/// Moves an earlier run's `nar` and `tmp` out of the way, as `old.<n>`; returns every `old.*`.
fn set_aside(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for (n, name) in ["nar", "tmp"].into_iter().enumerate() {
        match std::fs::rename(dir.join(name), dir.join(format!("old.{stamp}.{n}"))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let mut old = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("old.") {
            old.push(entry.path());
        }
    }
    Ok(old)
}

fn remove_all(dirs: &[PathBuf]) {
    for dir in dirs {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an earlier run's hot tier files");
        }
    }
}
