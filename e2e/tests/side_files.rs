//! Build logs and NAR listings with real clients of both generations: `nix log` reads the
//! root's log through the proxy (pulled through from the upstream, then kept), `nix store
//! copy-log` uploads one with netrc credentials (refused without the right ones), and the
//! upstream's `.ls` listings come through as the upstream wrote them.

use std::time::Duration;

use anyhow::{ensure, Result};
use nixcache_e2e::http::get;
use nixcache_e2e::nix_client::{copy_log, read_log};
use nixcache_e2e::util::hash_part;
use nixcache_e2e::writable::BUILDER;
use nixcache_e2e::{Nix, Proxy, ProxyOptions, TestUpstream, UpstreamCache, WritableProxy};
use reqwest::StatusCode;

const TIMEOUT: Duration = Duration::from_secs(120);

nixcache_e2e::each_nix! {
    nix_log_reads_a_build_log_through_the_proxy: nix_log_reads_a_build_log_through_the_proxy();
    nix_store_copy_log_uploads_a_build_log: nix_store_copy_log_uploads_a_build_log();
}

async fn nix_log_reads_a_build_log_through_the_proxy(nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get("zstd", "e2e")?;
    let mut upstream = TestUpstream::start(&cache.dir)?;
    let proxy = Proxy::start(ProxyOptions::new(&upstream.url, &cache.public_key)).await?;
    let expected = String::from_utf8(cache.root_log()?)?;
    ensure!(!expected.is_empty(), "the fixture's log is empty");

    // Given the output path, the client finds the deriver in the narinfo, then asks for its log.
    let read = read_log(&proxy.url, &cache.root, nix, TIMEOUT).await?;
    ensure!(
        read.ok,
        "nix log through the proxy failed ({nix:?}):\n{}",
        read.output
    );
    ensure!(
        read.log.trim_end() == expected.trim_end(),
        "nix log printed:\n{}\nexpected:\n{expected}",
        read.log
    );
    let log_path = format!("/log/{}", cache.root_drv()?.trim_start_matches("/nix/store/"));
    ensure!(upstream.stats().get(&log_path) == 1, "{:?}", upstream.stats());

    // The listings the upstream wrote (`write-nar-listing=true`) come through unchanged.
    for path in [&cache.root, &cache.big_path] {
        let ls = format!("/{}.ls", hash_part(path));
        let (status, body) = get(&proxy.url_for(&ls)).await?;
        ensure!(status == StatusCode::OK, "{ls}: {status}");
        let theirs = std::fs::read(cache.dir.join(ls.trim_start_matches('/')))?;
        ensure!(body[..] == theirs[..], "{ls} differs from the upstream's");
    }

    // Kept: with the upstream gone, both still come from the proxy.
    upstream.stop();
    let again = read_log(&proxy.url, &cache.root, nix, TIMEOUT).await?;
    ensure!(again.ok && again.log == read.log, "{}", again.output);
    let (status, _) = get(&proxy.url_for(&format!("/{}.ls", hash_part(&cache.root)))).await?;
    ensure!(
        status == StatusCode::OK,
        "listing with the upstream gone: {status}"
    );
    Ok(())
}

async fn nix_store_copy_log_uploads_a_build_log(nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get("zstd", "e2e")?;
    // The proxy's only upstream has nothing but its nix-cache-info.
    let writable = WritableProxy::start(&cache.public_key).await?;
    let proxy = &writable.proxy;
    let source = TestUpstream::start(&cache.dir)?;
    let drv = cache.root_drv()?;
    let log_path = format!("/log/{}", drv.trim_start_matches("/nix/store/"));
    let wrong = writable.netrc("wrong.netrc", "guessed")?;
    // By derivation: given an output path, `copy-log --from` asks the source store for its
    // derivers, which a binary cache cannot tell.
    let refused = copy_log(&source.url, &proxy.url, &drv, &wrong, nix, TIMEOUT).await?;
    ensure!(
        !refused.ok,
        "copy-log with a wrong password succeeded:\n{}",
        refused.output
    );
    ensure!(refused.output.contains("401"), "{}", refused.output);
    ensure!(get(&proxy.url_for(&log_path)).await?.0 == StatusCode::NOT_FOUND);

    let right = writable.netrc("right.netrc", BUILDER.1)?;
    let copied = copy_log(&source.url, &proxy.url, &drv, &right, nix, TIMEOUT).await?;
    ensure!(
        copied.ok,
        "nix store copy-log --to the proxy failed:\n{}",
        copied.output
    );
    let (status, body) = get(&proxy.url_for(&log_path)).await?;
    ensure!(status == StatusCode::OK, "{log_path} after the upload: {status}");
    ensure!(
        body[..] == cache.root_log()?[..],
        "the uploaded log differs from the fixture's"
    );
    // And a current client reads it back by derivation. (Nix 2.8 first reads the derivation
    // itself from the store, which this cache does not hold; by output path it would need the
    // narinfo, which its empty upstream does not have.)
    if nix == Nix::Modern {
        let read = read_log(&proxy.url, &drv, nix, TIMEOUT).await?;
        ensure!(read.ok, "nix log of the uploaded log failed:\n{}", read.output);
        ensure!(
            read.log.as_bytes() == &cache.root_log()?[..],
            "nix log printed:\n{}",
            read.log
        );
    }
    Ok(())
}
