//! Prefetch with real Nix clients: a cold closure is served from NARs the proxy downloaded
//! ahead of the client, each fetched from the upstream once; a client that only looks
//! (`nix path-info`) makes the proxy download no NAR; the budget holds; `--prefetch off` is off;
//! `nixcache warm` fills the cache with whole closures; replicas share their prefetches.

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Result};
use nixcache_e2e::bench::fresh::delayed_upstream;
use nixcache_e2e::cluster::{Backend, Cluster};
use nixcache_e2e::fixtures::N_PATHS;
use nixcache_e2e::proxy::nixcache_bin;
use nixcache_e2e::util::run_bounded;
use nixcache_e2e::{
    fetch, look_up_paths, nix_available, FetchOptions, Nix, Proxy, ProxyOptions, TestUpstream, UpstreamCache,
};

const SALT: &str = "e2e";
const TIMEOUT: Duration = Duration::from_secs(300);

/// `nixcache warm --url URL PATH`, bounded.
fn run_warm(url: &str, path: &str) -> Result<std::process::Output> {
    run_bounded(
        Command::new(nixcache_bin()?).args(["warm", "--url", url, path]),
        TIMEOUT,
    )
}

async fn proxy_with(upstream: &TestUpstream, cache: &UpstreamCache, args: &[&str]) -> Result<Proxy> {
    let mut options = ProxyOptions::new(&upstream.url, &cache.public_key);
    options.extra_args = args.iter().map(|a| a.to_string()).collect();
    Proxy::start(options).await
}

/// `nixcache_prefetches_total` of `kind` and `outcome`.
async fn prefetches(proxy: &Proxy, kind: &str, outcome: &str) -> Result<u64> {
    let series = format!("nixcache_prefetches_total{{kind=\"{kind}\"");
    proxy.metric(&series, &format!("outcome=\"{outcome}\"")).await
}

/// Every NAR of the closure was downloaded from the upstream exactly once.
fn each_nar_fetched_once(upstream: &TestUpstream, cache: &UpstreamCache) -> Result<()> {
    let stats = upstream.stats();
    for path in &cache.paths {
        let nar = cache.nar_http_path(path)?;
        ensure!(
            stats.get(&nar) == 1,
            "{nar} was fetched {} times: {stats:?}",
            stats.get(&nar)
        );
    }
    Ok(())
}

/// A client substitutes the closure through a cold proxy: the NARs after its first come from
/// downloads the proxy started ahead of it, and nothing is fetched twice.
async fn cold_closure_comes_from_prefetched_nars(nix: Nix) -> Result<()> {
    cold_from_prefetched_nars(nix, UpstreamCache::get("xz", SALT)?).await
}

/// The wide closure (121 paths a client walks level by level), likewise.
async fn cold_wide_closure_comes_from_prefetched_nars(nix: Nix) -> Result<()> {
    cold_from_prefetched_nars(nix, UpstreamCache::dag("xz", SALT)?).await
}

/// `cache`'s closure through a cold proxy: every NAR fetched once, most of them prefetched
/// ahead of the client (the first one it asks for starts the others), none wasted.
async fn cold_from_prefetched_nars(nix: Nix, cache: UpstreamCache) -> Result<()> {
    let upstream = delayed_upstream(&cache)?;
    let proxy = proxy_with(&upstream, &cache, &[]).await?;
    fetch(
        &proxy.url,
        &proxy.public_key,
        &[&cache.root],
        &FetchOptions::with(nix),
    )
    .await?
    .expect_whole_closure(&cache)?;
    each_nar_fetched_once(&upstream, &cache)?;
    let n = cache.paths.len() as u64;
    let (started, used) = (
        prefetches(&proxy, "nar", "started").await?,
        prefetches(&proxy, "nar", "used").await?,
    );
    ensure!(
        used >= n / 2 && started >= used && started < n,
        "NAR prefetches: {started} started, {used} used, of {n} paths"
    );
    ensure!(
        prefetches(&proxy, "nar", "wasted").await? == 0,
        "a prefetch went to waste: {}",
        proxy.log_tail(40)
    );
    Ok(())
}

