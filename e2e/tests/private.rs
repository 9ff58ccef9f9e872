//! A private cache (`--read-credentials-file`) with a real Nix client of either generation: one
//! without a netrc, or with a wrong password, gets nothing (401, and the proxy asks its upstream
//! for nothing); one whose netrc holds a reader's password substitutes the whole closure. And
//! `/metrics` moved to a listener of its own (`--metrics-listen`).

use std::time::Duration;

use anyhow::{ensure, Result};
use base64::Engine as _;
use nixcache_e2e::{fetch, FetchOptions, Nix, Proxy, ProxyOptions, TestUpstream, UpstreamCache};

// No blank in the password: a netrc splits its tokens on them.
const READER: (&str, &str) = ("laptop", "s3cret-reader");

nixcache_e2e::each_nix! {
    a_private_cache_serves_only_clients_with_a_netrc:
        a_private_cache_serves_only_clients_with_a_netrc();
}

async fn a_private_cache_serves_only_clients_with_a_netrc(nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get("xz", "e2e")?;
    let upstream = TestUpstream::start(&cache.dir)?;
    let work = tempfile::tempdir()?;
    let readers = work.path().join("readers");
    let (user, password) = READER;
    std::fs::write(&readers, format!("{user}:{}\n", bcrypt::hash(password, 6)?))?;
    let mut opts = ProxyOptions::new(&upstream.url, &cache.public_key);
    opts.extra_args = vec!["--read-credentials-file".into(), readers.display().to_string()];
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    opts.authorization = Some(format!("Basic {basic}"));
    let proxy = Proxy::start(opts).await?;

    let netrc = |name: &str, password: &str| -> Result<std::path::PathBuf> {
        let path = work.path().join(name);
        std::fs::write(
            &path,
            format!("machine 127.0.0.1 login {user} password {password}\n"),
        )?;
        Ok(path)
    };
    for (what, file) in [
        ("no netrc", None),
        ("a wrong password", Some(netrc("wrong", "guessed")?)),
    ] {
        let opts = FetchOptions {
            netrc: file,
            ..FetchOptions::with(nix)
        };
        let before = refusals(&proxy).await?;
        let refused = fetch(&proxy.url, &proxy.public_key, &[&cache.root], &opts).await;
        // Nix 2.8 says only that the URL "does not appear to be a binary cache"; 2.34 names the 401.
        ensure!(
            !matches!(refused, Ok(nixcache_e2e::ClientOutcome::Ok { .. })),
            "{nix:?} with {what}: the closure was served"
        );
        ensure!(
            refusals(&proxy).await? > before,
            "{nix:?} with {what}: no 401: {refused:?}"
        );
        let stats = upstream.stats();
        let objects = stats.gets.keys().chain(stats.heads.keys());
        let asked: Vec<_> = objects
            .filter(|p| p.ends_with(".narinfo") || p.contains("nar/"))
            .collect();
        ensure!(asked.is_empty(), "{what}: the upstream was asked for {asked:?}");
    }
    let opts = FetchOptions {
        netrc: Some(netrc("right", password)?),
        ..FetchOptions::with(nix)
    };
    fetch(&proxy.url, &proxy.public_key, &[&cache.root], &opts)
        .await?
        .expect_whole_closure(&cache)?;
    Ok(())
}

/// The requests the proxy refused with a 401.
async fn refusals(proxy: &Proxy) -> Result<u64> {
    proxy
        .metric("nixcache_http_requests_total", "status=\"401\"")
        .await
}

/// `--metrics-listen`: the metrics leave the cache's port for their own, which serves nothing
/// else; SIGTERM stops both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_to_a_listener_of_their_own() -> Result<()> {
    let cache = UpstreamCache::get("xz", "e2e")?;
    let upstream = TestUpstream::start(&cache.dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut opts = ProxyOptions::new(&upstream.url, &cache.public_key);
    opts.extra_args = vec!["--metrics-listen".into(), format!("127.0.0.1:{port}")];
    let mut proxy = Proxy::start(opts).await?;
    let (status, body) = nixcache_e2e::http::get(&proxy.url_for("/metrics")).await?;
    ensure!(
        status == reqwest::StatusCode::NOT_FOUND,
        "/metrics on the cache's port: {status}"
    );
    ensure!(String::from_utf8_lossy(&body).contains("--metrics-listen"));
    let metrics = format!("http://127.0.0.1:{port}");
    let (status, body) = nixcache_e2e::http::get(&format!("{metrics}/metrics")).await?;
    let body = String::from_utf8_lossy(&body);
    ensure!(
        status == reqwest::StatusCode::OK,
        "/metrics on its own port: {status}"
    );
    ensure!(
        body.contains("nixcache_http_requests_total") && body.contains("status=\"404\""),
        "the cache's requests are counted there:\n{body}"
    );
    for path in ["/nix-cache-info", "/healthz", "/"] {
        let (status, _) = nixcache_e2e::http::get(&format!("{metrics}{path}")).await?;
        ensure!(
            status == reqwest::StatusCode::NOT_FOUND,
            "{path} on the metrics port: {status}"
        );
    }
    // Nothing in flight: both listeners stop at once. A metrics server that ignored the stop
    // would hold the exit for its 5 s bound.
    let exit = proxy.terminate(Duration::from_secs(3)).await?;
    ensure!(exit.success(), "nixcache exited with {exit}");
    Ok(())
}
