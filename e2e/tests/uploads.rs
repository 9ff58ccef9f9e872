//! A real `nix copy --to http://…` pushes a closure (and its NAR listings) to nixcache with
//! credentials from a netrc file; a fresh client then substitutes it through the proxy alone (its upstream has nothing).
//! Wrong credentials get 401 and store nothing.

use std::time::Duration;

use anyhow::{ensure, Result};
use nixcache_e2e::http::get;
use nixcache_e2e::util::hash_part;
use nixcache_e2e::writable::BUILDER;
use nixcache_e2e::{fetch, push, FetchOptions, Nix, Proxy, Push, TestUpstream, UpstreamCache, WritableProxy};
use reqwest::StatusCode;

const TIMEOUT: Duration = Duration::from_secs(300);

/// The uploaded narinfos counted by the proxy's metrics.
async fn narinfos_stored(proxy: &Proxy) -> Result<u64> {
    proxy
        .metric("nixcache_uploads_total{kind=\"narinfo\",result=\"stored\"}", "")
        .await
}

/// PUT requests the proxy answered, whatever their outcome.
async fn puts(proxy: &Proxy) -> Result<u64> {
    proxy
        .metric("nixcache_http_requests_total", "method=\"PUT\"")
        .await
}

nixcache_e2e::each_nix! {
    nix_copy_pushes_a_closure_that_a_fresh_client_substitutes:
        nix_copy_pushes_a_closure_that_a_fresh_client_substitutes();
}

async fn nix_copy_pushes_a_closure_that_a_fresh_client_substitutes(nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get("zstd", "e2e")?;
    // The proxy's only upstream has nothing but its nix-cache-info.
    let writable = WritableProxy::start(&cache.public_key).await?;
    let proxy = &writable.proxy;
    // The builder's paths come from the fixture, served over HTTP (either client sees that).
    let source = TestUpstream::start(&cache.dir)?;
    // With the NAR listings too (`PUT /<hash>.ls`), as nix-index users' builders push.
    let to = format!("{}?compression=zstd&write-nar-listing=true", proxy.url);
    let job = Push {
        source: &source.url,
        source_key: &cache.public_key,
        to_url: &to,
        paths: &[&cache.root],
        nix,
        timeout: TIMEOUT,
    };
    let wrong = writable.netrc("wrong.netrc", "guessed")?;
    let refused = push(&job, &wrong).await?;
    ensure!(
        !refused.ok,
        "a push with a wrong password succeeded:\n{}",
        refused.output
    );
    ensure!(refused.output.contains("401"), "{}", refused.output);
    let (status, _) = get(&proxy.url_for(&format!("/{}.narinfo", hash_part(&cache.root)))).await?;
    ensure!(
        status == StatusCode::NOT_FOUND,
        "root narinfo after a refused push: {status}"
    );
    ensure!(narinfos_stored(proxy).await? == 0);

    let right = writable.netrc("right.netrc", BUILDER.1)?;
    let pushed = push(&job, &right).await?;
    ensure!(pushed.ok, "nix copy --to the proxy failed:\n{}", pushed.output);
    ensure!(narinfos_stored(proxy).await? == cache.paths.len() as u64);
    let (status, listing) = get(&proxy.url_for(&format!("/{}.ls", hash_part(&cache.root)))).await?;
    ensure!(
        status == StatusCode::OK,
        "the root's listing after the push: {status}"
    );
    let listing: serde_json::Value = serde_json::from_slice(&listing)?;
    ensure!(
        listing["root"]["type"].is_string(),
        "not a NAR listing: {listing}"
    );

    // A fresh client, trusting only the proxy's key, gets the whole closure from it.
    fetch(
        &proxy.url,
        &proxy.public_key,
        &[&cache.root],
        &FetchOptions::with(nix),
    )
    .await?
    .expect_whole_closure(&cache)?;
    // Pushing again uploads nothing: nix asks (HEAD) and finds every path there.
    let before = puts(proxy).await?;
    ensure!(
        before >= 2 * cache.paths.len() as u64,
        "{before} PUTs for the first push"
    );
    let again = push(&job, &right).await?;
    ensure!(again.ok, "{}", again.output);
    ensure!(puts(proxy).await? == before, "the second push sent PUTs");
    Ok(())
}
