//! `CacheInfo::parse` on any bytes, read as the proxy reads an upstream's `nix-cache-info` (lossy
//! UTF-8). Whatever parses must print (`Display`, our own `/nix-cache-info`) to text that parses to
//! the same value and prints the same again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixcache_protocol::CacheInfo;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(info) = CacheInfo::parse(&text) else {
        return;
    };
    let printed = info.to_string();
    let again = CacheInfo::parse(&printed)
        .unwrap_or_else(|e| panic!("the printed nix-cache-info does not parse: {e}\n{printed}"));
    assert_eq!(again, info, "printed:\n{printed}");
    assert_eq!(again.to_string(), printed);
});
