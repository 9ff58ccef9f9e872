//! Pins with a real Nix client of either generation: a closure pinned over HTTP and a path
//! pinned with `nixcache pin add` survive `nixcache gc --max-size 0` (its dry run counts them),
//! and with the upstream stopped a fresh client still substitutes the pinned closure, while the
//! unpinned root is gone. The pins API refuses a request without a credential and a bad hash.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{ensure, Context, Result};
use nixcache_e2e::{
    fetch, http::client, proxy::nixcache_bin, util::run_bounded, ClientOutcome, FetchOptions, Nix, Proxy,
    ProxyOptions, TestUpstream, UpstreamCache,
};

const TOKEN: &str = "pin-token-for-the-e2e-test";

nixcache_e2e::each_nix! {
    pinned_closures_survive_gc_at_max_size_zero: pinned_closures_survive_gc_at_max_size_zero();
}

/// `nixcache ARGS --data-dir DIR`: stdout, or the failure with both outputs.
fn nixcache(args: &[&str], data_dir: &Path) -> Result<String> {
    let out = run_bounded(
        Command::new(nixcache_bin()?)
            .args(args)
            .arg("--data-dir")
            .arg(data_dir),
        Duration::from_secs(60),
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "nixcache {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

fn hash_of(store_path: &str) -> Result<&str> {
    let base = store_path
        .strip_prefix("/nix/store/")
        .context("not a store path")?;
    Ok(&base[..32])
}

async fn pins_api(proxy: &Proxy, cache: &UpstreamCache, small: &str) -> Result<()> {
    let http = client();
    let url = proxy.url_for(&format!("/_nixcache/pins/{}?closure", hash_of(small)?));
    let refused = http.post(&url).send().await?;
    ensure!(
        refused.status() == 401,
        "without a credential: {}",
        refused.status()
    );
    let bad = http
        .post(proxy.url_for("/_nixcache/pins/not-a-hash"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    ensure!(bad.status() == 400, "a bad hash: {}", bad.status());
    let pinned = http.post(&url).bearer_auth(TOKEN).send().await?;
    ensure!(pinned.status() == 201, "pin: {}", pinned.status());
    let body: serde_json::Value = serde_json::from_str(&pinned.text().await?)?;
    ensure!(body["storePath"] == small && body["closure"] == true, "{body}");
    let listed = http
        .get(proxy.url_for("/_nixcache/pins"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    let listed = listed.text().await?;
    ensure!(listed.contains(small), "{listed}");
    ensure!(!listed.contains(&cache.root), "{listed}");
    Ok(())
}

async fn pinned_closures_survive_gc_at_max_size_zero(nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get("zstd", "e2e")?;
    let mut upstream = TestUpstream::start(&cache.dir)?;
    let work = tempfile::tempdir()?;
    let creds = work.path().join("uploaders");
    std::fs::write(&creds, format!("{TOKEN}\n"))?;
    let mut opts = ProxyOptions::new(&upstream.url, &cache.public_key);
    opts.extra_args = vec![
        "--allow-pins".into(),
        "--upload-credentials-file".into(),
        creds.display().to_string(),
        "--memory-cache-ttl".into(),
        "1s".into(),
    ];
    let proxy = Proxy::start(opts).await?;
    let all = FetchOptions::with(nix);
    fetch(&proxy.url, &proxy.public_key, &[&cache.root], &all)
        .await?
        .expect_whole_closure(&cache)?;

    // The closure of path 05 (paths 00-05) over HTTP; path 07 alone from the command line.
    let small = cache.path_named("-05-")?.to_owned();
    let alone = cache.path_named("-07-")?.to_owned();
    pins_api(&proxy, &cache, &small).await?;
    let added = nixcache(&["pin", "add", &alone], &proxy.data_dir)?;
    ensure!(
        added.contains(&format!("pinned {alone}  path  by hand  1 cached paths")),
        "{added}"
    );
    let listed = nixcache(&["pin", "ls"], &proxy.data_dir)?;
    ensure!(listed.contains("2 pins hold 7 cached paths"), "{listed}");

    let gc = ["gc", "--gc-keep-recent", "0s", "--max-size", "0"];
    let dry = nixcache(&[&gc[..], &["--dry-run"]].concat(), &proxy.data_dir)?;
    ensure!(
        dry.contains("2 pins hold 7 cached paths; kept 7 pinned paths"),
        "{dry}"
    );
    let report = nixcache(&gc, &proxy.data_dir)?;
    let evicted = cache.paths.len() - 7;
    ensure!(
        report.contains(&format!("evicted {evicted} narinfos and {evicted} NARs")),
        "{report}"
    );

    upstream.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await; // the proxy's memory of narinfos
    let outcome = fetch(&proxy.url, &proxy.public_key, &[&small], &all).await?;
    let ClientOutcome::Ok { paths, .. } = &outcome else {
        anyhow::bail!("the pinned closure no longer substitutes: {outcome:?}");
    };
    ensure!(paths.len() == 6, "{paths:?}");
    let (status, _) =
        nixcache_e2e::http::get(&proxy.url_for(&format!("/{}.narinfo", hash_of(&alone)?))).await?;
    ensure!(status == 200, "the path pinned alone: {status}");
    let (status, _) =
        nixcache_e2e::http::get(&proxy.url_for(&format!("/{}.narinfo", hash_of(&cache.root)?))).await?;
    // Not in the cache any more: a miss, which the stopped upstream cannot answer.
    ensure!(
        matches!(status.as_u16(), 404 | 502 | 503),
        "the unpinned root's narinfo: {status}"
    );
    let gone = fetch(&proxy.url, &proxy.public_key, &[&cache.root], &all).await;
    ensure!(gone.is_err(), "the unpinned root still substitutes: {gone:?}");

    unpin(&proxy, &small, &alone).await
}

/// Unpinned over HTTP (once: again is a 404); the command line's pin stays.
async fn unpin(proxy: &Proxy, small: &str, alone: &str) -> Result<()> {
    let url = proxy.url_for(&format!("/_nixcache/pins/{}", hash_of(small)?));
    let removed = client().delete(&url).bearer_auth(TOKEN).send().await?;
    ensure!(removed.status() == 200, "unpin: {}", removed.status());
    let again = client().delete(&url).bearer_auth(TOKEN).send().await?;
    ensure!(again.status() == 404, "unpin again: {}", again.status());
    let listed = nixcache(&["pin", "ls"], &proxy.data_dir)?;
    ensure!(listed.contains(alone) && !listed.contains(small), "{listed}");
    Ok(())
}
