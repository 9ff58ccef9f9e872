//! Listings and build logs (`<hash>.ls`, `log/<drv>`): served from storage, pulled through from
//! the upstreams on a miss, accepted on upload. They are stored decoded (upstreams and Nix 2.32+
//! send them brotli- or gzip-encoded), so every client gets plain bytes whatever it accepts, and
//! at most [`MAX_SIDE_FILE`] bytes each. A miss no upstream has is remembered like a narinfo's.
//! Fetches are shared within a process, not across replicas: they are rare, and a second copy
//! written by another replica is the same file. Uploads are `upload`'s.

mod upload;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use nixcache_formats::{content_encoding::ContentEncoding, range::RangeSpec};
use nixcache_protocol::SideFile;

use super::{decode, Cache, CacheError, CacheStatus};
use crate::{
    db::SideFileRecord,
    metrics::LookupResult,
    storage::{BlobKey, ByteRange, ByteStream, StorageError},
    upstream::{object_kind, SideLookup, UpstreamError},
};

/// Largest listing or log stored, decoded (a build log of a large package is tens of MiB).
pub const MAX_SIDE_FILE: u64 = 256 << 20;
/// Listings and logs fetched at once in this process, and uploaded at once (each a blocking
/// decoder and a stream into storage; apart, so slow uploads never hold up fetches).
pub const SIDE_TRANSFERS: usize = 8;
/// How long one upstream download of a listing or log may take in all, and one upload.
const TRANSFER_LIMIT: Duration = Duration::from_secs(300);
/// How long a request waits for one of the [`SIDE_TRANSFERS`] before it is told to come back.
const TRANSFER_WAIT: Duration = Duration::from_secs(5);
/// When a client refused for that should come back.
const TRANSFER_RETRY_AFTER: Duration = Duration::from_secs(2);

/// A listing or log answer.
pub struct SideResponse {
    pub size: u64,
    pub range: Option<ByteRange>,
    pub body: Option<ByteStream>,
    pub status: CacheStatus,
}

impl Cache {
    /// Opens a listing or log (or a range of it), from storage or from the upstreams.
    pub async fn side_file(
        &self,
        file: &SideFile,
        range: Option<RangeSpec>,
        head: bool,
    ) -> Result<SideResponse, CacheError> {
        let result = self.open_side_file(file, range, head).await;
        self.record_lookup(object_kind(file), result)
    }

    /// The listing's or log's size when it is stored here (a look that fetches nothing), for a
    /// client or cache in front revalidating its copy: an access, when it is.
    pub async fn side_file_revalidated(&self, file: &SideFile) -> Result<Option<u64>, CacheError> {
        let key = BlobKey::for_side_file(file);
        let stored = self.db.get_side_file(key.as_str()).await?;
        if stored.is_some() {
            self.access.side_file(key.as_str());
        }
        Ok(stored.map(|record| record.size))
    }

    /// How much longer a listing or log miss is remembered; `None` when it is not.
    pub fn side_miss_remembered_for(&self, file: &SideFile) -> Option<Duration> {
        self.side_negative.remembered_for(&BlobKey::for_side_file(file))
    }

    async fn open_side_file(
        &self,
        file: &SideFile,
        range: Option<RangeSpec>,
        head: bool,
    ) -> Result<(SideResponse, LookupResult), CacheError> {
        let key = BlobKey::for_side_file(file);
        if let Some(record) = self.db.get_side_file(key.as_str()).await? {
            if let Some(response) = self
                .serve_side_file(&key, record.size, range, head, CacheStatus::Hit)
                .await?
            {
                self.access.side_file(key.as_str());
                return Ok((response, LookupResult::Hit));
            }
        }
        if self.side_negative.contains(&key) {
            return Err(CacheError::NotFound);
        }
        let (this, fetched, flight_key) = (self.clone(), file.clone(), key.clone());
        let (size, led) = self
            .side_flights
            .run_led(flight_key, async move { this.fetch_side_file(fetched).await })
            .await;
        let size = *size.map_err(CacheError::Shared)?;
        let status = if led {
            CacheStatus::Miss
        } else {
            CacheStatus::Joined
        };
        match self.serve_side_file(&key, size, range, head, status).await? {
            Some(response) => Ok((response, LookupResult::Miss)),
            // Gone between storing and reading (a GC); the client may ask again.
            None => Err(CacheError::NotFound),
        }
    }

