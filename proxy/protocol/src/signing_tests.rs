//! Tests for `signing`, against keys made by `nix-store --generate-binary-cache-key`.

use super::*;

const SEC1: &str = include_str!("../testdata/keys/test-key-1.sec");
const PUB1: &str = include_str!("../testdata/keys/test-key-1.pub");
const SEC2: &str = include_str!("../testdata/keys/test-key-2.sec");
const PUB2: &str = include_str!("../testdata/keys/test-key-2.pub");
/// Made by `SigningKey::generate`; the `.pub` is `nix key convert-secret-to-public` of the `.sec`.
const GEN_SEC: &str = include_str!("../testdata/keys/generated.sec");
const GEN_PUB: &str = include_str!("../testdata/keys/generated.pub");
const CACHE_NIXOS_ORG: &str = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

/// The base64 part of a `name:base64` string.
fn data(s: &str) -> &str {
    s.trim().split_once(':').unwrap().1
}

#[test]
fn nix_generated_keys_parse_and_match() {
    for (sec, public) in [(SEC1, PUB1), (SEC2, PUB2), (GEN_SEC, GEN_PUB)] {
        let key = SigningKey::parse(sec).unwrap();
        assert_eq!(key.to_secret_string(), sec.trim());
        assert_eq!(key.public_key().to_string(), public.trim());
        assert_eq!(PublicKey::parse(public).unwrap(), key.public_key());
    }
    assert_eq!(SigningKey::parse(SEC1).unwrap().name(), "test-key-1");
    let with_newline = format!("  {SEC1}\n");
    assert_eq!(SigningKey::parse(&with_newline).unwrap().to_secret_string(), SEC1);
}

#[test]
fn cache_nixos_org_key_parses() {
    let key = PublicKey::parse(CACHE_NIXOS_ORG).unwrap();
    assert_eq!(key.name(), "cache.nixos.org-1");
    assert_eq!(key.to_string(), CACHE_NIXOS_ORG);
}

#[test]
fn generated_keys_round_trip_and_verify() {
    let key = SigningKey::generate("nixcache-test-1").unwrap();
    let again = SigningKey::parse(&key.to_secret_string()).unwrap();
    assert_eq!(again.to_secret_string(), key.to_secret_string());
    assert_eq!(again.public_key(), key.public_key());
    let sig = key.sign("1;fingerprint");
    assert_eq!(sig.key_name(), "nixcache-test-1");
    assert!(again.public_key().verify("1;fingerprint", &sig));
    assert!(!key.public_key().verify("1;fingerprinT", &sig));
    let parsed = Signature::parse(&sig.to_string()).unwrap();
    assert_eq!(parsed, sig);
    assert_ne!(
        SigningKey::generate("x").unwrap().to_secret_string(),
        key.to_secret_string()
    );
}

#[test]
fn verify_requires_matching_name_and_key() {
    let key1 = SigningKey::parse(SEC1).unwrap();
    let sig = key1.sign("fp");
    assert!(!PublicKey::parse(PUB2).unwrap().verify("fp", &sig));
    // Same key bytes under another name: Nix looks keys up by name, so this must fail.
    let renamed = PublicKey::parse(&format!("other:{}", data(PUB1))).unwrap();
    assert!(!renamed.verify("fp", &sig));
    let forged = Signature::parse(&format!("test-key-2:{}", data(&sig.to_string()))).unwrap();
    assert!(!PublicKey::parse(PUB2).unwrap().verify("fp", &forged));
}

#[test]
fn debug_hides_secret_material() {
    let key = SigningKey::parse(SEC1).unwrap();
    let debug = format!("{key:?} {key:#?}");
    assert!(
        debug.contains("test-key-1") && debug.contains("<redacted>"),
        "{debug}"
    );
    let secret = data(SEC1);
    for needle in [secret, &secret[..20], data(PUB1), &data(PUB1)[..20]] {
        assert!(!debug.contains(needle), "{debug}");
    }
}

