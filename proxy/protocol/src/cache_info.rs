//! `nix-cache-info`, the file at the root of a binary cache.
//!
//! `Key: value` lines: `StoreDir` (required), `WantMassQuery` (`1` means true, anything else
//! false) and `Priority` (an integer; lower is preferred). Unknown keys and lines without `:` are
//! ignored, as Nix does. Nix's own file caches write only `StoreDir: /nix/store`.

use std::fmt;

/// Why a `nix-cache-info` could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CacheInfoError {
    /// There is no `StoreDir` line.
    #[error("nix-cache-info is missing required field StoreDir")]
    MissingStoreDir,
    /// A known field appears more than once.
    #[error("nix-cache-info field {0} appears more than once")]
    DuplicateField(String),
    /// `Priority` is not a non-negative integer.
    #[error("nix-cache-info field Priority is not a non-negative integer: {value:?}")]
    InvalidPriority {
        /// The offending value.
        value: String,
    },
}

/// nix-cache-info
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CacheInfo {
    /// The store directory the cache serves (`StoreDir:`), normally `/nix/store`.
    pub store_dir: String,
    /// Whether clients may query many paths at once (`WantMassQuery: 1`).
    pub want_mass_query: bool,
    /// Substituter priority (`Priority:`); lower is preferred.
    pub priority: Option<u32>,
}

impl Default for CacheInfo {
    /// `/nix/store`, no mass query, no priority.
    fn default() -> Self {
        Self {
            store_dir: crate::STORE_DIR.to_owned(),
            want_mass_query: false,
            priority: None,
        }
    }
}

impl CacheInfo {
    /// Parses `nix-cache-info` text. Unknown keys are ignored; `StoreDir` is required.
    pub fn parse(text: &str) -> Result<Self, CacheInfoError> {
        let mut store_dir = None;
        let mut want_mass_query = None;
        let mut priority = None;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let seen_before = match key {
                "StoreDir" => store_dir.replace(value.to_owned()).is_some(),
                "WantMassQuery" => want_mass_query.replace(value == "1").is_some(),
                "Priority" => priority.replace(parse_priority(value)?).is_some(),
                _ => false,
            };
            if seen_before {
                return Err(CacheInfoError::DuplicateField(key.to_owned()));
            }
        }
        Ok(Self {
            store_dir: store_dir.ok_or(CacheInfoError::MissingStoreDir)?,
            want_mass_query: want_mass_query.unwrap_or(false),
            priority,
        })
    }
}

/// Parses a decimal `u32` (no sign), as `Priority:` requires.
fn parse_priority(value: &str) -> Result<u32, CacheInfoError> {
    let digits_only = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    value
        .parse()
        .ok()
        .filter(|_| digits_only)
        .ok_or_else(|| CacheInfoError::InvalidPriority {
            value: value.to_owned(),
        })
}

impl fmt::Display for CacheInfo {
    /// `StoreDir: ...\n`, then `WantMassQuery: 1\n` if set, then `Priority: N\n` if set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "StoreDir: {}", self.store_dir)?;
        if self.want_mass_query {
            writeln!(f, "WantMassQuery: 1")?;
        }
        if let Some(priority) = self.priority {
            writeln!(f, "Priority: {priority}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_cache_nixos_org_style() {
        let text = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n";
        let info = CacheInfo::parse(text).unwrap();
        let expected = CacheInfo {
            store_dir: "/nix/store".into(),
            want_mass_query: true,
            priority: Some(40),
        };
        assert_eq!(info, expected);
        assert_eq!(info.to_string(), text);
    }

    #[test]
    fn real_nix_file_cache_round_trips() {
        let text = include_str!("../testdata/nix-cache-info");
        let info = CacheInfo::parse(text).unwrap();
        assert_eq!(info, CacheInfo::default());
        assert_eq!(info.to_string(), text);
    }

    #[test]
    fn lenient_like_nix() {
        let info =
            CacheInfo::parse("garbage\nFoo: bar\r\nStoreDir:/nix/store\r\nWantMassQuery: yes\n").unwrap();
        assert_eq!(info, CacheInfo::default());
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            CacheInfo::parse("WantMassQuery: 1\n"),
            Err(CacheInfoError::MissingStoreDir)
        );
        for value in ["-1", "+4", "x", "", "99999999999"] {
            let text = format!("StoreDir: /nix/store\nPriority: {value}\n");
            assert_eq!(
                CacheInfo::parse(&text),
                Err(CacheInfoError::InvalidPriority { value: value.into() })
            );
        }
        let twice = "StoreDir: /nix/store\nStoreDir: /gnu/store\n";
        assert_eq!(
            CacheInfo::parse(twice),
            Err(CacheInfoError::DuplicateField("StoreDir".into()))
        );
        let twice = "StoreDir: /nix/store\nPriority: 1\nPriority: 2\n";
        assert_eq!(
            CacheInfo::parse(twice),
            Err(CacheInfoError::DuplicateField("Priority".into()))
        );
    }
}
