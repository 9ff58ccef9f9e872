//! `NarFile::parse`, the `/nar/<file>` request path. A name that parses is exactly
//! `<52 nixbase32>.nar[.xz|.zst|.bz2]`: it prints back to itself, so it is safe as a file name
//! (only `[0-9a-z.]`: no `/`, no `..`, no escapes), and its compression is one the proxy handles.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixcache_protocol::NarFile;

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = NarFile::parse(name) else {
        return;
    };
    assert_eq!(file.file_name(), name);
    assert_eq!(file.url(), format!("nar/{name}"));
    assert!(file.compression.is_supported());
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'.'),
        "{name:?}"
    );
    assert!(!name.contains("..") && !name.starts_with('.'), "{name:?}");
    assert_eq!(NarFile::parse(&file.file_name()).as_ref(), Ok(&file));
});
