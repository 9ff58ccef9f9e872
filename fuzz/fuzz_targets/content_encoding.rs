//! The `Content-Encoding` decoders (listings, logs and narinfos from upstreams and uploads) on
//! hostile bodies: first byte the encoding (identity, br, gzip, zstd, xz, bzip2), then the
//! body. Decoding fails or ends within the limit (bombs included), never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixcache_formats::content_encoding::{decode_limited, ContentEncoding};

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    use ContentEncoding::*;
    let encoding = [Identity, Br, Gzip, Zstd, Xz, Bzip2][usize::from(which) % 6];
    if let Ok(decoded) = decode_limited(encoding, body, LIMIT) {
        assert!(decoded.len() <= LIMIT);
        if encoding == Identity {
            assert_eq!(decoded, body);
        }
    }
});
