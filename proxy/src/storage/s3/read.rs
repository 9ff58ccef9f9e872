//! Reading a large object with several ranged GETs in flight, so one client's download is not
//! held to what one S3 stream gives. The first part streams from the first GET as it arrives
//! (no delay to the first byte); the parts after it are fetched ahead, `parallel` at a time,
//! into memory, and handed on in order. Memory is bounded for the whole process: a part is
//! fetched ahead only with room from [`ReadAhead::memory`]; without room it is read when its
//! turn comes, as one plain stream. Dropping the stream stops the reads ahead.

use std::{io, sync::Arc};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use aws_sdk_s3::operation::get_object::GetObjectOutput;

use super::{backend, into_stream, parse_content_range, served_size, status, S3Store};
use crate::storage::{BlobKey, BlobRead, ByteRange, ByteStream, StorageError};

/// How objects are read: parts of `part_size`, `parallel` of them in flight per read.
#[derive(Clone, Debug)]
pub struct ReadAhead {
    /// GETs in flight per read, the first one included; 1 reads with one GET.
    pub parallel: usize,
    pub part_size: u64,
    /// Room for parts fetched ahead, in bytes, all reads together.
    pub memory: Arc<Semaphore>,
}

/// Permits count KiB, so a semaphore's `u32` permits cover terabytes.
const PERMIT_BYTES: u64 = 1024;

impl ReadAhead {
    pub const DEFAULT_PARALLEL: usize = 4;
    pub const DEFAULT_PART_SIZE: u64 = 8 << 20;
    pub const DEFAULT_MEMORY: u64 = 64 << 20;

