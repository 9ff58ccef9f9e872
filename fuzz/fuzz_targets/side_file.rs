//! `SideFile::parse`, the `/<hash>.ls` and `/log/<drv>` request paths. A path that parses
//! prints back to itself and is safe as an object name: no `..` segment, at most one `/`
//! (after `log`), only store path characters.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixcache_protocol::SideFile;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = SideFile::parse(path) else {
        return;
    };
    assert_eq!(file.to_string(), path);
    let name = path.strip_prefix("log/").unwrap_or(path);
    assert!(!name.contains('/') && !name.starts_with('.'), "{path:?}");
    assert!(
        name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b)),
        "{path:?}"
    );
});
