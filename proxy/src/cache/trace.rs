//! Build traces (`realisations/…`, `build-trace-v2/…`): pulled through from the upstreams when a
//! trusted key signed them, accepted on upload, kept among the side files (their rows, GC and
//! access times) under [`BuildTraceKey::storage_path`], as signed by the upstream or the
//! uploader, and served with this cache's signature added at each answer, so a new signing key
//! signs every one at once. A miss no upstream has is remembered like a narinfo's.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use nixcache_formats::content_encoding::{decode_limited, ContentEncoding};
use nixcache_protocol::{BuildTrace, BuildTraceKey, MAX_BUILD_TRACE};

use super::{Cache, CacheError, CacheStatus, Stored, UploadError};
use crate::{
    metrics::{LookupResult, ObjectKind},
    storage::{BlobKey, StorageError},
    upstream::TraceLookup,
};

/// Build traces fetched from the upstreams at once in this process (each holds at most
/// [`MAX_BUILD_TRACE`] bytes while it is read and checked).
pub const TRACE_FETCHES: usize = 64;
/// How long an upload's body may take to arrive.
const UPLOAD_LIMIT: Duration = Duration::from_secs(60);
/// Largest stored form kept or read back: a document of [`MAX_BUILD_TRACE`] grows when its
/// string signatures become objects and a layout 2 one is wrapped with its key.
const MAX_STORED: usize = 2 * MAX_BUILD_TRACE;

/// A build trace answer: the document with this cache's signature.
pub struct TraceResponse {
    pub body: Bytes,
    pub status: CacheStatus,
}

impl Cache {
    /// The build trace, from storage or from the upstreams.
    pub async fn build_trace(&self, key: &BuildTraceKey) -> Result<TraceResponse, CacheError> {
        let result = self.open_build_trace(key).await;
        self.record_lookup(ObjectKind::BuildTrace, result)
    }

    /// How much longer a build trace miss is remembered; `None` when it is not.
    pub fn trace_miss_remembered_for(&self, key: &BuildTraceKey) -> Option<Duration> {
        self.side_negative.remembered_for(&BlobKey::for_build_trace(key))
    }

    async fn open_build_trace(
        &self,
        key: &BuildTraceKey,
    ) -> Result<(TraceResponse, LookupResult), CacheError> {
        let stored = BlobKey::for_build_trace(key);
        if let Some(trace) = self.stored_build_trace(key, &stored).await? {
            self.access.side_file(stored.as_str());
            return Ok((self.signed(trace, CacheStatus::Hit), LookupResult::Hit));
        }
        if self.side_negative.contains(&stored) {
            return Err(CacheError::NotFound);
        }
        let (this, fetched) = (self.clone(), key.clone());
        let (trace, led) = self
            .trace_flights
            .run_led(stored, async move { this.fetch_build_trace(fetched).await })
            .await;
        let trace = trace.map_err(CacheError::Shared)?.as_ref().clone();
        let status = if led {
            CacheStatus::Miss
        } else {
            CacheStatus::Joined
        };
        Ok((self.signed(trace, status), LookupResult::Miss))
    }

    /// The answer: `trace` with this cache's signature added.
    fn signed(&self, mut trace: BuildTrace, status: CacheStatus) -> TraceResponse {
        trace.add_signature(&self.signer);
        TraceResponse {
            body: Bytes::from(trace.to_json()),
            status,
        }
    }

    /// The stored trace for `key`, `None` when there is none (or it went missing from storage,
    /// when its row is dropped).
    async fn stored_build_trace(
        &self,
        key: &BuildTraceKey,
        stored: &BlobKey,
    ) -> Result<Option<BuildTrace>, CacheError> {
        let Some(record) = self.db.get_side_file(stored.as_str()).await? else {
            return Ok(None);
        };
        let read = match self.storage.get(stored, None).await {
            Ok(read) if read.size == record.size && read.size <= MAX_STORED as u64 => read,
            Ok(_) | Err(StorageError::NotFound(_)) => {
                tracing::error!(object = %stored, "recorded but missing from storage (or resized); forgetting it");
                self.db.delete_side_file(stored.as_str()).await?;
                return Ok(None);
            }
            Err(err) => return Err(err.into()),
        };
        let mut body = Vec::with_capacity(read.size as usize);
        let mut chunks = read.body;
        while let Some(chunk) = chunks.next().await {
            body.extend_from_slice(&chunk.map_err(|e| StorageError::io(format!("reading {stored}"), e))?);
        }
        match BuildTrace::parse_stored(key, &body) {
            Ok(trace) => Ok(Some(trace)),
            // A layout 2 path names the derivation by its hash only: another name with the
            // same hash (no real derivation has one) is not this document.
            Err(err @ nixcache_protocol::BuildTraceError::WrongId { .. }) => {
                tracing::warn!(object = %stored, error = %err, "a stored build trace is for another derivation");
                Ok(None)
            }
            Err(err) => Err(CacheError::internal(
                "a stored build trace does not parse",
                Some(Box::new(err)),
            )),
        }
    }

