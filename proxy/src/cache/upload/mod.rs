//! Writes from clients (`nix copy --to http://…`): Nix uploads each NAR, then its narinfo.
//!
//! A NAR upload is streamed to a temp file and hashed on the way, checked against its name
//! (`<FileHash>.nar.xz`), then decompressed to learn its NarHash and NarSize, recorded as
//! pending (`uploads`) and stored: invisible to clients. The narinfo upload makes it visible,
//! and only when the narinfo agrees with what was measured. Nothing recorded is ever
//! overwritten: a second upload of the same object is a no-op, a different narinfo for a known
//! store path is a conflict.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use nixcache_protocol::{NarFile, NarInfo, Sha256Hash, StorePathHash};
use sha2::{Digest, Sha256};

mod check;

use check::{check_against_stored, check_against_upload, nar_file_of};

use super::{verify, Cache, CacheError};
use crate::{
    db::{LeaseClaim, LeaseKey, NarInfoRecord, NarRecord, UploadRecord},
    scratch::TempPath,
    storage::{BlobKey, StorageError},
};

/// Largest NAR an upload may decompress to (a bound on the work a bad upload can cause).
const MAX_NAR_SIZE: u64 = 1 << 40;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The upload is malformed or does not match what it claims (400).
    #[error("{0}")]
    Invalid(String),
    /// It contradicts what the cache already holds (409).
    #[error("{0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    #[error("the upload is larger than the {limit} bytes allowed (--max-upload-size)")]
    TooLarge { limit: u64 },
    /// A listing or log upload that took longer than allowed (408, which Nix retries).
    #[error("the upload took longer than {after:?}")]
    TimedOut { after: std::time::Duration },
    /// A listing or log larger than a cache keeps, once decoded (413).
    #[error("the {what} is larger than the {limit} bytes kept, once decoded")]
    TooLargeDecoded { what: &'static str, limit: u64 },
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl From<StorageError> for UploadError {
    fn from(e: StorageError) -> Self {
        Self::Cache(e.into())
    }
}

impl From<crate::db::DbError> for UploadError {
    fn from(e: crate::db::DbError) -> Self {
        Self::Cache(e.into())
    }
}

/// What an accepted upload did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// New, now stored.
    Created,
    /// The same object was there already; nothing changed.
    Exists,
}

