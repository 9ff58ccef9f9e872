//! Several `nixcache serve` processes sharing metadata and storage act as one cache: 30 clients
//! spread over three replicas cost one upstream download, a path cached through one replica is
//! a hit on the others, and killing (-9) the replica that is downloading a NAR does not stop the
//! clients another replica relays it to. On PostgreSQL + S3, MariaDB + S3, and one shared dir.

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::StreamExt;
use nixcache_e2e::bench::procfs;
use nixcache_e2e::cluster::{Backend, Cluster};
use nixcache_e2e::http::{body_matches, client, get_narinfo};
use nixcache_e2e::{fetch, nix_available, Faults, FetchOptions, Nix, TestUpstream, UpstreamCache};
use reqwest::StatusCode;

const SALT: &str = "e2e";

/// The fixture's 64 MiB NAR behind `n` replicas: its narinfo known (fetched through replica 0),
/// the upstream then sending NARs at `rate` bytes/s. `None` when the backend's services are
/// missing (and not required).
struct BigNar {
    upstream: TestUpstream,
    cluster: Cluster,
    /// `/nar/<file>` as the replicas serve it.
    nar_path: String,
    /// The same NAR's path at the upstream.
    upstream_nar: String,
    expected: Arc<Vec<u8>>,
}

impl BigNar {
    async fn start(backend: Backend, n: usize, rate: u64) -> Result<Option<BigNar>> {
        let cache = UpstreamCache::get("zstd", SALT)?;
        let upstream = TestUpstream::start(&cache.dir)?;
        let Some(cluster) = Cluster::start(backend, n, &upstream.url, &cache.public_key).await? else {
            return Ok(None);
        };
        let narinfo = get_narinfo(&cluster.replicas[0].url, &cache.big_path).await?;
        upstream.set_faults(Faults {
            rate_bytes_per_s: rate,
            only_paths_with_prefix: Some("/nar/".into()),
            ..Faults::default()
        });
        Ok(Some(BigNar {
            upstream,
            cluster,
            nar_path: format!("/{}", narinfo.url()?),
            upstream_nar: cache.nar_http_path(&cache.big_path)?,
            expected: Arc::new(std::fs::read(cache.nar_file_for(&cache.big_path)?)?),
        }))
    }
}

async fn killing_the_downloading_replica_keeps_relayed_clients_going(backend: Backend) -> Result<()> {
    // 64 MiB at 16 MiB/s: the download takes about 4 s.
    let Some(BigNar {
        upstream,
        mut cluster,
        nar_path,
        upstream_nar,
        expected,
    }) = BigNar::start(backend, 2, 16 << 20).await?
    else {
        return Ok(());
    };

    // A client of replica 0 starts the download; a client of replica 1 is relayed from it.
    let mut from_0 = client()
        .get(cluster.replicas[0].url_for(&nar_path))
        .send()
        .await?;
    ensure!(
        from_0.status() == StatusCode::OK,
        "replica 0: {}",
        from_0.status()
    );
    from_0.chunk().await?.context("replica 0 sent no bytes")?;
    let from_1 = client()
        .get(cluster.replicas[1].url_for(&nar_path))
        .send()
        .await?;
    ensure!(
        from_1.status() == StatusCode::OK,
        "replica 1: {}",
        from_1.status()
    );
    let mut body_1 = from_1.bytes_stream();
    let mut received = Vec::with_capacity(expected.len());
    while received.len() < 8 << 20 {
        received.extend_from_slice(&body_1.next().await.context("replica 1's body ended")??);
    }

    let killed_at = Instant::now();
    cluster.replicas[0].stop(); // SIGKILL
    while let Some(chunk) = body_1.next().await {
        received
            .extend_from_slice(&chunk.with_context(|| format!("replica 1's body at {}", received.len()))?);
    }
    ensure!(
        received.len() == expected.len(),
        "replica 1 sent {} bytes",
        received.len()
    );
    ensure!(
        received == *expected,
        "replica 1 sent wrong bytes after the failover"
    );
    eprintln!(
        "replica 1 finished {:?} after replica 0 was killed",
        killed_at.elapsed()
    );
    let gets = upstream.stats().get(&upstream_nar);
    ensure!(gets == 2, "upstream GETs of the NAR: {gets} (one per download)");

    // The NAR is stored now: replica 1 serves it without the upstream.
    let response = client()
        .get(cluster.replicas[1].url_for(&nar_path))
        .send()
        .await?;
    body_matches(response, &expected).await?;
    ensure!(
        upstream.stats().get(&upstream_nar) == 2,
        "served from storage, not upstream"
    );
    Ok(())
}

