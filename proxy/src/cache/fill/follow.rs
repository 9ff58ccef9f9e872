//! Following a fill: a client's stream of a byte range of the temp file as it grows, the last
//! byte held back until the object is verified.

use std::{io, sync::Arc};

use bytes::Bytes;
use tokio::sync::watch;

use super::{Client, Fill, Phase, Progress};
use crate::storage::{bufpool, ByteRange, ByteStream};

impl Fill {
    /// Streams `range` of the file as it arrives, to `client`.
    pub fn follow(self: &Arc<Self>, range: ByteRange, client: Client) -> ByteStream {
        let state = Follower {
            _client: client,
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
    _client: Client,
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
