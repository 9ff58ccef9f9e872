//! Request paths of the binary cache HTTP protocol, validated before any I/O.
//!
//! A cache serves `/nix-cache-info`, `/<store path hash>.narinfo` and `/nar/<file>`, where a NAR
//! file is `<52-char nixbase32 file hash>.nar` plus `""`, `.xz`, `.zst` or `.bz2`. Parsing accepts
//! exactly these shapes, so a parsed name never contains `/`, `.`-segments or escapes and is safe
//! to use as a file name.

use crate::{nixbase32, Compression, Sha256Hash, StorePathHash};

/// MIME type of narinfo responses.
pub const MIME_NARINFO: &str = "text/x-nix-narinfo";
/// MIME type of NAR responses.
pub const MIME_NAR: &str = "application/x-nix-nar";
/// MIME type of `nix-cache-info` responses.
pub const MIME_CACHE_INFO: &str = "text/x-nix-cache-info";

/// Why a request path is not a valid narinfo or NAR file name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// Not `<32 nixbase32 chars>.narinfo`.
    #[error("narinfo name must be 32 nixbase32 characters followed by .narinfo")]
    InvalidNarinfoName,
    /// Not `<52 nixbase32 chars>.nar...`.
    #[error("NAR file name must be 52 nixbase32 characters followed by .nar, .nar.xz, .nar.zst or .nar.bz2")]
    InvalidNarFileName,
    /// A well-formed NAR file name with an unsupported compression extension, e.g. `.nar.gz`.
    #[error("unsupported NAR compression extension (expected .nar, .nar.xz, .nar.zst or .nar.bz2)")]
    UnsupportedNarExtension,
}

/// The file part of a NAR URL: "<52 nixbase32 chars>.nar[.xz|.zst|.bz2]".
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct NarFile {
    /// SHA-256 of the (compressed) file, i.e. the narinfo `FileHash`.
    pub hash: Sha256Hash,
    /// Compression, from the extension.
    pub compression: Compression,
}

impl NarFile {
    /// Parses a NAR file name such as `<nixbase32>.nar.xz`.
    pub fn parse(file_name: &str) -> Result<Self, PathError> {
        let hash_len = nixbase32::encoded_len(32);
        let (hash, rest) = match (file_name.get(..hash_len), file_name.get(hash_len..)) {
            (Some(hash), Some(rest)) => (hash, rest),
            _ => return Err(PathError::InvalidNarFileName),
        };
        let hash = Sha256Hash::from_nixbase32(hash).map_err(|_| PathError::InvalidNarFileName)?;
        let ext = rest.strip_prefix(".nar").ok_or(PathError::InvalidNarFileName)?;
        let compression = Compression::from_extension(ext).ok_or(PathError::UnsupportedNarExtension)?;
        Ok(Self { hash, compression })
    }

    /// `<nixbase32>.nar` plus the compression extension, e.g. `<nixbase32>.nar.xz`.
    ///
    /// [`Compression::Other`] has no extension and gives a plain `.nar` name.
    pub fn file_name(&self) -> String {
        let ext = self.compression.extension().unwrap_or("");
        format!("{}.nar{ext}", self.hash.to_nixbase32())
    }

    /// The narinfo `URL:` value Nix uses for this file: `nar/<file name>`.
    pub fn url(&self) -> String {
        format!("nar/{}", self.file_name())
    }
}

/// Parses a narinfo request name `<32 nixbase32 chars>.narinfo`.
pub fn parse_narinfo_name(file_name: &str) -> Result<StorePathHash, PathError> {
    let hash = file_name
        .strip_suffix(".narinfo")
        .ok_or(PathError::InvalidNarinfoName)?;
    StorePathHash::parse(hash).map_err(|_| PathError::InvalidNarinfoName)
}

/// The narinfo file name for a store path hash: `<hash>.narinfo`.
pub fn narinfo_name(hash: &StorePathHash) -> String {
    format!("{hash}.narinfo")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAR_HASH: &str = "09kxyd68d2nylk7ims23pj3i09s4nnv9p3dv6iij1q9canv42w6d";
    const PATH_HASH: &str = "7qxb8wbwqha95lbfrcj97j6fb8wbywa4";

    #[test]
    fn nar_files_parse_and_print() {
        for (ext, compression) in [
            ("", Compression::None),
            (".xz", Compression::Xz),
            (".zst", Compression::Zstd),
            (".bz2", Compression::Bzip2),
        ] {
            let name = format!("{NAR_HASH}.nar{ext}");
            let file = NarFile::parse(&name).unwrap();
            assert_eq!(file.compression, compression);
            assert_eq!(file.hash.to_nixbase32(), NAR_HASH);
            assert_eq!(file.file_name(), name);
            assert_eq!(file.url(), format!("nar/{name}"));
        }
        let other = NarFile {
            hash: Sha256Hash([0; 32]),
            compression: Compression::Other("br".into()),
        };
        assert_eq!(other.file_name(), format!("{}.nar", "0".repeat(52)));
    }

    #[test]
    fn nar_files_reject_bad_names() {
        let bad = [
            String::new(),
            "nar/../../etc/passwd".into(),
            format!("../{NAR_HASH}.nar"),
            format!("{}.nar", &NAR_HASH[..51]),
            format!("{NAR_HASH}0.nar"),
            format!("{}.nar", NAR_HASH.to_uppercase()),
            format!("%2e%2e{}.nar", &NAR_HASH[6..]),
            format!("{NAR_HASH}.narinfo"),
            format!("{NAR_HASH}.NAR"),
            NAR_HASH.to_owned(),
            format!("{NAR_HASH}.nar/x"),
            format!("2{}.nar", &NAR_HASH[1..]),
            format!("{}\u{e9}.nar", &NAR_HASH[..51]),
        ];
        for name in bad {
            assert!(NarFile::parse(&name).is_err(), "{name:?}");
        }
        for ext in [".gz", ".zstd", ".xz.xz", ".xz/", ".XZ", ".br", "."] {
            let name = format!("{NAR_HASH}.nar{ext}");
            assert_eq!(
                NarFile::parse(&name),
                Err(PathError::UnsupportedNarExtension),
                "{name}"
            );
        }
    }

    #[test]
    fn narinfo_names() {
        let name = format!("{PATH_HASH}.narinfo");
        let hash = parse_narinfo_name(&name).unwrap();
        assert_eq!(hash.to_string(), PATH_HASH);
        assert_eq!(narinfo_name(&hash), name);
        let bad = [
            "../x.narinfo".to_owned(),
            "%2e%2e.narinfo".into(),
            format!("../{PATH_HASH}.narinfo"),
            format!("%2e%2e/{PATH_HASH}.narinfo"),
            format!("{}.narinfo", PATH_HASH.to_uppercase()),
            format!("{}.narinfo", &PATH_HASH[..31]),
            format!("{PATH_HASH}0.narinfo"),
            format!("{PATH_HASH}.narinfo.xz"),
            format!("{PATH_HASH}.NARINFO"),
            format!("{PATH_HASH}-leaf.narinfo"),
            PATH_HASH.to_owned(),
            ".narinfo".into(),
            String::new(),
        ];
        for name in bad {
            assert_eq!(
                parse_narinfo_name(&name),
                Err(PathError::InvalidNarinfoName),
                "{name:?}"
            );
        }
        assert_eq!(
            PathError::InvalidNarinfoName.to_string(),
            "narinfo name must be 32 nixbase32 characters followed by .narinfo"
        );
    }
}