async fn a_closure_cached_through_one_replica_is_a_hit_on_another(backend: Backend, nix: Nix) -> Result<()> {
    if !nix.available() {
        return Ok(());
    }
    let cache = UpstreamCache::get("xz", SALT)?;
    let mut upstream = TestUpstream::start(&cache.dir)?;
    let Some(cluster) = Cluster::start(backend, 3, &upstream.url, &cache.public_key).await? else {
        return Ok(());
    };
    let (first, third) = (&cluster.replicas[0], &cluster.replicas[2]);
    ensure!(
        first.public_key == third.public_key,
        "replicas sign with different keys"
    );
    let opts = FetchOptions {
        timeout: Duration::from_secs(120),
        ..FetchOptions::with(nix)
    };
    fetch(&first.url, &first.public_key, &[&cache.root], &opts)
        .await?
        .expect_whole_closure(&cache)?;
    let before = upstream.stats().total_gets();
    upstream.stop();
    fetch(&third.url, &third.public_key, &[&cache.root], &opts)
        .await?
        .expect_whole_closure(&cache)?;
    ensure!(
        upstream.stats().total_gets() == before,
        "the third replica asked the upstream"
    );
    Ok(())
}

const CLIENTS: usize = 30;

/// 30 clients, 10 per replica, ask for the same uncached 64 MiB NAR at once.
async fn thirty_clients_on_three_replicas_cost_one_upstream_download(backend: Backend) -> Result<()> {
    let Some(BigNar {
        upstream,
        cluster,
        nar_path,
        upstream_nar,
        expected,
    }) = BigNar::start(backend, 3, 32 << 20).await?
    else {
        return Ok(());
    };
    let started = Instant::now();
    let downloads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let url = cluster.replicas[i % 3].url_for(&nar_path);
            let expected = Arc::clone(&expected);
            tokio::spawn(async move {
                let response = client().get(&url).send().await?;
                ensure!(
                    response.status() == StatusCode::OK,
                    "GET {url}: {}",
                    response.status()
                );
                let mut body = response.bytes_stream();
                let first = body.next().await.context("no body")??;
                let ttfb = started.elapsed();
                ensure!(first[..] == expected[..first.len()], "first bytes differ");
                let mut offset = first.len();
                while let Some(chunk) = body.next().await {
                    let chunk = chunk?;
                    ensure!(
                        chunk[..] == expected[offset..offset + chunk.len()],
                        "bytes differ at {offset}"
                    );
                    offset += chunk.len();
                }
                ensure!(
                    offset == expected.len(),
                    "got {offset} of {} bytes",
                    expected.len()
                );
                Ok(ttfb)
            })
        })
        .collect();
    let mut ttfb = [Duration::ZERO; 3];
    for (i, download) in downloads.into_iter().enumerate() {
        let t = download.await?.with_context(|| format!("client {i}"))?;
        ttfb[i % 3] = ttfb[i % 3].max(t);
    }
    let gets = upstream.stats().get(&upstream_nar);
    ensure!(gets == 1, "upstream GETs of the NAR: {gets}");
    let (fastest, slowest) = (ttfb.iter().min().copied(), ttfb.iter().max().copied());
    eprintln!(
        "slowest first byte per replica: {ttfb:?}; all done after {:?}",
        started.elapsed()
    );
    if let (Some(fastest), Some(slowest)) = (fastest, slowest) {
        ensure!(
            slowest - fastest < Duration::from_secs(1),
            "first bytes per replica: {ttfb:?}"
        );
    }
    Ok(())
}

/// One test per backend and scenario, so they run in parallel and fail separately.
/// They run one at a time: each drives three replicas, a database and an S3 server through
/// hundreds of MiB, and in parallel on two cores the disk's fsync latency (seconds) would be
/// measured instead of the cache.
macro_rules! on_backend {
    ($($name:ident: $scenario:ident($($arg:expr),*);)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() -> Result<()> {
            if !nix_available() {
                return Ok(());
            }
            let _one_at_a_time = ONE_AT_A_TIME.lock().await;
            $scenario($($arg),*).await
        }
    )*};
}

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