/// `nix path-info` asks for narinfos (GET) but never for a NAR: the proxy downloads none,
/// though it looks up narinfos ahead.
async fn a_client_that_only_looks_downloads_no_nar(nix: Nix) -> Result<()> {
    let cache = UpstreamCache::get("xz", SALT)?;
    let upstream = delayed_upstream(&cache)?;
    let proxy = proxy_with(&upstream, &cache, &[]).await?;
    let looked = look_up_paths(&proxy.url, &[&cache.root], true, nix, TIMEOUT).await?;
    ensure!(looked.ok, "nix path-info -r failed: {}", looked.output);
    ensure!(
        looked.log.lines().count() == N_PATHS,
        "nix path-info -r printed {:?}",
        looked.log
    );
    // Give a prefetch that would (wrongly) start a moment to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = upstream.stats();
    let nars: Vec<String> = stats
        .paths_except(&[])
        .into_iter()
        .filter(|p| p.starts_with("/nar/"))
        .collect();
    ensure!(nars.is_empty(), "looking made the proxy download {nars:?}");
    ensure!(
        prefetches(&proxy, "nar", "started").await? == 0,
        "a NAR prefetch started"
    );
    ensure!(
        prefetches(&proxy, "narinfo", "started").await? > 0,
        "no narinfo was looked up ahead of the client"
    );
    Ok(())
}

nixcache_e2e::each_nix! {
    a_cold_closure_comes_from_prefetched_nars: cold_closure_comes_from_prefetched_nars();
    a_cold_wide_closure_comes_from_prefetched_nars: cold_wide_closure_comes_from_prefetched_nars();
    nix_path_info_downloads_no_nar: a_client_that_only_looks_downloads_no_nar();
}

/// The closure's budget and the size limit hold: the big NAR waits for the client, the small
/// ones are prefetched only up to the bytes allowed; the client gets everything all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_stays_within_its_budget() -> Result<()> {
    if !nix_available() {
        return Ok(());
    }
    let cache = UpstreamCache::get("xz", SALT)?;
    let mut small = Vec::new();
    for path in &cache.paths {
        small.push(cache.narinfo_for(path)?.file_size()?);
    }
    small.sort_unstable();
    // The big one is last and alone past the size limit; the budget fits about half the rest.
    let small = &small[..small.len() - 1];
    let nar_max = small.iter().max().copied().unwrap_or_default();
    let budget: u64 = small[..small.len() / 2].iter().sum();
    let upstream = delayed_upstream(&cache)?;
    let (nar_max_arg, budget_arg) = (nar_max.to_string(), budget.to_string());
    let args = [
        "--prefetch-nar-max",
        &nar_max_arg,
        "--prefetch-bytes",
        &budget_arg,
    ];
    let proxy = proxy_with(&upstream, &cache, &args).await?;
    fetch(
        &proxy.url,
        &proxy.public_key,
        &[&cache.root],
        &FetchOptions::default(),
    )
    .await?
    .expect_whole_closure(&cache)?;
    each_nar_fetched_once(&upstream, &cache)?;
    let bytes = proxy
        .metric("nixcache_prefetch_nar_bytes_total", "outcome=\"started\"")
        .await?;
    let skipped = |reason: &'static str| {
        let proxy = &proxy;
        async move {
            proxy
                .metric(
                    "nixcache_prefetches_skipped_total{kind=\"nar\"",
                    &format!("reason=\"{reason}\""),
                )
                .await
        }
    };
    ensure!(
        bytes > 0 && bytes <= budget,
        "prefetched {bytes} NAR bytes, budget {budget}"
    );
    let (_, metrics) = nixcache_e2e::http::get(&proxy.url_for("/metrics")).await?;
    let metrics = String::from_utf8_lossy(&metrics);
    let prefetch_lines: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("nixcache_prefetch"))
        .collect();
    ensure!(
        skipped("too_large").await? == 1,
        "the big NAR was not held back (--prefetch-nar-max {nar_max}, sizes {small:?}): {prefetch_lines:#?}"
    );
    ensure!(
        skipped("budget").await? >= 1,
        "nothing was held back by the budget"
    );
    Ok(())
}

