//! NAR hits by where the NAR is stored: the big NAR (64 MiB unless `--big-mib`) downloaded over
//! and over by 1 and 8 clients from one warm nixcache on a local directory, on S3 read with one
//! GET per download (`--s3-parallel-reads 1`, as before ranged reads), and on S3 read in
//! parallel ranged parts (the default); the MiB/s and the replica's CPU seconds per GiB served.
//! The S3 server is s3s-fs on loopback, where the two cores, not a stream, are the limit; so the
//! two S3 ways run again through a relay that gives each connection a bucket's ceiling
//! ([`LINK`]: a model, see [`crate::throttle`]). Then hits from a hot tier, on loopback and
//! over the link, and hits answered with a redirect that the clients follow to s3s-fs (the
//! replica's CPU is then what the redirects cost it; the bytes are the bucket's).

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use super::hits::NAR_CONNS;
use super::loadgen;
use super::procfs::CpuWindow;
use super::report::{spread, Report};
use super::setup::Objects;
use super::{redirected, Settings};
use crate::cluster::{Backend, Cluster};
use crate::throttle::{Link, Throttle};
use crate::{TestUpstream, UpstreamCache};

/// One way of storing, as the table names it.
struct Way {
    name: &'static str,
    backend: Backend,
    args: &'static [&'static str],
    /// S3 reached through a relay that models this link.
    link: Option<Link>,
    /// How hits are served beside the plain stream.
    serve: Serve,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Serve {
    Streamed,
    /// From a hot tier (`--hot-tier-dir`) the first hit filled.
    HotTier,
    /// As a 307 to the bucket (`--s3-redirect`), which the clients follow.
    Redirect,
}

/// What one S3 connection gives in the modelled case: about a real bucket's per-GET stream.
pub const LINK: Link = Link {
    rate: 64 << 20,
    latency: Duration::from_millis(20),
};

const ONE_GET: &[&str] = &["--s3-parallel-reads", "1"];

const WAYS: [Way; 8] = [
    Way {
        name: "local directory",
        backend: Backend::SharedDir,
        args: &[],
        link: None,
        serve: Serve::Streamed,
    },
    Way {
        name: "S3, one GET per download",
        backend: Backend::PostgresS3,
        args: ONE_GET,
        link: None,
        serve: Serve::Streamed,
    },
    Way {
        name: "S3, ranged parts in parallel (default)",
        backend: Backend::PostgresS3,
        args: &[],
        link: None,
        serve: Serve::Streamed,
    },
    Way {
        name: "S3 over a 64 MiB/s, 20 ms link, one GET per download",
        backend: Backend::PostgresS3,
        args: ONE_GET,
        link: Some(LINK),
        serve: Serve::Streamed,
    },
    Way {
        name: "S3 over a 64 MiB/s, 20 ms link, ranged parts in parallel",
        backend: Backend::PostgresS3,
        args: &[],
        link: Some(LINK),
        serve: Serve::Streamed,
    },
    Way {
        name: "S3, hits from the hot tier",
        backend: Backend::PostgresS3,
        args: &[],
        link: None,
        serve: Serve::HotTier,
    },
    Way {
        name: "S3 over the link, hits from the hot tier",
        backend: Backend::PostgresS3,
        args: &[],
        link: Some(LINK),
        serve: Serve::HotTier,
    },
    Way {
        name: "S3, hits redirected to the bucket (s3s-fs)",
        backend: Backend::PostgresS3,
        args: &["--s3-redirect"],
        link: None,
        serve: Serve::Redirect,
    },
];

/// The ways measured: all of them, or with `NIXCACHE_BENCH_STORAGE_AB=1` the local directory
/// and the hot tier (on s3s-fs) twice each, alternating, so that the two are compared without
/// the drift of a VM's disk-speed figures over the minutes between them in the full order.
fn ways() -> Vec<&'static Way> {
    if std::env::var_os("NIXCACHE_BENCH_STORAGE_AB").is_some_and(|v| v == "1") {
        let (local, tier) = (&WAYS[0], &WAYS[5]);
        return vec![local, tier, local, tier];
    }
    WAYS.iter().collect()
}

const MIB: f64 = 1024.0 * 1024.0;

