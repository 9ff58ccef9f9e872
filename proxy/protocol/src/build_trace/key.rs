//! Which build trace a path names, in either layout, and where it is kept.

use std::fmt;

use super::BuildTraceError;
use crate::{store_path::validate_name, Sha256Hash, StorePath};

/// Longest output name accepted (Nix's own outputs are `out`, `dev`, `lib`, `debug`, …); keeps
/// every storage path within 255 bytes.
pub const MAX_OUTPUT_NAME: usize = 128;

/// Hex digits of the derivation name's digest in a layout 2 storage path (80 bits).
const NAME_DIGEST: usize = 20;
const V1_DIR: &str = "realisations/";
const V2_DIR: &str = "build-trace-v2/";
const SUFFIX: &str = ".doi";

/// One output of one derivation, as a build trace path names it.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum BuildTraceKey {
    /// `realisations/sha256:<hex>!<output>.doi`: the derivation's hash modulo (Nix 2.4 to 2.34).
    Realisation { drv_hash: Sha256Hash, output: String },
    /// `build-trace-v2/<drv>/<output>.doi`: the resolved derivation's path (Nix 2.35+).
    V2 { drv: StorePath, output: String },
}

impl BuildTraceKey {
    /// Parses a path as it is requested, without the leading `/` and percent-decoded.
    pub fn parse(path: &str) -> Result<Self, BuildTraceError> {
        if let Some(file) = path.strip_prefix(V1_DIR) {
            return Self::parse_realisation(file);
        }
        let rest = path.strip_prefix(V2_DIR).ok_or(BuildTraceError::InvalidPath)?;
        let (drv, file) = rest.split_once('/').ok_or(BuildTraceError::InvalidPath)?;
        Self::parse_v2(drv, file)
    }

    /// Parses the part after `realisations/`: `sha256:<64 lowercase hex>!<output>.doi`.
    pub fn parse_realisation(file: &str) -> Result<Self, BuildTraceError> {
        let id = file.strip_suffix(SUFFIX).ok_or(BuildTraceError::InvalidPath)?;
        let (hash, output) = id.split_once('!').ok_or(BuildTraceError::InvalidPath)?;
        let hex = hash.strip_prefix("sha256:").ok_or(BuildTraceError::InvalidPath)?;
        Ok(Self::Realisation {
            drv_hash: parse_lower_hex(hex)?,
            output: output_name(output)?,
        })
    }

    /// Parses the two parts after `build-trace-v2/`: a derivation's base name and `<output>.doi`.
    pub fn parse_v2(drv: &str, file: &str) -> Result<Self, BuildTraceError> {
        let drv = StorePath::from_base_name(drv).map_err(|_| BuildTraceError::InvalidPath)?;
        if !drv.name().ends_with(".drv") || drv.name().len() == ".drv".len() {
            return Err(BuildTraceError::InvalidPath);
        }
        let output = file.strip_suffix(SUFFIX).ok_or(BuildTraceError::InvalidPath)?;
        Ok(Self::V2 {
            drv,
            output: output_name(output)?,
        })
    }

    /// The output's name.
    pub fn output(&self) -> &str {
        match self {
            Self::Realisation { output, .. } | Self::V2 { output, .. } => output,
        }
    }

    /// Where the trace is kept, a name of at most 255 bytes, one per key:
    /// `realisations/<hex>!<output>.doi` (sharded by the hash, not all under `sha256:`) or
    /// `build-trace-v2/<drv hash>-<name digest>!<output>.doi`, the name digest being the first
    /// [`NAME_DIGEST`] hex digits of the SHA-256 of the derivation's name (the full name would
    /// not fit; the hash alone would let another name with the same hash share the slot).
    pub fn storage_path(&self) -> String {
        match self {
            Self::Realisation { drv_hash, output } => {
                format!("{V1_DIR}{}!{output}{SUFFIX}", drv_hash.to_hex())
            }
            Self::V2 { drv, output } => {
                let digest = Sha256Hash::digest(drv.name().as_bytes()).to_hex();
                let digest = digest.get(..NAME_DIGEST).unwrap_or(&digest);
                format!("{V2_DIR}{}-{digest}!{output}{SUFFIX}", drv.hash())
            }
        }
    }

    /// Whether `path` is a storage path [`storage_path`](Self::storage_path) can return: a
    /// check for names read back from a database before they are used as object names.
    pub fn is_storage_path(path: &str) -> bool {
        let named = |dir: &str, id: &dyn Fn(&str) -> bool| {
            path.strip_prefix(dir)
                .and_then(|rest| rest.strip_suffix(SUFFIX))
                .and_then(|rest| rest.split_once('!'))
                .is_some_and(|(hash, output)| id(hash) && output_name(output).is_ok())
        };
        let v2_id = |id: &str| {
            id.split_once('-').is_some_and(|(hash, digest)| {
                crate::StorePathHash::parse(hash).is_ok()
                    && digest.len() == NAME_DIGEST
                    && digest
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
        };
        named(V1_DIR, &|hash| parse_lower_hex(hash).is_ok()) || named(V2_DIR, &v2_id)
    }
}

/// The path it is served at, which Nix asks for (with the `!` unescaped).
impl fmt::Display for BuildTraceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Realisation { drv_hash, output } => {
                write!(f, "{V1_DIR}sha256:{}!{output}{SUFFIX}", drv_hash.to_hex())
            }
            Self::V2 { drv, output } => write!(f, "{V2_DIR}{drv}/{output}{SUFFIX}"),
        }
    }
}

