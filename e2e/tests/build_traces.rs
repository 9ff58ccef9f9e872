//! Content-addressed derivations through the proxy with real clients of both generations: with
//! local builds off, `nix build` can produce the outputs only by asking the substituter for
//! their build traces (`realisations/…`, which Nix 2.32+ asks for with `%21` for the `!`) and
//! then substituting the store paths they name. The upstream's traces are Nix 2.8's, signed.

use std::time::Duration;

use anyhow::{ensure, Result};
use nixcache_e2e::http::get;
use nixcache_e2e::nix_client::build_ca;
use nixcache_e2e::{CaCache, Nix, Proxy, ProxyOptions, TestUpstream};
use reqwest::StatusCode;

const TIMEOUT: Duration = Duration::from_secs(120);
/// The outputs `nix build` must end up with: `dep`, and `top`'s `out` and `dev`.
const OUTPUTS: [&str; 3] = [
    "-nixcache-e2e-ca-dep",
    "-nixcache-e2e-ca-top",
    "-nixcache-e2e-ca-top-dev",
];

nixcache_e2e::each_nix! {
    content_addressed_outputs_substitute_through_the_proxy: content_addressed_outputs_substitute_through_the_proxy();
}

async fn content_addressed_outputs_substitute_through_the_proxy(nix: Nix) -> Result<()> {
    let cache = CaCache::get()?;
    let mut upstream = TestUpstream::start(&cache.dir)?;
    let proxy = Proxy::start(ProxyOptions::new(&upstream.url, &cache.public_key)).await?;

    let built = build_ca(&proxy.url, &proxy.public_key, nix, TIMEOUT).await?;
    ensure!(
        built.ok,
        "nix build through the proxy failed ({nix:?}):\n{}",
        built.output
    );
    for output in OUTPUTS {
        ensure!(
            built.store_paths.iter().any(|p| p.ends_with(output)),
            "no *{output} in the client's store: {:?}",
            built.store_paths
        );
    }
    // Each of the three traces was asked for (the client could build nothing), and came from
    // the upstream once, whatever the client sent for the `!`.
    let stats = upstream.stats();
    let asked: Vec<u64> = cache.traces.iter().map(|t| stats.get(t)).collect();
    ensure!(
        asked.iter().all(|&n| n == 1),
        "upstream GETs of {:?}: {asked:?}",
        cache.traces
    );
    // Served with the proxy's signature beside the upstream's.
    let (status, body) = get(&proxy.url_for(&cache.traces[0])).await?;
    ensure!(status == StatusCode::OK, "{}: {status}", cache.traces[0]);
    let served: serde_json::Value = serde_json::from_slice(&body)?;
    let key_name = proxy.public_key.split(':').next().unwrap_or_default();
    let signed_by = |name: &str| {
        served["signatures"].as_array().is_some_and(|sigs| {
            sigs.iter()
                .any(|s| s.as_str().is_some_and(|s| s.starts_with(&format!("{name}:"))))
        })
    };
    let upstream_name = cache.public_key.split(':').next().unwrap_or_default();
    ensure!(signed_by(key_name) && signed_by(upstream_name), "{served}");

    // Kept: with the upstream gone, a fresh client gets the same outputs from the proxy.
    upstream.stop();
    let again = build_ca(&proxy.url, &proxy.public_key, nix, TIMEOUT).await?;
    ensure!(again.ok, "with the upstream gone ({nix:?}):\n{}", again.output);
    ensure!(
        again.store_paths == built.store_paths,
        "{:?} != {:?}",
        again.store_paths,
        built.store_paths
    );
    Ok(())
}
