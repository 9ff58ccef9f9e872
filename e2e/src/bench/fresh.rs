//! What the miss bursts of [`super::misses`] and [`super::replicas`] share: a fresh server with
//! an empty cache ([`Fresh`]: nginx, one nixcache or [`REPLICAS`] of them), the upstreams put
//! behind it (rate-limited or delayed), and the rows a burst records. The other parts start
//! their nixcaches with [`cluster`] too.

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use super::nginx::Nginx;
use super::report::{Better, Goal, Report};
use super::setup::Objects;
use super::{loadgen, summary, Server, Settings, Target};
use crate::cluster::Cluster;
use crate::{Faults, TestUpstream, UpstreamCache};

/// Replicas in the cluster ([`Server::Replicas`]).
pub const REPLICAS: usize = 3;
/// Upstream body rate of the memory run (the anchors' "up32MiBps" case).
pub const RATE_BYTES_PER_S: u64 = 32 << 20;
/// Upstream delay of the latency run (the anchors' "distant" upstream).
pub const DELAY: Duration = Duration::from_millis(50);

/// A fresh server with an empty cache in front of an upstream.
pub enum Fresh {
    /// One nixcache (a cluster of one, so it has the run's backend).
    Nixcache(Cluster),
    Replicas(Cluster),
    Nginx(Nginx),
}

/// A fresh cluster of `n` on the run's backend (a new database and bucket each time).
pub async fn cluster(
    s: &Settings,
    n: usize,
    cache: &UpstreamCache,
    upstream: &TestUpstream,
) -> Result<Cluster> {
    Cluster::start(s.backend, n, &upstream.url, &cache.public_key)
        .await?
        .with_context(|| format!("--backend {:?} needs its database and s3s-fs", s.backend))
}

impl Fresh {
    pub async fn start(
        s: &Settings,
        server: Server,
        cache: &UpstreamCache,
        upstream: &TestUpstream,
    ) -> Result<Fresh> {
        Ok(match server {
            Server::Nixcache => Fresh::Nixcache(cluster(s, 1, cache, upstream).await?),
            Server::Replicas => Fresh::Replicas(cluster(s, REPLICAS, cache, upstream).await?),
            Server::Nginx => Fresh::Nginx(Nginx::start(&cache.dir, upstream.addr).await?),
        })
    }

    pub fn target(&self) -> Target {
        match self {
            Fresh::Nixcache(c) => Target::nixcache(&c.replicas[0]),
            Fresh::Replicas(c) => Target::cluster(c),
            Fresh::Nginx(n) => n.proxy_target(),
        }
    }

    /// GETs the big path's narinfo from every address of the server (not
    /// timed: a NAR is served only once its narinfo is known) and zeroes the
    /// upstream's counters.
    pub async fn prime(&self, objects: &Objects, upstream: &TestUpstream) -> Result<Target> {
        let t = self.target();
        for addr in t.addrs() {
            let mut conn = loadgen::Conn::connect(addr, 64 * 1024).await?;
            let answer = conn.get(&objects.big_narinfo, &loadgen::Check::Discard).await?;
            ensure!(
                answer.status == 200,
                "{} ({addr}): GET {}: {}",
                t.server.name(),
                objects.big_narinfo,
                answer.status
            );
        }
        upstream.reset_stats();
        Ok(t)
    }
}

/// An upstream whose NAR bodies go out at [`RATE_BYTES_PER_S`].
pub fn rate_limited_upstream(cache: &UpstreamCache) -> Result<TestUpstream> {
    let upstream = TestUpstream::start(&cache.dir)?;
    upstream.set_faults(Faults {
        rate_bytes_per_s: RATE_BYTES_PER_S,
        only_paths_with_prefix: Some("/nar/".into()),
        ..Faults::default()
    });
    Ok(upstream)
}

/// An upstream that answers every request [`DELAY`] late.
pub fn delayed_upstream(cache: &UpstreamCache) -> Result<TestUpstream> {
    let upstream = TestUpstream::start(&cache.dir)?;
    upstream.set_faults(Faults {
        delay: DELAY,
        ..Faults::default()
    });
    Ok(upstream)
}

/// What the rate-limited upstream is, for scenario labels.
pub fn rate_limited_label() -> String {
    format!("upstream {} MiB/s", RATE_BYTES_PER_S >> 20)
}

/// What the delayed upstream is, for scenario labels.
pub fn delayed_label() -> String {
    format!("upstream +{} ms", DELAY.as_millis())
}

/// The row "upstream GETs of the NAR" (goal: exactly one).
pub fn record_gets(report: &mut Report, scenario: &str, server: Server, gets: f64) {
    let mut rows = report.scoped(scenario, server);
    rows.add(
        "upstream GETs of the NAR",
        Better::Lower,
        Goal::Exactly(1.0),
        gets,
    );
}

/// Rows TTFB min/median/max and last byte of a burst; returns them as
/// progress text (None for an empty burst).
pub fn record_latency(
    report: &mut Report,
    scenario: &str,
    server: Server,
    fetches: &[loadgen::Fetch],
) -> Option<String> {
    let ttfb: Vec<f64> = fetches.iter().map(|f| f.ttfb_s).collect();
    let ttlb: Vec<f64> = fetches.iter().map(|f| f.ttlb_s).collect();
    let (Some((med, min, max)), Some((_, _, last))) = (summary(&ttfb), summary(&ttlb)) else {
        return None;
    };
    let mut rows = report.scoped(scenario, server);
    rows.add("TTFB min s", Better::Lower, Goal::None, min);
    rows.add("TTFB median s", Better::Lower, Goal::None, med);
    rows.add("TTFB max s", Better::Lower, Goal::None, max);
    rows.add("last byte s", Better::Lower, Goal::None, last);
    Some(format!(
        "TTFB {min:.3}/{med:.3}/{max:.3} s, last byte {last:.3} s"
    ))
}
