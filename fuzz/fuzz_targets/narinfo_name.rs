//! `parse_narinfo_name`, the `/<hash>.narinfo` request path. A name that parses is exactly
//! `<32 nixbase32>.narinfo` and prints back to itself (`narinfo_name`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixcache_protocol::{narinfo_name, parse_narinfo_name};

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(hash) = parse_narinfo_name(name) else {
        return;
    };
    assert_eq!(narinfo_name(&hash), name);
    assert_eq!(name.len(), 32 + ".narinfo".len());
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'.'),
        "{name:?}"
    );
});