    pub fn new(parallel: usize, part_size: u64, memory: u64) -> Self {
        let permits = usize::try_from(memory / PERMIT_BYTES).unwrap_or(usize::MAX);
        Self {
            parallel: parallel.max(1),
            part_size: part_size.max(1 << 20),
            memory: Arc::new(Semaphore::new(permits.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// Whether a span of `len` bytes is worth reading in parts: at least two parts of it.
    pub(super) fn splits(&self, len: u64) -> bool {
        self.parallel > 1 && len >= 2 * self.part_size
    }

    /// Room for a part of `len` bytes, if there is some now.
    fn room_for(&self, len: u64) -> Option<OwnedSemaphorePermit> {
        let permits = u32::try_from(len.div_ceil(PERMIT_BYTES)).ok()?;
        Arc::clone(&self.memory).try_acquire_many_owned(permits).ok()
    }
}

impl Default for ReadAhead {
    fn default() -> Self {
        Self::new(
            Self::DEFAULT_PARALLEL,
            Self::DEFAULT_PART_SIZE,
            Self::DEFAULT_MEMORY,
        )
    }
}

/// A part after the first: fetched ahead into memory (its chunks as they came, with its room),
/// or read when its turn comes.
enum Part {
    Fetched(Vec<Bytes>, OwnedSemaphorePermit),
    Later(ByteRange),
}

impl S3Store {
    /// Bytes `span` of `key`, read in parts: the first from `head` (a GET of that part, as it
    /// arrives), the rest by ranged GETs, some ahead.
    pub(super) fn read_in_parts(&self, key: &BlobKey, span: ByteRange, head: ByteStream) -> ByteStream {
        let part_size = self.read_ahead.part_size;
        let head = exactly(head, part_size.min(span.end - span.start + 1));
        let step = usize::try_from(part_size).unwrap_or(usize::MAX);
        let parts: Vec<ByteRange> = (span.start.saturating_add(part_size)..=span.end)
            .step_by(step)
            .map(|start| ByteRange {
                start,
                end: start.saturating_add(part_size - 1).min(span.end),
            })
            .collect();
        if parts.is_empty() {
            return head;
        }
        // One part waits to be taken; the others are in flight (their room taken already).
        let (tx, rx) = mpsc::channel(1);
        let (store, key_ahead) = (self.clone(), key.clone());
        tokio::spawn(fetch_ahead(store, key_ahead, parts, tx));
        let (store, key) = (self.clone(), key.clone());
        let rest = futures::stream::unfold(rx, |mut rx| async move { Some((rx.recv().await?, rx)) })
            .then(move |part| {
                let (store, key) = (store.clone(), key.clone());
                async move {
                    match part? {
                        // The room goes back once the part's last chunk went on, not before.
                        Part::Fetched(chunks, room) => Ok(holding(chunks, room)),
                        Part::Later(range) => store.open_range(&key, range).await.map_err(io::Error::other),
                    }
                }
            })
            .try_flatten();
        Box::pin(head.chain(rest))
    }

    /// A plain stream of bytes `range` of `key`.
    async fn open_range(&self, key: &BlobKey, range: ByteRange) -> Result<ByteStream, StorageError> {
        let (_, body) = self.get_range(key, range).await?;
        Ok(exactly(body, range.end - range.start + 1))
    }

    /// Bytes `range` of `key`, whole, in memory (in the chunks they came in: no copy).
    async fn fetch_range(&self, key: &BlobKey, range: ByteRange) -> io::Result<Vec<Bytes>> {
        let body = self.open_range(key, range).await.map_err(io::Error::other)?;
        body.try_collect().await
    }
}

impl S3Store {
    /// The whole object: its first part asked for by range (which tells its size), and, when
    /// there is more, the rest in parts; one plain GET when reads are not split.
    pub(super) async fn get_whole(&self, key: &BlobKey) -> Result<BlobRead, StorageError> {
        if self.read_ahead.parallel <= 1 {
            let out = self.send_get(key, None).await?;
            return Ok(self.whole_answer(out));
        }
        let first = format!("bytes=0-{}", self.read_ahead.part_size - 1);
        let out = match self.send_get(key, Some(first)).await {
            // An empty object has no first byte to ask for.
            Err(GetError::Status(416, _)) => self.send_get(key, None).await?,
            other => other?,
        };
        let Some(content_range) = out.content_range() else {
            // A server that ignores Range sends the whole object.
            return Ok(self.whole_answer(out));
        };
        match parse_content_range(content_range) {
            Some((0, end, size)) if end + 1 < size => {
                let head = into_stream(out.body, self.timeouts.body_idle);
                let body = self.read_in_parts(
                    key,
                    ByteRange {
                        start: 0,
                        end: size - 1,
                    },
                    head,
                );
                Ok(BlobRead { size, body })
            }
            Some((0, _, size)) => Ok(BlobRead {
                size,
                body: into_stream(out.body, self.timeouts.body_idle),
            }),
            // Not what was asked, or no size (`bytes 0-99/*`): never guess a size from it.
            _ => Err(StorageError::Backend {
                context: format!("reading {key}"),
                error: format!("a ranged read came back as {content_range:?}").into(),
            }),
        }
    }

    fn whole_answer(&self, out: GetObjectOutput) -> BlobRead {
        BlobRead {
            size: out.content_length().unwrap_or(0).max(0) as u64,
            body: into_stream(out.body, self.timeouts.body_idle),
        }
    }

    /// Bytes `r` of `key` (checked to be within it) and the object's size.
    pub(super) async fn get_range(
        &self,
        key: &BlobKey,
        r: ByteRange,
    ) -> Result<(u64, ByteStream), StorageError> {
        let out = match self
            .send_get(key, Some(format!("bytes={}-{}", r.start, r.end)))
            .await
        {
            Err(GetError::Status(416, _)) => return Err(self.bad_range(key, r).await),
            other => other?,
        };
        let size = served_size(key, Some(r), &out)?;
        Ok((size, into_stream(out.body, self.timeouts.body_idle)))
    }

    /// One GetObject, with a `Range` header when given.
    async fn send_get(&self, key: &BlobKey, range: Option<String>) -> Result<GetObjectOutput, GetError> {
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object_name(key));
        match request.set_range(range).send().await {
            Ok(out) => Ok(out),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                Err(GetError::Storage(StorageError::NotFound(key.to_string())))
            }
            Err(e) => Err(GetError::Status(
                status(&e).unwrap_or(0),
                backend(format!("reading {key}"), e),
            )),
        }
    }
}

/// A failed GetObject: its HTTP status (0 without an answer) kept for the callers that treat
/// some apart.
enum GetError {
    Status(u16, StorageError),
    Storage(StorageError),
}

impl From<GetError> for StorageError {
    fn from(err: GetError) -> Self {
        match err {
            GetError::Status(_, e) | GetError::Storage(e) => e,
        }
    }
}

/// Fetches `parts` in order, `tx`'s capacity plus one at a time, each into memory when there is
/// room for it; stops when the reader is gone or a fetch failed (the failure is sent on).
async fn fetch_ahead(
    store: S3Store,
    key: BlobKey,
    parts: Vec<ByteRange>,
    tx: mpsc::Sender<io::Result<Part>>,
) {
    let parallel = store.read_ahead.parallel.saturating_sub(1).max(1);
    let fetches = futures::stream::iter(parts).map(|range| {
        let (store, key) = (store.clone(), key.clone());
        // Room is asked for in order, so a later part never takes the room an earlier one waits for.
        let room = store.read_ahead.room_for(range.end - range.start + 1);
        async move {
            match room {
                Some(room) => Ok(Part::Fetched(store.fetch_range(&key, range).await?, room)),
                None => Ok(Part::Later(range)),
            }
        }
    });
    let mut fetches = fetches.buffered(parallel);
    loop {
        let part = tokio::select! {
            () = tx.closed() => return,
            part = fetches.next() => part,
        };
        let Some(part) = part else { return };
        let failed = part.is_err();
        if tx.send(part).await.is_err() || failed {
            return;
        }
    }
}

/// `chunks` as a stream that holds `room` until its last chunk was taken.
fn holding(chunks: Vec<Bytes>, room: OwnedSemaphorePermit) -> ByteStream {
    let mut room = Some(room);
    let mut chunks = chunks.into_iter();
    Box::pin(futures::stream::poll_fn(move |_| {
        let next = chunks.next();
        if next.is_none() {
            room.take();
        }
        std::task::Poll::Ready(next.map(Ok))
    }))
}

/// `body`, which must give exactly `len` bytes: cut after them, and failing when it ends early.
fn exactly(body: ByteStream, len: u64) -> ByteStream {
    Box::pin(futures::stream::unfold(Some((body, len)), |state| async move {
        let (mut body, left) = state?;
        if left == 0 {
            return None;
        }
        match body.next().await {
            Some(Ok(mut chunk)) => {
                if chunk.len() as u64 > left {
                    chunk.truncate(usize::try_from(left).unwrap_or(usize::MAX));
                }
                let left = left - chunk.len() as u64;
                Some((Ok(chunk), Some((body, left))))
            }
            Some(Err(err)) => Some((Err(err), None)),
            None => {
                let msg = format!("S3 ended a ranged read {left} bytes short");
                Some((Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg)), None))
            }
        }
    }))
}
