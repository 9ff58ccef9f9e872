//! A NAR file being written to a temp file (by an upstream download, or by a copy of another
//! replica's download), shared by every client that wants it meanwhile. Clients follow the file
//! as it grows (late joiners start from what is already there); the verifier follows it too.
//! Until every hash matched, the last byte of each response is held back, so no client ever
//! gets a complete body of an object that failed verification. A NAR file is never empty, so a
//! size of 0 is never promised to a client.

use std::{fs::File, io, path::PathBuf, sync::Arc};

use bytes::Bytes;
use tokio::sync::watch;

use super::CacheError;
use crate::storage::{bufpool, BlobKey, ByteRange, ByteStream};

#[derive(Clone, Debug)]
pub enum Phase {
    Downloading,
    /// Every byte is in the temp file; verification is finishing.
    Downloaded,
    /// Every hash matched: the last bytes may go out while the file is being stored.
    Verified,
    /// Verified and stored.
    Committed,
    /// Why, as the first waiter would have been told (so a timeout stays a 504 for everyone).
    Failed(Arc<CacheError>),
}

#[derive(Clone, Debug)]
pub struct Progress {
    pub written: u64,
    /// The file's size, once known (narinfo FileSize or the upstream's Content-Length).
    pub size: Option<u64>,
    pub phase: Phase,
}

pub struct Fill {
    pub key: BlobKey,
    pub(super) file: Arc<File>,
    pub(super) tmp_path: PathBuf,
    pub(super) progress: watch::Sender<Progress>,
}

impl Fill {
    /// Creates the temp file. The size stays unknown until the upstream answered, so no client
    /// is promised a body before the upstream has agreed to send one.
    pub fn create(key: BlobKey, tmp_path: PathBuf) -> io::Result<Arc<Self>> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp_path)?;
        let (progress, _) = watch::channel(Progress {
            written: 0,
            size: None,
            phase: Phase::Downloading,
        });
        Ok(Arc::new(Self {
            key,
            file: Arc::new(file),
            tmp_path,
            progress,
        }))
    }

    /// Waits until the size is known; fails if the download failed first. A size of 0 is never
    /// promised before verification: a NAR file is never empty, so such a fill fails.
    pub async fn size(&self) -> Result<u64, CacheError> {
        let mut rx = self.progress.subscribe();
        loop {
            let (size, phase) = {
                let p = rx.borrow_and_update();
                (p.size, p.phase.clone())
            };
            if let Phase::Failed(err) = phase {
                return Err(CacheError::Shared(err));
            }
            let verified = matches!(phase, Phase::Verified | Phase::Committed);
            if let Some(size) = size.filter(|size| *size > 0 || verified) {
                return Ok(size);
            }
            rx.changed()
                .await
                .map_err(|_| CacheError::FillFailed("download abandoned".into()))?;
        }
    }

    /// Streams `range` of the file as it arrives.
    pub fn follow(self: &Arc<Self>, range: ByteRange) -> ByteStream {
        let state = Follower {
            fill: Arc::clone(self),
            rx: self.progress.subscribe(),
            pos: range.start,
            end: range.end,
        };
        Box::pin(futures::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            match state.next_chunk().await {
                Ok(Some(bytes)) => Some((Ok(bytes), Some(state))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        }))
    }
}

struct Follower {
    fill: Arc<Fill>,
    rx: watch::Receiver<Progress>,
    pos: u64,
    end: u64,
}

impl Follower {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if self.pos > self.end {
            return Ok(None);
        }
        loop {
            let (written, phase) = {
                let p = self.rx.borrow_and_update();
                (p.written, p.phase.clone())
            };
            // Bytes [pos, readable) may go out now. Until the object is verified, the last byte
            // of this response is held back, so no client has a complete body of a bad object.
            let readable = match &phase {
                Phase::Failed(reason) => {
                    return Err(io::Error::other(format!("upstream download failed: {reason}")))
                }
                Phase::Verified | Phase::Committed => written.min(self.end + 1),
                _ => written.min(self.end),
            };
            if readable > self.pos {
                let len = (readable - self.pos).min(bufpool::CHUNK as u64) as usize;
                let (file, pos) = (Arc::clone(&self.fill.file), self.pos);
                let bytes = tokio::task::spawn_blocking(move || bufpool::read_at(&file, pos, len))
                    .await
                    .map_err(io::Error::other)??;
                self.pos += bytes.len() as u64;
                return Ok(Some(bytes));
            }
            if matches!(phase, Phase::Verified | Phase::Committed) && written <= self.end {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "object shorter than announced",
                ));
            }
            self.rx
                .changed()
                .await
                .map_err(|_| io::Error::other("download abandoned"))?;
        }
    }
}