/// The hash as Nix prints it: 64 lowercase hex digits, one spelling per hash.
fn parse_lower_hex(hex: &str) -> Result<Sha256Hash, BuildTraceError> {
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(BuildTraceError::InvalidPath);
    }
    format!("sha256:{hex}")
        .parse::<Sha256Hash>()
        .map_err(|_| BuildTraceError::InvalidPath)
}

/// An output name: a store path name (Nix's rule for outputs) of at most [`MAX_OUTPUT_NAME`].
fn output_name(name: &str) -> Result<String, BuildTraceError> {
    if name.len() > MAX_OUTPUT_NAME || validate_name(name).is_err() {
        return Err(BuildTraceError::InvalidPath);
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "d94f7af9eb726a2f3d6a5b85f1d13d7c7d2683433f442535b28f86ed88635808";
    const DRV: &str = "9sgrhzh75qdm6n0b91q0szqr9v0s59ah-ca-top.drv";

    #[test]
    fn both_layouts_parse_and_print_as_served() {
        for path in [
            format!("realisations/sha256:{HEX}!out.doi"),
            format!("build-trace-v2/{DRV}/dev.doi"),
        ] {
            let key = BuildTraceKey::parse(&path).unwrap();
            assert_eq!(key.to_string(), path);
            assert!(
                BuildTraceKey::is_storage_path(&key.storage_path()),
                "{}",
                key.storage_path()
            );
            assert!(key.storage_path().len() <= 255);
        }
        let v2 = BuildTraceKey::parse(&format!("build-trace-v2/{DRV}/dev.doi")).unwrap();
        let stored = v2.storage_path();
        assert!(
            stored.starts_with("build-trace-v2/9sgrhzh75qdm6n0b91q0szqr9v0s59ah-"),
            "{stored}"
        );
        assert!(stored.ends_with("!dev.doi"), "{stored}");
        // Another name with the same hash (no real derivation has one) is kept apart.
        let renamed =
            BuildTraceKey::parse("build-trace-v2/9sgrhzh75qdm6n0b91q0szqr9v0s59ah-x.drv/dev.doi").unwrap();
        assert_ne!(renamed.storage_path(), stored);
        assert_eq!(v2.output(), "dev");
    }

    #[test]
    fn anything_else_is_refused() {
        let long = "o".repeat(MAX_OUTPUT_NAME + 1);
        for path in [
            format!("realisations/sha256:{HEX}!out"),
            format!("realisations/sha256:{HEX}out.doi"),
            format!("realisations/{HEX}!out.doi"),
            format!("realisations/sha256:{}!out.doi", HEX.to_uppercase()),
            format!("realisations/sha256:{}!out.doi", &HEX[1..]),
            format!("realisations/sha256:{HEX}!.doi"),
            format!("realisations/sha256:{HEX}!a/b.doi"),
            format!("realisations/sha256:{HEX}!{long}.doi"),
            format!("realisations/md5:{HEX}!out.doi"),
            format!("build-trace-v2/{DRV}/out"),
            format!("build-trace-v2/{DRV}/../out.doi"),
            "build-trace-v2/9sgrhzh75qdm6n0b91q0szqr9v0s59ah-ca-top/out.doi".to_owned(),
            "build-trace-v2/9sgrhzh75qdm6n0b91q0szqr9v0s59ah-.drv/out.doi".to_owned(),
            format!("build-trace-v2/{DRV}/out!x.doi"),
            format!("build-trace-v2/{DRV}"),
            format!("traces/{DRV}/out.doi"),
        ] {
            assert_eq!(
                BuildTraceKey::parse(&path),
                Err(BuildTraceError::InvalidPath),
                "{path}"
            );
        }
        for stored in [
            "realisations/../x!out.doi",
            "build-trace-v2/9sgrhzh75qdm6n0b91q0szqr9v0s59ah-ca.drv!out.doi",
            "build-trace-v2/9sgrhzh75qdm6n0b91q0szqr9v0s59ah!out/x.doi",
            "build-trace-v2/9sgrhzh75qdm6n0b91q0szqr9v0s59ah!out.doi",
            "build-trace-v2/9sgrhzh75qdm6n0b91q0szqr9v0s59ah-0123456789ABCDEF0123!out.doi",
            "log/9sgrhzh75qdm6n0b91q0szqr9v0s59ah-ca.drv",
        ] {
            assert!(!BuildTraceKey::is_storage_path(stored), "{stored}");
        }
    }
}
