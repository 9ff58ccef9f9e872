//! Store paths: `/nix/store/<hash>-<name>`.
//!
//! The hash is 20 bytes printed as 32 nixbase32 characters. The name is 1 to 211 characters of
//! `[A-Za-z0-9+\-._?=]`. As in current Nix (NixOS/nix#9867), the names `.` and `..` and names
//! starting with `.-` or `..-` are rejected, while other names may start with a dot (Nix 2.8
//! creates `<hash>-.foo`; only Nix 2.19 rejected every leading dot). Only the default store
//! directory [`STORE_DIR`] is supported.

use std::fmt;
use std::str::FromStr;

use crate::nixbase32;

/// The only store directory this crate handles.
pub const STORE_DIR: &str = "/nix/store";

/// Length of a store path hash in bytes.
const HASH_BYTES: usize = 20;
/// Length of a store path hash in nixbase32 characters.
const HASH_CHARS: usize = nixbase32::encoded_len(HASH_BYTES);
/// Longest allowed name, as in Nix.
const MAX_NAME_LEN: usize = 211;

/// Why a string is not a valid store path or part of one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StorePathError {
    /// The hash part does not have 32 characters.
    #[error("store path hash must be 32 nixbase32 characters, got {length}")]
    HashLength {
        /// The length of the hash part in bytes.
        length: usize,
    },
    /// The hash part is not valid nixbase32.
    #[error("store path hash is not valid nixbase32: {0}")]
    HashEncoding(nixbase32::DecodeError),
    /// The name part is empty.
    #[error("store path name is empty")]
    EmptyName,
    /// The name part is longer than 211 characters.
    #[error("store path name is {length} characters long (maximum 211)")]
    NameTooLong {
        /// The length of the name in bytes.
        length: usize,
    },
    /// The name contains a character outside `[A-Za-z0-9+\-._?=]`.
    #[error("store path name {name:?} contains invalid character {ch:?}")]
    NameInvalidChar {
        /// The offending name.
        name: String,
        /// The first invalid character.
        ch: char,
    },
    /// The name is `.` or `..`, or starts with `.-` or `..-`.
    #[error("store path name {name:?} is not allowed (\".\", \"..\", \".-*\" and \"..-*\" are reserved)")]
    NameReserved {
        /// The offending name.
        name: String,
    },
    /// The absolute path does not start with `/nix/store/`.
    #[error("store path {path:?} is not directly inside /nix/store")]
    NotInStoreDir {
        /// The offending path.
        path: String,
    },
    /// The base name is not `<32-char hash>-<name>`.
    #[error("store path base name {base_name:?} is not of the form <32-character hash>-<name>")]
    InvalidBaseName {
        /// The offending base name.
        base_name: String,
    },
}

/// 20-byte store path hash; text form is 32 nixbase32 chars.
///
/// Ordered like the text form (nixbase32 prints the last byte first), so sorted store paths come
/// out in Nix's order, the order of narinfo `References` and fingerprints.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct StorePathHash(pub [u8; 20]);

impl Ord for StorePathHash {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.iter().rev().cmp(other.0.iter().rev())
    }
}

impl PartialOrd for StorePathHash {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl StorePathHash {
    /// Parses exactly 32 nixbase32 characters.
    pub fn parse(s: &str) -> Result<Self, StorePathError> {
        if s.len() != HASH_CHARS {
            return Err(StorePathError::HashLength { length: s.len() });
        }
        nixbase32::decode_fixed::<HASH_BYTES>(s)
            .map(Self)
            .map_err(StorePathError::HashEncoding)
    }
}

impl fmt::Display for StorePathHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&nixbase32::encode(&self.0))
    }
}

impl FromStr for StorePathHash {
    type Err = StorePathError;

    fn from_str(s: &str) -> Result<Self, StorePathError> {
        Self::parse(s)
    }
}