    /// Fetches the trace from the upstreams and keeps it.
    async fn fetch_build_trace(&self, key: BuildTraceKey) -> Result<BuildTrace, CacheError> {
        let stored = BlobKey::for_build_trace(&key);
        let _permit = super::side::side_transfer(&self.trace_fetches).await?;
        match self.upstreams.get_build_trace(&key).await {
            TraceLookup::Found(trace) => {
                let _writing = self.trace_writes.lock().await;
                // An upload may have come first: what is kept is not replaced.
                if let Some(held) = self.stored_build_trace(&key, &stored).await? {
                    return Ok(held);
                }
                self.keep_build_trace(&stored, &trace, false).await?;
                Ok(trace)
            }
            TraceLookup::NotFound => {
                self.side_negative.insert(stored);
                Err(CacheError::NotFound)
            }
            TraceLookup::Failed(err) => Err(CacheError::Upstream(err)),
        }
    }

    /// Stores `trace` (the caller holds `trace_writes`); one whose stored form is over
    /// [`MAX_STORED`] is refused.
    async fn keep_build_trace(
        &self,
        stored: &BlobKey,
        trace: &BuildTrace,
        uploaded: bool,
    ) -> Result<(), CacheError> {
        let body = Bytes::from(trace.to_stored_json());
        if body.len() > MAX_STORED {
            return Err(CacheError::unverified(format!(
                "{stored}: more than {MAX_STORED} bytes once stored"
            )));
        }
        let size = self
            .storage
            .put_stream(stored, Box::pin(futures::stream::once(async move { Ok(body) })))
            .await?;
        self.record_side_file(stored, size, uploaded).await
    }

    /// `PUT` of a build trace (`nix copy --to` of a content-addressed derivation's output): the
    /// body decoded from its `Content-Encoding`, a well-formed trace for `key`, kept unless one
    /// is there already. One naming another store path is a conflict; nothing is overwritten.
    pub async fn upload_build_trace<S>(
        &self,
        key: &BuildTraceKey,
        encoding: ContentEncoding,
        body: S,
        max_upload_size: u64,
    ) -> Result<Stored, UploadError>
    where
        S: futures::Stream<Item = Result<Bytes, axum::Error>> + Send + 'static,
    {
        let limit = MAX_BUILD_TRACE.min(usize::try_from(max_upload_size).unwrap_or(usize::MAX));
        let sent = match tokio::time::timeout(UPLOAD_LIMIT, read_at_most(body, limit)).await {
            Err(_) => return Err(UploadError::TimedOut { after: UPLOAD_LIMIT }),
            Ok(Err(reason)) => return Err(UploadError::Invalid(format!("{key}: {reason}"))),
            Ok(Ok(None)) if limit < MAX_BUILD_TRACE => {
                return Err(UploadError::TooLarge {
                    limit: max_upload_size,
                })
            }
            Ok(Ok(None)) => {
                return Err(UploadError::TooLargeDecoded {
                    what: "build trace",
                    limit: MAX_BUILD_TRACE as u64,
                })
            }
            Ok(Ok(Some(sent))) => sent,
        };
        // Decoded within a larger bound, so a body over the limit is told from one that does
        // not decode.
        let json = decode_limited(encoding, &sent, 2 * MAX_BUILD_TRACE)
            .map_err(|e| UploadError::Invalid(format!("{key}: {e}")))?;
        let too_large = UploadError::TooLargeDecoded {
            what: "build trace",
            limit: MAX_BUILD_TRACE as u64,
        };
        if json.len() > MAX_BUILD_TRACE {
            return Err(too_large);
        }
        let trace = BuildTrace::parse(key, &json).map_err(|e| UploadError::Invalid(format!("{key}: {e}")))?;
        let stored = BlobKey::for_build_trace(key);
        // Checked and kept under one lock, so two uploads (or an upload and a fetch) in this
        // process never both write; across replicas the last of two racing writes wins.
        let _writing = self.trace_writes.lock().await;
        if let Some(held) = self.stored_build_trace(key, &stored).await? {
            if held.out_path() == trace.out_path() {
                return Ok(Stored::Exists);
            }
            return Err(UploadError::Conflict(format!(
                "{key} is held here for {}, not {}",
                held.out_path(),
                trace.out_path()
            )));
        }
        match self.keep_build_trace(&stored, &trace, true).await {
            Err(CacheError::Verification { .. }) => return Err(too_large),
            kept => kept?,
        }
        self.side_negative.remove(&stored);
        Ok(Stored::Created)
    }
}

/// The whole body, `None` when it is longer than `limit`.
async fn read_at_most<S>(body: S, limit: usize) -> Result<Option<Vec<u8>>, axum::Error>
where
    S: futures::Stream<Item = Result<Bytes, axum::Error>>,
{
    let mut body = std::pin::pin!(body);
    let mut sent = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if sent.len() + chunk.len() > limit {
            return Ok(None);
        }
        sent.extend_from_slice(&chunk);
    }
    Ok(Some(sent))
}
