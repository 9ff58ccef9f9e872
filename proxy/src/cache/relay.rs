//! A response body relayed from another replica's fetch, which survives that replica dying: the
//! stream resumes where it stopped, from whoever has the bytes next (storage, a replica that
//! took the fetch over, or this replica's own fill).
//!
//! Resuming splices bytes of two downloads, so it is only done when the file's bytes are fixed
//! by its name (FileHash known, or an uncompressed NAR named by its NarHash). Before the last
//! byte goes out, the bytes sent before the splice are compared with the verified object's.

use std::{io, sync::Arc};

use bytes::Bytes;
use futures::StreamExt;
use nixcache_protocol::{Compression, NarFile};
use sha2::{Digest, Sha256};

use super::Cache;
use crate::{
    db::NarInfoRecord,
    storage::{ByteRange, ByteStream},
};

pub(super) struct Relay {
    cache: Cache,
    file: NarFile,
    record: Arc<NarInfoRecord>,
    start: u64,
    pos: u64,
    end: u64,
    source: Option<ByteStream>,
    /// Whether a source was already opened (a later open follows a loss).
    opened: bool,
    /// Hash of every byte sent so far.
    sent: Sha256,
    /// After a splice: where it happened and the hash of the bytes sent before it.
    splice: Option<(u64, [u8; 32])>,
}

impl Relay {
    pub fn new(cache: Cache, file: &NarFile, record: Arc<NarInfoRecord>, range: ByteRange) -> Self {
        Self {
            cache,
            file: file.clone(),
            record,
            start: range.start,
            pos: range.start,
            end: range.end,
            source: None,
            opened: false,
            sent: Sha256::new(),
            splice: None,
        }
    }

    pub fn stream(self) -> ByteStream {
        Box::pin(futures::stream::unfold(Some(self), |relay| async move {
            let mut relay = relay?;
            match relay.next_chunk().await {
                Ok(Some(bytes)) => Some((Ok(bytes), Some(relay))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        }))
    }

    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if self.pos > self.end {
                return Ok(None);
            }
            let Some(source) = self.source.as_mut() else {
                let range = ByteRange {
                    start: self.pos,
                    end: self.end,
                };
                let opened = self
                    .cache
                    .open_range(&self.file, &self.record, range, self.opened);
                self.source = Some(opened.await.map_err(io::Error::other)?);
                self.opened = true;
                continue;
            };
            match source.next().await {
                Some(Ok(bytes)) if bytes.is_empty() => {}
                Some(Ok(mut bytes)) => {
                    let room = self.end + 1 - self.pos;
                    if bytes.len() as u64 > room {
                        bytes.truncate(room as usize);
                    }
                    if self.pos + bytes.len() as u64 > self.end {
                        self.check_splice().await?;
                    }
                    self.sent.update(&bytes);
                    self.pos += bytes.len() as u64;
                    return Ok(Some(bytes));
                }
                Some(Err(err)) => self.lost(err)?,
                None => self.lost(io::Error::new(io::ErrorKind::UnexpectedEof, "source ended early"))?,
            }
        }
    }

    /// The source failed: resume elsewhere when the bytes are fixed by the file's name.
    fn lost(&mut self, err: io::Error) -> io::Result<()> {
        let info = &self.record.info;
        let fixed_bytes = info.file_hash.is_some() || info.compression == Compression::None;
        if !fixed_bytes {
            return Err(err);
        }
        tracing::warn!(nar = %self.file.file_name(), at = self.pos, error = %err,
            "lost the source of a relayed NAR; resuming from the next one");
        self.source = None;
        if self.pos > self.start {
            self.splice = Some((self.pos, self.sent.clone().finalize().into()));
        }
        Ok(())
    }

    /// Before the last byte: the bytes sent before a splice must be the verified object's.
    async fn check_splice(&mut self) -> io::Result<()> {
        let Some((point, expected)) = self.splice.take() else {
            return Ok(());
        };
        let before = ByteRange {
            start: self.start,
            end: point - 1,
        };
        let mut again = self
            .cache
            .open_range(&self.file, &self.record, before, false)
            .await
            .map_err(io::Error::other)?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = again.next().await {
            hasher.update(chunk?);
        }
        if <[u8; 32]>::from(hasher.finalize()) != expected {
            tracing::error!(nar = %self.file.file_name(), point, "bytes relayed before a failover differ from the verified object");
            return Err(io::Error::other(
                "bytes sent before a failover differ from the verified object",
            ));
        }
        Ok(())
    }
}