/// A store path: hash + name. Display is the base name `<hash>-<name>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct StorePath {
    hash: StorePathHash,
    name: String,
}

impl StorePath {
    /// Builds a store path from a hash and a name, validating the name.
    pub fn new(hash: StorePathHash, name: &str) -> Result<Self, StorePathError> {
        validate_name(name)?;
        Ok(Self {
            hash,
            name: name.to_owned(),
        })
    }

    /// Parses `/nix/store/<hash>-<name>`.
    pub fn from_absolute(s: &str) -> Result<Self, StorePathError> {
        let base_name = s
            .strip_prefix(STORE_DIR)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStoreDir { path: s.to_owned() })?;
        Self::from_base_name(base_name)
    }

    /// Parses `<hash>-<name>`.
    pub fn from_base_name(s: &str) -> Result<Self, StorePathError> {
        // nixbase32 has no '-', so the first dash ends the hash.
        let (hash, name) = s.split_once('-').ok_or_else(|| StorePathError::InvalidBaseName {
            base_name: s.to_owned(),
        })?;
        Self::new(StorePathHash::parse(hash)?, name)
    }

    /// The hash part.
    pub fn hash(&self) -> &StorePathHash {
        &self.hash
    }

    /// The name part.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/nix/store/<hash>-<name>`.
    pub fn to_absolute(&self) -> String {
        format!("{STORE_DIR}/{self}")
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.hash, self.name)
    }
}

