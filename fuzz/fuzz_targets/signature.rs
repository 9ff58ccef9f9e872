//! `Signature::parse` (narinfo `Sig:`). A signature that parses prints back to its trimmed input
//! (the base64 decoder is canonical) and parses again to the same value; checking it never panics
//! and never accepts it for a text nobody signed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixcache_protocol::{PublicKey, Signature};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sig) = Signature::parse(text) else {
        return;
    };
    let printed = sig.to_string();
    assert_eq!(printed, text.trim());
    assert_eq!(Signature::parse(&printed).as_ref(), Ok(&sig));
    assert!(!sig.key_name().is_empty() && !sig.key_name().contains(':'));

    let key = PublicKey::parse(include_str!("../../proxy/protocol/testdata/keys/test-key-1.pub"))
        .expect("the test key parses");
    let renamed = Signature::parse(&format!(
        "{}:{}",
        key.name(),
        printed.split_once(':').expect(":").1
    ))
    .expect("renamed signature parses");
    assert!(!key.verify("a text nobody signed", &renamed));
});
