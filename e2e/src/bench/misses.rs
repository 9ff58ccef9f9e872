//! Misses: 16 clients ask a fresh server (empty cache) for the 64 MiB NAR at
//! once, nixcache against nginx's `proxy_cache` with `proxy_cache_lock on`,
//! both in front of the same in-process upstream: once with a rate-limited
//! upstream (memory), once with a 50 ms upstream delay (latency).

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use super::hits::{measure_memory, progress, CLIENTS};
use super::nginx::Nginx;
use super::report::{Better, Goal, Report};
use super::setup::Objects;
use super::{loadgen, order, procfs, summary, Server, Settings, Target};
use crate::{Faults, Proxy, ProxyOptions, TestUpstream, UpstreamCache};

/// Upstream body rate of the memory run (the anchors' "up32MiBps" case).
pub const RATE_BYTES_PER_S: u64 = 32 << 20;
/// Upstream delay of the latency run (the anchors' "distant" upstream).
pub const DELAY: Duration = Duration::from_millis(50);

/// A fresh server with an empty cache in front of an upstream.
enum Fresh {
    Nixcache(Proxy),
    Nginx(Nginx),
}

impl Fresh {
    async fn start(server: Server, cache: &UpstreamCache, upstream: &TestUpstream) -> Result<Fresh> {
        Ok(match server {
            Server::Nixcache => {
                Fresh::Nixcache(Proxy::start(ProxyOptions::new(&upstream.url, &cache.public_key)).await?)
            }
            Server::Nginx => Fresh::Nginx(Nginx::start(&cache.dir, upstream.addr).await?),
        })
    }

    fn target(&self) -> Target {
        match self {
            Fresh::Nixcache(p) => Target {
                server: Server::Nixcache,
                addr: p.addr,
                pid: p.pid().unwrap_or(0),
                with_children: false,
            },
            Fresh::Nginx(n) => n.proxy_target(),
        }
    }

    /// GETs the big path's narinfo (not timed: a NAR is served only once its
    /// narinfo is known) and zeroes the upstream's counters.
    async fn prime(&self, objects: &Objects, upstream: &TestUpstream) -> Result<Target> {
        let t = self.target();
        let mut conn = loadgen::Conn::connect(t.addr, 64 * 1024).await?;
        let answer = conn.get(&objects.big_narinfo, &loadgen::Check::Discard).await?;
        ensure!(
            answer.status == 200,
            "{}: GET {}: {}",
            t.server.name(),
            objects.big_narinfo,
            answer.status
        );
        upstream.reset_stats();
        Ok(t)
    }
}

/// Memory and upstream GETs with a rate-limited upstream.
pub async fn rate_limited(
    report: &mut Report,
    s: &Settings,
    cache: &UpstreamCache,
    objects: &Objects,
) -> Result<()> {
    let upstream = TestUpstream::start(&cache.dir)?;
    upstream.set_faults(Faults {
        rate_bytes_per_s: RATE_BYTES_PER_S,
        only_paths_with_prefix: Some("/nar/".into()),
        ..Faults::default()
    });
    let scenario = format!(
        "{CLIENTS} clients at once, 64 MiB NAR MISS, upstream {} MiB/s",
        RATE_BYTES_PER_S >> 20
    );
    for run in 0..s.runs {
        for server in order(run) {
            let busy = procfs::wait_idle().await;
            let fresh = Fresh::start(server, cache, &upstream).await?;
            let t = fresh.prime(objects, &upstream).await?;
            let m = measure_memory(&t, &objects.big_nar, objects)
                .await
                .with_context(|| format!("{scenario}, {}", server.name()))?;
            let gets = upstream.stats().get(&objects.big_nar) as f64;
            let last = m.fetches.iter().map(|f| f.ttlb_s).fold(0.0, f64::max);
            let what = format!(
                "peak {:.1} MiB, {gets} upstream GETs, last byte {last:.2} s",
                m.hwm
            );
            progress(&scenario, run, s, server, busy, &what);
            m.record(report, &scenario, server, Some(64.0));
            let mut rows = report.scoped(&scenario, server);
            rows.add(
                "upstream GETs of the NAR",
                Better::Lower,
                Goal::Exactly(1.0),
                gets,
            );
            report.condition(&scenario, server, busy, None);
        }
    }
    Ok(())
}

/// Time to first and last byte with a 50 ms upstream.
pub async fn cold(report: &mut Report, s: &Settings, cache: &UpstreamCache, objects: &Objects) -> Result<()> {
    let upstream = TestUpstream::start(&cache.dir)?;
    upstream.set_faults(Faults {
        delay: DELAY,
        ..Faults::default()
    });
    let scenario = format!(
        "{CLIENTS} clients at once, 64 MiB NAR cold MISS, upstream +{} ms",
        DELAY.as_millis()
    );
    for run in 0..s.runs {
        for server in order(run) {
            let busy = procfs::wait_idle().await;
            let fresh = Fresh::start(server, cache, &upstream).await?;
            let t = fresh.prime(objects, &upstream).await?;
            let fetches = loadgen::burst(t.addr, &objects.big_nar, CLIENTS, objects.big_bytes.clone())
                .await
                .with_context(|| format!("{scenario}, {}", server.name()))?;
            let gets = upstream.stats().get(&objects.big_nar) as f64;
            let ttfb: Vec<f64> = fetches.iter().map(|f| f.ttfb_s).collect();
            let ttlb: Vec<f64> = fetches.iter().map(|f| f.ttlb_s).collect();
            let (Some((med, min, max)), Some((_, _, last))) = (summary(&ttfb), summary(&ttlb)) else {
                continue;
            };
            let what =
                format!("TTFB {min:.3}/{med:.3}/{max:.3} s, last byte {last:.3} s, {gets} upstream GETs");
            progress(&scenario, run, s, server, busy, &what);
            let mut rows = report.scoped(&scenario, server);
            rows.add(
                "upstream GETs of the NAR",
                Better::Lower,
                Goal::Exactly(1.0),
                gets,
            );
            rows.add("TTFB min s", Better::Lower, Goal::None, min);
            rows.add("TTFB median s", Better::Lower, Goal::None, med);
            rows.add("TTFB max s", Better::Lower, Goal::None, max);
            rows.add("last byte s", Better::Lower, Goal::None, last);
            report.condition(&scenario, server, busy, None);
        }
    }
    Ok(())
}
