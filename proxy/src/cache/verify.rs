//! Verification of a NAR file while it is still being downloaded: a blocking thread follows the
//! temp file as it grows, hashes the compressed bytes, decompresses and hashes the NAR. It reads
//! from the file (the page cache), not from the download, so a slow decompressor never slows
//! the clients' streams; it only delays the final byte.

use std::{
    fs::File,
    io::{self, Read, Write},
    os::unix::fs::FileExt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use nixcache_protocol::{Compression, Sha256Hash};
use sha2::{Digest, Sha256};
use tokio::{runtime::Handle, sync::watch};

use super::fill::{Phase, Progress};

/// Most memory an xz decoder may take. The file picks its dictionary (up to 4 GiB), so without a
/// limit a hostile upstream or upload chooses how much we allocate; `xz -9` needs 65 MiB, and
/// zstd's decoder refuses windows over 128 MiB by default, so xz gets the same.
pub const XZ_MEMORY_LIMIT: u64 = 128 << 20;

/// What the verifier measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digests {
    pub file_hash: Sha256Hash,
    pub file_size: u64,
    pub nar_hash: Sha256Hash,
    pub nar_size: u64,
}

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

/// Hashes and counts what is written to it; refuses more than `max` bytes, so a small file
/// that decompresses to far more than its NarSize is stopped early, and anything once
/// `abandoned` is set (nobody waits for the result any more).
struct HashSink<'a> {
    hasher: Sha256,
    size: u64,
    max: u64,
    abandoned: Option<&'a AtomicBool>,
}

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.abandoned.is_some_and(|a| a.load(Ordering::Relaxed)) {
            return Err(io::Error::other("abandoned"));
        }
        if self.size + buf.len() as u64 > self.max {
            return Err(io::Error::other(format!(
                "decompresses to more than NarSize {}",
                self.max
            )));
        }
        self.hasher.update(buf);
        self.size += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The verifier's result, once the download has ended.
pub type Pending = tokio::sync::oneshot::Receiver<io::Result<Digests>>;

/// Waits for the verifier's digests of the file `key`.
pub async fn digests(pending: Pending, key: &crate::storage::BlobKey) -> Result<Digests, super::CacheError> {
    pending
        .await
        .map_err(|_| super::CacheError::Internal("the verifier thread ended without a result".into()))?
        .map_err(|e| super::CacheError::Verification(format!("cannot verify {key}: {e}")))
}

/// Starts the verifier on a thread of its own: it waits for bytes for as long as the download
/// runs, and must not occupy the runtime's blocking pool (the download's writes need it).
pub fn spawn(
    file: Arc<File>,
    progress: watch::Receiver<Progress>,
    info: &nixcache_protocol::NarInfo,
) -> Result<Pending, super::CacheError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (compression, max_nar, handle) = (info.compression.clone(), info.nar_size, Handle::current());
    std::thread::Builder::new()
        .name("nixcache-verify".into())
        .spawn(move || {
            let _ = tx.send(run(file, progress, compression, max_nar, handle));
        })
        .map_err(|e| super::CacheError::Internal(format!("cannot start a verifier thread: {e}")))?;
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

/// The digests of a complete file (an upload) that `file` reads, on the calling (blocking)
/// thread; fails once `abandoned` is set (checked as the NAR is decompressed, so a small file
/// that decompresses to a lot cannot keep the thread busy).
pub fn digest_read(
    file: impl Read,
    compression: &Compression,
    max_nar: u64,
    abandoned: &AtomicBool,
) -> io::Result<Digests> {
    let mut input = Hashing {
        inner: io::BufReader::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        size: 0,
    };
    let (nar_hash, nar_size) = decode(&mut input, compression, max_nar, Some(abandoned))?;
    Ok(Digests {
        file_hash: Sha256Hash::from_sha2(input.hasher),
        file_size: input.size,
        nar_hash,
        nar_size,
    })
}

/// Hashes and counts what is read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Decompresses `input` to its end and returns the NAR's hash and size; anything after the
/// compressed stream is read too (it counts towards the file's hash and size).
fn decode(
    input: &mut impl Read,
    compression: &Compression,
    max_nar: u64,
    abandoned: Option<&AtomicBool>,
) -> io::Result<(Sha256Hash, u64)> {
    let mut nar = HashSink {
        hasher: Sha256::new(),
        size: 0,
        max: max_nar,
        abandoned,
    };
    let decode_err =
        |e: io::Error| io::Error::new(e.kind(), format!("{} decoding failed: {e}", compression.as_str()));
    match compression {
        Compression::None => io::copy(input, &mut nar).map(drop)?,
        Compression::Xz => {
            let stream =
                liblzma::stream::Stream::new_stream_decoder(XZ_MEMORY_LIMIT, liblzma::stream::CONCATENATED)
                    .map_err(io::Error::other)?;
            io::copy(
                &mut liblzma::read::XzDecoder::new_stream(&mut *input, stream),
                &mut nar,
            )
            .map(drop)
            .map_err(decode_err)?;
        }
        Compression::Zstd => {
            io::copy(&mut zstd::stream::read::Decoder::new(&mut *input)?, &mut nar)
                .map(drop)
                .map_err(decode_err)?;
        }
        Compression::Bzip2 => {
            io::copy(&mut bzip2::read::MultiBzDecoder::new(&mut *input), &mut nar)
                .map(drop)
                .map_err(decode_err)?;
        }
        Compression::Other(name) => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("compression {name}"),
            ));
        }
    }
    io::copy(input, &mut io::sink())?;
    Ok((Sha256Hash::from_sha2(nar.hasher), nar.size))
}

#[cfg(test)]
mod tests;
