//! `nixcache gc` on a cache filled by a real Nix client: the least recently used paths go, the
//! rest still substitute into a fresh client with the upstream stopped.

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use nixcache_e2e::proxy::nixcache_bin;
use nixcache_e2e::util::run_bounded;
use nixcache_e2e::{fetch, FetchOptions, Nix, Proxy, ProxyOptions, TestUpstream, UpstreamCache};

nixcache_e2e::each_nix! {
    gc_keeps_the_recently_used_closure_servable: gc_keeps_the_recently_used_closure_servable();
}

async fn gc_keeps_the_recently_used_closure_servable(nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get("zstd", "e2e")?;
    let mut upstream = TestUpstream::start(&cache.dir)?;
    let mut opts = ProxyOptions::new(&upstream.url, &cache.public_key);
    opts.extra_args = ["--access-flush-interval", "100ms", "--memory-cache-ttl", "1s"]
        .map(String::from)
        .to_vec();
    let proxy = Proxy::start(opts).await?;
    let all = FetchOptions::with(nix);
    fetch(&proxy.url, &proxy.public_key, &[&cache.root], &all)
        .await?
        .expect_whole_closure(&cache)?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Then only the closure of path 05 (paths 00-05) is used again: the rest are older.
    let small = cache.path_named("-05-")?.to_owned();
    let outcome = fetch(&proxy.url, &proxy.public_key, &[&small], &all).await?;
    ensure!(outcome.is_ok(), "{outcome:?}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut keep = 0;
    let mut kept = Vec::new();
    for i in 0..6 {
        let path = cache.path_named(&format!("-{i:02}-"))?;
        keep += cache.narinfo_for(path)?.file_size()?;
        kept.push(path);
    }

    let bin = nixcache_bin()?;
    let out = run_bounded(
        Command::new(&bin)
            .args(["gc", "--gc-keep-recent", "0s", "--max-size"])
            .arg(keep.to_string())
            .arg("--data-dir")
            .arg(&proxy.data_dir),
        Duration::from_secs(60),
    )?;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "nixcache gc failed: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evicted = cache.paths.len() - 6;
    ensure!(
        report.contains(&format!("evicted {evicted} narinfos and {evicted} NARs")),
        "{report}"
    );
    ensure!(report.contains("size now"), "{report}");

    upstream.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await; // the proxy's memory of narinfos
    let outcome = fetch(&proxy.url, &proxy.public_key, &[&small], &all).await?;
    let nixcache_e2e::ClientOutcome::Ok { paths, .. } = &outcome else {
        anyhow::bail!("the kept closure no longer substitutes: {outcome:?}");
    };
    let mut expected: Vec<&str> = kept.clone();
    expected.sort();
    ensure!(*paths == expected, "{paths:?}");
    // An evicted path is gone from the cache (and its upstream is down).
    let gone = fetch(&proxy.url, &proxy.public_key, &[&cache.root], &all).await;
    ensure!(gone.is_err(), "the evicted root still substitutes: {gone:?}");
    let msg = format!("{:#}", gone.err().context("no error")?);
    ensure!(msg.contains("nix could not fetch"), "{msg}");
    Ok(())
}