/// Checks a store path name against Nix's rules.
pub(crate) fn validate_name(name: &str) -> Result<(), StorePathError> {
    if name.is_empty() {
        return Err(StorePathError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StorePathError::NameTooLong { length: name.len() });
    }
    if let Some(ch) = name
        .chars()
        .find(|&c| !c.is_ascii_alphanumeric() && !"+-._?=".contains(c))
    {
        return Err(StorePathError::NameInvalidChar {
            name: name.to_owned(),
            ch,
        });
    }
    let reserved = matches!(name, "." | "..") || name.starts_with(".-") || name.starts_with("..-");
    if reserved {
        return Err(StorePathError::NameReserved {
            name: name.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "7qxb8wbwqha95lbfrcj97j6fb8wbywa4";

    fn base(name: &str) -> String {
        format!("{HASH}-{name}")
    }

    #[test]
    fn parses_real_paths() {
        let p = StorePath::from_absolute("/nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-leaf").unwrap();
        assert_eq!(p.name(), "leaf");
        assert_eq!(p.hash().to_string(), HASH);
        assert_eq!(p.to_string(), base("leaf"));
        assert_eq!(p.to_absolute(), format!("/nix/store/{HASH}-leaf"));
        assert_eq!(StorePath::from_base_name(&p.to_string()), Ok(p.clone()));
        assert_eq!(StorePath::new(*p.hash(), "leaf"), Ok(p));
        assert_eq!(HASH.parse::<StorePathHash>().unwrap().to_string(), HASH);
    }

    #[test]
    fn orders_like_text() {
        let mut paths: Vec<StorePath> = (0u8..=255)
            .map(|i| {
                let bytes: [u8; 20] =
                    std::array::from_fn(|j| i.wrapping_mul(31).wrapping_add((j as u8).wrapping_mul(i)));
                StorePath::new(StorePathHash(bytes), if i % 2 == 0 { "a" } else { "b" }).unwrap()
            })
            .collect();
        paths.sort();
        let texts: Vec<String> = paths.iter().map(ToString::to_string).collect();
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(texts, sorted);
    }

    #[test]
    fn accepts_all_allowed_characters() {
        for name in [
            "a",
            "A-Z_0.9+?=",
            "hello-2.12.1",
            ".envrc",
            "..a",
            "-",
            "a..b",
            "x.drv",
        ] {
            assert!(StorePath::from_base_name(&base(name)).is_ok(), "{name}");
        }
        assert!(StorePath::from_base_name(&base(&"a".repeat(211))).is_ok());
        // Printed by Nix 2.8 for `builtins.toFile ".foo" "x"`; Nix >= 2.20 accepts it again.
        let dotted = StorePath::from_absolute("/nix/store/q144f75swlv405pb69crqqkdwiza7nlk-.foo").unwrap();
        assert_eq!(dotted.name(), ".foo");
    }

    #[test]
    fn rejects_invalid_names() {
        let cases = [
            ("", StorePathError::EmptyName),
            (
                "a/b",
                StorePathError::NameInvalidChar {
                    name: "a/b".into(),
                    ch: '/',
                },
            ),
            (
                "a b",
                StorePathError::NameInvalidChar {
                    name: "a b".into(),
                    ch: ' ',
                },
            ),
            (
                "caf\u{e9}",
                StorePathError::NameInvalidChar {
                    name: "caf\u{e9}".into(),
                    ch: '\u{e9}',
                },
            ),
            (
                "a%2e",
                StorePathError::NameInvalidChar {
                    name: "a%2e".into(),
                    ch: '%',
                },
            ),
            (".", StorePathError::NameReserved { name: ".".into() }),
            ("..", StorePathError::NameReserved { name: "..".into() }),
            (".-x", StorePathError::NameReserved { name: ".-x".into() }),
            ("..-x", StorePathError::NameReserved { name: "..-x".into() }),
        ];
        for (name, err) in cases {
            assert_eq!(StorePath::from_base_name(&base(name)), Err(err), "{name:?}");
        }
        let long = "a".repeat(212);
        assert_eq!(
            StorePath::from_base_name(&base(&long)),
            Err(StorePathError::NameTooLong { length: 212 })
        );
    }

    #[test]
    fn rejects_invalid_hashes() {
        let short = "7qxb8wbwqha95lbfrcj97j6fb8wbywa-leaf";
        assert_eq!(
            StorePath::from_base_name(short),
            Err(StorePathError::HashLength { length: 31 })
        );
        assert_eq!(
            StorePathHash::parse(&HASH[..31]),
            Err(StorePathError::HashLength { length: 31 })
        );
        assert_eq!(
            StorePathHash::parse(&base("")),
            Err(StorePathError::HashLength { length: 33 })
        );
        let upper = HASH.to_uppercase();
        assert!(matches!(
            StorePathHash::parse(&upper),
            Err(StorePathError::HashEncoding(_))
        ));
        assert!(matches!(
            StorePath::from_base_name(&format!("{upper}-x")),
            Err(StorePathError::HashEncoding(_))
        ));
        let bad_char = format!("e{}", &HASH[1..]);
        assert!(matches!(
            StorePathHash::parse(&bad_char),
            Err(StorePathError::HashEncoding(_))
        ));
    }

    #[test]
    fn rejects_malformed_base_and_absolute_names() {
        for s in [
            "",
            "leaf",
            HASH,
            &format!("{HASH}leaf"),
            &format!("{HASH}_leaf"),
            "\u{e9}\u{e9}",
        ] {
            assert_eq!(
                StorePath::from_base_name(s),
                Err(StorePathError::InvalidBaseName { base_name: s.into() }),
                "{s:?}"
            );
        }
        for s in [
            &base("x"),
            "/nix/store",
            "/nix/storeX/a",
            "/gnu/store/a",
            "nix/store/a",
        ] {
            assert_eq!(
                StorePath::from_absolute(s),
                Err(StorePathError::NotInStoreDir { path: s.into() })
            );
        }
        let nested = format!("/nix/store/{HASH}-x/sub");
        assert!(matches!(
            StorePath::from_absolute(&nested),
            Err(StorePathError::NameInvalidChar { ch: '/', .. })
        ));
        let dotdot = format!("/nix/store/../{HASH}-x");
        assert!(StorePath::from_absolute(&dotdot).is_err());
        assert!(StorePath::from_absolute(&format!("/nix/store//{HASH}-x")).is_err());
    }
}
