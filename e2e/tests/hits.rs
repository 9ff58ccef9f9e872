//! NAR hits from a replica on S3 as real Nix clients (two generations) get them: through a
//! presigned redirect to the bucket (`--s3-redirect`), and through the replica's hot tier
//! (`--hot-tier-dir`), damaged and then wiped between fetches.

use std::{path::Path, time::Duration};

use anyhow::{ensure, Context, Result};
use nixcache_e2e::cluster::{Backend, Cluster};
use nixcache_e2e::http::{body_matches, client, get_narinfo};
use nixcache_e2e::util::{hot_tier_files, nix_sha256, wait_until};
use nixcache_e2e::{fetch, FetchOptions, Nix, Proxy, TestUpstream, UpstreamCache};
use reqwest::{header, StatusCode};

const SALT: &str = "e2e";

fn options(nix: Nix) -> FetchOptions {
    FetchOptions {
        timeout: Duration::from_secs(120),
        ..FetchOptions::with(nix)
    }
}

async fn nar_bytes_served(proxy: &Proxy) -> Result<u64> {
    proxy.metric("nixcache_served_bytes", "kind=\"nar\"").await
}

/// The fixture, its upstream, and a cluster on PostgreSQL and S3 with one replica started with
/// `extra`; `None` when `nix` or the services are missing (and not required).
async fn one_replica(nix: Nix, extra: &[&str]) -> Result<Option<(UpstreamCache, TestUpstream, Cluster)>> {
    if !nix.available() {
        return Ok(None);
    }
    let cache = UpstreamCache::get("xz", SALT)?;
    let upstream = TestUpstream::start(&cache.dir)?;
    let Some(mut cluster) = Cluster::start(Backend::PostgresS3, 0, &upstream.url, &cache.public_key).await?
    else {
        return Ok(None);
    };
    cluster
        .add_replica_with(&upstream.url, &cache.public_key, extra)
        .await?;
    Ok(Some((cache, upstream, cluster)))
}

/// Misses stream from the fills; then, with the upstream gone, a new client's hits are 307s
/// to the bucket, which serves every NAR byte itself. Range and HEAD by hand.
async fn substitutes_through_a_redirect(nix: Nix) -> Result<()> {
    let extra = ["--s3-redirect", "--s3-redirect-expiry", "2m"];
    let Some((cache, mut upstream, cluster)) = one_replica(nix, &extra).await? else {
        return Ok(());
    };
    let proxy = &cluster.replicas[0];
    fetch(&proxy.url, &proxy.public_key, &[&cache.root], &options(nix))
        .await?
        .expect_whole_closure(&cache)?;
    upstream.stop();
    let through_proxy = nar_bytes_served(proxy).await?;
    fetch(&proxy.url, &proxy.public_key, &[&cache.root], &options(nix))
        .await?
        .expect_whole_closure(&cache)?;
    ensure!(
        nar_bytes_served(proxy).await? == through_proxy,
        "the hits' NAR bytes went through the replica, not the redirect"
    );

    let narinfo = get_narinfo(&proxy.url, &cache.big_path).await?;
    let nar_url = proxy.url_for(&format!("/{}", narinfo.url()?));
    let file = std::fs::read(cache.nar_file_for(&cache.big_path)?)?;
    let no_follow = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let answer = no_follow.get(&nar_url).send().await?;
    ensure!(
        answer.status() == StatusCode::TEMPORARY_REDIRECT,
        "got {}",
        answer.status()
    );
    let location = answer
        .headers()
        .get(header::LOCATION)
        .context("no Location")?
        .to_str()?;
    let endpoint = cluster.s3_endpoint().context("an S3 cluster")?;
    ensure!(location.starts_with(endpoint), "{location} is not on {endpoint}");
    ensure!(answer
        .headers()
        .get(header::CACHE_CONTROL)
        .is_some_and(|v| v == "no-store"));
    let ranged = client()
        .get(&nar_url)
        .header(header::RANGE, "bytes=100-4195")
        .send()
        .await?;
    ensure!(
        ranged.status() == StatusCode::PARTIAL_CONTENT,
        "got {}",
        ranged.status()
    );
    body_matches(ranged, &file[100..4196]).await?;
    let head = client().head(&nar_url).send().await?;
    ensure!(head.status() == StatusCode::OK, "HEAD got {}", head.status());
    let length = head
        .headers()
        .get(header::CONTENT_LENGTH)
        .context("no Content-Length")?;
    ensure!(
        length.to_str()? == file.len().to_string(),
        "HEAD is answered here, with the size"
    );
    Ok(())
}

