//! `digest_read` on files compressed here from the fuzzer's bytes (first byte: compression, the
//! rest: the NAR): whatever the content, the NAR's digests are those of the bytes compressed, so
//! a file that decodes is never taken for another NAR; one byte more than allowed is refused.

#![no_main]

use std::{io::Write, sync::atomic::AtomicBool};

use libfuzzer_sys::fuzz_target;
use nixcache_formats::nar_digest::digest_read;
use nixcache_protocol::{Compression, Sha256Hash};

fn compress(compression: &Compression, nar: &[u8]) -> std::io::Result<Vec<u8>> {
    Ok(match compression {
        Compression::Xz => {
            let mut encoder = liblzma::write::XzEncoder::new(Vec::new(), 0);
            encoder.write_all(nar)?;
            encoder.finish()?
        }
        Compression::Zstd => zstd::encode_all(nar, 1)?,
        Compression::Bzip2 => {
            let mut encoder = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            encoder.write_all(nar)?;
            encoder.finish()?
        }
        _ => nar.to_vec(),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((choice, nar)) = data.split_first() else {
        return;
    };
    let compression = [
        Compression::None,
        Compression::Xz,
        Compression::Zstd,
        Compression::Bzip2,
    ][usize::from(*choice) % 4]
        .clone();
    let file = compress(&compression, nar).expect("compressing in memory");
    let size = nar.len() as u64;
    let got = digest_read(file.as_slice(), &compression, size, &AtomicBool::new(false))
        .unwrap_or_else(|e| panic!("{} of {size} bytes does not decode: {e}", compression.as_str()));
    let nar_hash = Sha256Hash::digest(nar);
    assert_eq!((got.nar_hash, got.nar_size), (nar_hash, size));
    assert_eq!(got.file_size, file.len() as u64);
    if size > 0 {
        let over = digest_read(file.as_slice(), &compression, size - 1, &AtomicBool::new(false));
        assert!(
            over.is_err(),
            "{} bytes allowed {} more",
            size - 1,
            compression.as_str()
        );
    }
});
