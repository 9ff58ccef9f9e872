//! `BuildTraceKey::parse` (the `realisations/…` and `build-trace-v2/…` request paths) and
//! `BuildTrace::parse` (their JSON documents). The first line is a path, the rest a document.
//! A path that parses prints back to itself and keeps a storage path that is recognised as one,
//! fits its column and is one directory and one file name (no `.` or `..` segment); a document that parses prints one that parses to the same trace, in
//! both its served and its stored forms; checking signatures does not panic, and a key with a
//! name no fuzzer-made signature has never verifies.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixcache_protocol::{BuildTrace, BuildTraceKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, doc) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(key) = BuildTraceKey::parse(path) else {
        return;
    };
    assert_eq!(key.to_string(), path);
    let stored = key.storage_path();
    assert!(BuildTraceKey::is_storage_path(&stored), "{stored:?}");
    assert!(stored.len() <= 255 && !stored.starts_with('/'), "{stored:?}");
    assert!(stored.split('/').count() == 2 && stored.split('/').all(|s| !matches!(s, "" | "." | "..")), "{stored:?}");
    let Ok(trace) = BuildTrace::parse(&key, doc.as_bytes()) else {
        return;
    };
    let printed = trace.to_json();
    assert_eq!(BuildTrace::parse(&key, printed.as_bytes()).as_ref(), Ok(&trace), "{printed}");
    let kept = trace.to_stored_json();
    assert_eq!(BuildTrace::parse_stored(&key, kept.as_bytes()).as_ref(), Ok(&trace), "{kept}");
    // A key no seed was signed with (test-key-1 of the narinfo fixtures): never verifies.
    let stranger = nixcache_protocol::PublicKey::parse("stranger:HFrthHsWHu2QSY8v9xAxs3/uhIXdM46ktKwtJt4tE4E=").unwrap();
    assert!(!trace.verify_any(&[stranger]));
});