on_backend! {
    shared_dir_kill_the_downloading_replica: killing_the_downloading_replica_keeps_relayed_clients_going(Backend::SharedDir);
    postgres_thirty_clients_one_download: thirty_clients_on_three_replicas_cost_one_upstream_download(Backend::PostgresS3);
    postgres_read_your_writes_with_the_host_nix: a_closure_cached_through_one_replica_is_a_hit_on_another(Backend::PostgresS3, Nix::Host);
    postgres_read_your_writes_with_the_current_nix: a_closure_cached_through_one_replica_is_a_hit_on_another(Backend::PostgresS3, Nix::Modern);
    postgres_kill_the_downloading_replica: killing_the_downloading_replica_keeps_relayed_clients_going(Backend::PostgresS3);
    mysql_thirty_clients_one_download: thirty_clients_on_three_replicas_cost_one_upstream_download(Backend::MySqlS3);
    mysql_read_your_writes_with_the_host_nix: a_closure_cached_through_one_replica_is_a_hit_on_another(Backend::MySqlS3, Nix::Host);
    mysql_read_your_writes_with_the_current_nix: a_closure_cached_through_one_replica_is_a_hit_on_another(Backend::MySqlS3, Nix::Modern);
    mysql_kill_the_downloading_replica: killing_the_downloading_replica_keeps_relayed_clients_going(Backend::MySqlS3);
}

/// Size of the NAR in [`one_gib_nar_through_three_replicas_with_a_kill`].
const ONE_GIB_MIB: u64 = 1024;
/// Bytes every client has before the kill: mid-download, so the survivors resume deep into the
/// file (and check the bytes before the splice).
const KILL_AFTER: u64 = 64 << 20;

/// GETs `url` and compares the body, chunk by chunk as it streams in, with `file` (read at the
/// same offsets): nothing of the body is kept. `got` follows the bytes received. The number of
/// bytes, all equal to the file's.
async fn stream_and_compare(
    url: String,
    file: Arc<std::fs::File>,
    size: u64,
    got: Arc<AtomicU64>,
) -> Result<u64> {
    let response = client()
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    ensure!(
        response.status() == StatusCode::OK,
        "GET {url}: {}",
        response.status()
    );
    ensure!(
        response.content_length() == Some(size),
        "GET {url}: Content-Length {:?}, the file has {size} bytes",
        response.content_length()
    );
    let mut body = response.bytes_stream();
    let (mut offset, mut expected) = (0u64, Vec::new());
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("GET {url}: body at {offset}"))?;
        let end = offset + chunk.len() as u64;
        ensure!(end <= size, "GET {url}: more than the file's {size} bytes");
        expected.resize(chunk.len(), 0);
        file.read_exact_at(&mut expected, offset)?;
        if let Some(at) = chunk.iter().zip(&expected).position(|(a, b)| a != b) {
            bail!(
                "GET {url}: body differs from the file at offset {}",
                offset + at as u64
            );
        }
        offset = end;
        got.store(offset, Ordering::Relaxed);
    }
    ensure!(offset == size, "GET {url}: {offset} of {size} bytes");
    Ok(offset)
}

