//! A real Nix client substitutes through nixcache, trusting only the proxy's
//! key; afterwards the proxy serves the closure with the upstream gone.

use anyhow::{ensure, Result};
use nixcache_e2e::http::{client, get_narinfo};
use nixcache_e2e::util::nix_sha256;
use nixcache_e2e::{
    fetch, nix_available, FetchOptions, Method, Nix, Proxy, ProxyOptions, TestUpstream, UpstreamCache,
};
use reqwest::{header, StatusCode};

const SALT: &str = "e2e";

/// Fetch the whole closure through a new proxy, stop the upstream, fetch it
/// again into a fresh client store from the proxy alone.
async fn substitute_then_serve_alone(compression: &str, method: Method, nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get(compression, SALT)?;
    let mut upstream = TestUpstream::start(&cache.dir)?;
    let proxy = Proxy::start(ProxyOptions::new(&upstream.url, &cache.public_key)).await?;
    ensure!(
        proxy.public_key != cache.public_key,
        "the proxy must sign with its own key"
    );
    let opts = FetchOptions {
        method,
        nix,
        ..FetchOptions::default()
    };
    fetch(&proxy.url, &proxy.public_key, &[&cache.root], &opts)
        .await?
        .expect_whole_closure(&cache)?;
    let stats = upstream.stats();
    for path in &cache.paths {
        let nar = cache.nar_http_path(path)?;
        ensure!(
            stats.get(&nar) >= 1,
            "the proxy never fetched {nar} upstream: {stats:?}"
        );
    }

    upstream.stop();
    fetch(&proxy.url, &proxy.public_key, &[&cache.root], &opts)
        .await?
        .expect_whole_closure(&cache)?;
    Ok(())
}

nixcache_e2e::each_nix! {
    xz_closure_substitutes_through_the_proxy_and_stays_cached:
        substitute_then_serve_alone("xz", Method::Substitute);
    zstd_closure_copies_through_the_proxy_and_stays_cached:
        substitute_then_serve_alone("zstd", Method::Copy);
    // Nix 2.34 asks for an encoding, so these NARs reach it zstd-encoded; Nix 2.8 gets them as
    // stored.
    uncompressed_closure_substitutes_through_the_proxy_and_stays_cached:
        substitute_then_serve_alone("none", Method::Substitute);
}

/// The proxy's narinfo keeps the upstream's signature, adds its own, and
/// names its NAR by FileHash; the NAR it serves matches FileSize/FileHash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_narinfo_carries_both_signatures_and_a_consistent_nar() -> Result<()> {
    if !nix_available() {
        return Ok(());
    }
    let cache = UpstreamCache::get("xz", SALT)?;
    let upstream = TestUpstream::start(&cache.dir)?;
    let proxy = Proxy::start(ProxyOptions::new(&upstream.url, &cache.public_key)).await?;
    let proxy_key_name = nixcache_e2e::narinfo::key_name(&proxy.public_key);
    let theirs = cache.narinfo_for(&cache.root)?;
    let ours = get_narinfo(&proxy.url, &cache.root).await?;
    assert_eq!(ours.store_path()?, cache.root);
    assert!(
        ours.signed_by(proxy_key_name),
        "no Sig by {proxy_key_name}: {ours:?}"
    );
    assert!(
        ours.signed_by(&cache.key_name),
        "no Sig by {}: {ours:?}",
        cache.key_name
    );
    assert_eq!(ours.nar_hash()?, theirs.nar_hash()?);
    assert_eq!(ours.nar_size()?, theirs.nar_size()?);
    assert_eq!(ours.references(), theirs.references());
    assert_eq!(ours.compression(), "xz");
    let file_hash = ours.file_hash()?;
    let base32 = file_hash.strip_prefix("sha256:").unwrap_or(file_hash);
    assert_eq!(ours.url()?, format!("nar/{base32}.nar.xz"));

    let nar_url = proxy.url_for(&format!("/{}", ours.url()?));
    let size = ours.file_size()?.to_string();
    let head = client().head(&nar_url).send().await?;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()),
        Some(size.as_str())
    );
    let get = client().get(&nar_url).send().await?;
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(
        get.headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()),
        Some(size.as_str())
    );
    let body = get.bytes().await?;
    assert_eq!(body.len().to_string(), size);
    assert_eq!(nix_sha256(&body), file_hash);
    Ok(())
}
