//! Content-addressed derivations with a real client: `nix build` of the CA fixture's outputs
//! with local builds off (`max-jobs = 0`), so the outputs can only come from the substituter:
//! the client evaluates the derivations, asks it for their build traces, then substitutes the
//! store paths they name.

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use super::{output_text, summary, ClientDirs, Nix, PushOutcome};
use crate::fixtures::{CA_FEATURES, CA_INSTALLABLES, CA_NIX};

/// What `nix build` made of it.
#[derive(Clone, Debug)]
pub struct CaBuild {
    pub ok: bool,
    /// The store paths in the client's store afterwards (derivations and outputs).
    pub store_paths: Vec<String>,
    /// Nix's output, summarised.
    pub output: String,
}

/// `nix build --max-jobs 0` of every output of the CA fixture from `substituter`, trusting
/// `trusted_key`, into a fresh store.
pub async fn build_ca(substituter: &str, trusted_key: &str, nix: Nix, timeout: Duration) -> Result<CaBuild> {
    let client = ClientDirs::new(nix)?;
    build_in(&client, substituter, trusted_key, timeout).await
}

/// Pushes the CA fixture's outputs the way a builder does: `nix build` substitutes them (and
/// their build traces) from `source` into a fresh store, then `nix copy --to to_url` uploads
/// the outputs and their build traces, with credentials from `netrc_file`.
pub async fn push_ca(
    source: &str,
    source_key: &str,
    to_url: &str,
    netrc_file: &std::path::Path,
    nix: Nix,
    timeout: Duration,
) -> Result<PushOutcome> {
    let client = ClientDirs::new(nix)?;
    let built = build_in(&client, source, source_key, timeout).await?;
    ensure!(built.ok, "nix build from {source} failed:\n{}", built.output);
    let netrc = client.tmp.path().join("netrc");
    std::fs::copy(netrc_file, &netrc).with_context(|| format!("copy {}", netrc_file.display()))?;
    let (store, netrc) = (client.store.display().to_string(), netrc.display().to_string());
    let nix_file = client.tmp.path().join("ca.nix").display().to_string();
    let mut args = vec!["nix", "copy", "--store", &store, "--to", to_url];
    args.extend(["--extra-experimental-features", CA_FEATURES, "-f", &nix_file]);
    args.extend(CA_INSTALLABLES);
    args.extend(["--option", "netrc-file", &netrc]);
    args.extend(["--option", "narinfo-cache-negative-ttl", "0"]);
    let out = client.run(&args, timeout).await?;
    Ok(PushOutcome {
        ok: out.status.success(),
        output: summary(&output_text(&out)),
    })
}

async fn build_in(
    client: &ClientDirs,
    substituter: &str,
    trusted_key: &str,
    timeout: Duration,
) -> Result<CaBuild> {
    let nix_file = client.tmp.path().join("ca.nix");
    std::fs::write(&nix_file, CA_NIX)?;
    let (store, nix_file) = (client.store.display().to_string(), nix_file.display().to_string());
    let mut args = vec!["nix", "build", "--store", &store, "--no-link", "--max-jobs", "0"];
    args.extend(["--extra-experimental-features", CA_FEATURES, "-f", &nix_file]);
    args.extend(CA_INSTALLABLES);
    args.extend(["--option", "substituters", substituter]);
    args.extend(["--option", "trusted-public-keys", trusted_key]);
    args.extend(["--option", "narinfo-cache-negative-ttl", "0"]);
    let out = client.run(&args, timeout).await?;
    let mut store_paths: Vec<String> = match std::fs::read_dir(client.store.join("nix/store")) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.ends_with(".lock") && name != ".links")
            .collect(),
        Err(_) => Vec::new(),
    };
    store_paths.sort();
    Ok(CaBuild {
        ok: out.status.success(),
        store_paths,
        output: summary(&output_text(&out)),
    })
}
