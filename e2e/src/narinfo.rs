//! A lenient narinfo reader, enough for tests to look at what a cache serves.

use anyhow::{anyhow, Context, Result};

/// One narinfo: its `Key: value` lines in order (`Sig:` may repeat).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfo {
    pub fields: Vec<(String, String)>,
}

impl NarInfo {
    /// Parses narinfo text; every non-empty line must be `Key: value`.
    pub fn parse(text: &str) -> Result<NarInfo> {
        let fields = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let (k, v) = line
                    .split_once(": ")
                    .ok_or_else(|| anyhow!("not a narinfo line: {line:?}"))?;
                Ok((k.to_string(), v.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(NarInfo { fields })
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `key`, or an error naming it.
    pub fn require(&self, key: &str) -> Result<&str> {
        self.get(key).ok_or_else(|| anyhow!("narinfo has no {key}: line"))
    }

    pub fn store_path(&self) -> Result<&str> {
        self.require("StorePath")
    }

    /// `URL:` (relative to the cache, e.g. `nar/<filehash>.nar.xz`).
    pub fn url(&self) -> Result<&str> {
        self.require("URL")
    }

    pub fn compression(&self) -> &str {
        self.get("Compression").unwrap_or("bzip2")
    }

    /// `FileHash:` as written, `sha256:<nix base32>`.
    pub fn file_hash(&self) -> Result<&str> {
        self.require("FileHash")
    }

    pub fn file_size(&self) -> Result<u64> {
        self.require("FileSize")?
            .parse()
            .context("FileSize is not a number")
    }

    pub fn nar_hash(&self) -> Result<&str> {
        self.require("NarHash")
    }

    pub fn nar_size(&self) -> Result<u64> {
        self.require("NarSize")?
            .parse()
            .context("NarSize is not a number")
    }

    /// Every `Sig:` value (`keyname:base64`).
    pub fn sigs(&self) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k == "Sig")
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// True when some `Sig:` was made by the key named `key_name`.
    pub fn signed_by(&self, key_name: &str) -> bool {
        self.sigs()
            .iter()
            .any(|s| s.split_once(':').is_some_and(|(name, _)| name == key_name))
    }

    pub fn references(&self) -> Vec<&str> {
        self.get("References")
            .map(|r| r.split_whitespace().collect())
            .unwrap_or_default()
    }

    /// The text again, with `Sig:` lines left out.
    pub fn render_without_sigs(&self) -> String {
        self.fields
            .iter()
            .filter(|(k, _)| k != "Sig")
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect()
    }

    /// The text again, every line in its order.
    pub fn render(&self) -> String {
        self.fields.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
    }

    /// Replaces the first value of `key` (which must be there).
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let field = self
            .fields
            .iter_mut()
            .find(|(k, _)| k == key)
            .ok_or_else(|| anyhow!("narinfo has no {key}: line"))?;
        field.1 = value.to_string();
        Ok(())
    }

    /// Drops every `key:` line.
    pub fn remove(&mut self, key: &str) {
        self.fields.retain(|(k, _)| k != key);
    }
}

/// The name part of a `name:base64` key.
pub fn key_name(key: &str) -> &str {
    key.split_once(':').map_or(key, |(name, _)| name)
}

/// The file extension Nix gives a NAR compressed with `compression`
/// (`nar/<hash>.nar<ext>`).
pub fn nar_extension(compression: &str) -> Result<&'static str> {
    Ok(match compression {
        "xz" => ".xz",
        "zstd" => ".zst",
        "bzip2" => ".bz2",
        "gzip" => ".gz",
        "none" => "",
        other => return Err(anyhow!("unknown compression {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_strips_sigs() -> Result<()> {
        let text = "StorePath: /nix/store/x-a\nURL: nar/h.nar.xz\nFileSize: 12\nSig: k1:AA==\nSig: k2:BB==\n";
        let ni = NarInfo::parse(text)?;
        assert_eq!(ni.url()?, "nar/h.nar.xz");
        assert_eq!(ni.file_size()?, 12);
        assert!(ni.signed_by("k2") && !ni.signed_by("k3"));
        assert_eq!(
            ni.render_without_sigs(),
            "StorePath: /nix/store/x-a\nURL: nar/h.nar.xz\nFileSize: 12\n"
        );
        let mut edited = ni.clone();
        edited.set("URL", "nar/other")?;
        edited.remove("Sig");
        assert_eq!(
            edited.render(),
            "StorePath: /nix/store/x-a\nURL: nar/other\nFileSize: 12\n"
        );
        assert!(edited.set("FileHash", "x").is_err());
        assert_eq!(ni.render(), text);
        Ok(())
    }
}
