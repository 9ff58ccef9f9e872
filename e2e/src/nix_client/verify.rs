//! What arrived in a client's store: every path valid, signed, and its NAR hash right.

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use super::{output_text, ClientDirs, ClientOutcome, Nix};
use crate::narinfo::key_name;

impl ClientDirs {
    /// Every path (closure included) is valid, signed by `trusted_key`'s
    /// name, and `nix store verify` finds its NAR hash and signature right.
    pub(super) async fn verify(
        &self,
        trusted_key: &str,
        paths: &[&str],
        timeout: Duration,
    ) -> Result<ClientOutcome> {
        let store = self.store.display().to_string();
        let mut args = vec!["nix", "path-info", "--store", &store, "-r", "--json"];
        if self.nix == Nix::Modern {
            // Bare `--json` is deprecated there; format 1 is the object keyed by path.
            args.extend(["--json-format", "1"]);
        }
        args.extend(paths);
        let out = self.run(&args, timeout).await?;
        ensure!(
            out.status.success(),
            "nix path-info in the client store failed:\n{}",
            output_text(&out)
        );
        let (fetched, nar_bytes) = check_path_info(&out.stdout, key_name(trusted_key))?;
        let mut args = vec![
            "nix",
            "store",
            "verify",
            "--store",
            &store,
            "-r",
            "--sigs-needed",
            "1",
        ];
        args.extend(paths);
        args.extend(["--option", "trusted-public-keys", trusted_key]);
        let out = self.run(&args, timeout).await?;
        ensure!(
            out.status.success(),
            "nix store verify failed ({}):\n{}",
            out.status,
            output_text(&out)
        );
        for path in paths {
            let local = self.store.join(path.trim_start_matches('/'));
            ensure!(
                local.symlink_metadata().is_ok(),
                "{} does not exist after the fetch",
                local.display()
            );
        }
        Ok(ClientOutcome::Ok {
            paths: fetched,
            nar_bytes,
            took: Duration::ZERO,
        })
    }
}

/// Parses `nix path-info --json`: a list of entries with a `path` (Nix 2.8) or an object keyed
/// by path (Nix 2.19 on). Every path must carry a signature by `key_name`. Returns the paths
/// (sorted) and the sum of their NAR sizes.
fn check_path_info(json: &[u8], key_name: &str) -> Result<(Vec<String>, u64)> {
    let info: serde_json::Value = serde_json::from_slice(json).context("nix path-info --json")?;
    let entries: Vec<(&str, &serde_json::Value)> = match &info {
        serde_json::Value::Array(list) => list
            .iter()
            .map(|e| Ok((e["path"].as_str().context("path-info entry without path")?, e)))
            .collect::<Result<_>>()?,
        serde_json::Value::Object(by_path) => by_path.iter().map(|(p, e)| (p.as_str(), e)).collect(),
        other => anyhow::bail!("nix path-info --json: neither a list nor an object: {other}"),
    };
    let prefix = format!("{key_name}:");
    let mut paths = Vec::new();
    let mut nar_bytes = 0;
    for (path, entry) in entries {
        let sigs = entry["signatures"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let signed = sigs
            .iter()
            .filter_map(|s| s.as_str())
            .any(|s| s.starts_with(&prefix));
        ensure!(
            signed,
            "{path} arrived without a signature by {key_name}: {sigs:?}"
        );
        nar_bytes += entry["narSize"]
            .as_u64()
            .context("path-info entry without narSize")?;
        paths.push(path.to_string());
    }
    paths.sort();
    Ok((paths, nar_bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::check_path_info;

    const SIGNED: &str = r#""signatures":["test-1:abc"],"narSize":120"#;

    #[test]
    fn reads_the_list_of_nix_2_8_and_the_object_of_later_nix() {
        let list = format!(r#"[{{"path":"/nix/store/b-x",{SIGNED}}},{{"path":"/nix/store/a-y",{SIGNED}}}]"#);
        let object = format!(r#"{{"/nix/store/b-x":{{{SIGNED}}},"/nix/store/a-y":{{{SIGNED}}}}}"#);
        for json in [list, object] {
            let (paths, bytes) = check_path_info(json.as_bytes(), "test-1").unwrap();
            assert_eq!(paths, ["/nix/store/a-y", "/nix/store/b-x"], "{json}");
            assert_eq!(bytes, 240);
        }
    }

    #[test]
    fn a_path_without_the_signature_is_an_error() {
        let json = r#"{"/nix/store/a-y":{"signatures":["other-1:abc"],"narSize":1}}"#;
        let err = check_path_info(json.as_bytes(), "test-1").unwrap_err();
        assert!(err.to_string().contains("without a signature by test-1"), "{err}");
        assert!(check_path_info(b"42", "test-1").is_err());
    }
}