#[test]
fn rejects_malformed_keys() {
    let secret = data(SEC1);
    let what = SECRET;
    let cases = [
        (secret.to_owned(), KeyError::MissingSeparator { what }),
        (format!(":{secret}"), KeyError::InvalidName { what }),
        (format!("a\u{7}b:{secret}"), KeyError::InvalidName { what }),
        (format!("k:{}", &secret[..87]), KeyError::InvalidBase64 { what }),
        (format!("k:{secret}x"), KeyError::InvalidBase64 { what }),
        (
            format!("k:{}", data(PUB1)),
            KeyError::InvalidLength {
                what,
                expected: 64,
                actual: 32,
            },
        ),
        (
            "k:".to_owned(),
            KeyError::InvalidLength {
                what,
                expected: 64,
                actual: 0,
            },
        ),
        (
            format!(
                "k:{}",
                data(&SigningKey::parse(SEC1).unwrap().sign("x").to_string())
            ),
            KeyError::PublicKeyMismatch,
        ),
    ];
    for (input, err) in cases {
        let got = SigningKey::parse(&input).unwrap_err();
        assert_eq!(got, err);
        let message = got.to_string();
        assert!(!message.contains(&secret[..8]), "{message}");
    }
    assert_eq!(
        SigningKey::generate("").unwrap_err(),
        KeyError::InvalidName { what }
    );
    assert_eq!(
        SigningKey::generate("a:b").unwrap_err(),
        KeyError::InvalidName { what }
    );
    assert_eq!(
        SigningKey::generate("a\nb").unwrap_err(),
        KeyError::InvalidName { what }
    );
}

#[test]
fn rejects_secret_key_with_foreign_public_half() {
    let key1 = SigningKey::parse(SEC1).unwrap().to_secret_string();
    let key2 = SigningKey::parse(SEC2).unwrap();
    // seed of key 1, public half of key 2.
    let mut bytes = STANDARD.decode(data(&key1)).unwrap();
    bytes[32..].copy_from_slice(key2.public_key().key.as_bytes());
    let mixed = format!("mixed:{}", STANDARD.encode(&bytes));
    assert_eq!(
        SigningKey::parse(&mixed).unwrap_err(),
        KeyError::PublicKeyMismatch
    );
}

#[test]
fn rejects_malformed_public_keys_and_signatures() {
    let what = PUBLIC;
    assert_eq!(
        PublicKey::parse("nocolon").unwrap_err(),
        KeyError::MissingSeparator { what }
    );
    assert_eq!(
        PublicKey::parse(":AAAA").unwrap_err(),
        KeyError::InvalidName { what }
    );
    assert_eq!(
        PublicKey::parse("k:!!!!").unwrap_err(),
        KeyError::InvalidBase64 { what }
    );
    assert_eq!(
        PublicKey::parse("k:AAAA").unwrap_err(),
        KeyError::InvalidLength {
            what,
            expected: 32,
            actual: 3
        }
    );
    let what = SIGNATURE;
    assert_eq!(
        Signature::parse("k:").unwrap_err(),
        KeyError::InvalidLength {
            what,
            expected: 64,
            actual: 0
        }
    );
    assert_eq!(
        Signature::parse(data(PUB1)).unwrap_err(),
        KeyError::MissingSeparator { what }
    );
    assert_eq!(
        Signature::parse(PUB1).unwrap_err(),
        KeyError::InvalidLength {
            what,
            expected: 64,
            actual: 32
        }
    );
}

#[test]
fn derived_secrets_depend_on_key_and_purpose_only() {
    let one = SigningKey::parse(SEC1).unwrap();
    let again = SigningKey::parse(&one.to_secret_string()).unwrap();
    let other = SigningKey::parse(SEC2).unwrap();
    assert_eq!(one.derive_secret("a"), again.derive_secret("a"));
    assert_ne!(one.derive_secret("a"), one.derive_secret("b"));
    assert_ne!(one.derive_secret("a"), other.derive_secret("a"));
}
