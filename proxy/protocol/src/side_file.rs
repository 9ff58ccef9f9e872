//! Files a binary cache serves beside narinfos and NARs: NAR listings (`/<hash>.ls`, the JSON
//! `nix copy --to '…?write-nar-listing=true'` writes and nix-index reads) and build logs
//! (`/log/<drv basename>`, which `nix log` reads and `nix store copy-log` writes).
//!
//! Parsing accepts exactly these shapes, so the path of a parsed file is safe as an object name.

use std::fmt;

use crate::{StorePath, StorePathHash};

/// MIME type of NAR listings.
pub const MIME_LISTING: &str = "application/json";
/// MIME type of build logs.
pub const MIME_LOG: &str = "text/plain; charset=utf-8";

/// A listing or a build log, named as the cache serves it.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum SideFile {
    /// `<hash>.ls`: the file listing of the NAR of the store path with this hash.
    Listing(StorePathHash),
    /// `log/<hash>-<name>.drv`: the build log of this derivation.
    Log(StorePath),
}

/// Why a request path is not a listing or a log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SideFileError {
    /// Not `<32 nixbase32 chars>.ls`.
    #[error("listing name must be 32 nixbase32 characters followed by .ls")]
    InvalidListingName,
    /// Not `<hash>-<name>.drv`.
    #[error("build log name must be a derivation's store path base name (<hash>-<name>.drv)")]
    InvalidLogName,
}

impl SideFile {
    /// Parses a top-level name `<hash>.ls`.
    pub fn parse_listing(file_name: &str) -> Result<Self, SideFileError> {
        let hash = file_name
            .strip_suffix(".ls")
            .ok_or(SideFileError::InvalidListingName)?;
        StorePathHash::parse(hash)
            .map(Self::Listing)
            .map_err(|_| SideFileError::InvalidListingName)
    }

    /// Parses the part after `log/`: a derivation's base name.
    pub fn parse_log(drv: &str) -> Result<Self, SideFileError> {
        match StorePath::from_base_name(drv) {
            Ok(path) if path.name().ends_with(".drv") && path.name().len() > ".drv".len() => {
                Ok(Self::Log(path))
            }
            _ => Err(SideFileError::InvalidLogName),
        }
    }

    /// Parses a path as it is requested, without the leading `/`.
    pub fn parse(path: &str) -> Result<Self, SideFileError> {
        match path.strip_prefix("log/") {
            Some(drv) => Self::parse_log(drv),
            None => Self::parse_listing(path),
        }
    }

    /// The MIME type it is served with.
    pub fn mime(&self) -> &'static str {
        match self {
            Self::Listing(_) => MIME_LISTING,
            Self::Log(_) => MIME_LOG,
        }
    }

    /// What it is, for messages and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Listing(_) => "listing",
            Self::Log(_) => "log",
        }
    }
}

/// The path it is served under, without the leading `/`: `<hash>.ls` or `log/<drv>`.
impl fmt::Display for SideFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Listing(hash) => write!(f, "{hash}.ls"),
            Self::Log(drv) => write!(f, "log/{drv}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "7qxb8wbwqha95lbfrcj97j6fb8wbywa4";

    #[test]
    fn listings_and_logs_parse_and_print() {
        for path in [format!("{HASH}.ls"), format!("log/{HASH}-hello-2.12.drv")] {
            let file = SideFile::parse(&path).unwrap();
            assert_eq!(file.to_string(), path);
        }
        assert_eq!(SideFile::parse(&format!("{HASH}.ls")).unwrap().kind(), "listing");
        assert_eq!(
            SideFile::parse_log(&format!("{HASH}-a.drv")).unwrap().mime(),
            MIME_LOG
        );
    }

    #[test]
    fn bad_names_are_refused() {
        let listings = [
            format!("{HASH}.LS"),
            format!("{HASH}.ls.br"),
            format!("../{HASH}.ls"),
            format!("{}.ls", &HASH[..31]),
            format!("{HASH}-x.ls"),
            ".ls".into(),
            String::new(),
        ];
        for name in listings {
            assert_eq!(
                SideFile::parse(&name),
                Err(SideFileError::InvalidListingName),
                "{name}"
            );
        }
        let logs = [
            format!("log/{HASH}-hello"),
            format!("log/{HASH}-.drv"),
            format!("log/{HASH}-a/b.drv"),
            format!("log/../{HASH}-a.drv"),
            format!("log/{HASH}-..drv/x"),
            format!("log/{}-a.drv", &HASH[..31]),
            format!("log/{HASH}-a%2f.drv"),
            format!("log/{HASH}-{}.drv", "a".repeat(208)),
            "log/".into(),
        ];
        for name in logs {
            assert_eq!(
                SideFile::parse(&name),
                Err(SideFileError::InvalidLogName),
                "{name}"
            );
        }
        // The longest name Nix allows still fits.
        assert!(SideFile::parse(&format!("log/{HASH}-{}.drv", "a".repeat(207))).is_ok());
    }
}