pub async fn run(report: &mut Report, s: &Settings, cache: &UpstreamCache, objects: &Objects) -> Result<()> {
    let upstream = TestUpstream::start(&cache.dir)?;
    let mut text = format!(
        "The {} MiB NAR, warm in one nixcache, downloaded back to back for {} s per run by each \
         client; median (min–max) of {} runs. CPU: the replica's user + system seconds per GiB \
         it served.\n\n| stored in | clients | MiB/s | CPU s / GiB |\n|---|---|---|---|\n",
        objects.big_mib,
        s.duration.as_secs(),
        s.runs
    );
    let mut per_way = Vec::new();
    let ways = ways();
    for way in &ways {
        let rows = measure(s, cache, &upstream, objects, way)
            .await
            .with_context(|| format!("hits from {}", way.name))?;
        per_way.push(rows);
    }
    for (conns, at) in NAR_CONNS.iter().zip(0..) {
        for (way, rows) in ways.iter().zip(&per_way) {
            let (rates, cpu): &(Vec<f64>, Vec<f64>) = &rows[at];
            text.push_str(&format!(
                "| {} | {conns} | {} | {} |\n",
                way.name,
                spread(rates),
                spread(cpu)
            ));
        }
    }
    report.section("NAR hits by storage", text);
    Ok(())
}

/// MiB/s and CPU s per GiB of each run, for each concurrency of [`NAR_CONNS`].
async fn measure(
    s: &Settings,
    cache: &UpstreamCache,
    upstream: &TestUpstream,
    objects: &Objects,
    way: &Way,
) -> Result<Vec<(Vec<f64>, Vec<f64>)>> {
    let mut cluster = Cluster::start(way.backend, 0, &upstream.url, &cache.public_key)
        .await?
        .with_context(|| format!("{:?} needs its database and s3s-fs", way.backend))?;
    let _relay = match way.link {
        Some(link) => Some(relay_s3(&mut cluster, link).await?),
        None => None,
    };
    let tier = tempfile::tempdir()?;
    let tier_dir = tier.path().display().to_string();
    let mut args = way.args.to_vec();
    if way.serve == Serve::HotTier {
        args.extend(["--hot-tier-dir", &tier_dir, "--hot-tier-size", "2G"]);
    }
    let proxy = cluster
        .add_replica_with(&upstream.url, &cache.public_key, &args)
        .await?;
    let (addr, pid) = (proxy.addr, proxy.pid().context("nixcache is not running")?);
    let len = objects.big_bytes.len() as u64;
    // The fill, then one hit compared byte for byte: the rate is of correct bodies.
    let mut conn = loadgen::Conn::connect(addr, 64 * 1024).await?;
    for path in [&objects.big_narinfo, &objects.big_nar, &objects.big_nar] {
        let answer = conn.get(path, &loadgen::Check::Discard).await?;
        ensure!(answer.status == 200, "GET {path}: {}", answer.status);
    }
    // Until its fill is forgotten, hits read the fill's temp file: they would measure the disk.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while proxy.metric("nixcache_fills_in_flight", "").await? > 0 {
        ensure!(
            std::time::Instant::now() < deadline,
            "the fill did not end within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let check = loadgen::Check::Equal(objects.big_bytes.clone());
    let url = proxy.url_for(&objects.big_nar);
    if way.serve == Serve::Redirect {
        redirected::check(&url, &objects.big_bytes).await?;
    } else {
        let answer = conn.get(&objects.big_nar, &check).await?;
        ensure!(answer.status == 200, "GET {}: {}", objects.big_nar, answer.status);
    }
    if way.serve == Serve::HotTier {
        // That hit filled the tier: the ones measured are read from it.
        let filled = crate::util::wait_until(Duration::from_secs(30), || {
            !crate::util::hot_tier_files(tier.path()).is_empty()
        })
        .await;
        ensure!(filled, "the hot tier did not take the NAR within 30 s");
    }
    let mut rows = Vec::new();
    for &conns in &NAR_CONNS {
        let (mut rates, mut cpu) = (Vec::new(), Vec::new());
        for run in 0..s.runs {
            let window = CpuWindow::start(&[pid]);
            let load = match way.serve {
                Serve::Redirect => redirected::load(&url, len, conns, s.duration).await?,
                _ => loadgen::load(addr, &objects.big_nar, len, conns, s.duration).await?,
            };
            let used = window.finish();
            let rate = load.bytes as f64 / MIB / load.elapsed_s;
            let per_gib = used.server_s / (load.bytes as f64 / (1024.0 * MIB));
            eprintln!(
                "[bench] storage, {}, c={conns}, run {}/{}: {rate:.0} MiB/s, {per_gib:.2} CPU s/GiB",
                way.name,
                run + 1,
                s.runs
            );
            rates.push(rate);
            cpu.push(per_gib);
        }
        rows.push((rates, cpu));
    }
    Ok(rows)
}

/// Puts a relay modelling `link` between the replicas started from now on and the S3 server.
async fn relay_s3(cluster: &mut Cluster, link: Link) -> Result<Throttle> {
    let endpoint = cluster.s3_endpoint().context("not an S3 cluster")?;
    let target = endpoint
        .trim_start_matches("http://")
        .parse()
        .with_context(|| format!("the S3 endpoint {endpoint}"))?;
    let relay = Throttle::start(target, link).await?;
    cluster.set_s3_endpoint(&format!("http://{}", relay.addr))?;
    Ok(relay)
}