    /// The stored file, or `None` (its record dropped) when storage does not have it as recorded.
    async fn serve_side_file(
        &self,
        key: &BlobKey,
        size: u64,
        range: Option<RangeSpec>,
        head: bool,
        status: CacheStatus,
    ) -> Result<Option<SideResponse>, CacheError> {
        let range = match range {
            None => None,
            Some(spec) => Some(
                spec.resolve(size)
                    .ok_or(CacheError::RangeNotSatisfiable { size })?,
            ),
        };
        let answer = |body| SideResponse {
            size,
            range,
            body,
            status,
        };
        if head {
            return Ok(Some(answer(None)));
        }
        match self.storage.get(key, range).await {
            Ok(read) if read.size == size => Ok(Some(answer(Some(read.body)))),
            Ok(_) | Err(StorageError::NotFound(_) | StorageError::BadRange { .. }) => {
                tracing::error!(object = %key, "recorded but missing from storage (or resized); forgetting it");
                self.db.delete_side_file(key.as_str()).await?;
                Ok(None)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Downloads the file from the upstreams, decoded, into storage; its size.
    async fn fetch_side_file(&self, file: SideFile) -> Result<u64, CacheError> {
        match tokio::time::timeout(TRANSFER_LIMIT, self.download_side_file(&file)).await {
            Ok(result) => result,
            Err(_) => Err(CacheError::Upstream(UpstreamError::Timeout {
                url: file.to_string(),
                after: TRANSFER_LIMIT,
            })),
        }
    }

    async fn download_side_file(&self, file: &SideFile) -> Result<u64, CacheError> {
        let key = BlobKey::for_side_file(file);
        let download = match self.upstreams.get_side_file(file).await {
            SideLookup::Found(download) => download,
            SideLookup::NotFound => {
                self.side_negative.insert(key);
                return Err(CacheError::NotFound);
            }
            SideLookup::Failed(err) => return Err(CacheError::Upstream(err)),
        };
        // Waiting for an upstream's answer takes no transfer: only decoding and storing do.
        let _permit = side_transfer(&self.side_fetches).await?;
        // The upstream's own failure (a reset, a read timeout) is kept as it is: a 502 or 504
        // that says the upstream failed, not that its bytes failed verification.
        let failed: Arc<Mutex<Option<UpstreamError>>> = Arc::default();
        let noted = Arc::clone(&failed);
        let body = Box::pin(download.body.map(move |chunk| {
            chunk.map_err(|err| {
                let io = std::io::Error::other(err.to_string());
                if let Ok(mut slot) = noted.lock() {
                    slot.get_or_insert(err);
                }
                io
            })
        }));
        let (problem, body) = Problem::tap(decoded(download.encoding, body));
        let size = match self.storage.put_stream(&key, body).await {
            Ok(size) => size,
            Err(err) => {
                let upstream = failed.lock().ok().and_then(|mut slot| slot.take());
                return Err(match (upstream, problem.take()) {
                    (Some(failure), _) => CacheError::Upstream(failure),
                    (None, Some((_, reason))) => {
                        CacheError::unverified(format!("{file} from upstream: {reason}"))
                    }
                    (None, None) => err.into(),
                });
            }
        };
        self.record_side_file(&key, size, false).await?;
        Ok(size)
    }

    pub(super) async fn record_side_file(
        &self,
        key: &BlobKey,
        size: u64,
        uploaded: bool,
    ) -> Result<(), CacheError> {
        let record = SideFileRecord {
            path: key.as_str().to_owned(),
            encoding: String::new(),
            size,
            uploaded,
        };
        self.db.put_side_file(&record).await?;
        Ok(())
    }
}

/// One of `transfers`, waited for at most [`TRANSFER_WAIT`]; else `Busy` (a 503).
pub(super) async fn side_transfer(
    transfers: &tokio::sync::Semaphore,
) -> Result<tokio::sync::SemaphorePermit<'_>, CacheError> {
    match tokio::time::timeout(TRANSFER_WAIT, transfers.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(closed)) => Err(CacheError::internal(
            "the listing and log transfers are closed",
            Some(Box::new(closed)),
        )),
        Err(_) => Err(CacheError::Busy {
            retry_after: TRANSFER_RETRY_AFTER,
        }),
    }
}

/// `body` decoded, at most [`MAX_SIDE_FILE`] bytes in and out (a tiny input may decode to much,
/// and much input, such as empty gzip members, to nothing).
fn decoded(encoding: ContentEncoding, body: ByteStream) -> ByteStream {
    decode::decoded(encoding, decode::limited(body, MAX_SIDE_FILE), MAX_SIDE_FILE)
}

/// The first error of a stream coming from outside (an upstream, a client), kept so a failed
/// write can tell it from a storage failure.
#[derive(Clone, Default)]
struct Problem(Arc<Mutex<Option<(std::io::ErrorKind, String)>>>);

impl Problem {
    fn tap(body: ByteStream) -> (Self, ByteStream) {
        let problem = Self::default();
        let noted = problem.clone();
        let body = body.map(move |chunk| {
            if let Err(err) = &chunk {
                if let Ok(mut slot) = noted.0.lock() {
                    slot.get_or_insert_with(|| (err.kind(), err.to_string()));
                }
            }
            chunk
        });
        (problem, Box::pin(body))
    }

    fn take(&self) -> Option<(std::io::ErrorKind, String)> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}
