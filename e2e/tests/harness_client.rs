//! Self-tests of the harness without the proxy: a real Nix client fetches the
//! fixture caches straight from TestUpstream. If these fail, the proxy tests
//! cannot be trusted either.

use anyhow::Result;
use nixcache_e2e::{fetch, fetch_rejected, generate_signing_key, FetchOptions, Nix, TestUpstream};
use nixcache_e2e::{Faults, UpstreamCache};

const SALT: &str = "e2e";

nixcache_e2e::each_nix! {
    zstd_closure_substitutes_directly_from_upstream: zstd_closure_substitutes_directly_from_upstream();
    xz_closure_copies_directly_from_upstream: xz_closure_copies_directly_from_upstream();
    wrong_key_is_rejected: wrong_key_is_rejected();
    unsigned_cache_is_rejected: unsigned_cache_is_rejected();
    tampered_nar_is_rejected: tampered_nar_is_rejected();
    corrupted_xz_stream_is_rejected: corrupted_xz_stream_is_rejected();
    client_retries_through_upstream_500s: client_retries_through_upstream_500s();
    dead_upstream_is_an_error_not_a_rejection: dead_upstream_is_an_error_not_a_rejection();
}

async fn zstd_closure_substitutes_directly_from_upstream(nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get("zstd", SALT)?;
    assert_eq!(cache.paths.len(), 20);
    let upstream = TestUpstream::start(&cache.dir)?;
    let outcome = fetch(
        &upstream.url,
        &cache.public_key,
        &[&cache.root],
        &FetchOptions::with(nix),
    )
    .await?;
    outcome.expect_whole_closure(&cache)?;
    // Every NAR was downloaded exactly once, every narinfo at least once.
    let stats = upstream.stats();
    for path in &cache.paths {
        assert_eq!(stats.get(&cache.nar_http_path(path)?), 1, "NAR of {path}");
        assert!(
            stats.get(&cache.narinfo_http_path(path)) >= 1,
            "narinfo of {path}"
        );
    }
    Ok(())
}

async fn xz_closure_copies_directly_from_upstream(nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get("xz", SALT)?;
    let upstream = TestUpstream::start(&cache.dir)?;
    let outcome = fetch(
        &upstream.url,
        &cache.public_key,
        &[&cache.root],
        &FetchOptions::copy(nix),
    )
    .await?;
    outcome.expect_whole_closure(&cache)
}

async fn wrong_key_is_rejected(nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get("zstd", SALT)?;
    let keys = tempfile::tempdir()?;
    let wrong = generate_signing_key(keys.path(), "some-other-key-1")?;
    let upstream = TestUpstream::start(&cache.dir)?;
    let reason = fetch_rejected(&upstream.url, &wrong.public_key, &[&cache.root], nix).await?;
    assert!(reason.contains(nix.unsigned_words()), "{nix:?}: {reason}");
    Ok(())
}

async fn unsigned_cache_is_rejected(nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get("zstd", SALT)?.unsigned()?;
    assert!(cache.narinfo_for(&cache.root)?.sigs().is_empty());
    let upstream = TestUpstream::start(&cache.dir)?;
    let reason = fetch_rejected(&upstream.url, &cache.public_key, &[&cache.root], nix).await?;
    assert!(reason.contains(nix.unsigned_words()), "{nix:?}: {reason}");
    Ok(())
}

async fn tampered_nar_is_rejected(nix: Nix) -> Result<()> {
    let fixture = UpstreamCache::get("zstd", SALT)?;
    let victim = fixture.path_named("-05-small")?.to_string();
    let cache = fixture.tampered(&victim)?;
    // The fixture itself is untouched (the copy is made of hard links).
    assert_ne!(
        std::fs::read(fixture.nar_file_for(&victim)?)?,
        std::fs::read(cache.nar_file_for(&victim)?)?
    );
    assert_eq!(fixture.narinfo_for(&victim)?, cache.narinfo_for(&victim)?);
    let upstream = TestUpstream::start(&cache.dir)?;
    let reason = fetch_rejected(&upstream.url, &cache.public_key, &[&victim], nix).await?;
    assert!(reason.contains("hash mismatch"), "{reason}");
    Ok(())
}

async fn corrupted_xz_stream_is_rejected(nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get("xz", SALT)?;
    let upstream = TestUpstream::start(&cache.dir)?;
    upstream.set_faults(Faults {
        corrupt: true,
        only_paths_with_prefix: Some("/nar/".into()),
        ..Faults::default()
    });
    let medium = cache.path_named("-04-medium")?;
    let reason = fetch_rejected(&upstream.url, &cache.public_key, &[medium], nix).await?;
    assert!(upstream.stats().faults >= 1);
    eprintln!("rejected: {reason}");
    Ok(())
}

async fn client_retries_through_upstream_500s(nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get("zstd", SALT)?;
    let upstream = TestUpstream::start(&cache.dir)?;
    upstream.set_faults(Faults {
        fail_first_n: 1,
        only_paths_with_suffix: Some(".narinfo".into()),
        ..Faults::default()
    });
    let small = cache.path_named("-06-small")?;
    let outcome = fetch(
        &upstream.url,
        &cache.public_key,
        &[small],
        &FetchOptions::with(nix),
    )
    .await?;
    assert!(outcome.is_ok(), "{outcome:?}");
    let stats = upstream.stats();
    assert!(stats.faults >= 1, "{stats:?}");
    assert!(stats.get(&cache.narinfo_http_path(small)) >= 2, "{stats:?}");
    Ok(())
}

async fn dead_upstream_is_an_error_not_a_rejection(nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get("zstd", SALT)?;
    let mut upstream = TestUpstream::start(&cache.dir)?;
    let url = upstream.url.clone();
    upstream.stop();
    let small = cache.path_named("-00-small")?;
    let result = fetch(&url, &cache.public_key, &[small], &FetchOptions::with(nix)).await;
    assert!(result.is_err(), "{result:?}");
    Ok(())
}
