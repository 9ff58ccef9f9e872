//! Range requests on NARs, as a Nix client sends them to resume a download: with curl-like
//! requests, and with both generations of a real Nix client whose download is cut halfway.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use nixcache_e2e::http::{body_matches, client, get_narinfo};
use nixcache_e2e::util::{nix_sha256, wait_until};
use nixcache_e2e::{fetch, nix_available, Faults, FetchOptions, NarInfo, Nix};
use nixcache_e2e::{Proxy, ProxyOptions, TestUpstream, UpstreamCache};
use reqwest::{header, StatusCode};

const SALT: &str = "e2e";
const MIB: u64 = 1 << 20;

struct Setup {
    cache: UpstreamCache,
    upstream: TestUpstream,
    _proxy: Proxy,
    narinfo: NarInfo,
    nar_url: String,
}

/// An upstream sending NARs at `rate` bytes/s, a proxy, and the proxy's
/// narinfo of the big path.
async fn setup(rate: u64) -> Result<Setup> {
    let cache = UpstreamCache::get("zstd", SALT)?;
    let upstream = TestUpstream::start(&cache.dir)?;
    let proxy = Proxy::start(ProxyOptions::new(&upstream.url, &cache.public_key)).await?;
    let narinfo = get_narinfo(&proxy.url, &cache.big_path).await?;
    let nar_url = proxy.url_for(&format!("/{}", narinfo.url()?));
    upstream.set_faults(Faults {
        rate_bytes_per_s: rate,
        only_paths_with_prefix: Some("/nar/".into()),
        ..Faults::default()
    });
    Ok(Setup {
        cache,
        upstream,
        _proxy: proxy,
        narinfo,
        nar_url,
    })
}

async fn get_range(url: &str, range: &str) -> Result<reqwest::Response> {
    Ok(client().get(url).header(header::RANGE, range).send().await?)
}

fn header_str(response: &reqwest::Response, name: header::HeaderName) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Reads at least `n` bytes of the body, then drops the connection.
async fn read_prefix(response: reqwest::Response, n: usize) -> Result<Vec<u8>> {
    let mut body = response.bytes_stream();
    let mut prefix = Vec::new();
    while prefix.len() < n {
        let chunk = body.next().await.context("body ended early")??;
        prefix.extend_from_slice(&chunk);
    }
    prefix.truncate(n);
    Ok(prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_download_resumes_with_a_range() -> Result<()> {
    if !nix_available() {
        return Ok(());
    }
    let s = setup(32 * MIB).await?;
    let size = s.narinfo.file_size()?;
    let n = 5 * MIB;
    let first = client().get(&s.nar_url).send().await?;
    assert_eq!(first.status(), StatusCode::OK);
    let mut whole = read_prefix(first, n as usize).await?;

    let rest = get_range(&s.nar_url, &format!("bytes={n}-")).await?;
    assert_eq!(rest.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header_str(&rest, header::CONTENT_RANGE),
        format!("bytes {n}-{}/{size}", size - 1)
    );
    assert_eq!(header_str(&rest, header::CONTENT_LENGTH), (size - n).to_string());
    whole.extend_from_slice(&rest.bytes().await?);
    assert_eq!(whole.len() as u64, size);
    assert_eq!(nix_sha256(&whole), s.narinfo.file_hash()?);

    for past in [size, size + 10] {
        let response = get_range(&s.nar_url, &format!("bytes={past}-")).await?;
        assert_eq!(
            response.status(),
            StatusCode::RANGE_NOT_SATISFIABLE,
            "bytes={past}-"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_while_the_nar_is_still_coming_from_upstream() -> Result<()> {
    if !nix_available() {
        return Ok(());
    }
    let s = setup(32 * MIB).await?;
    let size = s.narinfo.file_size()?;
    let file = s.cache.nar_file_for(&s.cache.big_path)?;
    let expected = Arc::new(std::fs::read(&file)?);
    ensure!(
        expected.len() as u64 == size,
        "FileSize {size} is not the file's size"
    );
    let (whole_url, whole_expected) = (s.nar_url.clone(), expected.clone());
    let whole = tokio::spawn(async move {
        let response = client().get(&whole_url).send().await?;
        ensure!(response.status() == StatusCode::OK, "GET: {}", response.status());
        body_matches(response, &whole_expected).await
    });
    let upstream_nar = s.cache.nar_http_path(&s.cache.big_path)?;
    let started = wait_until(Duration::from_secs(10), || {
        s.upstream.stats().get(&upstream_nar) >= 1
    })
    .await;
    ensure!(started, "the proxy did not start fetching {upstream_nar}");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // One range in what has arrived so far, one far ahead of it.
    for (first, last) in [(1000, 1999), (40 * MIB, 41 * MIB - 1), (size - 100, size - 1)] {
        let response = get_range(&s.nar_url, &format!("bytes={first}-{last}")).await?;
        assert_eq!(
            response.status(),
            StatusCode::PARTIAL_CONTENT,
            "bytes={first}-{last}"
        );
        assert_eq!(
            header_str(&response, header::CONTENT_RANGE),
            format!("bytes {first}-{last}/{size}")
        );
        let body = response.bytes().await?;
        assert!(
            body.as_ref() == &expected[first as usize..=last as usize],
            "bytes={first}-{last}: wrong bytes"
        );
    }
    whole.await?.context("the whole download")?;
    Ok(())
}

nixcache_e2e::each_nix! {
    a_real_client_cut_off_mid_nar_resumes_with_a_range: a_real_client_cut_off_mid_nar_resumes(32 * MIB);
}

/// The upstream cuts the proxy's first download of the 64 MiB NAR halfway, so the proxy cuts its
/// client there too. Nix retries from where it stopped with `Range: bytes=N-` (it has written
/// those bytes to its sink already); the proxy answers `206` from a new download and the client
/// ends up with a path whose NAR hash is right.
async fn a_real_client_cut_off_mid_nar_resumes(rate: u64, nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get("zstd", SALT)?;
    let upstream = TestUpstream::start(&cache.dir)?;
    let proxy = Proxy::start(ProxyOptions::new(&upstream.url, &cache.public_key)).await?;
    let upstream_nar = cache.nar_http_path(&cache.big_path)?;
    upstream.set_faults(Faults {
        rate_bytes_per_s: rate,
        truncate: true,
        body_faults_first_n: 1,
        only_paths_with_prefix: Some(upstream_nar.clone()),
        ..Faults::default()
    });
    let outcome = fetch(
        &proxy.url,
        &proxy.public_key,
        &[&cache.big_path],
        &FetchOptions::with(nix),
    )
    .await?;
    ensure!(outcome.is_ok(), "{nix:?}: {outcome:?}");
    let stats = upstream.stats();
    ensure!(
        stats.faults == 1,
        "the upstream never cut the download: {stats:?}"
    );
    ensure!(
        stats.get(&upstream_nar) == 2,
        "one cut download and one whole one upstream: {stats:?}"
    );
    let resumed = proxy
        .metric("nixcache_http_requests_total", "status=\"206\"")
        .await?;
    ensure!(
        resumed >= 1,
        "{nix:?} did not resume with a Range request (no 206 answered)"
    );
    Ok(())
}
