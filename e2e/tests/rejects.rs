//! What must not get through nixcache: data a client does not trust, narinfos
//! the upstream did not sign, NARs that do not match their narinfo.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use nixcache_e2e::http::{client, get};
use nixcache_e2e::util::{find_by_name, wait_until};
use nixcache_e2e::{fetch, fetch_rejected, generate_signing_key, ClientOutcome, FetchOptions, Nix};
use nixcache_e2e::{Proxy, ProxyOptions, TestUpstream, UpstreamCache};
use reqwest::StatusCode;

const SALT: &str = "e2e";

nixcache_e2e::each_nix! {
    client_trusting_another_key: client_trusting_another_key_rejects_the_proxy();
    unsigned_upstream_narinfos: unsigned_upstream_narinfos_are_not_served();
    tampered_upstream_nar: tampered_upstream_nar_is_neither_served_nor_kept();
}

async fn client_trusting_another_key_rejects_the_proxy(nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get("zstd", SALT)?;
    let upstream = TestUpstream::start(&cache.dir)?;
    let proxy = Proxy::start(ProxyOptions::new(&upstream.url, &cache.public_key)).await?;
    let keys = tempfile::tempdir()?;
    let wrong = generate_signing_key(keys.path(), "not-the-proxy-1")?;
    let reason = fetch_rejected(&proxy.url, &wrong.public_key, &[&cache.root], nix).await?;
    assert!(reason.contains(nix.unsigned_words()), "{nix:?}: {reason}");
    Ok(())
}

async fn unsigned_upstream_narinfos_are_not_served(nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get("zstd", SALT)?.unsigned()?;
    let upstream = TestUpstream::start(&cache.dir)?;
    let proxy = Proxy::start(ProxyOptions::new(&upstream.url, &cache.public_key)).await?;
    for path in &cache.paths {
        let (status, body) = get(&proxy.url_for(&cache.narinfo_http_path(path))).await?;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "narinfo of unsigned {path} was served:\n{text}"
        );
    }
    let outcome = fetch(
        &proxy.url,
        &proxy.public_key,
        &[&cache.root],
        &FetchOptions::with(nix),
    )
    .await;
    eprintln!("client outcome: {outcome:?}");
    assert!(
        !matches!(outcome, Ok(ClientOutcome::Ok { .. })),
        "the client got unsigned paths: {outcome:?}"
    );
    Ok(())
}

async fn tampered_upstream_nar_is_neither_served_nor_kept(nix: Nix) -> Result<()> {
    let fixture = UpstreamCache::get("zstd", SALT)?;
    let victim = fixture.path_named("-05-small")?.to_string();
    let cache = fixture.tampered(&victim)?;
    let upstream = TestUpstream::start(&cache.dir)?;
    let proxy = Proxy::start(ProxyOptions::new(&upstream.url, &cache.public_key)).await?;

    // The client never ends up with the path (Nix itself checks NarHash, and
    // our fetch re-verifies what arrived).
    let outcome = fetch(
        &proxy.url,
        &proxy.public_key,
        &[&victim],
        &FetchOptions::with(nix),
    )
    .await;
    eprintln!("client outcome: {outcome:?}");
    assert!(
        !matches!(outcome, Ok(ClientOutcome::Ok { .. })),
        "the client accepted {victim}: {outcome:?}"
    );
    let nar_path = cache.nar_http_path(&victim)?;
    ensure!(
        upstream.stats().get(&nar_path) >= 1,
        "the proxy never fetched {nar_path}"
    );

    // Nothing named after that NAR was kept.
    let file_hash = cache
        .narinfo_for(&victim)?
        .file_hash()?
        .trim_start_matches("sha256:")
        .to_string();
    assert_nothing_named(&proxy.data_dir, &file_hash).await?;

    // Asking again goes upstream again: the bad NAR was not cached.
    upstream.reset_stats();
    let _ = get(&proxy.url_for(&cache.narinfo_http_path(&victim))).await;
    let tampered = std::fs::read(cache.nar_file_for(&victim)?)?;
    if let Ok(response) = client().get(proxy.url_for(&nar_path)).send().await {
        let status = response.status();
        if let Ok(body) = response.bytes().await {
            assert!(
                !(status.is_success() && body == tampered),
                "the proxy served the tampered NAR whole"
            );
        }
    }
    let stats = upstream.stats();
    assert!(
        stats.get(&nar_path) >= 1,
        "the second request did not go upstream: {stats:?}"
    );
    assert_nothing_named(&proxy.data_dir, &file_hash).await
}

/// No file under `dir` is named after `needle`, at the latest a few seconds
/// from now (an aborted download's temporary file may still be going away).
async fn assert_nothing_named(dir: &Path, needle: &str) -> Result<()> {
    let now = find_by_name(dir, needle)?;
    if !now.is_empty() {
        eprintln!("waiting for {now:?} to go away");
    }
    let gone = wait_until(Duration::from_secs(5), || {
        find_by_name(dir, needle).is_ok_and(|f| f.is_empty())
    })
    .await;
    let kept = find_by_name(dir, needle)?;
    ensure!(
        gone && kept.is_empty(),
        "the proxy kept the tampered NAR: {kept:?}"
    );
    Ok(())
}
