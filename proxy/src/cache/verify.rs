//! Verification of a NAR file while it is still being downloaded: a blocking thread follows the
//! temp file as it grows, hashes the compressed bytes, decompresses and hashes the NAR. It reads
//! from the file (the page cache), not from the download, so a slow decompressor never slows
//! the clients' streams; it only delays the final byte.

use std::{
    fs::File,
    io::{self, Read},
    os::unix::fs::FileExt,
    sync::Arc,
};

use nixcache_formats::nar_digest::decode;
pub use nixcache_formats::nar_digest::{digest_read, Digests};
use nixcache_protocol::{Compression, Sha256Hash};
use sha2::{Digest, Sha256};
use tokio::{runtime::Handle, sync::watch};

use super::{
    fill::{Phase, Progress},
    CacheError,
};

/// Reads the growing file until the download is complete; fails when the download fails.
struct GrowingFile {
    file: Arc<File>,
    pos: u64,
    progress: watch::Receiver<Progress>,
    handle: Handle,
    hasher: Sha256,
}

impl Read for GrowingFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let (written, phase) = {
                let p = self.progress.borrow_and_update();
                (p.written, p.phase.clone())
            };
            if let Phase::Failed(reason) = phase {
                return Err(io::Error::other(format!("download failed: {reason}")));
            }
            if written > self.pos {
                let want = buf.len().min((written - self.pos) as usize);
                let n = self.file.read_at(&mut buf[..want], self.pos)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "temp file shorter than written",
                    ));
                }
                self.hasher.update(&buf[..n]);
                self.pos += n as u64;
                return Ok(n);
            }
            if !matches!(phase, Phase::Downloading) {
                return Ok(0);
            }
            self.handle
                .block_on(self.progress.changed())
                .map_err(|_| io::Error::other("download abandoned"))?;
        }
    }
}

/// The verifier's result, once the download has ended.
pub type Pending = tokio::sync::oneshot::Receiver<io::Result<Digests>>;

/// Waits for the verifier's digests of the file `key`.
pub async fn digests(pending: Pending, key: &crate::storage::BlobKey) -> Result<Digests, CacheError> {
    pending
        .await
        .map_err(|e| CacheError::internal("the verifier thread ended without a result", Some(Box::new(e))))?
        .map_err(|e| CacheError::Verification {
            reason: format!("cannot verify {key}"),
            source: Some(Box::new(e)),
        })
}

/// Starts the verifier on a thread of its own: it waits for bytes for as long as the download
/// runs, and must not occupy the runtime's blocking pool (the download's writes need it).
pub fn spawn(
    file: Arc<File>,
    progress: watch::Receiver<Progress>,
    info: &nixcache_protocol::NarInfo,
) -> Result<Pending, CacheError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (compression, max_nar, handle) = (info.compression.clone(), info.nar_size, Handle::current());
    std::thread::Builder::new()
        .name("nixcache-verify".into())
        .spawn(move || {
            let _ = tx.send(run(file, progress, compression, max_nar, handle));
        })
        .map_err(|e| CacheError::internal("cannot start a verifier thread", Some(Box::new(e))))?;
    Ok(rx)
}

/// Follows the file until the download ends; returns the digests of the whole file.
fn run(
    file: Arc<File>,
    progress: watch::Receiver<Progress>,
    compression: Compression,
    max_nar: u64,
    handle: Handle,
) -> io::Result<Digests> {
    let mut input = GrowingFile {
        file,
        pos: 0,
        progress,
        handle,
        hasher: Sha256::new(),
    };
    let (nar_hash, nar_size) = decode(&mut input, &compression, max_nar, None)?;
    Ok(Digests {
        file_hash: Sha256Hash::from_sha2(input.hasher),
        file_size: input.pos,
        nar_hash,
        nar_size,
    })
}
