//! `NarInfo::parse` on any bytes, read as the proxy reads an upstream's narinfo (lossy UTF-8).
//!
//! Whatever parses must print (`Display`) to text that parses to the same value and prints the same
//! again: the proxy serves and stores the narinfos it parsed, re-printed with its own signature.
//! The fingerprint a signature covers must keep its five `;`-separated fields whatever the input
//! (no field may smuggle in a `;` or a line break), and checking signatures must not panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixcache_protocol::{NarInfo, PublicKey};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(info) = NarInfo::parse(&text) else {
        return;
    };
    let printed = info.to_string();
    let again = NarInfo::parse(&printed)
        .unwrap_or_else(|e| panic!("the printed narinfo does not parse: {e}\n{printed}"));
    assert_eq!(again, info, "printed:\n{printed}");
    assert_eq!(again.to_string(), printed);

    let fingerprint = info.fingerprint();
    assert_eq!(fingerprint.split(';').count(), 5, "{fingerprint:?}");
    assert!(!fingerprint.contains(['\n', '\r']), "{fingerprint:?}");
    assert!(fingerprint.starts_with("1;/nix/store/"), "{fingerprint:?}");

    if !info.sigs.is_empty() {
        let key = PublicKey::parse(include_str!("../../proxy/protocol/testdata/keys/test-key-1.pub"))
            .expect("the test key parses");
        let _ = info.verify_any(&[key]);
    }
});