/// `--prefetch off`: the proxy fetches only what the client asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_off_fetches_only_what_is_asked() -> Result<()> {
    if !nix_available() {
        return Ok(());
    }
    let cache = UpstreamCache::get("xz", SALT)?;
    let upstream = delayed_upstream(&cache)?;
    let proxy = proxy_with(&upstream, &cache, &["--prefetch", "off"]).await?;
    let looked = look_up_paths(&proxy.url, &[&cache.root], false, Nix::Host, TIMEOUT).await?;
    ensure!(looked.ok, "nix path-info failed: {}", looked.output);
    fetch(
        &proxy.url,
        &proxy.public_key,
        &[&cache.root],
        &FetchOptions::default(),
    )
    .await?
    .expect_whole_closure(&cache)?;
    each_nar_fetched_once(&upstream, &cache)?;
    let all = proxy.metric("nixcache_prefetches_total", "").await?;
    ensure!(all == 0, "{all} prefetches with --prefetch off");
    Ok(())
}

/// `nixcache warm ROOT` fetches the closure through a running proxy (the CronJob after a nixpkgs
/// bump): afterwards a client gets all of it with the upstream gone, and a second warm finds
/// every NAR stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nixcache_warm_fills_the_cache_with_whole_closures() -> Result<()> {
    if !nix_available() {
        return Ok(());
    }
    let cache = UpstreamCache::get("xz", SALT)?;
    let mut upstream = TestUpstream::start(&cache.dir)?;
    let proxy = proxy_with(&upstream, &cache, &["--prefetch", "off"]).await?;
    let warm = |expect_stored: usize| {
        let (url, root) = (proxy.url.clone(), cache.root.clone());
        async move {
            let out = run_warm(&url, &root)?;
            let report = String::from_utf8_lossy(&out.stdout).into_owned();
            ensure!(
                out.status.success(),
                "nixcache warm failed: {report}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let expected = format!("{N_PATHS} paths; {N_PATHS} NARs fetched ({expect_stored} stored before)");
            ensure!(report.contains(&expected), "expected {expected:?}: {report}");
            Ok(())
        }
    };
    // A path no upstream has: reported as missing, and the exit status says so.
    let out = run_warm(&proxy.url, "/nix/store/00000000000000000000000000000000-absent")?;
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && said.contains("missing: ") && !said.contains("failed: "),
        "{said}"
    );
    warm(0).await?;
    each_nar_fetched_once(&upstream, &cache)?;
    // A client gets its last byte once the NAR is verified, a moment before it is stored.
    for _ in 0..100 {
        if proxy.metric("nixcache_fills_in_flight", "").await? == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    upstream.stop();
    warm(N_PATHS).await?;
    fetch(
        &proxy.url,
        &proxy.public_key,
        &[&cache.root],
        &FetchOptions::default(),
    )
    .await?
    .expect_whole_closure(&cache)?;
    Ok(())
}

/// Three replicas on one database and bucket, a client on each substituting the same cold wide
/// closure at once: every replica prefetches, yet every NAR comes from the upstream once (a
/// prefetch takes the lease a client's fill would, and leaves a NAR another replica is
/// downloading to it), and every client gets the whole closure.
async fn replicas_share_their_prefetches(backend: Backend) -> Result<()> {
    if !nix_available() {
        return Ok(());
    }
    let cache = UpstreamCache::dag("xz", SALT)?;
    let upstream = delayed_upstream(&cache)?;
    let Some(cluster) = Cluster::start(backend, 3, &upstream.url, &cache.public_key).await? else {
        return Ok(());
    };
    let clients = cluster.replicas.iter().map(|replica| {
        let root = cache.root.clone();
        async move {
            fetch(
                &replica.url,
                &replica.public_key,
                &[&root],
                &FetchOptions::default(),
            )
            .await
        }
    });
    for outcome in futures::future::join_all(clients).await {
        outcome?.expect_whole_closure(&cache)?;
    }
    each_nar_fetched_once(&upstream, &cache)?;
    let mut started = Vec::new();
    for replica in &cluster.replicas {
        started.push(prefetches(replica, "nar", "started").await?);
    }
    let n = cache.paths.len() as u64;
    ensure!(
        started.iter().sum::<u64>() > 0 && started.iter().sum::<u64>() < n,
        "NAR prefetches started per replica: {started:?}, of {n} paths"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_their_prefetches_on_postgres_and_s3() -> Result<()> {
    replicas_share_their_prefetches(Backend::PostgresS3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_their_prefetches_in_one_shared_dir() -> Result<()> {
    replicas_share_their_prefetches(Backend::SharedDir).await
}
