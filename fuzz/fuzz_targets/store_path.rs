//! `StorePath::from_absolute`, `StorePath::from_base_name` and `StorePathHash::parse` on each line
//! of the input.
//!
//! A store path that parses prints back to exactly its input (the hash has no padding bits, so its
//! text form is unique), its name obeys Nix's rules (1 to 211 characters of `[A-Za-z0-9+-._?=]`,
//! not `.`/`..`, no `.-`/`..-` prefix: safe as a file name), and store paths order like their
//! text, which is the order Nix lists references and signs fingerprints in.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixcache_protocol::{StorePath, StorePathHash};

fn check_name(name: &str) {
    assert!((1..=211).contains(&name.len()), "{name:?}");
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b)),
        "{name:?}"
    );
    assert!(
        name != "." && name != ".." && !name.starts_with(".-") && !name.starts_with("..-"),
        "{name:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut base_names: Vec<StorePath> = Vec::new();
    for line in text.split('\n') {
        if let Ok(path) = StorePath::from_absolute(line) {
            assert_eq!(path.to_absolute(), line);
            assert_eq!(StorePath::from_base_name(&path.to_string()).as_ref(), Ok(&path));
        }
        if let Ok(path) = StorePath::from_base_name(line) {
            assert_eq!(path.to_string(), line);
            check_name(path.name());
            assert_eq!(path.hash().to_string().len(), 32);
            assert_eq!(StorePath::new(*path.hash(), path.name()).as_ref(), Ok(&path));
            assert_eq!(StorePath::from_absolute(&path.to_absolute()).as_ref(), Ok(&path));
            base_names.push(path);
        }
        if let Ok(hash) = StorePathHash::parse(line) {
            assert_eq!(hash.to_string(), line);
        }
    }
    for pair in base_names.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert_eq!(a.cmp(b), a.to_string().cmp(&b.to_string()), "{a} vs {b}");
        assert_eq!(
            a.hash().cmp(b.hash()),
            a.hash().to_string().cmp(&b.hash().to_string())
        );
    }
});
