//! SHA-256 digests in the text forms Nix uses.
//!
//! Nix prints hashes as `sha256:<52 nixbase32 chars>` (narinfo `NarHash`/`FileHash`) and accepts
//! the same digest as `sha256:<64 hex>`, `sha256:<44 base64>` or SRI `sha256-<base64>`. Only
//! SHA-256 is supported; any other algorithm is rejected by name.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::Digest as _;

use crate::nixbase32;

/// Length of a SHA-256 digest in bytes.
const LEN: usize = 32;

/// Why a string is not a SHA-256 hash in one of Nix's forms.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashError {
    /// No `sha256:` or `sha256-` prefix.
    #[error("hash {input:?} has no algorithm prefix (expected \"sha256:\" or \"sha256-\")")]
    MissingAlgorithm {
        /// The whole input.
        input: String,
    },
    /// An algorithm other than SHA-256.
    #[error("unsupported hash algorithm {algorithm:?} (only sha256 is supported)")]
    UnsupportedAlgorithm {
        /// The algorithm named in the input.
        algorithm: String,
    },
    /// The digest part has a length matching none of the encodings.
    #[error(
        "sha256 digest has invalid length {length} (expected 52 nixbase32, 64 hex or 44 base64 characters)"
    )]
    InvalidLength {
        /// The length of the digest part in characters.
        length: usize,
    },
    /// The digest part is not valid nixbase32.
    #[error("sha256 digest is not valid nixbase32: {0}")]
    Nixbase32(#[from] nixbase32::DecodeError),
    /// The digest part is not valid hexadecimal.
    #[error("sha256 digest is not valid hexadecimal")]
    Hex,
    /// The digest part is not valid base64 or does not decode to 32 bytes.
    #[error("sha256 digest is not valid base64 for 32 bytes")]
    Base64,
}

/// SHA-256 digest. Display = `sha256:<52 nixbase32 chars>`.
///
/// `FromStr` accepts `sha256:<nixbase32 (52)>`, `sha256:<hex (64)>`, `sha256:<base64 (44)>` and
/// SRI `sha256-<base64>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Sha256Hash(pub [u8; 32]);

impl Sha256Hash {
    /// Hashes `data`.
    pub fn digest(data: &[u8]) -> Self {
        Self(sha2::Sha256::digest(data).into())
    }

    /// Finalizes an incremental hasher.
    pub fn from_sha2(d: sha2::Sha256) -> Self {
        Self(d.finalize().into())
    }

    /// The 52-character nixbase32 form, without the `sha256:` prefix.
    pub fn to_nixbase32(&self) -> String {
        nixbase32::encode(&self.0)
    }

    /// Parses the bare 52-character nixbase32 form (no prefix).
    pub fn from_nixbase32(s: &str) -> Result<Self, HashError> {
        Ok(Self(nixbase32::decode_fixed::<LEN>(s)?))
    }

    /// The 64-character lowercase hexadecimal form, without prefix.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The SRI form `sha256-<base64>`.
    pub fn to_sri(&self) -> String {
        format!("sha256-{}", STANDARD.encode(self.0))
    }

    fn from_hex(s: &str) -> Result<Self, HashError> {
        if s.len() != LEN * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(HashError::Hex);
        }
        let mut out = [0u8; LEN];
        for (byte, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
            let text = std::str::from_utf8(pair).map_err(|_| HashError::Hex)?;
            *byte = u8::from_str_radix(text, 16).map_err(|_| HashError::Hex)?;
        }
        Ok(Self(out))
    }

    fn from_base64(s: &str) -> Result<Self, HashError> {
        let bytes = STANDARD.decode(s).map_err(|_| HashError::Base64)?;
        let arr: [u8; LEN] = bytes.try_into().map_err(|_| HashError::Base64)?;
        Ok(Self(arr))
    }
}

impl fmt::Display for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_nixbase32())
    }
}

impl FromStr for Sha256Hash {
    type Err = HashError;

    fn from_str(s: &str) -> Result<Self, HashError> {
        let (algorithm, digest, sri) = match (s.split_once(':'), s.split_once('-')) {
            (Some((algo, digest)), _) => (algo, digest, false),
            (None, Some((algo, digest))) => (algo, digest, true),
            (None, None) => return Err(HashError::MissingAlgorithm { input: s.to_owned() }),
        };
        if algorithm != "sha256" {
            return Err(HashError::UnsupportedAlgorithm {
                algorithm: algorithm.to_owned(),
            });
        }
        if sri {
            return Self::from_base64(digest);
        }
        match digest.len() {
            52 => Self::from_nixbase32(digest),
            64 => Self::from_hex(digest),
            44 => Self::from_base64(digest),
            length => Err(HashError::InvalidLength { length }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_and_incremental_agree() {
        let mut hasher = sha2::Sha256::new();
        hasher.update(b"ab");
        hasher.update(b"c");
        assert_eq!(Sha256Hash::from_sha2(hasher), Sha256Hash::digest(b"abc"));
        assert_eq!(Sha256Hash::digest(b"").to_hex(), EMPTY_HEX);
    }

    #[test]
    fn display_round_trips() {
        let h = Sha256Hash::digest(b"nixcache");
        let text = h.to_string();
        assert!(text.starts_with("sha256:") && text.len() == 7 + 52);
        assert_eq!(text.parse::<Sha256Hash>(), Ok(h));
        assert_eq!(h.to_sri().parse::<Sha256Hash>(), Ok(h));
        assert_eq!(format!("sha256:{}", h.to_hex()).parse::<Sha256Hash>(), Ok(h));
        assert_eq!(
            format!("sha256:{}", h.to_hex().to_uppercase()).parse::<Sha256Hash>(),
            Ok(h)
        );
    }

    #[test]
    fn rejects_other_algorithms_by_name() {
        for (input, algorithm) in [
            ("sha512:abc", "sha512"),
            ("md5-xyz", "md5"),
            ("SHA256:00", "SHA256"),
        ] {
            assert_eq!(
                input.parse::<Sha256Hash>(),
                Err(HashError::UnsupportedAlgorithm {
                    algorithm: algorithm.into()
                })
            );
        }
        assert!(matches!(
            "abc".parse::<Sha256Hash>(),
            Err(HashError::MissingAlgorithm { .. })
        ));
    }

    #[test]
    fn rejects_malformed_digests() {
        let bad_hex = format!("sha256:{}g", &EMPTY_HEX[..63]);
        assert_eq!(bad_hex.parse::<Sha256Hash>(), Err(HashError::Hex));
        assert_eq!(
            "sha256:abc".parse::<Sha256Hash>(),
            Err(HashError::InvalidLength { length: 3 })
        );
        assert_eq!("sha256-AAAA".parse::<Sha256Hash>(), Err(HashError::Base64));
        let bad_b32 = format!("sha256:{}", "e".repeat(52));
        assert!(matches!(
            bad_b32.parse::<Sha256Hash>(),
            Err(HashError::Nixbase32(_))
        ));
        assert!(matches!(
            Sha256Hash::from_nixbase32("0000"),
            Err(HashError::Nixbase32(_))
        ));
    }
}
