//! narinfo files (`<hash>.narinfo`) and their signature fingerprints.
//!
//! A narinfo is a list of `Key: value` lines. Nix writes them in this order: `StorePath`
//! (absolute), `URL`, `Compression`, `FileHash`, `FileSize`, `NarHash`, `NarSize`, `References`
//! (space-separated base names, written even when empty as `References: `), `Deriver` (base name),
//! one `Sig` per signature, `CA`. Parsing follows Nix: unknown keys are ignored, `StorePath`,
//! `URL`, `NarHash` and a non-zero `NarSize` are required, a missing `Compression` means bzip2 and
//! `Deriver: unknown-deriver` means none. Unlike Nix, a repeated single-valued key is an error.
//!
//! Signatures cover the fingerprint
//! `1;<store path>;<nar hash>;<nar size>;<comma-separated absolute references>`.

use std::fmt;

use crate::{Compression, PublicKey, Sha256Hash, Signature, SigningKey, StorePath};

/// Why a narinfo could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NarInfoError {
    /// A required field is absent.
    #[error("narinfo is missing required field {0}")]
    MissingField(&'static str),
    /// A single-valued field appears more than once.
    #[error("narinfo field {0} appears more than once")]
    DuplicateField(String),
    /// A line is not of the form `Key: value`.
    #[error("narinfo line {line} is not of the form \"Key: value\"")]
    InvalidLine {
        /// 1-based line number.
        line: usize,
    },
    /// A field's value is malformed.
    #[error("narinfo field {field} is invalid: {reason}")]
    InvalidField {
        /// The field name, e.g. `"NarHash"`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// A parsed narinfo.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NarInfo {
    /// The store path described (`StorePath:`).
    pub store_path: StorePath,
    /// Location of the NAR file relative to the cache root (`URL:`), e.g. `nar/<hash>.nar.xz`.
    pub url: String,
    /// Compression of the NAR file (`Compression:`).
    pub compression: Compression,
    /// Hash of the (compressed) NAR file (`FileHash:`).
    pub file_hash: Option<Sha256Hash>,
    /// Size of the (compressed) NAR file in bytes (`FileSize:`).
    pub file_size: Option<u64>,
    /// Hash of the uncompressed NAR (`NarHash:`).
    pub nar_hash: Sha256Hash,
    /// Size of the uncompressed NAR in bytes (`NarSize:`).
    pub nar_size: u64,
    /// Store paths referenced by this one, in the order listed (`References:`).
    pub references: Vec<StorePath>,
    /// The derivation that built this path, if known (`Deriver:`).
    pub deriver: Option<StorePath>,
    /// Signatures over the fingerprint (`Sig:`, repeated).
    pub sigs: Vec<Signature>,
    /// Content address, verbatim (`CA:`), e.g. `fixed:r:sha256:<hash>`.
    pub ca: Option<String>,
}

/// The fingerprint Nix signs: `1;<abs path>;<nar hash>;<nar size>;<abs refs joined by ','>`.
///
/// References are used in the given order; Nix lists them sorted (as `StorePath`'s `Ord` does).
pub fn fingerprint(
    store_path: &StorePath,
    nar_hash: &Sha256Hash,
    nar_size: u64,
    references: &[StorePath],
) -> String {
    let refs: Vec<String> = references.iter().map(StorePath::to_absolute).collect();
    format!(
        "1;{};{nar_hash};{nar_size};{}",
        store_path.to_absolute(),
        refs.join(",")
    )
}

impl NarInfo {
    /// Parses narinfo text (see the module docs for the rules).
    pub fn parse(text: &str) -> Result<Self, NarInfoError> {
        let mut fields = Fields::default();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (key, value) = line
                .split_once(':')
                .ok_or(NarInfoError::InvalidLine { line: index + 1 })?;
            fields.set(key, value.trim())?;
        }
        fields.finish()
    }

    /// The fingerprint signed by `Sig:` lines (see [`fingerprint`]).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.store_path, &self.nar_hash, self.nar_size, &self.references)
    }

    /// True if some signature verifies with the key of the same name in `keys`.
    pub fn verify_any(&self, keys: &[PublicKey]) -> bool {
        let fp = self.fingerprint();
        self.sigs
            .iter()
            .any(|sig| keys.iter().any(|key| key.verify(&fp, sig)))
    }

    /// Replaces any signature by a key of the same name with a fresh one from `key`.
    pub fn add_signature(&mut self, key: &SigningKey) {
        let sig = key.sign(&self.fingerprint());
        self.sigs.retain(|s| s.key_name() != key.name());
        self.sigs.push(sig);
    }
}

