//! `digest_read`, the verifier of NAR files from upstreams and uploads, on hostile input: the
//! first byte picks the compression (none, xz, zstd, bzip2), the next two the NarSize limit (in
//! units of 64 bytes, so at most 4 MiB: bombs are cut off there and executions stay quick), the
//! rest is the file. Whatever the bytes (decompression bombs, huge xz dictionaries, truncated or
//! concatenated streams), it returns within the limits or fails; on success the file's digests
//! are those of the bytes given, and the NAR is within its limit.

#![no_main]

use std::sync::atomic::AtomicBool;

use libfuzzer_sys::fuzz_target;
use nixcache_formats::nar_digest::digest_read;
use nixcache_protocol::{Compression, Sha256Hash};

const COMPRESSIONS: [Compression; 4] = [
    Compression::None,
    Compression::Xz,
    Compression::Zstd,
    Compression::Bzip2,
];

fuzz_target!(|data: &[u8]| {
    let Some(([choice, k0, k1], file)) = data.split_first_chunk::<3>() else {
        return;
    };
    let compression = &COMPRESSIONS[usize::from(*choice) % COMPRESSIONS.len()];
    let max_nar = u64::from(u16::from_le_bytes([*k0, *k1])) << 6;
    let Ok(got) = digest_read(file, compression, max_nar, &AtomicBool::new(false)) else {
        return;
    };
    let file_hash = Sha256Hash::digest(file);
    assert_eq!((got.file_hash, got.file_size), (file_hash, file.len() as u64));
    assert!(got.nar_size <= max_nar, "{} > {max_nar}", got.nar_size);
    if *compression == Compression::None {
        assert_eq!((got.nar_hash, got.nar_size), (file_hash, file.len() as u64));
    }
});
