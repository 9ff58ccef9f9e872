//! Many clients asking for the same uncached thing at once cost one upstream
//! request.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use nixcache_e2e::http::{body_matches, client, get, get_narinfo};
use nixcache_e2e::util::nix_sha256;
use nixcache_e2e::{nix_available, Faults, Proxy, ProxyOptions, TestUpstream, UpstreamCache};
use reqwest::StatusCode;

const SALT: &str = "e2e";
const CLIENTS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_clients_one_upstream_download_of_the_big_nar() -> Result<()> {
    if !nix_available() {
        return Ok(());
    }
    let cache = UpstreamCache::get("zstd", SALT)?;
    let upstream = TestUpstream::start(&cache.dir)?;
    let proxy = Proxy::start(ProxyOptions::new(&upstream.url, &cache.public_key)).await?;
    let narinfo = get_narinfo(&proxy.url, &cache.big_path).await?;
    let url = proxy.url_for(&format!("/{}", narinfo.url()?));
    let upstream_nar = cache.nar_http_path(&cache.big_path)?;
    // Byte-equal to the file means the same sha256, at a fraction of the
    // cost of hashing 16 x 64 MiB in a debug build.
    let expected = Arc::new(std::fs::read(cache.nar_file_for(&cache.big_path)?)?);
    assert_eq!(nix_sha256(&expected), narinfo.file_hash()?);
    upstream.set_faults(Faults {
        rate_bytes_per_s: 64 << 20,
        only_paths_with_prefix: Some("/nar/".into()),
        ..Faults::default()
    });

    let downloads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, expected) = (url.clone(), expected.clone());
            tokio::spawn(async move {
                let response = client().get(&url).send().await?;
                ensure!(
                    response.status() == StatusCode::OK,
                    "GET {url}: {}",
                    response.status()
                );
                let length = response.content_length();
                ensure!(length == Some(expected.len() as u64), "Content-Length {length:?}");
                body_matches(response, &expected).await
            })
        })
        .collect();
    for (i, download) in downloads.into_iter().enumerate() {
        download.await?.with_context(|| format!("client {i}"))?;
    }
    let stats = upstream.stats();
    assert_eq!(
        stats.get(&upstream_nar),
        1,
        "upstream GETs of {upstream_nar}: {stats:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_clients_one_upstream_narinfo_request() -> Result<()> {
    if !nix_available() {
        return Ok(());
    }
    let cache = UpstreamCache::get("zstd", SALT)?;
    let upstream = TestUpstream::start(&cache.dir)?;
    let proxy = Proxy::start(ProxyOptions::new(&upstream.url, &cache.public_key)).await?;
    let path = cache.path_named("-07-small")?;
    let narinfo_path = cache.narinfo_http_path(path);
    upstream.set_faults(Faults {
        delay: Duration::from_millis(500),
        only_paths_with_suffix: Some(".narinfo".into()),
        ..Faults::default()
    });

    let url = proxy.url_for(&narinfo_path);
    let requests: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(get_owned(url.clone())))
        .collect();
    let mut bodies = Vec::new();
    for request in requests {
        let (status, body) = request.await??;
        assert_eq!(status, StatusCode::OK);
        bodies.push(body);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "the clients got different narinfos"
    );
    let stats = upstream.stats();
    assert_eq!(
        stats.get(&narinfo_path),
        1,
        "upstream GETs of {narinfo_path}: {stats:?}"
    );
    Ok(())
}

async fn get_owned(url: String) -> Result<(StatusCode, bytes::Bytes)> {
    get(&url).await
}
