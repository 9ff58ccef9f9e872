//! `Sha256Hash`'s `FromStr` (narinfo `NarHash`/`FileHash`: nixbase32, hex, base64 and SRI forms).
//! A hash that parses prints (`sha256:<52 nixbase32>`) to text that parses to the same digest, and
//! so do its hex and SRI forms.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixcache_protocol::Sha256Hash;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(hash) = text.parse::<Sha256Hash>() else {
        return;
    };
    let printed = hash.to_string();
    assert_eq!(printed.len(), "sha256:".len() + 52, "{printed}");
    assert_eq!(printed.parse::<Sha256Hash>(), Ok(hash));
    assert_eq!(Sha256Hash::from_nixbase32(&hash.to_nixbase32()), Ok(hash));
    assert_eq!(
        format!("sha256:{}", hash.to_hex()).parse::<Sha256Hash>(),
        Ok(hash)
    );
    assert_eq!(hash.to_sri().parse::<Sha256Hash>(), Ok(hash));
});
