//! NAR compression methods as named in narinfo `Compression:` lines.
//!
//! Nix writes `none`, `xz`, `zstd` or `bzip2` (among others such as `br` that this crate does not
//! handle) and names the NAR file `<file hash>.nar` plus `""`, `.xz`, `.zst` or `.bz2`.

use std::fmt;

/// Compression of a NAR file as named in narinfo "Compression:".
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Compression {
    /// Uncompressed (`none`, file `.nar`).
    None,
    /// xz (`xz`, file `.nar.xz`).
    Xz,
    /// Zstandard (`zstd`, file `.nar.zst`).
    Zstd,
    /// bzip2 (`bzip2`, file `.nar.bz2`); Nix's default when narinfo has no `Compression:`.
    Bzip2,
    /// Any other method, kept verbatim; not supported by this project.
    Other(String),
}

impl Compression {
    /// Parses a `Compression:` value: `none`, `xz`, `zstd`, `bzip2`, else [`Compression::Other`].
    pub fn parse(s: &str) -> Self {
        match s {
            "none" => Self::None,
            "xz" => Self::Xz,
            "zstd" => Self::Zstd,
            "bzip2" => Self::Bzip2,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The `Compression:` value.
    pub fn as_str(&self) -> &str {
        match self {
            Self::None => "none",
            Self::Xz => "xz",
            Self::Zstd => "zstd",
            Self::Bzip2 => "bzip2",
            Self::Other(s) => s,
        }
    }

    /// The suffix after `.nar` in NAR file names (`""` for none); `None` for [`Compression::Other`].
    pub fn extension(&self) -> Option<&'static str> {
        match self {
            Self::None => Some(""),
            Self::Xz => Some(".xz"),
            Self::Zstd => Some(".zst"),
            Self::Bzip2 => Some(".bz2"),
            Self::Other(_) => None,
        }
    }

    /// Inverse of [`Compression::extension`]: `""`, `.xz`, `.zst` or `.bz2`.
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext {
            "" => Some(Self::None),
            ".xz" => Some(Self::Xz),
            ".zst" => Some(Self::Zstd),
            ".bz2" => Some(Self::Bzip2),
            _ => None,
        }
    }

    /// True for every method except [`Compression::Other`].
    pub fn is_supported(&self) -> bool {
        !matches!(self, Self::Other(_))
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_extensions_round_trip() {
        for c in [
            Compression::None,
            Compression::Xz,
            Compression::Zstd,
            Compression::Bzip2,
        ] {
            assert_eq!(Compression::parse(c.as_str()), c);
            let ext = c.extension().unwrap();
            assert_eq!(Compression::from_extension(ext), Some(c.clone()));
            assert!(c.is_supported());
            assert_eq!(c.to_string(), c.as_str());
        }
    }

    #[test]
    fn other_methods() {
        let br = Compression::parse("br");
        assert_eq!(br, Compression::Other("br".into()));
        assert_eq!(br.as_str(), "br");
        assert_eq!(br.extension(), None);
        assert!(!br.is_supported());
        assert_eq!(Compression::parse("XZ"), Compression::Other("XZ".into()));
        for ext in [".gz", ".br", "xz", ".zstd", ".XZ", ".nar"] {
            assert_eq!(Compression::from_extension(ext), None, "{ext}");
        }
    }
}