/// The replica's hot tier reads so far, by result.
async fn tier_reads(proxy: &Proxy) -> Result<std::collections::HashMap<&'static str, u64>> {
    let mut reads = std::collections::HashMap::new();
    for result in ["hit", "copied", "miss", "changed"] {
        let count = proxy
            .metric("nixcache_hot_tier_reads_total", &format!("result=\"{result}\""))
            .await?;
        reads.insert(result, count);
    }
    Ok(reads)
}

/// Whether the reads `got` are the ones `counted`, every other result none; two results
/// counted alike (hit and copied, for the first round) may share their number between them.
fn reads_as_counted(got: &[(&str, u64)], counted: &[(&str, usize)]) -> bool {
    let of = |result: &str| got.iter().find(|(r, _)| *r == result).map_or(0, |(_, n)| *n);
    let uncounted = got.iter().filter(|(r, _)| !counted.iter().any(|(c, _)| c == r));
    if uncounted.map(|(_, n)| n).sum::<u64>() > 0 {
        return false;
    }
    match counted {
        [(a, n), (b, m)] if n == m && (*a, *b) == ("hit", "copied") => of(a) + of(b) == *n as u64,
        _ => counted.iter().all(|(r, n)| of(r) == *n as u64),
    }
}

/// How many of the tier's files hold the bytes their name (a FileHash) says.
fn whole_hot_tier_files(dir: &Path) -> usize {
    let whole = |path: &std::path::PathBuf| {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hash = name.split('.').next().unwrap_or_default().to_owned();
        std::fs::read(path).is_ok_and(|bytes| nix_sha256(&bytes) == format!("sha256:{hash}"))
    };
    hot_tier_files(dir).iter().filter(|path| whole(path)).count()
}

/// Hits fill the tier; a damaged file in it is never served, and a wiped tier is filled again,
/// each time to a new client with the upstream gone.
async fn substitutes_through_a_hot_tier(nix: Nix) -> Result<()> {
    let tier = tempfile::tempdir()?;
    let tier_dir = tier.path().display().to_string();
    let extra = ["--hot-tier-dir", &tier_dir, "--hot-tier-size", "1G"];
    let Some((cache, mut upstream, cluster)) = one_replica(nix, &extra).await? else {
        return Ok(());
    };
    let proxy = &cluster.replicas[0];
    let nars = cache.paths.len();
    fetch(&proxy.url, &proxy.public_key, &[&cache.root], &options(nix))
        .await?
        .expect_whole_closure(&cache)?;
    upstream.stop();
    // Each round: what it does to the tier first, and the reads it then counts. The first
    // fetch's hits (NARs its prefetches stored before it asked) may have filled the tier partly.
    let rounds = [
        ("fills the tier", vec![("hit", nars), ("copied", nars)]),
        ("a damaged tier", vec![("changed", nars), ("copied", nars)]),
        ("a wiped tier", vec![("changed", nars), ("copied", nars)]),
        ("hits from the tier", vec![("hit", nars)]),
    ];
    for (round, counted) in rounds {
        match round {
            "a damaged tier" => {
                for file in hot_tier_files(tier.path()) {
                    let len = std::fs::metadata(&file)?.len() as usize;
                    std::fs::write(&file, vec![0u8; len])?;
                }
            }
            "a wiped tier" => std::fs::remove_dir_all(tier.path().join("nar"))?,
            _ => {}
        }
        let before = tier_reads(proxy).await?;
        fetch(&proxy.url, &proxy.public_key, &[&cache.root], &options(nix))
            .await
            .and_then(|outcome| outcome.expect_whole_closure(&cache))
            .with_context(|| format!("substituting with {round}"))?;
        let filled = wait_until(Duration::from_secs(10), || {
            whole_hot_tier_files(tier.path()) == nars
        })
        .await;
        let (whole, all) = (
            whole_hot_tier_files(tier.path()),
            hot_tier_files(tier.path()).len(),
        );
        ensure!(
            filled && all == nars,
            "after {round}: {whole} whole of {all} files, for {nars} NARs"
        );
        let after = tier_reads(proxy).await?;
        let got: Vec<(&str, u64)> = after.iter().map(|(r, n)| (*r, n - before[r])).collect();
        ensure!(
            reads_as_counted(&got, &counted),
            "{round}: reads {got:?}, expected {counted:?}"
        );
    }
    Ok(())
}

macro_rules! per_nix {
    ($($name:ident: $test:ident($nix:expr);)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() -> Result<()> {
            $test($nix).await
        }
    )*};
}

per_nix! {
    redirect_with_the_host_nix: substitutes_through_a_redirect(Nix::Host);
    redirect_with_the_current_nix: substitutes_through_a_redirect(Nix::Modern);
    hot_tier_with_the_host_nix: substitutes_through_a_hot_tier(Nix::Host);
    hot_tier_with_the_current_nix: substitutes_through_a_hot_tier(Nix::Modern);
}
