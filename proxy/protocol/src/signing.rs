//! Ed25519 signing keys, public keys and signatures in Nix's text format.
//!
//! All three are `<name>:<base64>` (standard alphabet, padded):
//! - secret key (`nix-store --generate-binary-cache-key`): 64 bytes, the 32-byte seed followed by
//!   the 32-byte public key (libsodium's layout);
//! - public key: 32 bytes;
//! - signature (narinfo `Sig:`): 64 bytes, an Ed25519 signature of the narinfo fingerprint.
//!
//! Names are non-empty and contain no `:` or control characters. A signature belongs to the key
//! with the same name. Errors never include key material.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::Signer as _;

/// Why a key or signature could not be parsed or generated. Never contains key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The input has no `:` between name and key data.
    #[error("{what} must be of the form <name>:<base64>")]
    MissingSeparator {
        /// `"secret key"`, `"public key"` or `"signature"`.
        what: &'static str,
    },
    /// The name is empty or contains `:` or control characters.
    #[error("{what} name must be non-empty and contain no ':' or control characters")]
    InvalidName {
        /// `"secret key"`, `"public key"` or `"signature"`.
        what: &'static str,
    },
    /// The data after the name is not valid base64.
    #[error("{what} data is not valid base64")]
    InvalidBase64 {
        /// `"secret key"`, `"public key"` or `"signature"`.
        what: &'static str,
    },
    /// The decoded data has the wrong number of bytes.
    #[error("{what} must be {expected} bytes, got {actual}")]
    InvalidLength {
        /// `"secret key"`, `"public key"` or `"signature"`.
        what: &'static str,
        /// Required length in bytes.
        expected: usize,
        /// Decoded length in bytes.
        actual: usize,
    },
    /// The public half stored in a secret key does not belong to its seed.
    #[error("secret key is corrupt: its embedded public key does not match its seed")]
    PublicKeyMismatch,
    /// The public key bytes are not a valid Ed25519 point.
    #[error("public key is not a valid ed25519 key")]
    InvalidPublicKey,
    /// The system random number generator failed.
    #[error("cannot generate a key: random number generator failed: {reason}")]
    Random {
        /// The generator's error message.
        reason: String,
    },
}

const SECRET: &str = "secret key";
const PUBLIC: &str = "public key";
const SIGNATURE: &str = "signature";

/// Splits `<name>:<base64>` and decodes the data, which must be `N` bytes.
fn parse_named<const N: usize>(s: &str, what: &'static str) -> Result<(String, [u8; N]), KeyError> {
    let (name, data) = s
        .trim()
        .split_once(':')
        .ok_or(KeyError::MissingSeparator { what })?;
    validate_name(name, what)?;
    let bytes = STANDARD
        .decode(data)
        .map_err(|_| KeyError::InvalidBase64 { what })?;
    let actual = bytes.len();
    let arr = bytes.try_into().map_err(|_| KeyError::InvalidLength {
        what,
        expected: N,
        actual,
    })?;
    Ok((name.to_owned(), arr))
}

fn validate_name(name: &str, what: &'static str) -> Result<(), KeyError> {
    if name.is_empty() || name.contains(':') || name.chars().any(char::is_control) {
        return Err(KeyError::InvalidName { what });
    }
    Ok(())
}

/// A named Ed25519 secret key in Nix's format. `Debug` prints only the name.
#[derive(Clone)]
pub struct SigningKey {
    name: String,
    key: ed25519_dalek::SigningKey,
}

impl SigningKey {
    /// Generates a new key with a seed from the system random number generator.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        validate_name(name, SECRET)?;
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| KeyError::Random {
            reason: e.to_string(),
        })?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }

    /// Parses Nix secret key file content; surrounding whitespace is ignored.
    ///
    /// Checks that the embedded public half matches the seed.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (name, mut bytes) = parse_named::<64>(s, SECRET)?;
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes[..32]);
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let matches = key.verifying_key().as_bytes()[..] == bytes[32..];
        seed.fill(0);
        bytes.fill(0);
        if !matches {
            return Err(KeyError::PublicKeyMismatch);
        }
        Ok(Self { name, key })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Nix secret key file content `<name>:<base64(seed || public key)>`, without newline.
    pub fn to_secret_string(&self) -> String {
        let mut bytes = self.key.to_keypair_bytes();
        let text = format!("{}:{}", self.name, STANDARD.encode(bytes));
        bytes.fill(0);
        text
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// A secret for another `purpose`, derived from this key: whoever holds the key (every
    /// replica of one cache) derives the same, and it reveals nothing about the key.
    pub fn derive_secret(&self, purpose: &str) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(b"nixcache derived secret\0");
        hasher.update(purpose.as_bytes());
        hasher.update(b"\0");
        let mut seed = self.key.to_bytes();
        hasher.update(seed);
        seed.fill(0);
        hasher.finalize().into()
    }

    /// Signs a fingerprint (see [`crate::fingerprint`]).
    pub fn sign(&self, fingerprint: &str) -> Signature {
        let sig = self.key.sign(fingerprint.as_bytes());
        Signature {
            key_name: self.name.clone(),
            bytes: sig.to_bytes(),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A named Ed25519 public key, `<name>:<base64(32 bytes)>`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PublicKey {
    name: String,
    key: ed25519_dalek::VerifyingKey,
}

impl PublicKey {
    /// Parses `<name>:<base64>`; surrounding whitespace is ignored.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (name, bytes) = parse_named::<32>(s, PUBLIC)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::InvalidPublicKey)?;
        Ok(Self { name, key })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True if `sig` was made by this key over `fingerprint`; false if the names differ.
    pub fn verify(&self, fingerprint: &str, sig: &Signature) -> bool {
        if sig.key_name != self.name {
            return false;
        }
        let sig = ed25519_dalek::Signature::from_bytes(&sig.bytes);
        self.key.verify_strict(fingerprint.as_bytes(), &sig).is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, STANDARD.encode(self.key.as_bytes()))
    }
}

/// A named signature, `<key name>:<base64(64 bytes)>`, as in narinfo `Sig:` lines.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Signature {
    key_name: String,
    bytes: [u8; 64],
}

impl Signature {
    /// Parses `<key name>:<base64>`; surrounding whitespace is ignored.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (key_name, bytes) = parse_named::<64>(s, SIGNATURE)?;
        Ok(Self { key_name, bytes })
    }

    /// The name of the key that made this signature.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The raw 64 signature bytes.
    pub fn bytes(&self) -> &[u8; 64] {
        &self.bytes
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key_name, STANDARD.encode(self.bytes))
    }
}

#[cfg(test)]
#[path = "signing_tests.rs"]
mod tests;