impl Cache {
    /// `PUT /nar/<file>`: stores the body if it hashes to its name; visible once its narinfo is.
    pub async fn upload_nar<S, E>(&self, file: &NarFile, body: S, limit: u64) -> Result<Stored, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if self.db.get_nar(file).await?.is_some() {
            // Counts as a use: GC must not take a NAR a narinfo upload is about to name.
            self.access.nar(file);
            return Ok(Stored::Exists);
        }
        let key = BlobKey::for_nar(file);
        // Removed however this ends, also when the client hangs up and this future is dropped.
        let tmp = TempPath::new_in(&self.tmp_dir, &key);
        let (file_size, file_hash) = write_body(tmp.path(), body, limit).await?;
        // Checked before anything is decompressed: a small body under a wrong name costs no
        // more than its bytes.
        if file_hash != file.hash {
            return Err(UploadError::Invalid(format!(
                "{} hashes to {}, not to its name",
                file.file_name(),
                file_hash.to_nixbase32()
            )));
        }
        let digests = digest_upload(file, tmp.path()).await?;
        if (digests.file_hash, digests.file_size) != (file_hash, file_size) {
            return Err(CacheError::internal(
                format!("the temp file of {key} changed while it was read"),
                None,
            )
            .into());
        }
        let record = UploadRecord {
            nar_file: file.clone(),
            file_size,
            nar_hash: digests.nar_hash,
            nar_size: digests.nar_size,
        };
        // Under the NAR's lease, as fills and GC write and remove objects: GC cannot delete
        // this object between its row and its store.
        let lease = self.claim_upload_lease(file).await?;
        if self.db.get_nar(file).await?.is_some() {
            lease.release().await;
            return Ok(Stored::Exists);
        }
        let stored = self.store_upload(&record, &key, tmp).await;
        lease.release().await;
        stored?;
        tracing::info!(nar = %key, size = file_size, "NAR uploaded; visible once its narinfo is");
        Ok(Stored::Created)
    }

    async fn store_upload(
        &self,
        record: &UploadRecord,
        key: &BlobKey,
        tmp: TempPath,
    ) -> Result<(), UploadError> {
        // The row before the object: an object no row names would never be found again, while
        // a row whose object never came (this request died) is swept by GC like any abandoned
        // upload. A narinfo makes it visible only once the object is there.
        self.db.put_upload(record).await?;
        self.storage.put_file(key, tmp.path()).await?;
        // Renamed into the store, or uploaded and removed.
        tmp.keep();
        // Again now that the object is whole: a store that took longer than GC's bound for
        // abandoned uploads may have seen the row swept.
        self.db.put_upload(record).await?;
        Ok(())
    }

    /// The NAR's lease, waited for (bounded) while a fill or GC holds it.
    async fn claim_upload_lease(&self, file: &NarFile) -> Result<crate::lease::HeldLease, UploadError> {
        let key = LeaseKey::nar(file);
        let deadline = std::time::Instant::now() + self.replica.wait_limit();
        loop {
            // No address: other replicas wait for this lease instead of streaming from it.
            if let LeaseClaim::Acquired = self.replica.claim_unstreamable(&*self.db, &key).await? {
                return Ok(self.replica.hold_unstreamable(Arc::clone(&self.db), key));
            }
            if std::time::Instant::now() > deadline {
                // Being fetched (or collected) right now: 503, and the client tries again.
                let retry_after = std::time::Duration::from_secs(5);
                return Err(CacheError::Busy { retry_after }.into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// `PUT /<hash>.narinfo`: records the narinfo when its NAR was uploaded (or is stored) and
    /// agrees with it; signs it with the proxy's key like any other.
    pub async fn upload_narinfo(&self, hash: &StorePathHash, text: &str) -> Result<Stored, UploadError> {
        let info =
            NarInfo::parse(text).map_err(|e| UploadError::Invalid(format!("malformed narinfo: {e}")))?;
        if info.store_path.hash() != hash {
            return Err(UploadError::Invalid(format!(
                "the narinfo is for {}, not {hash}",
                info.store_path
            )));
        }
        let file = nar_file_of(&info)?;
        if let Some(existing) = self.db.get_narinfo(hash).await? {
            if existing.info.nar_hash == info.nar_hash {
                return Ok(Stored::Exists);
            }
            return Err(UploadError::Conflict(format!(
                "{} is already cached with NarHash {}",
                info.store_path, existing.info.nar_hash
            )));
        }
        self.make_nar_visible(&info, &file).await?;
        let record = NarInfoRecord {
            proxy_sig: Some(self.sign(&info)),
            info,
            nar_file: file,
        };
        self.db.put_narinfo(&record).await?;
        // A GC that chose the NAR before this narinfo named it may have taken it meanwhile.
        if self.db.get_nar(&record.nar_file).await?.is_none() {
            self.db.delete_narinfo(hash).await?;
            return Err(UploadError::Conflict(format!(
                "nar/{} was evicted while its narinfo was recorded: upload both again",
                record.nar_file.file_name()
            )));
        }
        self.negative.remove(hash);
        self.hot.forget_narinfo(hash);
        tracing::info!(store_path = %record.info.store_path, nar = %record.nar_file.file_name(), "narinfo uploaded");
        Ok(Stored::Created)
    }

    /// Checks the narinfo against its NAR (stored already, or uploaded and pending) and moves
    /// a pending NAR into the stored ones.
    async fn make_nar_visible(&self, info: &NarInfo, file: &NarFile) -> Result<(), UploadError> {
        if let Some(stored) = self.db.get_nar(file).await? {
            return check_against_stored(info, &stored);
        }
        let Some(upload) = self.db.get_upload(file).await? else {
            return Err(UploadError::Invalid(format!(
                "nar/{} has not been uploaded: PUT the NAR before its narinfo",
                file.file_name()
            )));
        };
        check_against_upload(info, &upload)?;
        // The row is recorded before the object is stored: it may be an upload still storing,
        // or one that died before it had.
        if self.storage.stat(&BlobKey::for_nar(file)).await?.is_none() {
            return Err(UploadError::Conflict(format!(
                "nar/{} is not stored yet (its upload has not finished): PUT the NAR, then the narinfo",
                file.file_name()
            )));
        }
        // Claiming the pending row keeps GC's sweep of abandoned uploads from deleting the object.
        if !self.db.delete_upload(file).await? {
            return match self.db.get_nar(file).await? {
                Some(stored) => check_against_stored(info, &stored),
                None => Err(UploadError::Conflict(format!(
                    "the upload of nar/{} expired meanwhile: PUT the NAR again",
                    file.file_name()
                ))),
            };
        }
        let nar = NarRecord {
            nar_file: file.clone(),
            file_size: upload.file_size,
            nar_hash: upload.nar_hash,
        };
        self.db.put_nar(&nar).await?;
        Ok(())
    }

    /// `DELETE /<hash>.narinfo`: forgets the narinfo, and its NAR when no other narinfo names it.
    pub async fn delete_uploaded_narinfo(&self, hash: &StorePathHash) -> Result<(), UploadError> {
        let Some(record) = self.db.get_narinfo(hash).await? else {
            return Err(UploadError::NotFound);
        };
        self.db.delete_narinfo(hash).await?;
        self.hot.forget_narinfo(hash);
        self.remove_nar(&record.nar_file).await
    }

    /// `DELETE /nar/<file>`: removes a NAR that no narinfo names (409 otherwise).
    pub async fn delete_uploaded_nar(&self, file: &NarFile) -> Result<(), UploadError> {
        let names = self.db.count_narinfos_for_nar(file).await?;
        if names > 0 {
            return Err(UploadError::Conflict(format!(
                "{names} narinfos name nar/{}: delete them first",
                file.file_name()
            )));
        }
        let pending = self.db.delete_upload(file).await?;
        let stored = self.db.get_nar(file).await?.is_some();
        if !pending && !stored {
            return Err(UploadError::NotFound);
        }
        self.remove_nar(file).await
    }

    /// The row when no live narinfo names the NAR (checked in the same statement), then the
    /// object, as `gc` does.
    async fn remove_nar(&self, file: &NarFile) -> Result<(), UploadError> {
        let unrecorded = self.db.get_nar(file).await?.is_none();
        if unrecorded || self.db.delete_nar_if_unnamed(file).await? {
            self.hot.forget_nar(file);
            self.storage.delete(&BlobKey::for_nar(file)).await?;
        }
        Ok(())
    }
}

/// Decompresses and hashes the uploaded file on the blocking pool; stops when the request is
/// dropped (the client hung up), so an abandoned upload costs no more work.
async fn digest_upload(file: &NarFile, path: &Path) -> Result<verify::Digests, UploadError> {
    let opened = tokio::fs::File::open(path)
        .await
        .map_err(|e| StorageError::io("reading an upload back", e))?
        .into_std()
        .await;
    let abandoned = AbandonOnDrop(Arc::new(AtomicBool::new(false)));
    let (flag, compression) = (Arc::clone(&abandoned.0), file.compression.clone());
    tokio::task::spawn_blocking(move || verify::digest_read(opened, &compression, MAX_NAR_SIZE, &flag))
        .await
        .map_err(|e| CacheError::task_failed("decompressing the upload", e))?
        .map_err(|e| UploadError::Invalid(format!("{}: {e}", file.file_name())))
}

/// Sets the flag when dropped.
struct AbandonOnDrop(Arc<AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Streams the request body into a new temp file, refusing more than `limit` bytes; returns
/// its size and SHA-256 (the FileHash its name must match).
async fn write_body<S, E>(path: &Path, mut body: S, limit: u64) -> Result<(u64, Sha256Hash), UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    use tokio::io::AsyncWriteExt;
    let io_err = |e| UploadError::from(StorageError::io("writing an upload", e));
    let file = tokio::fs::File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .await
        .map_err(io_err)?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    let mut size = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| UploadError::Invalid(format!("reading the request body: {e}")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(UploadError::TooLarge { limit });
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(io_err)?;
    }
    out.flush().await.map_err(io_err)?;
    out.into_inner().sync_all().await.map_err(io_err)?;
    Ok((size, Sha256Hash::from_sha2(hasher)))
}
