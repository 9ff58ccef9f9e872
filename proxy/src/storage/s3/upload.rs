//! Writes: one PutObject up to `PART_SIZE`, else a multipart upload with up to `CONCURRENCY`
//! parts in flight. A failed or cancelled multipart upload is aborted, so no invisible parts
//! are left to be billed; the object appears only when CompleteMultipartUpload succeeds.

use std::path::{Path, PathBuf};

use aws_sdk_s3::{
    primitives::{ByteStream as SdkStream, Length},
    types::{CompletedMultipartUpload, CompletedPart},
    Client,
};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::task::JoinSet;

use super::{backend, S3Store};
use crate::storage::{BlobKey, ByteStream, StorageError};

/// Part size, and the largest object sent in one PutObject. A stream upload holds at most
/// `CONCURRENCY + 1` parts in memory.
const PART_SIZE: u64 = 8 << 20;
/// Parts uploaded at once: enough to fill a link to S3, few enough to bound memory.
const CONCURRENCY: usize = 4;
/// S3's limit on parts per upload.
const MAX_PARTS: u64 = 10_000;

pub(super) async fn put_stream(
    store: &S3Store,
    key: &BlobKey,
    body: ByteStream,
) -> Result<u64, StorageError> {
    let mut reader = PartReader {
        body,
        carry: None,
        ended: false,
    };
    let read_err = |e| StorageError::io(format!("reading the body for {key}"), e);
    let first = reader.next_part(PART_SIZE as usize).await.map_err(read_err)?;
    let mut total = first.len() as u64;
    if reader.is_done() {
        put_object(store, key, SdkStream::from(first)).await?;
        return Ok(total);
    }
    let mut parts = Parts::start(store, key).await?;
    let sent: Result<(), StorageError> = async {
        parts.push(PartBody::Memory(first)).await?;
        while !reader.is_done() {
            let part = reader.next_part(PART_SIZE as usize).await.map_err(read_err)?;
            if part.is_empty() {
                break;
            }
            total += part.len() as u64;
            parts.push(PartBody::Memory(part)).await?;
        }
        Ok(())
    }
    .await;
    parts.finish(sent).await?;
    Ok(total)
}

/// Uploads a finished file, reading each part straight from it.
pub(super) async fn put_file(store: &S3Store, key: &BlobKey, staged: &Path) -> Result<(), StorageError> {
    let size = tokio::fs::metadata(staged)
        .await
        .map_err(|e| StorageError::io(format!("reading the staged file for {key}"), e))?
        .len();
    if size <= PART_SIZE {
        let body = file_part(staged, 0, size).await?;
        return put_object(store, key, body).await;
    }
    let part_size = part_size_for(size);
    let mut parts = Parts::start(store, key).await?;
    let sent: Result<(), StorageError> = async {
        let mut offset = 0;
        while offset < size {
            let len = part_size.min(size - offset);
            let path = staged.to_path_buf();
            parts.push(PartBody::File { path, offset, len }).await?;
            offset += len;
        }
        Ok(())
    }
    .await;
    parts.finish(sent).await
}

/// `PART_SIZE`, or larger (whole MiB) when the file would otherwise need more than `MAX_PARTS`.
fn part_size_for(size: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let needed = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    needed.max(PART_SIZE)
}

async fn put_object(store: &S3Store, key: &BlobKey, body: SdkStream) -> Result<(), StorageError> {
    store
        .client
        .put_object()
        .bucket(&store.bucket)
        .key(store.object_name(key))
        .body(body)
        .customize()
        .config_override(store.upload_config())
        .send()
        .await
        .map_err(|e| backend(format!("uploading {key}"), e))?;
    Ok(())
}

/// A retryable body over `len` bytes of `path` at `offset` (the SDK reopens it on a retry).
async fn file_part(path: &Path, offset: u64, len: u64) -> Result<SdkStream, StorageError> {
    SdkStream::read_from()
        .path(path)
        .offset(offset)
        .length(Length::Exact(len))
        .build()
        .await
        .map_err(|e| StorageError::io(format!("reading {}", path.display()), std::io::Error::other(e)))
}

