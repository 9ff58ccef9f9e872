//! The cache service: answers narinfo and NAR requests from metadata and storage, and fills misses
//! from the upstreams. No HTTP types here; `http` turns results into responses.

mod fill;
mod hot;
mod negative;
mod singleflight;
mod verify;

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use bytes::Bytes;

use nixcache_protocol::{NarFile, NarInfo, SigningKey, StorePathHash};

use crate::{
    db::{DbError, MetadataStore, NarInfoRecord, ProxySignature},
    range::RangeSpec,
    storage::{local::tempfile_in, BlobKey, BlobRead, BlobStore, ByteRange, ByteStream, StorageError},
    upstream::{Lookup, UpstreamError, Upstreams},
};
use fill::Fill;
pub use hot::HotCache;
pub use negative::NegativeCache;
use singleflight::SingleFlight;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("not found")]
    NotFound,
    #[error("upstream failed: {0}")]
    Upstream(UpstreamError),
    #[error("upstream data failed verification: {0}")]
    Verification(String),
    #[error("the upstream download failed: {0}")]
    FillFailed(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("range not satisfiable for an object of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("{0}")]
    Shared(Arc<CacheError>),
    #[error("internal error: {0}")]
    Internal(String),
}

impl CacheError {
    fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }
}

/// A NAR answer: the file's size, the range being sent (if any) and the bytes.
pub struct NarResponse {
    pub size: u64,
    pub range: Option<ByteRange>,
    pub body: Option<ByteStream>,
}

#[derive(Clone)]
pub struct Cache {
    db: Arc<dyn MetadataStore>,
    storage: Arc<dyn BlobStore>,
    upstreams: Arc<Upstreams>,
    signer: Arc<SigningKey>,
    public_key: Arc<str>,
    negative: Arc<NegativeCache>,
    hot: Arc<HotCache>,
    narinfo_flights: Arc<SingleFlight<StorePathHash, NarInfoRecord>>,
    fills: Arc<tokio::sync::Mutex<HashMap<BlobKey, Arc<Fill>>>>,
    tmp_dir: Arc<PathBuf>,
}

enum Joined {
    Fill(Arc<Fill>),
    Stored(u64),
}

impl Cache {
    pub fn new(
        db: Arc<dyn MetadataStore>,
        storage: Arc<dyn BlobStore>,
        upstreams: Arc<Upstreams>,
        signer: SigningKey,
        negative: NegativeCache,
        hot: HotCache,
        tmp_dir: PathBuf,
    ) -> Self {
        let public_key = signer.public_key().to_string().into();
        Self {
            db,
            storage,
            upstreams,
            signer: Arc::new(signer),
            public_key,
            negative: Arc::new(negative),
            hot: Arc::new(hot),
            narinfo_flights: Arc::new(SingleFlight::new()),
            fills: Arc::new(tokio::sync::Mutex::new(HashMap::new())),
            tmp_dir: Arc::new(tmp_dir),
        }
    }

    /// The proxy's public key, `name:base64`.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// The narinfo as this proxy serves it: our NAR URL and our signature added.
    pub async fn narinfo(&self, hash: &StorePathHash) -> Result<Bytes, CacheError> {
        if let Some(text) = self.hot.narinfo(hash) {
            return Ok(text);
        }
        if let Some(record) = self.db.get_narinfo(hash).await? {
            return Ok(self.render(record));
        }
        if self.negative.contains(hash) {
            return Err(CacheError::NotFound);
        }
        let (this, hash) = (self.clone(), *hash);
        let record = self
            .narinfo_flights
            .run(hash, async move { this.fetch_narinfo(hash).await })
            .await
            .map_err(CacheError::Shared)?;
        Ok(self.render((*record).clone()))
    }

    async fn fetch_narinfo(&self, hash: StorePathHash) -> Result<NarInfoRecord, CacheError> {
        // A flight that finished just before this one started may have answered already.
        if let Some(record) = self.db.get_narinfo(&hash).await? {
            return Ok(record);
        }
        if self.negative.contains(&hash) {
            return Err(CacheError::NotFound);
        }
        match self.upstreams.lookup_narinfo(&hash).await {
            Lookup::Found(info) => {
                let info = *info;
                let nar_file = NarFile {
                    hash: info.file_hash.unwrap_or(info.nar_hash),
                    compression: info.compression.clone(),
                };
                // FileHash is not signed: a narinfo must not claim a stored file holding another NAR.
                if let Some(stored) = self.db.get_nar(&nar_file).await? {
                    if stored.nar_hash != info.nar_hash {
                        return Err(CacheError::Verification(format!(
                            "{} names {} as its file, which holds another NAR ({})",
                            info.store_path,
                            nar_file.file_name(),
                            stored.nar_hash
                        )));
                    }
                }
                let proxy_sig = Some(self.sign(&info));
                let record = NarInfoRecord {
                    info,
                    nar_file,
                    proxy_sig,
                };
                self.db.put_narinfo(&record).await?;
                Ok(record)
            }
            Lookup::NotFound => {
                self.negative.insert(hash);
                Err(CacheError::NotFound)
            }
            Lookup::Failed(e) => Err(CacheError::Upstream(e)),
        }
    }

