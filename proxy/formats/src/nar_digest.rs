//! The digests of a NAR file: the SHA-256 and size of the file as stored, and of the NAR it
//! decompresses to. The input is hostile (an upstream's or an uploader's bytes), so decoding is
//! bounded: no more NAR than its NarSize, no more memory than [`XZ_MEMORY_LIMIT`], and a flag stops
//! it when nobody waits for the result any more.

use std::{
    io::{self, Read, Write},
    sync::atomic::{AtomicBool, Ordering},
};

use nixcache_protocol::{Compression, Sha256Hash};
use sha2::{Digest, Sha256};

/// Most memory an xz decoder may take. The file picks its dictionary (up to 4 GiB), so without a
/// limit a hostile upstream or upload chooses how much we allocate; `xz -9` needs 65 MiB, and
/// zstd's decoder refuses windows over 128 MiB by default, so xz gets the same.
pub const XZ_MEMORY_LIMIT: u64 = 128 << 20;

/// What a NAR file measured: the file as stored, and the NAR it decompresses to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digests {
    pub file_hash: Sha256Hash,
    pub file_size: u64,
    pub nar_hash: Sha256Hash,
    pub nar_size: u64,
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
/// compressed stream is read too (it counts towards the file's hash and size). Fails past
/// `max_nar` bytes of NAR, and once `abandoned` is set.
pub fn decode(
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

#[cfg(test)]
mod tests;