/// Cuts a stream into parts of a fixed size (the last may be shorter).
struct PartReader {
    body: ByteStream,
    /// What the last chunk had beyond the previous part.
    carry: Option<Bytes>,
    ended: bool,
}

impl PartReader {
    async fn next_part(&mut self, size: usize) -> std::io::Result<Bytes> {
        let mut part = BytesMut::with_capacity(size);
        while part.len() < size {
            let chunk = match self.carry.take() {
                Some(chunk) => chunk,
                None => match self.body.next().await {
                    Some(chunk) => chunk?,
                    None => {
                        self.ended = true;
                        break;
                    }
                },
            };
            let room = size - part.len();
            if chunk.len() > room {
                part.extend_from_slice(&chunk[..room]);
                self.carry = Some(chunk.slice(room..));
            } else {
                part.extend_from_slice(&chunk);
            }
        }
        Ok(part.freeze())
    }

    /// True once the stream has ended and every byte was handed out.
    fn is_done(&self) -> bool {
        self.ended && self.carry.is_none()
    }
}

enum PartBody {
    Memory(Bytes),
    File { path: PathBuf, offset: u64, len: u64 },
}

/// One multipart upload: parts in flight, parts done, and the abort that runs unless it completes.
struct Parts {
    /// Declared first so that, when dropped, the parts in flight stop before the abort starts.
    running: JoinSet<Result<CompletedPart, StorageError>>,
    upload: Upload,
    done: Vec<CompletedPart>,
    next_number: i32,
}

impl Parts {
    async fn start(store: &S3Store, key: &BlobKey) -> Result<Self, StorageError> {
        let created = store
            .client
            .create_multipart_upload()
            .bucket(&store.bucket)
            .key(store.object_name(key))
            .send()
            .await
            .map_err(|e| backend(format!("starting the upload of {key}"), e))?;
        let upload_id = created.upload_id().ok_or_else(|| StorageError::Backend {
            context: format!("starting the upload of {key}"),
            error: "the server returned no upload id".into(),
        })?;
        Ok(Self {
            upload: Upload {
                client: store.client.clone(),
                long: store.upload_config(),
                bucket: store.bucket.clone(),
                object: store.object_name(key),
                key: key.to_string(),
                id: upload_id.to_owned(),
                armed: true,
            },
            running: JoinSet::new(),
            done: Vec::new(),
            next_number: 1,
        })
    }

    /// Starts uploading `body` as the next part, first waiting while `CONCURRENCY` are in flight.
    async fn push(&mut self, body: PartBody) -> Result<(), StorageError> {
        if self.next_number as u64 > MAX_PARTS {
            return Err(StorageError::Backend {
                context: format!("uploading {}", self.upload.key),
                error: format!("the object needs more than {MAX_PARTS} parts of {PART_SIZE} bytes").into(),
            });
        }
        while self.running.len() >= CONCURRENCY {
            self.collect_one().await?;
        }
        let upload = self.upload.clone_unarmed();
        let number = self.next_number;
        self.running
            .spawn(async move { upload.send_part(number, body).await });
        self.next_number += 1;
        Ok(())
    }

    async fn collect_one(&mut self) -> Result<(), StorageError> {
        match self.running.join_next().await {
            Some(Ok(part)) => self.done.push(part?),
            Some(Err(e)) => {
                return Err(StorageError::Backend {
                    context: format!("uploading a part of {}", self.upload.key),
                    error: Box::new(e),
                })
            }
            None => {}
        }
        Ok(())
    }

    /// Completes the upload if every part went up, else aborts it; returns the first error.
    async fn finish(mut self, sent: Result<(), StorageError>) -> Result<(), StorageError> {
        let mut result = sent;
        while result.is_ok() && !self.running.is_empty() {
            result = self.collect_one().await;
        }
        if result.is_ok() {
            self.done.sort_by_key(|p| p.part_number());
            result = self.upload.complete(std::mem::take(&mut self.done)).await;
        }
        if result.is_err() {
            // Stop the parts still in flight before the abort, or one could land after it.
            self.running.shutdown().await;
            self.upload.abort().await;
        }
        result
    }
}