impl fmt::Display for NarInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "StorePath: {}", self.store_path.to_absolute())?;
        writeln!(f, "URL: {}", self.url)?;
        writeln!(f, "Compression: {}", self.compression)?;
        if let Some(hash) = &self.file_hash {
            writeln!(f, "FileHash: {hash}")?;
        }
        if let Some(size) = self.file_size {
            writeln!(f, "FileSize: {size}")?;
        }
        writeln!(f, "NarHash: {}", self.nar_hash)?;
        writeln!(f, "NarSize: {}", self.nar_size)?;
        let refs: Vec<String> = self.references.iter().map(StorePath::to_string).collect();
        writeln!(f, "References: {}", refs.join(" "))?;
        if let Some(deriver) = &self.deriver {
            writeln!(f, "Deriver: {deriver}")?;
        }
        for sig in &self.sigs {
            writeln!(f, "Sig: {sig}")?;
        }
        if let Some(ca) = &self.ca {
            writeln!(f, "CA: {ca}")?;
        }
        Ok(())
    }
}

/// Fields collected while parsing, before required ones are checked.
#[derive(Default)]
struct Fields {
    store_path: Option<StorePath>,
    url: Option<String>,
    compression: Option<Compression>,
    file_hash: Option<Sha256Hash>,
    file_size: Option<u64>,
    nar_hash: Option<Sha256Hash>,
    nar_size: Option<u64>,
    references: Option<Vec<StorePath>>,
    deriver: Option<Option<StorePath>>,
    sigs: Vec<Signature>,
    ca: Option<String>,
}

/// Stores `value` in `slot` unless the field was already seen.
fn set_once<T>(slot: &mut Option<T>, key: &str, value: T) -> Result<(), NarInfoError> {
    if slot.is_some() {
        return Err(NarInfoError::DuplicateField(key.to_owned()));
    }
    *slot = Some(value);
    Ok(())
}

fn invalid(field: &'static str, reason: impl fmt::Display) -> NarInfoError {
    NarInfoError::InvalidField {
        field,
        reason: reason.to_string(),
    }
}

fn parse_hash(field: &'static str, value: &str) -> Result<Sha256Hash, NarInfoError> {
    value.parse().map_err(|e| invalid(field, e))
}

fn parse_size(field: &'static str, value: &str) -> Result<u64, NarInfoError> {
    // `u64::from_str` accepts a leading '+', Nix does not.
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(field, format!("{value:?} is not a decimal number")));
    }
    value
        .parse()
        .map_err(|e| invalid(field, format!("{value:?}: {e}")))
}

fn parse_base_name(field: &'static str, value: &str) -> Result<StorePath, NarInfoError> {
    StorePath::from_base_name(value).map_err(|e| invalid(field, e))
}

impl Fields {
    fn set(&mut self, key: &str, value: &str) -> Result<(), NarInfoError> {
        match key {
            "StorePath" => {
                let path = StorePath::from_absolute(value).map_err(|e| invalid("StorePath", e))?;
                set_once(&mut self.store_path, key, path)
            }
            "URL" if value.is_empty() => Err(invalid("URL", "must not be empty")),
            "URL" => set_once(&mut self.url, key, value.to_owned()),
            // Nix treats an empty value like a missing one.
            "Compression" if value.is_empty() => set_once(&mut self.compression, key, Compression::Bzip2),
            "Compression" => set_once(&mut self.compression, key, Compression::parse(value)),
            "FileHash" => set_once(&mut self.file_hash, key, parse_hash("FileHash", value)?),
            "FileSize" => set_once(&mut self.file_size, key, parse_size("FileSize", value)?),
            "NarHash" => set_once(&mut self.nar_hash, key, parse_hash("NarHash", value)?),
            "NarSize" => match parse_size("NarSize", value)? {
                0 => Err(invalid("NarSize", "must be greater than zero")),
                size => set_once(&mut self.nar_size, key, size),
            },
            "References" => {
                let refs = value.split(' ').filter(|r| !r.is_empty());
                let refs = refs
                    .map(|r| parse_base_name("References", r))
                    .collect::<Result<_, _>>()?;
                set_once(&mut self.references, key, refs)
            }
            "Deriver" if value == "unknown-deriver" => set_once(&mut self.deriver, key, None),
            "Deriver" => set_once(&mut self.deriver, key, Some(parse_base_name("Deriver", value)?)),
            "Sig" => {
                self.sigs
                    .push(Signature::parse(value).map_err(|e| invalid("Sig", e))?);
                Ok(())
            }
            "CA" => set_once(&mut self.ca, key, value.to_owned()),
            _ => Ok(()),
        }
    }

    fn finish(self) -> Result<NarInfo, NarInfoError> {
        Ok(NarInfo {
            store_path: self.store_path.ok_or(NarInfoError::MissingField("StorePath"))?,
            url: self.url.ok_or(NarInfoError::MissingField("URL"))?,
            compression: self.compression.unwrap_or(Compression::Bzip2),
            file_hash: self.file_hash,
            file_size: self.file_size,
            nar_hash: self.nar_hash.ok_or(NarInfoError::MissingField("NarHash"))?,
            nar_size: self.nar_size.ok_or(NarInfoError::MissingField("NarSize"))?,
            references: self.references.unwrap_or_default(),
            deriver: self.deriver.flatten(),
            sigs: self.sigs,
            ca: self.ca,
        })
    }
}

#[cfg(test)]
#[path = "narinfo_tests.rs"]
mod tests;
