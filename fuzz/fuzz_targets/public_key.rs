//! `PublicKey::parse` (`--upstream-public-key`, `name:base64`). A key that parses prints back to
//! its trimmed input (the base64 decoder is canonical) and parses again to the same key; checking
//! a signature with it never panics and never accepts one made for another text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixcache_protocol::{PublicKey, Signature};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(key) = PublicKey::parse(text) else {
        return;
    };
    let printed = key.to_string();
    assert_eq!(printed, text.trim());
    assert_eq!(PublicKey::parse(&printed).as_ref(), Ok(&key));
    assert!(!key.name().is_empty() && !key.name().contains(':'));

    // A real signature (test-key-1's over its narinfo's fingerprint), renamed to this key.
    let sig = "A6w/TcHO2UlYq+U1D22xFOHG1ca8ugwsO14yF9WmgzwLkG7UBhABtiuAHGENCNYgNmOpfFVSae+nEn6xdwQyAA==";
    let sig = Signature::parse(&format!("{}:{sig}", key.name())).expect("the signature parses");
    assert!(!key.verify("a text nobody signed", &sig));
});