/// A multipart upload id; aborted in the background when dropped while still `armed`.
struct Upload {
    client: Client,
    /// Timeouts for part uploads and the completion.
    long: aws_sdk_s3::config::Builder,
    bucket: String,
    object: String,
    /// The blob key, for messages.
    key: String,
    id: String,
    armed: bool,
}

impl Upload {
    /// A handle for a part task: only the owner aborts.
    fn clone_unarmed(&self) -> Self {
        Self {
            client: self.client.clone(),
            long: self.long.clone(),
            bucket: self.bucket.clone(),
            object: self.object.clone(),
            key: self.key.clone(),
            id: self.id.clone(),
            armed: false,
        }
    }

    async fn send_part(&self, number: i32, body: PartBody) -> Result<CompletedPart, StorageError> {
        let body = match body {
            PartBody::Memory(bytes) => SdkStream::from(bytes),
            PartBody::File { path, offset, len } => file_part(&path, offset, len).await?,
        };
        let sent = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.object)
            .upload_id(&self.id)
            .part_number(number)
            .body(body)
            .customize()
            .config_override(self.long.clone())
            .send()
            .await
            .map_err(|e| backend(format!("uploading part {number} of {}", self.key), e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(sent.e_tag().map(str::to_owned))
            .build())
    }

    async fn complete(&mut self, parts: Vec<CompletedPart>) -> Result<(), StorageError> {
        let upload = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.object)
            .upload_id(&self.id)
            .multipart_upload(upload)
            .customize()
            .config_override(self.long.clone())
            .send()
            .await
            .map_err(|e| backend(format!("completing the upload of {}", self.key), e))?;
        self.armed = false;
        Ok(())
    }

    async fn abort(&mut self) {
        self.armed = false;
        abort_upload(
            self.client.clone(),
            self.bucket.clone(),
            self.object.clone(),
            self.id.clone(),
        )
        .await;
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Cancelled mid-upload (the caller's future was dropped): abort without waiting.
        let abort = abort_upload(
            self.client.clone(),
            std::mem::take(&mut self.bucket),
            std::mem::take(&mut self.object),
            std::mem::take(&mut self.id),
        );
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(abort);
            }
            Err(_) => tracing::warn!(nar = %self.key, "no runtime to abort a cancelled multipart upload"),
        }
    }
}

/// Aborts the upload, again after a pause when that fails: a passing error would otherwise leave
/// its parts to the bucket's lifecycle rule.
async fn abort_upload(client: Client, bucket: String, object: String, id: String) {
    for attempt in 1..=ABORT_ATTEMPTS {
        let aborted = client
            .abort_multipart_upload()
            .bucket(&bucket)
            .key(&object)
            .upload_id(&id)
            .send()
            .await;
        let Err(err) = aborted else {
            return;
        };
        let err = backend(format!("aborting the upload of {object}"), err);
        if attempt == ABORT_ATTEMPTS {
            tracing::warn!(error = %err, "multipart upload left behind; a bucket lifecycle rule will remove it");
        } else {
            tracing::debug!(error = %err, attempt, "aborting a multipart upload failed; trying again");
            tokio::time::sleep(ABORT_RETRY).await;
        }
    }
}

/// Tries at aborting an upload, and the pause between two.
const ABORT_ATTEMPTS: u32 = 3;
const ABORT_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_only_when_the_limit_needs_it() {
        assert_eq!(part_size_for(40 << 20), PART_SIZE);
        assert_eq!(part_size_for(PART_SIZE * MAX_PARTS), PART_SIZE);
        let huge = 200u64 << 30;
        let size = part_size_for(huge);
        assert!(huge.div_ceil(size) <= MAX_PARTS);
        assert_eq!(size % (1 << 20), 0);
    }
}