/// A 1 GiB NAR (zstd fixture with a 1024 MiB big path, built once on first use: the Nix build and
/// `nix copy` take seconds, 2 GiB of disk) goes through 3 replicas, 2 clients each, all at once,
/// from an upstream sending 200 MiB/s; once every client has [`KILL_AFTER`] bytes, the replica
/// downloading it is killed (-9). Every client of the other two replicas must still get all bytes, equal to the
/// file's, and the upstream sees 2 GETs (the first download and the one that took over). Prints
/// timings and each replica's peak RSS. Ignored by default (1 GiB through storage and page cache
/// per run); run it with
///
/// ```text
/// cargo test --release -p nixcache-e2e --test replicas -- --ignored one_gib
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "1 GiB NAR; run: cargo test --release -p nixcache-e2e --test replicas -- --ignored one_gib"]
async fn one_gib_nar_through_three_replicas_with_a_kill() -> Result<()> {
    if !nix_available() {
        return Ok(());
    }
    const CLIENTS_PER_REPLICA: usize = 2;
    let cache = UpstreamCache::get_sized("zstd", SALT, ONE_GIB_MIB)?;
    let upstream = TestUpstream::start(&cache.dir)?;
    let mut cluster = Cluster::start(Backend::SharedDir, 3, &upstream.url, &cache.public_key)
        .await?
        .context("a shared-dir cluster needs no other service")?;
    let mut nar_path = String::new();
    for replica in &cluster.replicas {
        nar_path = format!("/{}", get_narinfo(&replica.url, &cache.big_path).await?.url()?);
    }
    let upstream_nar = cache.nar_http_path(&cache.big_path)?;
    let path = cache.nar_file_for(&cache.big_path)?;
    let file = Arc::new(std::fs::File::open(&path)?);
    let size = file.metadata()?.len();
    ensure!(size > ONE_GIB_MIB << 20, "{} has {size} bytes", path.display());
    upstream.set_faults(Faults {
        rate_bytes_per_s: 200 << 20,
        only_paths_with_prefix: Some("/nar/".into()),
        ..Faults::default()
    });

    let started = Instant::now();
    let mut clients = Vec::new();
    for (r, replica) in cluster.replicas.iter().enumerate() {
        for _ in 0..CLIENTS_PER_REPLICA {
            let got = Arc::new(AtomicU64::new(0));
            let task = tokio::spawn(stream_and_compare(
                replica.url_for(&nar_path),
                file.clone(),
                size,
                got.clone(),
            ));
            clients.push((r, got, task));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while clients
        .iter()
        .any(|(_, got, _)| got.load(Ordering::Relaxed) < KILL_AFTER)
    {
        ensure!(
            Instant::now() < deadline,
            "not every client had {KILL_AFTER} bytes within 60 s: {:?}",
            clients
                .iter()
                .map(|(_, got, _)| got.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fetching = cluster.logging("fetching NAR");
    let &[holder] = fetching.as_slice() else {
        bail!("expected one replica downloading the NAR, these logged \"fetching NAR\": {fetching:?}");
    };
    let received: Vec<u64> = clients
        .iter()
        .map(|(_, got, _)| got.load(Ordering::Relaxed))
        .collect();
    let killed_at = Instant::now();
    cluster.replicas[holder].stop(); // SIGKILL
    eprintln!(
        "killed replica {holder} (downloading) {:?} after the start; bytes per client then: {received:?}",
        killed_at - started
    );

    for (i, (r, _, task)) in clients.into_iter().enumerate() {
        let outcome = task.await?;
        if r == holder {
            eprintln!(
                "client {i} of the killed replica {r}: {:?}",
                outcome.map_err(|e| format!("{e:#}"))
            );
            continue;
        }
        outcome.with_context(|| format!("client {i} of replica {r}"))?;
        eprintln!(
            "client {i} of replica {r}: all {size} bytes, equal to the file's, {:?} after the kill",
            killed_at.elapsed()
        );
    }
    let gets = upstream.stats().get(&upstream_nar);
    ensure!(
        gets == 2,
        "upstream GETs of the NAR: {gets} (expected 2: one per download)"
    );
    let fetching = cluster.logging("fetching NAR");
    eprintln!("replicas that downloaded it: {fetching:?} (replica {holder} was killed)");

    // Stored now: the tail comes from storage on a survivor, without the upstream.
    let survivor = &cluster.replicas[(holder + 1) % cluster.replicas.len()];
    let tail = client()
        .get(survivor.url_for(&nar_path))
        .header(reqwest::header::RANGE, "bytes=-1048576")
        .send()
        .await?;
    ensure!(
        tail.status() == StatusCode::PARTIAL_CONTENT,
        "range GET: {}",
        tail.status()
    );
    let mut expected = vec![0; 1 << 20];
    file.read_exact_at(&mut expected, size - (1 << 20))?;
    body_matches(tail, &expected).await?;
    ensure!(
        upstream.stats().get(&upstream_nar) == 2,
        "the tail came from the upstream"
    );

    for (r, replica) in cluster.replicas.iter().enumerate() {
        if let Some(pid) = replica.pid() {
            let peak = procfs::status_kib(pid, "VmHWM").unwrap_or(0) >> 10;
            eprintln!("replica {r}: peak RSS (VmHWM) {peak} MiB");
        }
    }
    Ok(())
}
