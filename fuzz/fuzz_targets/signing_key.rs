//! `SigningKey::parse` (`--secret-key-file`, Nix's `name:base64(seed || public key)`). A key that
//! parses prints back to its trimmed input, its public half parses from its printed form, what it
//! signs verifies with that public half, and its `Debug` shows its name and no key material.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixcache_protocol::{PublicKey, SigningKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(key) = SigningKey::parse(text) else {
        return;
    };
    let secret = key.to_secret_string();
    assert_eq!(secret, text.trim());
    let public = key.public_key();
    assert_eq!(PublicKey::parse(&public.to_string()).as_ref(), Ok(&public));
    assert_eq!(public.name(), key.name());

    let fingerprint = "1;/nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-leaf;sha256:0;1;";
    let sig = key.sign(fingerprint);
    assert!(public.verify(fingerprint, &sig));
    assert!(!public.verify("1;another", &sig));

    // Only the name, which may be anything a name may be (even the key's own base64, as the fuzzer
    // found: so compare the whole text rather than search it for the key).
    let debug = format!("{key:?}");
    assert_eq!(
        debug,
        format!("SigningKey {{ name: {:?}, key: \"<redacted>\" }}", key.name())
    );
});
