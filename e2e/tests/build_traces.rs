//! Content-addressed derivations through the proxy with real clients of both generations: with
//! local builds off, `nix build` can produce the outputs only by asking the substituter for
//! their build traces (`realisations/…`, which Nix 2.32+ asks for with `%21` for the `!`) and
//! then substituting the store paths they name. The upstream's traces are Nix 2.8's, signed.

use std::time::Duration;

use anyhow::{ensure, Result};
use nixcache_e2e::http::get;
use nixcache_e2e::nix_client::{build_ca, push_ca, CaBuild};
use nixcache_e2e::writable::BUILDER;
use nixcache_e2e::{CaCache, Nix, Proxy, ProxyOptions, TestUpstream, WritableProxy};
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
    content_addressed_outputs_pushed_by_nix_copy_substitute_from_the_proxy:
        content_addressed_outputs_pushed_by_nix_copy_substitute_from_the_proxy();
}

async fn content_addressed_outputs_substitute_through_the_proxy(nix: Nix) -> Result<()> {
    let cache = CaCache::get()?;
    let mut upstream = TestUpstream::start(&cache.dir)?;
    let proxy = Proxy::start(ProxyOptions::new(&upstream.url, &cache.public_key)).await?;

    let built = build_ca(&proxy.url, &proxy.public_key, nix, TIMEOUT).await?;
    expect_every_output(&built, nix)?;
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
    let served = served_trace(&proxy, &cache.traces[0]).await?;
    ensure!(
        signed_by(&served, &proxy.public_key) && signed_by(&served, &cache.public_key),
        "{served}"
    );

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

/// A builder pushes the outputs and their build traces with `nix copy --to` (uploads on, the
/// upstream empty); a fresh client that can build nothing then gets them from the proxy alone,
/// the traces signed by the proxy.
async fn content_addressed_outputs_pushed_by_nix_copy_substitute_from_the_proxy(nix: Nix) -> Result<()> {
    let cache = CaCache::get()?;
    let writable = WritableProxy::start(&cache.public_key).await?;
    let proxy = &writable.proxy;
    let source = TestUpstream::start(&cache.dir)?;
    let netrc = writable.netrc("builder.netrc", BUILDER.1)?;
    let pushed = push_ca(&source.url, &cache.public_key, &proxy.url, &netrc, nix, TIMEOUT).await?;
    ensure!(
        pushed.ok,
        "nix copy --to the proxy failed ({nix:?}):\n{}",
        pushed.output
    );
    for trace in &cache.traces {
        let served = served_trace(proxy, trace).await?;
        ensure!(signed_by(&served, &proxy.public_key), "{trace}: {served}");
    }
    let built = build_ca(&proxy.url, &proxy.public_key, nix, TIMEOUT).await?;
    expect_every_output(&built, nix)
}

fn expect_every_output(built: &CaBuild, nix: Nix) -> Result<()> {
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
    Ok(())
}

/// The build trace the proxy serves at `path`, parsed.
async fn served_trace(proxy: &Proxy, path: &str) -> Result<serde_json::Value> {
    let (status, body) = get(&proxy.url_for(path)).await?;
    ensure!(status == StatusCode::OK, "{path}: {status}");
    Ok(serde_json::from_slice(&body)?)
}

/// Whether `trace` carries a signature by the key `public_key` (`name:base64`) names.
fn signed_by(trace: &serde_json::Value, public_key: &str) -> bool {
    let name = public_key.split(':').next().unwrap_or_default();
    trace["signatures"].as_array().is_some_and(|sigs| {
        sigs.iter()
            .any(|s| s.as_str().is_some_and(|s| s.starts_with(&format!("{name}:"))))
    })
}
