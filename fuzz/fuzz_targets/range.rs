//! `RangeSpec::parse`, the `Range` header of a NAR request, and `resolve` against the object's
//! size (the first 8 bytes, little-endian; the rest is the header). A range that resolves lies
//! inside the object, holds at least one byte and at most `size`, and is the one RFC 9110 means:
//! the proxy seeks its storage and copies a fill's bytes by these numbers.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixcache_formats::range::RangeSpec;

fuzz_target!(|data: &[u8]| {
    let Some((size, header)) = data.split_first_chunk::<8>() else {
        return;
    };
    let size = u64::from_le_bytes(*size);
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    let Some(spec) = RangeSpec::parse(header) else {
        return;
    };
    assert!(header.trim().starts_with("bytes="), "{header:?}");
    let Some(range) = spec.resolve(size) else {
        return;
    };
    assert!(
        range.start <= range.end && range.end < size,
        "{header:?} {size}: {range:?}"
    );
    assert!(
        range.len() >= 1 && range.len() <= size,
        "{header:?} {size}: {range:?}"
    );
    match spec {
        RangeSpec::From { start, end } => {
            assert_eq!(range.start, start);
            assert_eq!(range.end, end.unwrap_or(u64::MAX).min(size - 1));
        }
        RangeSpec::Suffix(n) => {
            assert_eq!(range.len(), n.min(size));
            assert_eq!(range.end, size - 1);
        }
    }
});