    fn sign(&self, info: &NarInfo) -> ProxySignature {
        ProxySignature {
            public_key: self.public_key.to_string(),
            sig: self.signer.sign(&info.fingerprint()),
        }
    }

    fn render(&self, record: NarInfoRecord) -> Bytes {
        let mut info = record.info;
        info.url = format!("nar/{}", record.nar_file.file_name());
        let sig = match record.proxy_sig {
            Some(p) if *p.public_key == *self.public_key => p.sig,
            _ => {
                // Signed by an earlier key: sign now and remember it.
                let fresh = self.sign(&info);
                let (db, hash, stored) = (Arc::clone(&self.db), *info.store_path.hash(), fresh.clone());
                tokio::spawn(async move { db.set_proxy_signature(&hash, &stored).await });
                fresh.sig
            }
        };
        info.sigs.retain(|s| s.key_name() != self.signer.name());
        info.sigs.push(sig);
        let text = Bytes::from(info.to_string());
        self.hot.put_narinfo(*info.store_path.hash(), text.clone());
        text
    }

    /// Opens a NAR file (or a range of it), from storage or by joining/starting an upstream fill.
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
        match self.join_or_start(file, &key, record).await? {
            Joined::Stored(size) => self
                .serve_stored(file, &key, size, range, head)
                .await?
                .ok_or_else(|| CacheError::Internal(format!("{key} vanished right after being stored"))),
            Joined::Fill(fill) => {
                let size = fill.size().await?;
                let range = resolve(range, size)?;
                let whole = ByteRange {
                    start: 0,
                    end: size.saturating_sub(1),
                };
                let body = (!head && size > 0).then(|| fill.follow(range.unwrap_or(whole)));
                Ok(NarResponse { size, range, body })
            }
        }
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

    async fn join_or_start(
        &self,
        file: &NarFile,
        key: &BlobKey,
        record: NarInfoRecord,
    ) -> Result<Joined, CacheError> {
        let mut fills = self.fills.lock().await;
        if let Some(fill) = fills.get(key) {
            return Ok(Joined::Fill(Arc::clone(fill)));
        }
        // Checked again under the lock: a fill may have committed since the first look.
        if let Some(stored) = self.db.get_nar(file).await? {
            return Ok(Joined::Stored(stored.file_size));
        }
        let tmp = tempfile_in(&self.tmp_dir, key);
        let fill = Fill::create(key.clone(), tmp).map_err(|e| StorageError::io("creating a temp file", e))?;
        fills.insert(key.clone(), Arc::clone(&fill));
        drop(fills);
        tracing::info!(nar = %key, store_path = %record.info.store_path, upstream = %record.info.url, "fetching NAR");
        tokio::spawn(fill::run(self.clone(), Arc::clone(&fill), record));
        Ok(Joined::Fill(fill))
    }

    /// A narinfo whose NAR failed verification is forgotten, so the next request asks the
    /// upstream again instead of pointing clients at a file that can never verify.
    async fn forget_lying_narinfo(&self, record: &NarInfoRecord) {
        let hash = record.info.store_path.hash();
        self.hot.forget_narinfo(hash);
        if let Err(err) = self.db.delete_narinfo(hash).await {
            tracing::warn!(store_path = %record.info.store_path, error = %err, "could not forget a narinfo");
        }
    }

    async fn forget_fill(&self, key: &BlobKey) {
        self.fills.lock().await.remove(key);
    }

    /// Checks metadata and storage; for readiness.
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.db.ping().await?;
        self.storage.ping().await?;
        Ok(())
    }
}

fn resolve(range: Option<RangeSpec>, size: u64) -> Result<Option<ByteRange>, CacheError> {
    match range {
        None => Ok(None),
        Some(spec) => spec
            .resolve(size)
            .map(Some)
            .ok_or(CacheError::RangeNotSatisfiable { size }),
    }
}
